"""A shared link with logins (`--auth ann:pw --auth bob:pw2`): each login's work is its own. The
server decides who owns a job (the login), never a name the client sends: bob, logged in, calls
every Stop, cancel and Live switch of the page and A1111's interrupt and skip, naming ann's
sessions, while ann's jobs run; they finish whole."""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.request

import httpx
import pytest
from gradio_client import Client

from tests.conftest import start_server, stop_server

ANN, BOB = ("ann", "pw"), ("bob", "pw2")


@pytest.fixture(scope="module")
def shared(tiny_model, tmp_path_factory):
    base = tmp_path_factory.mktemp("logins")
    srv = start_server(tiny_model, base / "outputs", base / "server.log", "--auth", ":".join(ANN),
                       "--auth", ":".join(BOB))
    yield srv
    stop_server(srv)


def _basic(login: tuple[str, str]) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(":".join(login).encode()).decode()}


def _rest(srv, login, path: str, body: dict | None = None, method: str = "POST") -> dict:
    request = urllib.request.Request(srv.url + "sdapi/v1/" + path,
                                     data=json.dumps(body or {}).encode() if method == "POST" else None,
                                     headers={"Content-Type": "application/json", **_basic(login)}, method=method)
    with urllib.request.urlopen(request, timeout=300) as answer:
        text = answer.read()
    return json.loads(text) if text else {}


def _stop_events(srv, login) -> tuple[httpx.Client, list[tuple[int, list]]]:
    """A browser logged in as `login`, and every event of the page that stops, cancels or switches
    Live off, with the data each takes."""
    browser = httpx.Client(base_url=srv.url, timeout=30)
    assert browser.post("login", data={"username": login[0], "password": login[1]}).status_code == 200
    config = browser.get("config").json()
    events = []
    for i, dep in enumerate(config["dependencies"]):
        name = str(dep.get("api_name") or "")
        if any(word in name for word in ("stop", "cancel", "toggle")) and not name.startswith("train"):
            events.append((dep.get("id", i), [False, -1] if "toggle" in name else []))
    return browser, events


def _interfere(srv, sessions: list[str]) -> int:
    """bob calls every stopping event as each of `sessions`, and A1111's interrupt and skip."""
    browser, events = _stop_events(srv, BOB)
    calls = 0
    for session in sessions:
        for fn, data in events:
            answer = browser.post("gradio_api/run/predict", json={"fn_index": fn, "data": data,
                                                                  "session_hash": session})
            assert answer.status_code < 500, answer.text
            calls += 1
    for path in ("interrupt", "skip"):
        _rest(srv, BOB, path)
        calls += 1
    return calls


def test_another_login_cannot_stop_a_users_jobs_whatever_session_it_names(shared):
    ann_ui = Client(shared.url, auth=ANN, verbose=False)
    done: dict = {}

    def rest_job():
        done["rest"] = _rest(shared, ANN, "txt2img", {"prompt": "a red circle", "steps": 30, "n_iter": 6,
                                                      "width": 64, "height": 64, "seed": 1})

    def ui_job():
        done["ui"] = ann_ui.predict(prompt="a blue square", steps=30, batch_count=6, seed=2, api_name="/txt2img")

    workers = [threading.Thread(target=rest_job), threading.Thread(target=ui_job)]
    for w in workers:
        w.start()
    time.sleep(1.0)                            # both are queued or running
    calls = 0
    while any(w.is_alive() for w in workers) and calls < 400:
        calls += _interfere(shared, ["api:ann", "api", ann_ui.session_hash, "ann"])
    for w in workers:
        w.join(300)
    assert calls >= 20, calls                   # bob did try while ann's jobs ran
    info = json.loads(done["rest"]["info"])
    assert len(done["rest"]["images"]) == 6 and not info["interrupted"], info["notes"]
    assert len(done["ui"][0]) == 6


def test_a_user_still_stops_their_own_jobs(shared):
    """The control: ann's own interrupt stops her REST call (so the check above can fail)."""
    done: dict = {}
    job = threading.Thread(target=lambda: done.setdefault("rest", _rest(
        shared, ANN, "txt2img", {"prompt": "a red circle", "steps": 40, "n_iter": 12, "width": 64, "height": 64})))
    job.start()
    deadline = time.time() + 60
    while time.time() < deadline and not _rest(shared, ANN, "progress", method="GET")["state"]["sampling_step"]:
        time.sleep(0.05)
    _rest(shared, ANN, "interrupt")
    job.join(300)
    info = json.loads(done["rest"]["info"])
    assert info["interrupted"] and len(done["rest"]["images"]) < 12
