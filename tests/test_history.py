"""The history index: search by prompt words and filters, sorted and paged; built from the files
at start, kept up to date as pictures are saved, rebuilt when missing, out of date or damaged,
and nothing lost when the process is killed."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
from PIL import Image

from studio.errors import InvalidRequest
from studio.outputs.folder import OutputFolder
from studio.outputs.index import HistoryIndex, Query

ROOT = Path(__file__).resolve().parent.parent


def save(folder: OutputFolder, prompt: str, seed: int, model="m1", scheduler="Euler a", mode="txt2img") -> Path:
    data = {"format": 1, "mode": mode, "prompt": prompt, "negative_prompt": "", "seed": seed, "width": 8, "height": 8,
            "model": {"name": model}, "request": {"scheduler": scheduler}}
    parameters = f"{prompt}\nNegative prompt: \nSteps: 3, Sampler: {scheduler}, Seed: {seed}, Size: 8x8, Model: {model}"
    return folder.save(Image.new("RGB", (8, 8)), parameters, data, seed=seed)


def folder_with_index(root: Path, day="2026-12-01") -> tuple[OutputFolder, HistoryIndex]:
    index = HistoryIndex(root)
    return OutputFolder(root, clock=lambda: datetime.fromisoformat(day), on_saved=index.add), index


def test_search_filters_sorts_and_pages(tmp_path):
    folder, index = folder_with_index(tmp_path)
    save(folder, "a red circle on a blue background", 1)
    save(folder, "a green square", 2, model="m2", scheduler="DDIM")
    save(folder, "a red square", 3, mode="img2img")
    later, _ = folder_with_index(tmp_path, "2026-12-03")
    later.on_saved = index.add
    save(later, "100% red_ish", 4)
    total, rows = index.search(Query(words="red"))
    assert total == 3 and [r["seed"] for r in rows] == [4, 3, 1]            # newest first
    assert index.search(Query(words="red square"))[0] == 1                   # every word
    assert index.search(Query(words="RED CIRCLE"))[0] == 1                   # any case
    assert index.search(Query(words="100%"))[0] == 1 and index.search(Query(words="d_i"))[0] == 1
    assert index.search(Query(words="%"))[0] == 1                            # a literal %, not a wildcard
    assert [r["seed"] for r in index.search(Query(model="m2"))[1]] == [2]
    assert [r["seed"] for r in index.search(Query(sampler="DDIM"))[1]] == [2]
    assert [r["seed"] for r in index.search(Query(tab="img2img"))[1]] == [3]
    assert [r["seed"] for r in index.search(Query(seed=1))[1]] == [1]
    assert [r["seed"] for r in index.search(Query(since="2026-12-02"))[1]] == [4]
    assert [r["seed"] for r in index.search(Query(until="2026-12-01", sort="oldest"))[1]] == [1, 2, 3]
    assert [r["seed"] for r in index.search(Query(page=2, page_size=3))[1]] == [1]
    assert index.choices("model") == ["m1", "m2"] and index.choices("tab") == ["img2img", "txt2img"]
    assert Path(rows[0]["file"]).exists()
    with pytest.raises(InvalidRequest, match="Sort must be one of"):
        index.search(Query(sort="name; DROP TABLE pictures"))


def test_a_new_index_over_old_files_finds_them_and_drops_removed_ones(tmp_path):
    folder = OutputFolder(tmp_path)                       # saved with no index at all
    keep = save(folder, "a yellow star", 10)
    gone = save(folder, "a purple triangle", 11)
    index = HistoryIndex(tmp_path)
    assert index.sync() == {"added": 2, "removed": 0, "total": 2}
    assert index.search(Query(words="yellow"))[1][0]["file"] == str(keep)
    gone.unlink()
    assert index.sync() == {"added": 0, "removed": 1, "total": 1}
    assert index.search(Query(words="purple"))[0] == 0 and index.sync()["added"] == 0   # nothing read twice


def test_a_damaged_index_file_is_set_aside_and_built_again(tmp_path):
    save(OutputFolder(tmp_path), "a white circle", 5)
    (tmp_path / ".history.sqlite").write_bytes(b"this is not a database" * 100)
    index = HistoryIndex(tmp_path)
    index.sync()
    assert index.search(Query(words="white"))[0] == 1 and (tmp_path / ".history.damaged").exists()


KILLED = """
import os, signal, sys
from PIL import Image
from studio.outputs.folder import OutputFolder
from studio.outputs.index import HistoryIndex
index = HistoryIndex(sys.argv[1])
folder = OutputFolder(sys.argv[1], on_saved=index.add)
folder.save(Image.new("RGB", (8, 8)), "a killed orange moon\\nNegative prompt: \\nSeed: 77", {"prompt": "a killed orange moon", "seed": 77}, seed=77)
folder.on_saved = None      # the next picture never reaches the index
folder.save(Image.new("RGB", (8, 8)), "an unindexed orange sun\\nNegative prompt: \\nSeed: 78", {"prompt": "an unindexed orange sun", "seed": 78}, seed=78)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_after_kill_9_the_next_start_finds_every_picture(tmp_path):
    done = subprocess.run([sys.executable, "-c", KILLED, str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == -9, done.stderr
    index = HistoryIndex(tmp_path)
    index.sync_in_background()                          # as app.py does at start
    total, rows = index.search(Query(words="orange"))   # waits for the index to catch up
    assert total == 2 and {r["seed"] for r in rows} == {77, 78}


def test_pictures_made_by_the_studio_are_indexed_as_they_are_saved(studio):
    from studio.requests import make_request
    studio.local.run(make_request(prompt="an indexed blue square", steps=2, seed=4242))
    total, rows = studio.history.search(Query(words="indexed blue"))
    assert total == 1 and rows[0]["seed"] == 4242 and rows[0]["tab"] == "txt2img"
    assert "Seed: 4242" in rows[0]["parameters"]


def test_the_history_benchmark_prints_its_figures():
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "history.py"), "--pictures", "300", "--repeat", "2"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "rebuild from nothing:" in done.stdout and "(300 read)" in done.stdout
    assert "three words (red circle blue)" in done.stdout and "baseline, no index" in done.stdout


def test_an_index_damaged_past_its_first_page_is_found_and_built_again(tmp_path):
    """Issue 38, finding 7: a file whose first page is whole opened fine and then answered every
    search with "database disk image is malformed", also after restarts."""
    folder = OutputFolder(tmp_path)
    for seed in range(60):
        save(folder, f"a white circle number {seed} " + "with a long prompt " * 20, seed)
    index = HistoryIndex(tmp_path)
    assert index.sync()["added"] == 60
    index.close()
    raw = bytearray((tmp_path / ".history.sqlite").read_bytes())
    assert len(raw) > 4 * 4096
    raw[2 * 4096: len(raw) - 4096] = b"\xff" * (len(raw) - 3 * 4096)        # every page but the first and last
    (tmp_path / ".history.sqlite").write_bytes(bytes(raw))
    for name in (".history.sqlite-wal", ".history.sqlite-shm"):
        (tmp_path / name).unlink(missing_ok=True)
    again = HistoryIndex(tmp_path)                                            # the next start
    again.sync()
    assert again.search(Query(words="white"))[0] == 60 and (tmp_path / ".history.damaged").exists()
    # damaged while in use: the search that meets it rebuilds and answers
    again.close()
    (tmp_path / ".history.damaged").unlink()
    raw = bytearray((tmp_path / ".history.sqlite").read_bytes())
    raw[2 * 4096: len(raw) - 4096] = b"\xff" * (len(raw) - 3 * 4096)
    in_use = HistoryIndex(tmp_path)
    in_use._db = in_use._open()                    # opened before the damage, as a running studio has it
    (tmp_path / ".history.sqlite").write_bytes(bytes(raw))
    assert in_use.search(Query(words="number", page_size=100))[0] == 60
    assert (tmp_path / ".history.damaged").exists()
