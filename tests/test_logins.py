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
from pathlib import Path

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
    calls, running = 0, []
    while True:
        running.append(any(w.is_alive() for w in workers))
        calls += _interfere(shared, ["api:ann", "api", ann_ui.session_hash, "ann"])
        if not any(w.is_alive() for w in workers) or calls >= 400:
            break
    for w in workers:
        w.join(300)
    assert running[0] and calls >= 20, (running, calls)      # bob did try while ann's jobs ran
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


def _logged_in(srv, login) -> httpx.Client:
    browser = httpx.Client(base_url=srv.url, timeout=60)
    assert browser.post("login", data={"username": login[0], "password": login[1]}).status_code == 200
    return browser


def test_each_login_has_its_own_pictures_history_and_files(shared):
    """Issue 38, finding 3 (and 2's file route): ann's pictures are in her space; bob's history
    does not list them and the file route does not serve them (nor the history index itself) to
    him, with the same answer as a file that is not there."""
    _rest(shared, ANN, "txt2img", {"prompt": "ann's secret garden", "steps": 2, "width": 64, "height": 64})
    Client(shared.url, auth=BOB, verbose=False).predict(prompt="bob's own picture", steps=2, api_name="/txt2img")
    ann_pictures = sorted((shared.outputs / "ann").rglob("*.png"))
    bob_pictures = sorted((shared.outputs / "bob").rglob("*.png"))
    assert ann_pictures and bob_pictures
    assert not [p for p in shared.outputs.glob("*/*.png")]               # nothing outside the spaces
    bob = Client(shared.url, auth=BOB, verbose=False)
    found = bob.predict(query="garden", page_size=100, api_name="/history_search")
    assert found["total"] == 0
    mine = bob.predict(query="own", page_size=100, api_name="/history_search")
    assert mine["total"] >= 1 and all("/bob/" in p["file"] for p in mine["pictures"])
    ann = Client(shared.url, auth=ANN, verbose=False)
    assert ann.predict(query="garden", api_name="/history_search")["total"] == 1
    assert all("/ann/" in row["file"] for row in ann.predict(100, api_name="/history"))
    browser = _logged_in(shared, BOB)
    for path, status in ((ann_pictures[0], 404), (shared.outputs / ".history.sqlite", 404),
                         (shared.outputs / "ann" / "no-such.png", 404), (bob_pictures[0], 200)):
        answer = browser.get(f"gradio_api/file={path}")
        assert answer.status_code == status, (path, answer.status_code)
    assert _logged_in(shared, ANN).get(f"gradio_api/file={ann_pictures[0]}").status_code == 200


def test_the_api_docs_need_a_login_too(shared):
    for path in ("docs", "openapi.json"):
        assert httpx.get(shared.url + path).status_code == 401
        assert httpx.get(shared.url + path, headers=_basic(BOB)).status_code == 200


def test_training_files_loras_datasets_and_animations_are_the_owners(tmp_path):
    """Issue 38, findings 2 and 3 below the server: a training job's files are served to its owner
    only; a login's LoRA is in a folder of its own (bob's 'azure' cannot overwrite ann's) and its
    datasets too; another login's animation is not found, as one that is not there."""
    from studio.finetune.jobs import LOCAL, TrainingJobs, lora_name
    from studio.ui.files import may_read
    root = tmp_path / "outputs"
    job = root / "training" / "azure-20261206-000000"
    (job / "samples").mkdir(parents=True)
    (job / "job.json").write_text(json.dumps({"owner": "ann"}))
    picture, state = job / "samples" / "0.png", job / "state.pt"
    assert may_read(root, picture, "ann", True) and not may_read(root, picture, "bob", True)
    assert not may_read(root, state, "bob", True) and not may_read(root, picture, None, True)
    assert may_read(root, root / "ann" / "2026-12-06" / "1.png", "ann", True)
    assert not may_read(root, root / "ann" / "2026-12-06" / "1.png", "bob", True)
    assert not may_read(root, root / ".history.sqlite", "ann", True)
    assert not may_read(root, root / ".history.sqlite", None, False)          # hidden: never
    assert may_read(root, root / "2026-12-06" / "1.png", None, False)          # no logins: as before
    assert may_read(root, tmp_path / "elsewhere.png", "bob", True)              # not ours to say
    assert lora_name("azure", "ann") == "ann/azure" != lora_name("azure", "bob") and lora_name("azure", LOCAL) == "azure"
    jobs = TrainingJobs(root / "training", tmp_path / "models", tmp_path / "datasets")
    assert jobs.datasets_of("ann") != jobs.datasets_of("bob") and jobs.datasets_of(LOCAL) == tmp_path / "datasets"


def test_another_logins_animation_is_not_found(tmp_path):
    from studio.animation.start import begin, reopen
    from studio.config import Settings
    from studio.errors import InvalidRequest
    from studio.serving.studio import Studio
    studio = Studio.from_settings(Settings(outputs=tmp_path, auth=[ANN, BOB]))
    made = begin(studio, dict(mode="preview", frames=2, formats=[]), user="ann")
    assert made.folder.parent == tmp_path / "ann" / "animations"
    assert reopen(studio, made.folder.name, "ann").folder == made.folder
    with pytest.raises(InvalidRequest) as hers:
        reopen(studio, made.folder.name, "bob")
    with pytest.raises(InvalidRequest) as nothing:
        reopen(studio, "20990101-000000-1", "bob")
    assert str(hers.value).replace(made.folder.name, "X") == str(nothing.value).replace("20990101-000000-1", "X")


def test_eight_logins_at_once_each_get_their_own_and_only_their_own():
    """bench/shared.py's run, small: 8 logins mixing the tab API, REST txt2img, a two-picture REST
    img2img and Live at once; every call done, every picture in its owner's space, every history
    answer its login's own. (The memory figures are the benchmark's to print.)"""
    from bench.shared import run
    from tests.conftest import free_port
    result = run(logins=8, rounds=1, steps=2, port=free_port())
    assert result["errors"] == [] and result["done"] == result["calls"] == 32
    assert result["isolation"] == []


def test_a_login_named_like_the_outputs_folders_own_gets_a_space_apart():
    from studio.outputs.folder import space_name
    from studio.ui.files import may_read
    assert space_name("training") == "_training" and space_name("2026-12-06") == "_2026-12-06"
    assert "/" not in space_name("../ann") and not space_name(".hidden").startswith(".")
    root = Path("/srv/outputs")
    assert not may_read(root, root / "training" / "job" / "state.pt", "training", True)
