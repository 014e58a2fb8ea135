"""The synthetic shapes world (training data of the embedded model) and its pixel checker.

The checker is how prompt-following gets measured, so it must read the world's own pictures
perfectly, keep doing so through blur and noise, and give no credit to noise or empty images.
"""

from __future__ import annotations

import random
import re
from itertools import combinations

import numpy as np
import pytest
from PIL import Image, ImageFilter

from embedded.checker import Score, check, score_many
from embedded.world import (COLOURS, HELDOUT_COLOUR_BG, HELDOUT_PAIRS, POSITIONS, SHAPES,
                                SIZES, Obj, Scene, caption, full_caption, heldout_prompts,
                                make_dataset, object_box, position_phrase, render, sample_scene)

AXES = ("colour", "background", "position", "shape")


@pytest.fixture(scope="module")
def heldout() -> list[tuple[Scene, str]]:
    return heldout_prompts(200)


@pytest.fixture(scope="module")
def train_scenes() -> list[Scene]:
    rng = random.Random(123)
    return [sample_scene(rng, "train") for _ in range(2000)]


# ------------------------------------------------------------------------------- vocabulary

def test_vocabulary_shape():
    assert len(COLOURS) >= 10
    assert SHAPES == ("circle", "square", "triangle", "star", "ring")
    assert SIZES == ("small", "large")
    assert set(POSITIONS) == {"top left", "top", "top right", "left", "center", "right",
                              "bottom left", "bottom", "bottom right"}
    # Every pair of named colours is far apart, so nearest-colour reading is unambiguous.
    rgb = {k: np.array(v, float) for k, v in COLOURS.items()}
    closest = min(np.linalg.norm(rgb[a] - rgb[b]) for a, b in combinations(rgb, 2))
    assert closest > 90


def test_heldout_pairs_leave_every_colour_and_shape_in_training():
    assert len(HELDOUT_PAIRS) >= 8
    assert all(c in COLOURS and s in SHAPES for c, s in HELDOUT_PAIRS)
    assert all(a in COLOURS and b in COLOURS and a != b for a, b in HELDOUT_COLOUR_BG)
    for colour in COLOURS:
        assert any((colour, s) not in HELDOUT_PAIRS for s in SHAPES)
    for shape in SHAPES:
        assert any((c, shape) not in HELDOUT_PAIRS for c in COLOURS)


def test_every_object_stays_inside_the_image():
    for shape in SHAPES:
        for size in SIZES:
            for pos in POSITIONS:
                x0, y0, x1, y1 = object_box(Obj(shape, "red", size, pos))
                assert 0.02 < x0 < x1 < 0.98 and 0.02 < y0 < y1 < 0.98
                # The centre stays in its named 3x3 cell.
                cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
                px, py = POSITIONS[pos]
                assert int(cx * 3) == int(px * 3) and int(cy * 3) == int(py * 3)


# --------------------------------------------------------------------------------- sampling

def test_make_dataset_is_deterministic():
    a_img, a_cap, a_sc = make_dataset(50, seed=1)
    b_img, b_cap, b_sc = make_dataset(50, seed=1)
    assert a_img.dtype == np.uint8 and a_img.shape == (50, 64, 64, 3)
    assert np.array_equal(a_img, b_img) and a_cap == b_cap and a_sc == b_sc
    c_img, c_cap, _ = make_dataset(50, seed=2)
    assert not np.array_equal(a_img, c_img) and a_cap != c_cap
    small, _, _ = make_dataset(3, seed=1, size=32)
    assert small.shape == (3, 32, 32, 3)


def test_train_split_never_shows_heldout_combinations(train_scenes):
    pairs = set()
    for scene in train_scenes:
        for o in scene.objects:
            assert (o.colour, o.shape) not in HELDOUT_PAIRS
            assert (o.colour, scene.background) not in HELDOUT_COLOUR_BG
            assert o.colour != scene.background
            pairs.add((o.colour, o.shape))
    # Every allowed pair actually occurs, so the held-out ones are the only gaps.
    assert len(pairs) == len(COLOURS) * len(SHAPES) - len(HELDOUT_PAIRS)
    two = sum(len(s.objects) == 2 for s in train_scenes) / len(train_scenes)
    assert 0.2 < two < 0.4


def test_two_objects_never_overlap(train_scenes):
    doubles = [s for s in train_scenes if len(s.objects) == 2]
    assert doubles
    for scene in doubles:
        a, b = (object_box(o) for o in scene.objects)
        assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]
        assert scene.objects[0].position != scene.objects[1].position
    same = [(a.shape, a.colour) == (b.shape, b.colour) for a, b in (d.objects for d in doubles)]
    assert any(same) and not all(same)  # both "two yellow triangles" and mixed pairs occur


def test_heldout_split_and_prompts(heldout):
    rng = random.Random(0)
    for _ in range(200):
        scene = sample_scene(rng, "heldout")
        (o,) = scene.objects
        assert (o.colour, o.shape) in HELDOUT_PAIRS and o.colour != scene.background
    assert heldout == heldout_prompts(200)
    assert len(heldout) == 200 and len({p for _, p in heldout}) >= 150
    assert {(s.objects[0].colour, s.objects[0].shape) for s, _ in heldout} == HELDOUT_PAIRS
    for scene, prompt in heldout:
        (o,) = scene.objects
        assert (o.colour, o.shape) in HELDOUT_PAIRS
        for word in (o.size, o.colour, o.shape, f"{scene.background} background",
                     position_phrase(o.position)):
            assert word in prompt
        assert prompt in (full_caption(scene, 0), full_caption(scene, 1))
    from embedded.world import POSITIONS
    short = heldout_prompts(200, seed=2, position=False)
    assert {(s.objects[0].colour, s.objects[0].shape) for s, _ in short} == HELDOUT_PAIRS
    for scene, prompt in short:
        (o,) = scene.objects
        assert prompt.startswith(("a ", "an ")) and f"{o.colour} {o.shape} on a" in prompt
        assert prompt.endswith(f"{scene.background} background")
        assert not any(word in prompt.split() for p in POSITIONS for word in p.split() + ["middle", "corner", "side"])
    assert any(o.size in p for (s, p) in short for o in s.objects) and any(
        not p.split()[1] in ("small", "large") for _, p in short)
    _, caps, scenes = make_dataset(20, seed=0, split="heldout")
    assert all((s.objects[0].colour, s.objects[0].shape) in HELDOUT_PAIRS for s in scenes)


# --------------------------------------------------------------------------------- captions

def test_captions_name_every_object(train_scenes):
    rng = random.Random(7)
    seen = set()
    mentions = {"size": 0, "background": 0, "position": 0}
    singles = 0
    for scene in train_scenes[:1000]:
        text = caption(scene, rng)
        seen.add(text)
        assert text == text.strip() and "  " not in text
        assert not re.search(r"\ba [aeiou]", text), text
        for o in scene.objects:
            assert o.colour in text
            assert o.shape in text  # "triangles" contains "triangle"
        if len(scene.objects) == 2 and scene.objects[0].shape == scene.objects[1].shape \
                and scene.objects[0].colour == scene.objects[1].colour:
            assert text.startswith("two ")
        if len(scene.objects) == 1:
            singles += 1
            o = scene.objects[0]
            mentions["size"] += o.size in text
            mentions["background"] += f"{scene.background} background" in text
            mentions["position"] += any(w in text for w in ("top", "bottom", "left", "right",
                                                            "center", "middle"))
    # Extra attributes appear often but not always, so short prompts work too.
    for key, count in mentions.items():
        assert 0.55 < count / singles < 0.9, (key, count / singles)
    assert len(seen) > 800


def test_position_phrases():
    assert position_phrase("top left") == "in the top left corner"
    assert position_phrase("top") == "at the top"
    assert position_phrase("left") == "on the left"
    assert position_phrase("center") == "in the center"
    rng = random.Random(0)
    for pos in POSITIONS:
        for _ in range(5):
            phrase = position_phrase(pos, rng)
            assert all(word in phrase for word in pos.split()) or pos == "center"


def test_render_is_exact_and_deterministic():
    scene = Scene((Obj("circle", "red", "large", "center"),), "blue")
    img = render(scene)
    assert img.mode == "RGB" and img.size == (64, 64)
    arr = np.asarray(img)
    assert np.array_equal(arr, np.asarray(render(scene)))
    assert tuple(arr[32, 32]) == COLOURS["red"] and tuple(arr[1, 1]) == COLOURS["blue"]
    ring = np.asarray(render(Scene((Obj("ring", "red", "large", "center"),), "blue")))
    assert tuple(ring[32, 32]) == COLOURS["blue"]  # the hole shows the background
    assert tuple(ring[32, 32 + int(0.16 * 64)]) == COLOURS["red"]
    # Anti-aliased: edge pixels blend the two colours.
    assert len(np.unique(arr.reshape(-1, 3), axis=0)) > 2


# ---------------------------------------------------------------------------------- checker

def _degrade(img: Image.Image, rng: np.random.Generator) -> np.ndarray:
    blurred = np.asarray(img.filter(ImageFilter.GaussianBlur(1)), dtype=np.float32)
    return np.clip(blurred + rng.normal(0, 6, blurred.shape), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("size", [64, 128])
def test_checker_reads_clean_renders(heldout, size):
    scenes = [s for s, _ in heldout]
    result = score_many([render(s, size) for s in scenes], scenes)
    for axis in AXES + ("all",):
        assert result[axis] >= 0.97, result


def test_checker_reads_training_scenes_and_arrays():
    rng = random.Random(9)
    scenes = [sample_scene(rng, "train", max_objects=1) for _ in range(150)]
    images = np.stack([np.asarray(render(s)) for s in scenes])
    result = score_many(images, scenes)
    assert min(result.values()) >= 0.97, result
    # Float images in [0, 1] read the same.
    assert check(images[0].astype(np.float32) / 255, scenes[0]).all


def test_checker_tolerates_blur_and_noise(heldout):
    rng = np.random.default_rng(0)
    scenes = [s for s, _ in heldout]
    result = score_many([_degrade(render(s), rng) for s in scenes], scenes)
    for axis in AXES:
        assert result[axis] >= 0.9, result


def test_checker_rejects_mismatches():
    scene = Scene((Obj("star", "orange", "large", "top right"),), "blue")
    img = render(scene)
    s = check(img, scene)
    assert isinstance(s, Score) and s.all and s.found["shape"] == "star"
    wrong = Scene((Obj("circle", "green", "large", "bottom left"),), "white")
    s = check(img, wrong)
    assert not (s.colour or s.background or s.position or s.shape)
    for shape in SHAPES:  # each shape is told apart from every other
        truth = Scene((Obj(shape, "yellow", "small", "left"),), "purple")
        found = check(render(truth), truth).found
        assert found["shape"] == shape and found["position"] == "left", found


def test_checker_gives_noise_no_credit(heldout):
    rng = np.random.default_rng(0)
    scenes = [s for s, _ in heldout]
    noise = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in scenes]
    result = score_many(noise, scenes)
    assert result["colour"] < 0.3 and result["position"] < 0.3 and result["shape"] < 0.45
    assert result["all"] < 0.05


def test_checker_finds_nothing_in_flat_images(heldout):
    rng = np.random.default_rng(0)
    for scene, _ in heldout[:40]:
        flat = np.full((64, 64, 3), COLOURS[scene.background], dtype=np.float32)
        for img in (flat, flat + rng.normal(0, 8, flat.shape)):
            s = check(np.clip(img, 0, 255).astype(np.uint8), scene)
            assert s.background and not (s.colour or s.position or s.shape)
            assert s.found["object"] is False


def test_checker_only_takes_single_object_scenes():
    two = Scene((Obj("circle", "red", "small", "left"), Obj("star", "blue", "small", "right")),
                "white")
    with pytest.raises(ValueError):
        check(render(two), two)
    with pytest.raises(ValueError):
        score_many([render(two)], [])
