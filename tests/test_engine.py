"""The engine on a real tiny diffusers pipeline: every tab, seeds, schedulers, presets, masks."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from PIL import Image

from studio.errors import InvalidRequest
from studio.outputs.metadata import parse_parameters, read_metadata
from studio.requests import make_request
from studio.samplers import SCHEDULERS


def run(studio, **kw):
    return studio.local.run(make_request(**kw))


def pixels(image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def test_txt2img_saves_png_with_metadata(studio):
    result = run(studio, prompt="a red circle", negative_prompt="blue", seed=42, steps=3)
    (img,) = result.images
    assert img.path.suffix == ".png" and img.path.is_file()
    assert img.image.size == (64, 64)  # the tiny model's native size
    parameters, data = read_metadata(img.path)
    prompt, negative, fields = parse_parameters(parameters)
    assert (prompt, negative) == ("a red circle", "blue")
    assert fields["Seed"] == "42" and fields["Steps"] == "3" and fields["Size"] == "64x64"
    assert fields["Sampler"] == "DPM++ 2M" and fields["Schedule type"] == "Karras"
    assert data["seed"] == 42 and data["device"] == "cpu" and data["dtype"] == "float32"
    assert data["scheduler"]["class"] == "DPMSolverMultistepScheduler"
    assert data["scheduler"]["config"]["use_karras_sigmas"] is True
    assert {"torch", "diffusers", "transformers"} <= set(data["versions"])
    # The saved file holds exactly the pixels that were returned.
    assert np.array_equal(pixels(Image.open(img.path)), pixels(img.image))


def test_same_seed_same_pixels_other_seed_differs(studio):
    a = run(studio, prompt="a cat", seed=7, steps=3).images[0].image
    b = run(studio, prompt="a cat", seed=7, steps=3).images[0].image
    c = run(studio, prompt="a cat", seed=8, steps=3).images[0].image
    assert np.array_equal(pixels(a), pixels(b))
    assert not np.array_equal(pixels(a), pixels(c))


def test_metadata_reproduces_the_image(studio):
    first = run(studio, prompt="a green star", seed=1234, steps=4, scheduler="Euler a", cfg_scale=5)
    _, data = read_metadata(first.images[0].path)
    again = studio.local.run(make_request(**{k: v for k, v in data["request"].items() if k != "mode"}))
    assert np.array_equal(pixels(first.images[0].image), pixels(again.images[0].image))


def test_batches_get_consecutive_seeds_and_random_seed_is_recorded(studio):
    result = run(studio, prompt="dots", seed=100, steps=2, batch_size=2, batch_count=2)
    assert [g.seed for g in result.images] == [100, 101, 102, 103]
    assert len({g.path for g in result.images}) == 4
    # A batch image is the image of its own seed: batch position 1 == seed 101 alone.
    alone = run(studio, prompt="dots", seed=101, steps=2).images[0].image
    diff = np.abs(pixels(alone) - pixels(result.images[1].image)).max()
    assert diff <= 2, diff  # batched vs single matmuls may differ by rounding only
    rnd = run(studio, prompt="dots", seed=-1, steps=2)
    assert 0 <= rnd.seed < 2**32 and rnd.images[0].seed == rnd.seed
    assert read_metadata(rnd.images[0].path)[1]["seed"] == rnd.seed


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_every_scheduler_builds_and_generates(studio, name):
    result = run(studio, prompt="a square", seed=3, steps=3, scheduler=name)
    img = result.images[0]
    arr = pixels(img.image)
    assert arr.shape == (64, 64, 3) and arr.std() > 0
    _, data = read_metadata(img.path)
    assert data["scheduler"]["class"] == SCHEDULERS[name].cls


def test_scheduler_table_matches_the_model_compatibles(studio):
    compatible = {c.__name__ for c in studio.local.manager.base().scheduler.compatibles}
    # LCM and TCD (few-step samplers) are not listed by diffusers but build with from_config and
    # generate (test_every_scheduler_builds_and_generates); all others must be.
    assert {s.cls for s in SCHEDULERS.values()} - {"LCMScheduler", "TCDScheduler"} <= compatible


def test_scheduler_is_per_request_not_shared(studio):
    shared = studio.local.manager.pipeline("txt2img")
    before = type(shared.scheduler).__name__
    run(studio, prompt="x", seed=1, steps=2, scheduler="Heun")
    assert type(shared.scheduler).__name__ == before


def test_negative_preset_reaches_the_text_encoder(studio):
    pipe = studio.local.manager.base()
    seen: list[str] = []
    hook = pipe.text_encoder.register_forward_pre_hook(
        lambda module, args, kwargs=None: seen.extend(pipe.tokenizer.batch_decode(args[0])),
        with_kwargs=False)
    try:
        result = run(studio, prompt="a hand", seed=5, steps=2, negative_presets=["bad hands"])
    finally:
        hook.remove()
    terms = studio.local.presets.negatives["bad hands"].terms
    assert any(terms.split(",")[0] in text for text in seen), seen
    assert terms in result.images[0].data["negative_prompt"]
    plain = run(studio, prompt="a hand", seed=5, steps=2).images[0].image
    assert not np.array_equal(pixels(plain), pixels(result.images[0].image))


def test_style_template_wraps_the_prompt(studio):
    result = run(studio, prompt="a lighthouse", seed=5, steps=2, style="Watercolor")
    expected = studio.local.presets.styles["Watercolor"].apply("a lighthouse")
    assert result.images[0].data["prompt"] == expected
    assert result.images[0].data["request"]["prompt"] == "a lighthouse"


def test_img2img_strength_zero_returns_the_input(studio):
    src = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    result = run(studio, mode="img2img", image=src, prompt="x", strength=0.0, seed=1)
    assert np.array_equal(pixels(result.images[0].image), pixels(src))
    assert read_metadata(result.images[0].path)[1]["request"]["strength"] == 0.0


def test_img2img_changes_the_image_and_keeps_size(studio):
    src = Image.new("RGB", (96, 64), (200, 30, 30))
    result = run(studio, mode="img2img", image=src, prompt="x", strength=0.6, seed=1, steps=5)
    out = result.images[0].image
    assert out.size == (96, 64)
    assert not np.array_equal(pixels(out), pixels(src))
    fields = parse_parameters(result.images[0].parameters)[2]
    assert fields["Denoising strength"] == "0.6"


def _image_and_mask(size=(100, 70), box=(30, 20, 60, 50)):
    rng = np.random.default_rng(1)
    image = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    mask = Image.new("L", size, 0)
    mask.paste(255, box)
    return image, mask


@pytest.mark.parametrize("only_masked", [False, True])
def test_inpaint_keeps_unmasked_pixels_exactly(studio, only_masked):
    image, mask = _image_and_mask()
    result = run(studio, mode="inpaint", image=image, mask=mask, prompt="blue", seed=2, steps=4,
                 mask_blur=0, strength=1.0, only_masked=only_masked, only_masked_padding=8)
    out = pixels(result.images[0].image)
    src = pixels(image)
    assert out.shape == src.shape  # pasted back at the input's own size (100x70, not /8)
    outside = np.asarray(mask) == 0
    assert np.array_equal(out[outside], src[outside])
    inside = ~outside
    assert np.abs(out[inside] - src[inside]).mean() > 10  # the masked part was repainted


def test_inpaint_with_blur_changes_only_the_blurred_region(studio):
    image, mask = _image_and_mask()
    result = run(studio, mode="inpaint", image=image, mask=mask, prompt="blue", seed=2, steps=3,
                 mask_blur=4)
    out, src = pixels(result.images[0].image), pixels(image)
    far = np.ones(src.shape[:2], bool)
    far[20 - 12:50 + 12, 30 - 12:60 + 12] = False  # beyond 3 blur radii of the painted box
    assert np.array_equal(out[far], src[far])


def test_inpaint_model_with_9_channels_is_used_by_inpaint_only(tiny_inpaint_model, tmp_path):
    from studio.config import Settings
    from studio.serving.studio import Studio
    s = Studio.from_settings(Settings(model=str(tiny_inpaint_model), outputs=tmp_path))
    assert s.model_info().in_channels == 9 and s.model_info().inpaint_only
    image, mask = _image_and_mask((64, 64), (16, 16, 48, 48))
    result = s.local.run(make_request(mode="inpaint", image=image, mask=mask, prompt="x", seed=1,
                                steps=3, mask_blur=0))
    assert type(s.local.manager.pipeline("inpaint")).__name__ == "StableDiffusionInpaintPipeline"
    assert s.local.manager.pipeline("inpaint").unet.config.in_channels == 9
    out = pixels(result.images[0].image)
    outside = np.asarray(mask) == 0
    assert np.array_equal(out[outside], pixels(image)[outside])
    with pytest.raises(InvalidRequest, match="inpainting model"):
        s.local.run(make_request(prompt="x", steps=2))


def test_stop_keeps_finished_images(studio):
    calls = {"steps": 0}

    def on_step(done, total):
        calls["steps"] = done

    # Stop as soon as the second image's batch has started: the first image is kept.
    result = studio.local.run(make_request(prompt="x", seed=1, steps=3, batch_count=3),
                        on_step=on_step, should_stop=lambda: calls["steps"] >= 4)
    assert result.stopped
    assert len(result.images) == 1 and result.images[0].path.is_file()
    assert any("Stopped" in n for n in result.notes)


def test_progress_reports_every_step(studio):
    seen = []
    studio.local.run(make_request(prompt="x", seed=1, steps=4, batch_count=2),
               on_step=lambda d, t: seen.append((d, t)))
    assert seen == [(i, 8) for i in range(1, 9)]


def test_size_not_a_multiple_of_eight_is_refused(studio):
    with pytest.raises(InvalidRequest, match="multiple of 8"):
        make_request(prompt="x", width=100, height=64)


def test_non_native_size_generates_that_size(studio):
    result = run(studio, prompt="x", seed=1, steps=2, width=96, height=72)
    assert result.images[0].image.size == (96, 72)


def test_the_model_hash_is_read_once_not_per_image(studio, monkeypatch, tmp_path):
    """A1111's Model hash of a multi-GB checkpoint must not be recomputed for every image: the
    manager keeps it per load, and each file is read once per (path, size, mtime)."""
    import studio.models.hashes as hashes
    first = run(studio, prompt="x", steps=1, seed=1).images[0].data["model"]["hash"]
    opened = []
    real_open = open
    monkeypatch.setattr(hashes, "open", lambda *a, **k: opened.append(a[0]) or real_open(*a, **k), raising=False)
    for seed in (2, 3):
        assert run(studio, prompt="x", steps=1, seed=seed).images[0].data["model"]["hash"] == first
    assert opened == []
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"0123")
    assert hashes.model_hash(weights) == hashes.model_hash(weights) == hashlib.sha256(b"0123").hexdigest()[:10]
    assert opened == [weights]                 # read once
    weights.write_bytes(b"01234")              # a changed file is read again
    assert hashes.model_hash(weights) == hashlib.sha256(b"01234").hexdigest()[:10]


def test_large_files_are_not_hashed_again_after_a_restart(monkeypatch, tmp_path):
    """Hashes of large files are kept in .cache/hashes.json (as A1111's cache.json), so a restart
    does not read a multi-GB checkpoint again."""
    import studio.models.hashes as hashes
    monkeypatch.setenv("STUDIO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(hashes, "DISK_MIN_BYTES", 4)
    monkeypatch.setattr(hashes, "_CACHE", {})
    weights = tmp_path / "big.safetensors"
    weights.write_bytes(b"large enough")
    first = hashes.model_hash(weights)
    assert (tmp_path / "cache" / "hashes.json").is_file()
    monkeypatch.setattr(hashes, "_CACHE", {})            # a new process
    monkeypatch.setattr(hashes, "_loaded_from", None)
    monkeypatch.setattr(hashes, "open", lambda *a, **k: pytest.fail("read again"), raising=False)
    assert hashes.model_hash(weights) == first == hashlib.sha256(b"large enough").hexdigest()[:10]
