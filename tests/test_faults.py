"""Faults: the server killed with SIGKILL in the middle of a batch loses nothing it reported as
saved and leaves no partial file; after a restart the history (and its search index) is exactly
the finished images."""

from __future__ import annotations

import os
import re
import signal
import threading
import time

from gradio_client import Client
from PIL import Image

from studio.outputs.metadata import read_metadata
from tests.conftest import start_server, stop_server


def test_kill_9_in_the_middle_of_a_batch(tiny_model, tmp_path):
    outputs = tmp_path / "outputs"
    srv = start_server(tiny_model, outputs, tmp_path / "first.log")
    client = Client(srv.url, verbose=False)
    job = client.submit(prompt="a red circle", steps=20, batch_size=1, batch_count=16, seed=100,
                        api_name="/txt2img")
    log = tmp_path / "first.log"
    deadline = time.time() + 120
    # the kill waits for the log's third "Saved" line, not the third file: a file is renamed into
    # place just before its line is written, and under load the kill could land in between
    while time.time() < deadline and len(re.findall(r"Saved (\S+\.png)", log.read_text())) < 3:
        assert not job.done() or job.exception() is None, job.exception()
        time.sleep(0.02)
    os.kill(srv.process.pid, signal.SIGKILL)          # no chance to clean up
    srv.process.wait(10)
    threading.Thread(target=lambda: job.cancel(), daemon=True).start()

    reported = re.findall(r"Saved (\S+\.png)", log.read_text())
    on_disk = sorted(outputs.rglob("*.png"))
    assert 3 <= len(reported) < 16, "the kill must land in the middle of the batch"
    for path in reported:                              # everything reported as saved is there...
        assert os.path.exists(path)
    for path in on_disk:                               # ...and every PNG is whole, with metadata
        with Image.open(path) as im:
            im.load()
        assert read_metadata(path)[1]["prompt"] == "a red circle"
    assert not [p for p in outputs.rglob("*") if p.is_file() and p.suffix != ".png"
                and not p.name.startswith(".")], "an unexpected file"

    again = start_server(tiny_model, outputs, tmp_path / "second.log")
    try:
        assert not list(outputs.rglob(".*.tmp")), "a temporary file survived the restart"
        history = Client(again.url, verbose=False).predict(1000, api_name="/history")
        assert sorted(h["file"] for h in history) == sorted(str(p) for p in on_disk)
        assert sorted(h["seed"] for h in history) == list(range(100, 100 + len(on_disk)))
        found = Client(again.url, verbose=False).predict(query="red circle", page_size=100, api_name="/history_search")
        assert found["total"] == len(on_disk) and {p["file"] for p in found["pictures"]} == {str(p) for p in on_disk}
    finally:
        stop_server(again)
    stop_server(srv)
