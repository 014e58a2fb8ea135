"""`python app.py` as a user starts it: flags, share warning, login, broken presets."""

from __future__ import annotations

import subprocess
import sys

import pytest
from gradio_client import Client

from studio.config import read_auth_file, settings_from_args

from .conftest import ROOT, start_server, stop_server


def test_flags_parse_into_settings(tmp_path):
    auth = tmp_path / "users.txt"
    auth.write_text("# friends\nann:secret\n\nbob:pa:ss\n")
    s = settings_from_args(["--model", "m", "--host", "0.0.0.0", "--port", "9000", "--share",
                            "--auth", "me:pw", "--auth-file", str(auth), "--device", "cpu",
                            "--dtype", "bf16", "--outputs", str(tmp_path / "o")])
    assert (s.model, s.host, s.port, s.share, s.device, s.dtype) == ("m", "0.0.0.0", 9000, True,
                                                                    "cpu", "bf16")
    assert s.auth == [("me", "pw"), ("ann", "secret"), ("bob", "pa:ss")]
    assert s.outputs == tmp_path / "o"
    assert read_auth_file(auth)[0] == ("ann", "secret")


def test_worker_flags_parse_and_need_ray_workers():
    s = settings_from_args(["--workers", "ray", "--replicas", "4", "--ray-address", "auto",
                            "--gpus-per-replica", "0.5", "--worker-threads", "3"])
    assert (s.workers, s.replicas, s.ray_address, s.gpus_per_replica, s.worker_threads) == ("ray", 4, "auto", 0.5, 3)
    assert settings_from_args([]).workers == "local"


@pytest.mark.parametrize("argv", [["--device", "tpu"], ["--dtype", "int4"], ["--auth", "nopassword"],
                                  ["--replicas", "2"], ["--workers", "ray", "--replicas", "0"],
                                  ["--workers", "ray", "--gpus-per-replica", "1.5"], ["--workers", "swarm"]])
def test_bad_flags_exit_with_a_message(argv):
    with pytest.raises(SystemExit) as exc:
        settings_from_args(argv)
    assert exc.value.code == 2


def test_broken_presets_stop_the_start_with_the_file_named(tmp_path, tiny_model):
    (tmp_path / "negative.toml").write_text('["bad hands"]\nterms = ""\n')
    proc = subprocess.run([sys.executable, str(ROOT / "app.py"), "--model", str(tiny_model),
                           "--presets", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "negative.toml" in proc.stderr and "bad hands" in proc.stderr


def test_missing_model_stops_the_start_with_a_message(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "app.py"), "--model", str(tmp_path / "nope")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "not found" in proc.stderr


def test_share_without_auth_warns_and_keeps_serving_offline(tiny_model, tmp_path):
    server = start_server(tiny_model, tmp_path / "out", tmp_path / "log.txt", "--share")
    try:
        gallery, *_ = Client(server.url, verbose=False).predict(prompt="x", steps=2, seed=1,
                                                                api_name="/txt2img")
        assert len(gallery) == 1
    finally:
        stop_server(server)
    log = (tmp_path / "log.txt").read_text()
    assert "Anyone who has the public link" in log


def test_auth_protects_the_ui_and_the_api(tiny_model, tmp_path):
    server = start_server(tiny_model, tmp_path / "out", tmp_path / "log.txt", "--auth", "ann:secret")
    try:
        with pytest.raises(Exception):
            Client(server.url, verbose=False).predict(prompt="x", steps=2, api_name="/txt2img")
        client = Client(server.url, auth=("ann", "secret"), verbose=False)
        gallery, *_ = client.predict(prompt="x", steps=2, seed=1, api_name="/txt2img")
        assert len(gallery) == 1
    finally:
        stop_server(server)
