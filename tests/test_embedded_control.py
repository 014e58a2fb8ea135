"""The embedded model's own scribble ControlNet: its training (embedded/controlnet.py) as a smoke
run that resumes exactly and exports a folder the studio lists; its world (embedded/scribbles.py);
and the shipped one (assets/embedded-model/controlnet-scribble) in the studio: listed as any
ControlNet, and a scribble drawn on the pad puts the object where it was drawn, in a tab and live."""

from __future__ import annotations

import copy
import random
import shutil

import numpy as np
import pytest
import torch

from embedded.checker import check
from embedded.scribbles import STAR_HOLDOUT, Placed, in_star_holdout, make_examples, render_placed, scribble
from embedded.world import Obj, Scene
from studio.config import EMBEDDED_MODEL, Settings
from studio.models.library import ModelLibrary
from studio.models.sources import CONTROL_FOLDER, CONTROL_NAME

SHIPPED = (EMBEDDED_MODEL / CONTROL_FOLDER / "config.json").is_file()


@pytest.fixture(autouse=True)
def threads_as_they_were():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


# -- the world it learns from ------------------------------------------------------------------------

def test_scribbles_outline_the_shape_the_picture_shows_and_no_training_star_is_in_the_held_out_disc():
    pictures, scribbles, captions, placed = make_examples(300, seed=11)
    assert not any(p.shape == "star" and in_star_holdout(p.cx, p.cy) for p in placed)
    for picture, lines, p in list(zip(pictures, scribbles, placed))[:40]:
        assert set(np.unique(lines)) <= {0, 255} and lines.mean() > 0
        ys, xs = np.nonzero(lines)
        # the strokes surround the object: their box is the shape's box, within the stroke and wobble
        found = check(picture, Scene((Obj(p.shape, p.colour, "small", "center"),), p.background)).found
        cx, cy = found["centroid"]
        assert xs.min() <= cx * 64 <= xs.max() and ys.min() <= cy * 64 <= ys.max()
        assert abs((xs.max() - xs.min()) / 2 - p.r * 64) < 0.35 * p.r * 64 + 3
    assert {c == "" for c in captions} == {True, False}
    assert any("background" in c and not any(s in c for s in ("circle", "star", "ring")) for c in captions)


def test_a_drawn_stroke_is_deterministic_from_its_seed():
    p = Placed("star", "cyan", "black", 0.6, 0.3, 0.15)
    a = scribble(p, 64, random.Random(5))
    assert np.array_equal(a, scribble(p, 64, random.Random(5)))
    assert not np.array_equal(a, scribble(p, 64, random.Random(6), wobble=0.06))


# -- the training command ---------------------------------------------------------------------------

def smoke(steps: int):
    from embedded.controlnet import SMOKE
    cfg = copy.copy(SMOKE)
    cfg.steps, cfg.checkpoint_every = steps, 3
    return cfg


def test_the_training_resumes_exactly_and_exports_a_controlnet_the_studio_lists(tmp_path, monkeypatch):
    from embedded.controlnet import export, train
    straight = train(smoke(6), EMBEDDED_MODEL, tmp_path / "straight")
    monkeypatch.setenv("STUDIO_TRAIN_INTERRUPT_AT", "3")
    with pytest.raises(KeyboardInterrupt):
        train(smoke(6), EMBEDDED_MODEL, tmp_path / "resumed")
    monkeypatch.delenv("STUDIO_TRAIN_INTERRUPT_AT")
    resumed = train(smoke(6), EMBEDDED_MODEL, tmp_path / "resumed")
    a = torch.load(tmp_path / "straight" / "controlnet.pt", weights_only=False)
    b = torch.load(tmp_path / "resumed" / "controlnet.pt", weights_only=False)
    assert a["losses"] == b["losses"] and len(a["losses"]) == 6 and all(np.isfinite(a["losses"]))
    for name, tensor in straight["controlnet"].state_dict().items():
        assert torch.equal(tensor, resumed["controlnet"].state_dict()[name]), name

    model = tmp_path / "model"
    shutil.copytree(EMBEDDED_MODEL, model, ignore=shutil.ignore_patterns(CONTROL_FOLDER))
    export(straight["controlnet"], straight["record"], model, "python -m embedded.controlnet --smoke")
    from diffusers import ControlNetModel
    from safetensors.torch import load_file
    stored = load_file(model / CONTROL_FOLDER / "diffusion_pytorch_model.safetensors")
    assert {t.dtype for t in stored.values()} == {torch.float16}
    net = ControlNetModel.from_pretrained(model / CONTROL_FOLDER)
    assert net.config.cross_attention_dim == 64
    # the evaluation runs on it and writes its card
    from embedded.evaluate_control import main
    figures = main(["--model", str(model), "--n", "3", "--stars", "2", "--card"])
    assert 0 <= figures["with the scribble"]["shape and place"] <= 1
    card = (model / CONTROL_FOLDER / "README.md").read_text()
    assert "| with the scribble |" in card and "--smoke" in card


# -- the shipped model in the studio -------------------------------------------------------------

shipped = pytest.mark.skipif(not SHIPPED, reason="assets/embedded-model/controlnet-scribble is not built yet")


@shipped
def test_the_studio_lists_it_beside_the_users_controlnets_and_it_is_no_part_of_the_models_hash(tmp_path):
    from studio.models.hashes import _model_files
    (tmp_path / "controlnet").mkdir()
    library = ModelLibrary(tmp_path)
    assert CONTROL_NAME in library.names()["controlnet"]
    assert library.get("controlnet", CONTROL_NAME).path == EMBEDDED_MODEL / CONTROL_FOLDER
    assert not any(name.startswith(CONTROL_FOLDER) for name, _ in _model_files(EMBEDDED_MODEL, None))


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    from studio.serving.studio import Studio
    root = tmp_path_factory.mktemp("embedded-control")
    return Studio.from_settings(Settings(models_dir=root / "models", outputs=root / "outputs"))


STAR = Placed("star", "cyan", "black", *STAR_HOLDOUT[:2], 0.16)      # where training drew no star


def _centroid(picture: np.ndarray) -> tuple[float, float] | None:
    found = check(picture, Scene((Obj("star", "cyan", "small", "center"),), "black")).found
    return found.get("centroid"), found.get("shape")


@shipped
def test_stars_drawn_on_the_pad_land_where_they_were_drawn_and_inverted_paper_is_the_same(studio):
    """Six of the evaluation's held-out stars (drawn where no training star was), through the studio's
    own request path: every one lands where drawn, most are star-shaped (the card measures 67.5%),
    and the prompt alone puts the object elsewhere."""
    from embedded.evaluate_control import stars_in_holdout, verdict
    from embedded.scribbles import colour_caption
    drawn, star_shaped, alone_placed = [], 0, 0
    for seed, (p, lines) in enumerate(stars_in_holdout(6), start=5):
        pad = np.repeat(lines[..., None], 3, axis=2)
        base = {"prompt": colour_caption(p), "width": 64, "height": 64, "steps": 20, "cfg_scale": 5.0, "seed": seed}
        made = studio.make_request("txt2img", **base, control=[{"model": CONTROL_NAME, "module": "none", "image": pad}])
        v = verdict(studio.local.run(made).images[0].image, p)
        assert v["placed"], (p, v)
        star_shaped += v["shape"]
        alone_placed += verdict(studio.local.run(studio.make_request("txt2img", **base)).images[0].image, p)["placed"]
        drawn.append((base, pad))
    assert star_shaped >= 3 and alone_placed <= 1
    base, pad = drawn[0]
    unit = {"model": CONTROL_NAME, "module": "none", "image": pad}
    paper = {**unit, "module": "invert", "image": 255 - pad}
    on_paper = studio.local.run(studio.make_request("txt2img", **base, control=[paper])).images[0].image
    on_pad = studio.local.run(studio.make_request("txt2img", **base, control=[unit])).images[0].image
    assert np.abs(np.asarray(on_paper, np.int16) - np.asarray(on_pad, np.int16)).mean() < 1.0


@shipped
def test_live_with_the_scribble_puts_the_object_there_too(studio):
    pad = np.repeat(scribble(STAR, 64, random.Random(1), width=2.0, wobble=0.03)[..., None], 3, axis=2)
    want, _ = _centroid(np.asarray(render_placed(STAR)))
    made = studio.make_request("txt2img", prompt="cyan, black background", width=64, height=64, seed=12,
                               control=[{"model": CONTROL_NAME, "module": "none", "image": pad}])
    result = studio.live(made, user="", session="s")
    got, _ = _centroid(np.asarray(result.images[0].image))
    assert got is not None and np.hypot(got[0] - want[0], got[1] - want[1]) * 64 <= 8


def test_a_models_name_picks_its_preprocessor_and_a_drawing_needs_none():
    from studio.control.preprocessors import suggested
    assert suggested(CONTROL_NAME, drawn=True) == "none"
    assert suggested(CONTROL_NAME, drawn=False) == "scribble_xdog"
    assert suggested("control_v11p_sd15_canny.safetensors", drawn=True) == "canny"
    assert suggested("my-own-net", drawn=False) is None and suggested(None, drawn=False) is None
