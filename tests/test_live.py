"""Live mode (studio/live, the dispatcher's live lane) and the embedded model's few-step student
as a model of its own: latest wins per session, nobody starved by someone typing, live pictures
held and not saved until kept, the same picture as the same request generated."""

from __future__ import annotations

import numpy as np
import pytest

from studio.config import EMBEDDED_MODEL
from studio.requests import make_request
from studio.serving.dispatcher import Dispatcher
from tests.test_dispatcher import Gate, _fill


def test_latest_wins_one_live_job_waiting_per_session():
    """While the first job runs, a session types three times: the first two live jobs are replaced
    (they end stopped, never run), the newest runs, and it runs unsaved."""
    gate = Gate()
    d = Dispatcher(gate, max_queued=8)
    running = _fill(d, gate, [("cy", "cy running")])[0]
    typed = [d.submit(make_request(prompt=f"a red {w}"), user="ann", session="s-ann", lane="live")
             for w in ("c", "ci", "circle")]
    assert [j.request.prompt for j in d.order()] == ["a red circle"]
    assert all(j.result(timeout=5).stopped for j in typed[:2])
    gate.release.set()
    assert not typed[2].result(timeout=10).stopped and running.result(timeout=10)
    assert gate.ran == ["cy running", "a red circle"] and gate.saved == [True, False]
    assert not d.stopped_since("s-ann", 0, "ann")          # replaced is not a Stop press


def test_someone_typing_does_not_starve_queued_jobs():
    """ann types without pause (each live picture, as it starts, already has a newer one waiting)
    while bob has three jobs queued: they take turns, so bob's last job runs before ann's fourth
    picture (a lane that always went first would make bob wait until ann stops typing)."""
    import threading
    from studio.requests import GenerationResult
    hold, ran = threading.Event(), []

    def backend(request, save=True, **_):
        ran.append(request.prompt)
        hold.wait(10)
        kind, n = request.prompt.split()
        if kind == "live" and int(n) < 12:
            d.submit(make_request(prompt=f"live {int(n) + 1}"), user="ann", session="s-ann", lane="live")
        return GenerationResult(request=request, images=[], seed=0)

    d = Dispatcher(backend, max_queued=8)
    jobs = [d.submit(make_request(prompt="cy 0"), user="cy")]
    jobs += [d.submit(make_request(prompt=f"bob {i}"), user="bob") for i in range(3)]
    d.submit(make_request(prompt="live 0"), user="ann", session="s-ann", lane="live")
    hold.set()
    for job in jobs:
        job.result(timeout=10)
    assert ran.index("bob 2") < ran.index("live 3"), ran
    assert ran[:6] == ["cy 0", "bob 0", "live 0", "bob 1", "live 1", "bob 2"], ran


def test_live_off_cancels_without_a_stop_and_live_jobs_are_not_rate_limited():
    gate = Gate()
    d = Dispatcher(gate, max_queued=8, jobs_per_minute=2)
    _fill(d, gate, [("cy", "cy running")])
    waiting = d.submit(make_request(prompt="typed"), user="ann", session="s-ann", lane="live")
    queued = d.submit(make_request(prompt="generate"), user="ann", session="s-ann")
    d.stop_live("s-ann", "ann")
    assert waiting.result(timeout=5).stopped and queued.state == "queued"
    assert not d.stopped_since("s-ann", 0, "ann")
    for i in range(4):           # more than the 2 jobs a minute: live jobs are bounded by latest-wins
        d.submit(make_request(prompt=f"typed {i}"), user="ann", session="s-ann", lane="live")
    with pytest.raises(ValueError):
        d.submit(make_request(prompt="x"), user="ann", lane="fast")
    gate.release.set()


def test_a_live_picture_is_held_kept_with_its_metadata_and_equals_the_same_request(studio):
    outputs = studio.local.outputs.root
    before = set(outputs.rglob("*.png")) if outputs.exists() else set()
    req = make_request(prompt="a red circle", steps=3, seed=7, width=64, height=64)
    live = studio.live(req, user="ann", session="s-ann")
    picture = live.images[0]
    assert picture.path is None and "Seed: 7" in picture.parameters
    assert (set(outputs.rglob("*.png")) if outputs.exists() else set()) == before     # nothing written
    kept = studio.keep(picture)
    from studio.outputs.metadata import read_metadata
    parameters, data = read_metadata(kept)
    assert parameters == picture.parameters and data == picture.data
    generated = studio.submit(req, user="ann").result(timeout=60).images[0]
    assert np.array_equal(np.asarray(generated.image), np.asarray(picture.image))


student = pytest.mark.skipif(not (EMBEDDED_MODEL / "lcm-unet" / "config.json").is_file(),
                             reason="the embedded model's student (assets/embedded-model/lcm-unet) is not built")


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    from studio.config import Settings
    from studio.serving.studio import Studio
    return Studio.from_settings(Settings(model="", outputs=tmp_path_factory.mktemp("outputs")))


@student
def test_the_student_is_a_model_of_its_own_with_few_step_defaults(embedded):
    from studio.models.hashes import model_sha256
    from studio.models.sources import STUDENT
    assert STUDENT in embedded.model_choices()
    teacher_hash = model_sha256(EMBEDDED_MODEL)
    info = embedded.select_model(STUDENT)
    assert embedded.current_choice() == STUDENT and info.name == STUDENT
    few = info.few_step
    assert (few.sampler, few.steps, few.guidance_embedded) == ("LCM", 4, True) and 3 <= few.cfg <= 9
    assert embedded.local.manager.model_sha256() != teacher_hash
    req = dict(prompt="a red circle on a blue background", scheduler=few.sampler, steps=few.steps,
               cfg_scale=few.cfg, seed=5)
    first = embedded.live(embedded.make_request("txt2img", **req), user="a", session="s").images[0]
    again = embedded.live(embedded.make_request("txt2img", **req), user="a", session="s").images[0]
    inert = embedded.live(embedded.make_request("txt2img", **req, negative_prompt="red, circle"),
                          user="a", session="s").images[0]
    assert np.array_equal(np.asarray(first.image), np.asarray(again.image))
    assert np.array_equal(np.asarray(first.image), np.asarray(inert.image))   # the negative has no effect
    assert f"Model: {STUDENT}" in first.parameters and "Sampler: LCM" in first.parameters
    assert embedded.local.manager.pipeline("txt2img").unet.config.time_cond_proj_dim
    embedded.select_model("")
    assert embedded.model_info().few_step is None and embedded.local.manager.model_sha256() == teacher_hash


@student
def test_the_rest_api_lists_the_student_under_its_own_hash(embedded):
    from studio.api.catalog import find_checkpoint, sd_models
    from studio.models.library import EMBEDDED
    from studio.models.sources import STUDENT
    listed = {m["title"].split(" [")[0]: m for m in sd_models(embedded)}
    assert listed[STUDENT]["sha256"] and listed[STUDENT]["sha256"] != listed[EMBEDDED]["sha256"]
    assert find_checkpoint(embedded, listed[STUDENT]["title"]) == STUDENT
    assert find_checkpoint(embedded, listed[STUDENT]["hash"]) == STUDENT


@pytest.mark.parametrize("mode", ["img2img", "inpaint"])
def test_a_live_picture_follows_the_canvas_and_equals_the_same_request(studio, mode):
    """The img2img and inpainting tabs' live path (`live_picture`, what their Live switch calls
    on every canvas change): another picture on the canvas gives another live picture, and each
    equals what the same request makes when generated; nothing is written until Keep."""
    from PIL import Image
    from studio.ui.live import live_picture
    outputs = studio.local.outputs.root
    before = set(outputs.rglob("*.png")) if outputs.exists() else set()
    mask = {"mask": Image.new("L", (64, 64), 255)} if mode == "inpaint" else {}
    fields = dict(prompt="a red circle", steps=3, seed=7, width=64, height=64, strength=0.6, **mask)
    canvases = [Image.new("RGB", (64, 64), colour) for colour in ("navy", "yellow")]
    held = []
    for canvas in canvases:
        result, seconds = live_picture(studio, mode, {**fields, "image": canvas}, None)
        held.append(np.asarray(result.images[0].image))
        assert result.images[0].path is None and seconds > 0
    assert not np.array_equal(held[0], held[1])
    assert (set(outputs.rglob("*.png")) if outputs.exists() else set()) == before
    generated = studio.submit(studio.make_request(mode, image=canvases[1], model=studio.current_choice(), **fields),
                              user="ann").result(timeout=60).images[0]
    assert np.array_equal(np.asarray(generated.image), held[1])
