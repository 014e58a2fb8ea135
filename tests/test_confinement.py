"""Nothing a user sends reads or writes outside the studio's folders: file arguments given as
server paths, ../ and absolute paths, symlinks out of the outputs folder; only outputs are served."""

from __future__ import annotations

import os
import urllib.error
import urllib.request

import pytest
from gradio_client import Client

SECRET = "top secret contents"


@pytest.fixture(scope="module")
def secret(tmp_path_factory):
    path = tmp_path_factory.mktemp("private") / "secret.png"
    path.write_text(SECRET)
    return path


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.mark.parametrize("arg", ["/etc/passwd", "../../../../etc/passwd", "SECRET"])
def test_server_paths_as_file_arguments_are_refused(server, secret, arg):
    client = Client(server.url, verbose=False)
    value = str(secret) if arg == "SECRET" else arg
    for kwargs in ({"api_name": "/img2img", "image": value, "prompt": "x"},
                   {"api_name": "/txt2img", "prompt": "x {image}", "references": [value]}):
        with pytest.raises(Exception) as info:
            client.predict(steps=1, **kwargs)
        assert SECRET not in str(info.value)


def test_only_the_outputs_folder_is_served(server, secret):
    # a file of the project and one outside it, by every spelling
    for target in [str(secret), "/etc/passwd", os.path.abspath("app.py"), "../app.py",
                   str(server.outputs / ".." / "server.log")]:
        status, body = _get(f"{server.url}gradio_api/file={target}")
        assert status >= 400 and SECRET.encode() not in body, target
    # a symlink planted in the outputs folder that leads out of it
    server.outputs.mkdir(parents=True, exist_ok=True)
    link = server.outputs / "link.png"
    if not link.exists():
        os.symlink(secret, link)
    status, body = _get(f"{server.url}gradio_api/file={link}")
    assert SECRET.encode() not in body
