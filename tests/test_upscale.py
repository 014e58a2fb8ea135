"""Upscalers (built-in, and the tiling model upscalers run in) and the hires fix, on the tiny
model: both passes saved, A1111's hires keys, PNG Info sending the whole generation back."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
from PIL import Image

from studio.errors import InvalidRequest, StudioError
from studio.outputs.pnginfo import read_info
from studio.serving.sequence import Sequence
from studio.upscale.hires import plan_hires, run_hires
from studio.models.upscalers import run_tiled, target_size, upscale

BASE = dict(prompt="a red circle", steps=3, seed=21, width=64, height=64)


def noise(width=300, height=200, seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def test_target_sizes_by_factor_or_to_a_size():
    image = noise(300, 200)
    assert target_size(image, 2.0, None, None) == (600, 400)
    assert target_size(image, None, 450, None) == (450, 300)
    assert target_size(image, None, 0, 100) == (150, 100)
    with pytest.raises(InvalidRequest, match="at most"):
        target_size(image, 100.0, None, None)


def test_built_in_upscalers_give_the_exact_size_and_nearest_repeats_pixels():
    image = noise(30, 20)
    assert upscale(image, (61, 41), "Lanczos").size == (61, 41)
    twice = np.asarray(upscale(image, (60, 40), "Nearest"))
    assert np.array_equal(twice, np.asarray(image).repeat(2, axis=0).repeat(2, axis=1))
    with pytest.raises(InvalidRequest, match="Unknown upscaler 'ESRGAN'. Known: Lanczos, Nearest"):
        upscale(image, (60, 40), "ESRGAN")


def test_tiles_put_together_equal_the_whole_picture_upscaled_at_once():
    """A stand-in 2x model (nearest): run in 64-pixel tiles with 8 shared, the picture is the same
    as one pass over all of it, so the seams add nothing."""
    import torch.nn.functional as F
    model = lambda tile: F.interpolate(tile, scale_factor=2, mode="nearest")   # noqa: E731
    image = noise(150, 100, seed=3)
    tiled = run_tiled(model, 2, image, tile=64, overlap=8)
    whole = run_tiled(model, 2, image, tile=1000, overlap=0)
    assert tiled.size == (300, 200) and np.array_equal(np.asarray(tiled), np.asarray(whole))
    assert np.array_equal(np.asarray(whole), np.asarray(image).repeat(2, axis=0).repeat(2, axis=1))


def test_a_model_upscaler_without_spandrel_says_what_to_install(tmp_path):
    from studio.models.library import ModelLibrary
    (tmp_path / "upscalers").mkdir()
    (tmp_path / "upscalers" / "4x-test.pth").write_bytes(b"not read before spandrel is found")
    library = ModelLibrary(tmp_path)
    assert library.names()["upscalers"] == ["4x-test.pth"]
    pytest.importorskip("torch")
    try:
        importlib.import_module("spandrel")
        pytest.skip("spandrel is installed here")
    except ImportError:
        pass
    with pytest.raises(StudioError, match="pip install spandrel"):
        upscale(noise(16, 16), (64, 64), "4x-test.pth", library)


# -- hires fix ----------------------------------------------------------------------------------------

def test_hires_fix_draws_twice_and_records_it_as_a1111_does(studio):
    result = run_hires(studio, {**BASE, "hires": True, "hires_scale": 1.5, "hires_steps": 2, "hires_strength": 0.5},
                       Sequence(studio, user="hires", session="hires"))
    assert not result.stopped and len(result.images) == 1 and len(result.first_pass) == 1
    final, first = result.images[0], result.first_pass[0]
    assert first.image.size == (64, 64) and final.image.size == (96, 96)
    assert first.path.exists() and final.path.exists() and final.seed == first.seed == 21
    assert ("Steps: 3," in final.parameters and "Denoising strength: 0.5, " in final.parameters
            and "Hires upscale: 1.5, Hires steps: 2, Hires upscaler: Lanczos" in final.parameters)
    assert final.data["request"]["recipe"][0] == ["Steps", 3]
    # PNG Info sends the whole generation back: first-pass size and steps, the hires settings
    fields = read_info(Image.open(final.path)).fields
    assert (fields["hires"], fields["hires_scale"], fields["hires_steps"], fields["hires_strength"]) == (True, 1.5, 2, 0.5)
    assert (fields["steps"], fields["width"], fields["height"], fields["seed"]) == (3, 64, 64, 21)
    assert "strength" not in fields


def test_hires_settings_and_the_second_pass_are_checked_before_anything_runs(studio):
    before = set(studio.local.outputs.root.rglob("*.png"))
    for fields, message in (({"hires_scale": 9}, "Hires upscale must be between 1 and 4"),
                            ({"hires_upscaler": "magic"}, "Unknown hires upscaler 'magic'"),
                            ({"hires_strength": 2}, "Hires strength must be between 0 and 1"),
                            ({"hires_scale": 4, "width": 1024, "height": 1024}, "Width must be between")):
        with pytest.raises(InvalidRequest, match=message):
            plan_hires(studio, {**BASE, "hires": True, **fields})
    assert set(studio.local.outputs.root.rglob("*.png")) == before


def test_stop_after_the_first_pass_keeps_it(studio):
    sequence = Sequence(studio, user="stops", session="stops")
    said = []

    def on_progress(done, text):
        said.append(text)
        if text.startswith("Upscaling"):
            studio.dispatcher.stop("stops", "stops")

    result = run_hires(studio, {**BASE, "hires": True}, sequence, on_progress)
    assert result.stopped and len(result.first_pass) == 1 and result.images == []
    assert result.first_pass[0].path.exists() and "first passes are saved" in result.notes[-1]


# -- the Extras tool ------------------------------------------------------------------------------------

def test_upscaling_a_generated_picture_keeps_its_parameters(studio):
    from studio.outputs.metadata import read_metadata
    from studio.upscale.extras import read_settings, upscale_picture
    made = studio.local.run(studio.make_request("txt2img", **BASE)).images[0]
    done = upscale_picture(studio, str(made.path), read_settings(studio, "Lanczos", 2))
    assert done.image.size == (128, 128) and done.path.name.endswith("-upscale.png")
    text, data = read_metadata(done.path)
    assert text.startswith("a red circle\n") and "Seed: 21," in text
    assert "Postprocess upscale by: 2, Postprocess upscaler: Lanczos, Version: studio" in text
    assert data["kind"] == "upscale" and data["source"]["width"] == 64 and data["source_parameters"] == made.parameters


def test_upscaling_to_a_size_crops_or_stretches_and_blends_a_second_upscaler(studio):
    from studio.outputs.metadata import read_metadata
    from studio.upscale.extras import read_settings, upscale_picture
    photo = noise(100, 50, seed=4)
    cropped = upscale_picture(studio, photo, read_settings(studio, "Lanczos", width=64, height=64, crop=True))
    stretched = upscale_picture(studio, photo, read_settings(studio, "Lanczos", width=64, height=64))
    assert cropped.image.size == stretched.image.size == (64, 64)
    assert not np.array_equal(np.asarray(cropped.image), np.asarray(stretched.image))
    assert read_metadata(stretched.path)[0] == ("Postprocess upscale to: 64x64, Postprocess crop to fit: False, "
                                                "Postprocess upscaler: Lanczos")
    blended = upscale_picture(studio, photo, read_settings(studio, "Lanczos", 2, second="Nearest",
                                                           second_visibility=0.5))
    expected = Image.blend(photo.resize((200, 100), Image.LANCZOS), photo.resize((200, 100), Image.NEAREST), 0.5)
    assert np.array_equal(np.asarray(blended.image), np.asarray(expected))


@pytest.mark.parametrize("settings, message", [
    (dict(upscaler="ESRGAN"), "Unknown upscaler 'ESRGAN'"),
    (dict(upscaler="Lanczos", scale=20), "Upscale by must be between 1 and 8"),
    (dict(upscaler="Lanczos", width=100000), "Width must be between"),
    (dict(upscaler="Lanczos", second="Nope", second_visibility=1), "Unknown second upscaler 'Nope'"),
])
def test_bad_upscale_settings_are_refused(studio, settings, message):
    from studio.upscale.extras import read_settings
    with pytest.raises(InvalidRequest, match=message):
        read_settings(studio, **settings)


def test_a_result_larger_than_the_studio_allows_is_refused(studio):
    from studio.upscale.extras import read_settings, upscale_picture
    with pytest.raises(InvalidRequest, match="more than this studio upscales to"):
        upscale_picture(studio, noise(700, 700), read_settings(studio, "Lanczos", 8))


def test_the_kept_latents_are_the_last_ones_of_the_picture(studio):
    """keep_latents hands back what the VAE decoded into the saved picture (not an earlier step)."""
    import torch
    made = studio.local.run(studio.make_request("txt2img", keep_latents=True, **BASE)).images[0]
    vae = studio.local.manager.base().vae
    assert made.latents.shape[:2] == (1, vae.config.latent_channels)
    with torch.no_grad():
        decoded = vae.decode(torch.from_numpy(made.latents) / vae.config.scaling_factor).sample
    pixels = ((decoded[0].permute(1, 2, 0) / 2 + 0.5).clamp(0, 1) * 255).round().byte().numpy()
    assert np.abs(pixels.astype(int) - np.asarray(made.image).astype(int)).max() <= 1


def test_a_latent_hires_fix_starts_the_second_pass_from_the_resized_latents(studio):
    raw = {**BASE, "hires": True, "hires_scale": 2, "hires_steps": 2, "hires_strength": 0.6}
    latent = run_hires(studio, {**raw, "hires_upscaler": "Latent (bicubic)"}, Sequence(studio, user="l", session="l"))
    pixel = run_hires(studio, {**raw, "hires_upscaler": "Lanczos"}, Sequence(studio, user="l", session="l"))
    final = latent.images[0]
    assert final.image.size == (128, 128) and "Hires upscaler: Latent (bicubic)" in final.parameters
    assert not np.array_equal(np.asarray(final.image), np.asarray(pixel.images[0].image))


@pytest.mark.parametrize("upscaler", ["Latent", "Lanczos"])
def test_hires_strength_0_is_the_first_pass_upscaled_recorded_as_a_hires_fix(studio, upscaler):
    """What A1111's API tests send (enable_hr, no upscaler: Latent, strength 0): no second pass; the
    saved result is the first-pass picture upscaled (Lanczos for a latent upscaler), with A1111's keys."""
    from studio.outputs.metadata import parse_parameters, read_metadata
    raw = {**BASE, "hires": True, "hires_scale": 2, "hires_steps": 2, "hires_strength": 0, "hires_upscaler": upscaler}
    result = run_hires(studio, raw, Sequence(studio, user="z", session="z"))
    (first,), (final,) = result.first_pass, result.images
    want = first.image.convert("RGB").resize((128, 128), Image.LANCZOS)
    assert final.image.size == (128, 128) and final.path.is_file()
    assert np.abs(np.asarray(final.image, dtype=int) - np.asarray(want, dtype=int)).max() <= 1
    fields = parse_parameters(read_metadata(final.path)[0])[2]
    assert (fields["Hires upscaler"], fields["Denoising strength"], fields["Size"]) == (upscaler, "0", "128x128")
    assert fields["Seed"] == str(first.seed) and any("no second pass" in n for n in result.notes)


@pytest.mark.parametrize("mode, latents, message", [
    ("txt2img", np.zeros((1, 4, 8, 8), np.float32), "for image to image"),
    ("img2img", np.full((1, 4, 8, 8), np.nan, np.float32), "finite float array"),
    ("img2img", np.zeros((4, 8, 8), np.float32), "finite float array"),
    ("img2img", np.zeros((1, 4, 8, 8), np.int64), "finite float array"),
])
def test_latents_to_start_from_are_checked(mode, latents, message):
    from studio.requests import make_request
    extra = {"image": np.zeros((64, 64, 3), np.uint8)} if mode == "img2img" else {}
    with pytest.raises(InvalidRequest, match=message):
        make_request(mode=mode, prompt="x", latents=latents, **extra)


def test_a_model_upscaler_file_runs_through_spandrels_loader(tmp_path, monkeypatch):
    """spandrel cannot be imported here (its torchvision needs CUDA libraries), so a stand-in with
    its API (ModelLoader().load_from_state_dict -> ImageModelDescriptor with .scale, .to, .eval,
    called on a 0-1 BCHW tensor) checks the studio's side: the file read as a state dict
    (.pth through the weights-only unpickler, .safetensors), tiles, passes until the size is
    reached, and the exact size asked for."""
    import sys
    import types

    import torch
    import torch.nn.functional as F
    from safetensors.torch import save_file

    from studio.models.library import ModelLibrary
    from studio.models import upscalers

    class ImageModelDescriptor:
        def __init__(self, scale):
            self.scale, self.calls, self.device = scale, 0, None

        def to(self, device):
            self.device = device
            return self

        def eval(self):
            return self

        def __call__(self, tile):
            self.calls += 1
            assert tile.shape[-1] <= upscalers.TILE and 0 <= float(tile.min()) and float(tile.max()) <= 1
            return F.interpolate(tile, scale_factor=self.scale, mode="nearest")

    loaded = []

    class ModelLoader:
        def load_from_state_dict(self, state):
            loaded.append(sorted(state))
            loaded.append(descriptor := ImageModelDescriptor(int(state["scale"])))
            return descriptor

    monkeypatch.setitem(sys.modules, "spandrel", types.SimpleNamespace(
        ModelLoader=ModelLoader, ImageModelDescriptor=ImageModelDescriptor))
    monkeypatch.setattr(upscalers, "_cache", {})
    (tmp_path / "upscalers").mkdir()
    torch.save({"scale": torch.tensor(4), "body.weight": torch.zeros(3)}, tmp_path / "upscalers" / "4x-fake.pth")
    save_file({"scale": torch.tensor(2)}, str(tmp_path / "upscalers" / "2x-fake.safetensors"))
    library = ModelLibrary(tmp_path)
    image = noise(300, 40, seed=9)
    four = upscale(image, (1200, 160), "4x-fake.pth", library)
    assert loaded[0] == ["body.weight", "scale"] and loaded[1].calls == 2     # two tiles across 300 px
    assert np.array_equal(np.asarray(four), np.asarray(image).repeat(4, axis=0).repeat(4, axis=1))
    eight = upscale(image, (2400, 320), "2x-fake.safetensors", library)      # three 2x passes, exact size
    assert eight.size == (2400, 320)
    assert np.array_equal(np.asarray(eight), np.asarray(image).repeat(8, axis=0).repeat(8, axis=1))
    odd = upscale(image, (500, 70), "4x-fake.pth", library)                  # one pass, then Lanczos down
    assert odd.size == (500, 70)


def test_an_upscale_is_a_job_of_the_fair_queue_for_its_user(studio, monkeypatch):
    """Extras (the tab and the REST route) and the hires fix's picture upscaler submit an
    UpscaleRequest to the dispatcher: it waits its turn among the generations, for its user."""
    from studio.requests.upscale import UpscaleRequest
    from studio.upscale.extras import read_settings, upscale_picture
    seen = []
    submit = studio.dispatcher.submit

    def spy(request, **kw):
        seen.append((type(request).__name__, kw.get("user"), kw.get("save", True)))
        return submit(request, **kw)

    monkeypatch.setattr(studio.dispatcher, "submit", spy)
    done = upscale_picture(studio, noise(40, 30), read_settings(studio, "Nearest", 2), user="bob", session="b")
    assert seen == [("UpscaleRequest", "bob", True)] and done.image.size == (80, 60) and done.path.is_file()
    seen.clear()
    result = run_hires(studio, {**BASE, "hires": True, "hires_scale": 2, "hires_steps": 2},
                       Sequence(studio, user="ann", session="a"))
    assert [k for k, _, _ in seen] == ["GenerationRequest", "UpscaleRequest", "GenerationRequest"]
    assert seen[1] == ("UpscaleRequest", "ann", False) and len(result.images) == 1    # held, not saved
    assert isinstance(UpscaleRequest(image=np.zeros((8, 8, 3), np.uint8), size=(16, 16), upscaler="Lanczos").model, str)


def test_stop_is_heard_between_a_model_upscalers_tiles():
    from studio.errors import GenerationStopped
    calls = []

    def stop_after_two():
        calls.append(1)
        if len(calls) > 2:
            raise GenerationStopped("Stopped while upscaling.")

    with pytest.raises(GenerationStopped):
        run_tiled(lambda tile: tile.repeat_interleave(2, -1).repeat_interleave(2, -2), 2, noise(200, 200),
                  tile=64, overlap=8, between_tiles=stop_after_two)
    assert len(calls) == 3        # 16 tiles, stopped at the third


@pytest.mark.parametrize("size, overlap", [((128, 128), 16), ((200, 136), 0), ((64, 64), 32), ((264, 72), 48)])
def test_sd_upscale_tiles_cover_the_picture_and_blend_back_to_it(size, overlap):
    from studio.upscale.sd_upscale import blend, tiling
    picture = np.asarray(noise(*size))
    grid = tiling(size, (64, 64), overlap)
    tw, th = grid.tile
    covered = np.zeros(size[::-1], bool)
    for x, y in grid.origins:
        covered[y:y + th, x:x + tw] = True
    assert covered.all()
    assert grid.overlap == min(overlap, min(grid.tile) // 2)      # at most half a tile
    for axis, side in ((0, tw), (1, th)):        # neighbours share at least that much
        starts = sorted({origin[axis] for origin in grid.origins})
        assert all(b - a <= side - grid.overlap for a, b in zip(starts, starts[1:]))
    back = blend([picture[y:y + th, x:x + tw] for x, y in grid.origins], grid)
    assert np.abs(np.asarray(back, dtype=int) - picture.astype(int)).max() <= 1


def test_sd_upscale_redraws_the_upscaled_picture_tile_by_tile_and_saves_it(studio):
    from studio.outputs.metadata import parse_parameters, read_metadata
    from studio.upscale.sd_upscale import run_sd_upscale
    source = noise(64, 64)
    raw = dict(image=source, prompt="a red circle", steps=4, seed=8, strength=0.3, width=64, height=64,
               sd_upscale=True, sd_upscale_scale=2, sd_upscale_overlap=16, sd_upscale_upscaler="Lanczos")
    result = run_sd_upscale(studio, raw, Sequence(studio, user="s", session="s"))
    (final,) = result.images
    assert final.image.size == (128, 128) and final.path.name.endswith("-sdupscale.png")
    plain = np.asarray(source.resize((128, 128), Image.LANCZOS), dtype=int)
    redrawn = np.abs(np.asarray(final.image, dtype=int) - plain).mean()
    assert 1 < redrawn < 100                       # drawn again at strength 0.3, not replaced
    fields = parse_parameters(read_metadata(final.path)[0])[2]
    assert (fields["Size"], fields["SD upscale scale"], fields["SD upscale overlap"]) == ("128x128", "2", "16")
    assert fields["Seed"] == "8" and read_metadata(final.path)[1]["sd_upscale"]["tiles"] == 9
    again = run_sd_upscale(studio, raw, Sequence(studio, user="s", session="s")).images[0]
    assert np.array_equal(np.asarray(again.image), np.asarray(final.image))     # same seed, same picture
