"""Upscalers (built-in, and the tiling model upscalers run in) and the hires fix, on the tiny
model: both passes saved, A1111's hires keys, PNG Info sending the whole generation back."""

from __future__ import annotations


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


def test_a_model_upscaler_without_spandrel_says_what_to_install(tmp_path, monkeypatch):
    import importlib.util

    from studio.models import arches, upscalers
    from studio.models.library import ModelLibrary
    (tmp_path / "upscalers").mkdir()
    (tmp_path / "upscalers" / "4x-test.pth").write_bytes(b"not read before spandrel is found")
    library = ModelLibrary(tmp_path)
    assert library.names()["upscalers"] == ["4x-test.pth"]
    find = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "spandrel" else find(name, *a))
    monkeypatch.setattr(arches, "_module", None)
    monkeypatch.setattr(upscalers, "_cache", {})
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


def test_a_model_upscaler_file_runs_through_spandrel(tmp_path, monkeypatch):
    """The real spandrel (torchvision stood in for where it cannot import: studio/models/arches.py)
    on a random-weight ESRGAN in the original key layout (model.0.weight ...), as .pth (read
    through the weights-only unpickler) and .safetensors: the studio's tiles and passes give what
    spandrel's own model gives on the whole picture, at exactly the size asked for."""
    import torch
    from safetensors.torch import save_file

    from studio.models import upscalers
    from studio.models.arches import spandrel
    from studio.models.library import ModelLibrary

    spandrel()                                   # the import, with torchvision stood in where needed
    from spandrel.architectures.ESRGAN import ESRGAN
    torch.manual_seed(0)
    model = ESRGAN(num_filters=8, num_blocks=1, scale=2).eval()
    state = model.state_dict()
    assert "model.0.weight" in state                      # ESRGAN's original layout
    (tmp_path / "upscalers").mkdir()
    torch.save(state, tmp_path / "upscalers" / "2x-tiny.pth")
    save_file(state, str(tmp_path / "upscalers" / "2x-tiny.safetensors"))
    monkeypatch.setattr(upscalers, "_cache", {})
    library = ModelLibrary(tmp_path)
    image = noise(40, 24, seed=9)
    with torch.inference_mode():
        pixels = torch.from_numpy(np.asarray(image, np.float32) / 255).permute(2, 0, 1)[None]
        direct = (model(pixels).clamp(0, 1)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    for name in ("2x-tiny.pth", "2x-tiny.safetensors"):
        two = upscale(image, (80, 48), name, library)
        assert np.abs(np.asarray(two).astype(int) - direct).max() <= 1, name
    assert upscale(image, (320, 192), "2x-tiny.pth", library).size == (320, 192)     # three passes
    assert upscale(image, (100, 60), "2x-tiny.pth", library).size == (100, 60)       # then Lanczos
    tiled = run_tiled(upscalers._load(library.get("upscalers", "2x-tiny.pth").path, "cpu").run, 2,
                      noise(300, 40, seed=3))
    assert tiled.size == (600, 80)


def test_a_face_restorer_is_not_taken_for_an_upscaler(tmp_path, monkeypatch):
    import torch
    from studio.models import upscalers
    from studio.models.arches import spandrel
    from studio.models.library import ModelLibrary
    spandrel()
    from spandrel.architectures.RestoreFormer import RestoreFormer
    state = RestoreFormer(n_embed=16, embed_dim=8, ch=32, ch_mult=(1, 2), num_res_blocks=1,
                          attn_resolutions=(), resolution=64, z_channels=8).state_dict()
    (tmp_path / "upscalers").mkdir()
    torch.save(state, tmp_path / "upscalers" / "faces.pth")
    monkeypatch.setattr(upscalers, "_cache", {})
    with pytest.raises(StudioError, match="not an upscaling model .*RestoreFormer"):
        upscale(noise(16, 16), (64, 64), "faces.pth", ModelLibrary(tmp_path))


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
