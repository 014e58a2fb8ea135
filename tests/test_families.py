"""The transformer families (Flux.1, SD 3.5) through the same manager, engine, record and API as
SD, on tiny random-weight folders with the real classes, channel counts and shipped tokenizers
(studio/families/tiny.py)."""

from __future__ import annotations

import numpy as np
import torch
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

from studio.config import Settings
from studio.errors import InvalidRequest
from studio.families.tiny import write_tiny_flux, write_tiny_sd3, write_tiny_zimage
from studio.families.tokenizers import qwen3_tokenizer, t5_tokenizer
from studio.models.sources import describe
from studio.outputs.metadata import parse_parameters, read_metadata
from studio.outputs.pnginfo import read_info
from studio.requests import make_request
from studio.serving.studio import Studio

from .test_metadata_readers import sd_parsers_view

SMALL = dict(width=64, height=64, steps=3, seed=5)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    made = {v: write_tiny_flux(root / f"flux1-{v}", v) for v in ("dev", "schnell", "fill", "kontext")}
    made["sd3"] = write_tiny_sd3(root / "sd3.5-medium")
    made["sd3-no-t5"] = write_tiny_sd3(root / "sd3.5-no-t5", t5=False, seed=1)
    made["zimage"] = write_tiny_zimage(root / "z-image-turbo")
    return made


def _studio(folder, tmp_path_factory) -> Studio:
    return Studio.from_settings(Settings(model=str(folder), outputs=tmp_path_factory.mktemp("out")))


@pytest.fixture(scope="module")
def flux(folders, tmp_path_factory) -> Studio:
    return _studio(folders["dev"], tmp_path_factory)


@pytest.fixture(scope="module")
def sd3(folders, tmp_path_factory) -> Studio:
    return _studio(folders["sd3"], tmp_path_factory)


@pytest.fixture(scope="module")
def zimage(folders, tmp_path_factory) -> Studio:
    return _studio(folders["zimage"], tmp_path_factory)


def run(studio: Studio, **kw):
    return studio.local.run(make_request(**{**SMALL, **kw}))


def pixels(result) -> np.ndarray:
    return np.asarray(result.images[0].image.convert("RGB"), dtype=np.int16)


def infotext(result) -> dict[str, str]:
    return parse_parameters(read_metadata(result.images[0].path)[0])[2]


def _picture() -> np.ndarray:
    img = np.zeros((64, 64, 3), np.uint8)
    img[:, :32] = (200, 40, 40)
    return img


def _mask() -> np.ndarray:
    mask = np.zeros((64, 64), np.uint8)
    mask[16:48, 16:48] = 255
    return mask


def test_the_shipped_tokenizers_are_t5s_and_qwen3s():
    tok = t5_tokenizer()
    assert tok("Hello world").input_ids == [8774, 296, 1]
    assert (tok.pad_token_id, tok.eos_token_id, len(tok)) == (0, 1, 32100)
    qwen = qwen3_tokenizer()
    assert qwen("Hello world").input_ids == [9707, 1879]
    chat = qwen.apply_chat_template([{"role": "user", "content": "a red circle"}], tokenize=False,
                                    add_generation_prompt=True)
    assert chat.startswith("<|im_start|>user\na red circle<|im_end|>")


def test_family_and_variant_are_read_from_the_folder(folders):
    seen = {k: describe(str(p)) for k, p in folders.items()}
    assert {k: (i.arch, i.family) for k, i in seen.items()} == {
        "dev": ("flux", "Flux.1 dev"), "schnell": ("flux", "Flux.1 schnell"), "fill": ("flux", "Flux.1 Fill"),
        "kontext": ("flux", "Flux.1 Kontext"), "sd3": ("sd3", "SD 3.5"), "sd3-no-t5": ("sd3", "SD 3.5"),
        "zimage": ("zimage", "Z-Image Turbo")}
    assert seen["fill"].inpaint_only and seen["fill"].in_channels == 384
    assert not seen["dev"].inpaint_only and seen["dev"].native_size == 64
    # the settings each was made for: the tabs take them when it loads
    assert (seen["schnell"].few_step.steps, seen["schnell"].few_step.cfg) == (4, 1.0)
    assert seen["dev"].few_step.distilled == 3.5 and seen["fill"].few_step.distilled == 30.0
    assert (seen["zimage"].few_step.steps, seen["zimage"].few_step.cfg) == (9, 1.0)


@pytest.mark.parametrize("which", ["flux", "sd3", "zimage"])
def test_every_tab_same_seed_same_bits(which, request):
    studio = request.getfixturevalue(which)
    for mode, extra in (("txt2img", {}), ("img2img", {"image": _picture()}),
                        ("inpaint", {"image": _picture(), "mask": _mask()})):
        a = run(studio, mode=mode, prompt="a red circle", scheduler="Euler", **extra)
        b = run(studio, mode=mode, prompt="a red circle", scheduler="Euler", **extra)
        c = run(studio, mode=mode, prompt="a red circle", scheduler="Euler", **{**extra, "seed": 6})
        assert a.images[0].image.size == (64, 64), mode
        assert np.array_equal(pixels(a), pixels(b)), mode
        assert not np.array_equal(pixels(a), pixels(c)), mode


def test_inpainting_keeps_the_unmasked_pixels(flux):
    result = run(flux, mode="inpaint", prompt="a blue square", image=_picture(), mask=_mask(), mask_blur=0)
    out, keep = pixels(result), _mask() == 0
    assert np.array_equal(out[keep], _picture().astype(np.int16)[keep])


def test_flux_infotext_as_forge_writes_it_and_pnginfo_restores_it(flux):
    result = run(flux, prompt="a red circle", scheduler="Euler", distilled_cfg=5.0, cfg_scale=1.0)
    fields = infotext(result)
    assert (fields["Sampler"], fields["Schedule type"]) == ("Euler", "Simple")
    assert fields["Distilled CFG Scale"] == "5" and fields["CFG scale"] == "1"
    info = read_info(Image.open(result.images[0].path))
    assert info.fields["distilled_cfg"] == 5.0 and info.fields["scheduler"] == "Euler"
    view = sd_parsers_view(result.images[0].path)
    assert view["sampler"] == "Euler" and view["metadata"]["Distilled CFG Scale"] == "5"
    data = read_metadata(result.images[0].path)[1]
    assert data["scheduler"]["class"] == "FlowMatchEulerDiscreteScheduler"
    assert data["model"]["family"] == "Flux.1 dev" and data["model"]["arch"] == "flux"


def test_sd_families_do_not_write_the_flux_fields(sd3, studio):
    for s in (sd3, studio):
        fields = infotext(run(s, prompt="a red circle", scheduler="Euler", shift=2.0))
        assert "Distilled CFG Scale" not in fields
    assert infotext(run(sd3, prompt="a", scheduler="Euler", shift=2.0))["Shift"] == "2"
    assert "Shift" not in infotext(run(studio, prompt="a", scheduler="Euler", shift=2.0))


def test_distilled_guidance_true_cfg_and_shift_each_change_the_picture(flux):
    base = pixels(run(flux, prompt="a red circle", negative_prompt="blue"))
    assert not np.array_equal(base, pixels(run(flux, prompt="a red circle", negative_prompt="blue",
                                               distilled_cfg=9.0)))
    euler = pixels(run(flux, prompt="a red circle", scheduler="Euler"))
    assert not np.array_equal(euler, pixels(run(flux, prompt="a red circle", scheduler="Euler", shift=6.0)))
    # the solvers follow Flux dev's shift by size, and say so
    fixed = run(flux, prompt="a red circle", negative_prompt="blue", shift=6.0)
    assert np.array_equal(base, pixels(fixed)) and any("Shift is not used" in n for n in fixed.notes)
    # true CFG: at 1 the negative prompt is not run at all; above 1 it acts
    off = pixels(run(flux, prompt="a red circle", negative_prompt="blue", cfg_scale=1.0))
    assert np.array_equal(off, pixels(run(flux, prompt="a red circle", negative_prompt="green", cfg_scale=1.0)))
    assert not np.array_equal(pixels(run(flux, prompt="a red circle", negative_prompt="blue", cfg_scale=3.0)),
                              pixels(run(flux, prompt="a red circle", negative_prompt="green", cfg_scale=3.0)))


def test_schnell_has_no_guidance_input(folders, tmp_path_factory):
    schnell = _studio(folders["schnell"], tmp_path_factory)
    a = run(schnell, prompt="a red circle", steps=2, distilled_cfg=1.0)
    assert np.array_equal(pixels(a), pixels(run(schnell, prompt="a red circle", steps=2, distilled_cfg=9.0)))
    # its schedule has no shift by size, which Flux's pipelines hand the solvers: Euler instead
    assert any("does not run on Flux.1 schnell" in n for n in a.notes)
    assert infotext(a)["Sampler"] == "Euler"


def test_samplers_run_in_their_flow_form_with_a_note(flux, sd3):
    for s in (flux, sd3):
        result = run(s, prompt="a circle", scheduler="DPM++ 2M Karras")
        assert any("runs as DPM++ 2M on flow sigmas" in n for n in result.notes)
        assert read_metadata(result.images[0].path)[1]["scheduler"]["config"]["use_flow_sigmas"] is True
        assert infotext(result)["Sampler"] == "DPM++ 2M"
        picture = run(s, mode="img2img", prompt="a circle", scheduler="UniPC", image=_picture())
        assert infotext(picture)["Sampler"] == "Euler"
        assert any("cannot start from a picture" in n for n in picture.notes)
        odd = run(s, prompt="a circle", scheduler="PNDM")
        assert infotext(odd)["Sampler"] == "Euler" and any("no flow-matching form" in n for n in odd.notes)


def test_sizes_are_kept_on_the_families_grid(flux):
    result = run(flux, prompt="a circle", width=72, height=64)
    assert result.images[0].image.size == (64, 64)
    assert any("multiples of 16" in n for n in result.notes)


@pytest.mark.parametrize("asked, words", [
    (dict(prompt="a ADDCOL b", regions_ratio="1,1"), "regional prompts"),
    (dict(tiling="both"), "tiling"),
    (dict(feature_cache=2), "feature cache"),
    (dict(clip_skip=2), "clip skip"),
    (dict(prompt="a [red:blue:0.5] circle"), "prompt editing"),
])
def test_what_a_family_lacks_is_refused_by_name(flux, asked, words):
    with pytest.raises(InvalidRequest, match=words) as caught:
        run(flux, **{"prompt": "a", **asked})
    assert "Flux.1" in str(caught.value)


def test_fill_inpaints_and_says_it_only_inpaints(folders, tmp_path_factory):
    fill = _studio(folders["fill"], tmp_path_factory)
    result = run(fill, mode="inpaint", prompt="a blue square", image=_picture(), mask=_mask(), cfg_scale=3.0)
    assert result.images[0].image.size == (64, 64)
    assert any("has no true CFG" in n for n in result.notes)
    with pytest.raises(InvalidRequest, match="inpainting model"):
        run(fill, prompt="a blue square")


def test_sd3_runs_without_t5(folders, tmp_path_factory):
    bare = _studio(folders["sd3-no-t5"], tmp_path_factory)
    a, b = run(bare, prompt="a red circle"), run(bare, prompt="a blue square")
    assert not np.array_equal(pixels(a), pixels(b))       # CLIP alone still reads the prompt


def test_prompt_variants_in_one_batch(flux):
    result = run(flux, prompt="a {red|blue} circle", variants="all", batch_size=2)
    assert [g.parameters.split("\n")[0] for g in result.images] == ["a red circle", "a blue circle"]


@pytest.mark.parametrize("which", ["flux", "sd3"])
def test_emphasis_weights_the_t5_tokens_of_the_word(which, request):
    """(red:1.5) as Forge reads it for T5: the fragment's tokens weighted, the sequence rescaled to
    its mean; the ids built fragment by fragment are the pipeline's own for the plain words, and
    weight 1 is the plain prompt bit for bit."""
    from studio.families.text import T5Conditioner, weighted_ids
    studio = request.getfixturevalue(which)
    pipe = studio.local.manager.base()
    tokenizer = pipe.tokenizer_3 if which == "sd3" else pipe.tokenizer_2
    ids, weights = weighted_ids(tokenizer, "a (red:1.5) circle", 64)
    assert ids == tokenizer("a red circle", padding="max_length", max_length=64, truncation=True).input_ids
    red = [i for i, w in enumerate(weights) if w == 1.5]
    assert red and tokenizer.decode([ids[i] for i in red]) == "red"

    def t5(text):                 # the T5 part: the last 64 rows (SD 3.5 puts CLIP's 154 first)
        return T5Conditioner(pipe, text, "", 4, 64, False).pipeline_kwargs()["prompt_embeds"][0, -64:]
    plain, weighted = t5("a red circle"), t5("a (red:1.5) circle")
    assert torch.equal(plain, t5("a (red:1.0) circle"))
    moved = (weighted - plain).abs().mean(dim=1)
    others = [i for i in range(64) if i not in red]
    assert moved[red].min() > 5 * moved[others].max()      # the rescale moves the rest a little
    assert not np.array_equal(pixels(run(studio, prompt="a (red:1.5) circle")), pixels(run(studio, prompt="a red circle")))
    said = run(studio, prompt="a (red:1.5) circle").notes
    assert any("CLIP-L and CLIP-G read the plain words" in n for n in said) == (which == "sd3")


def test_explain_counts_t5_tokens(flux):
    report = flux.local.explain(make_request(prompt="Hello world"))
    assert report["per step"][0]["T5 tokens"] == 3 and report["per step"][0]["T5 limit"] == 512


def test_rest_api_takes_forges_distilled_cfg_scale(flux):
    rest = TestClient(FastAPI(routes=api_routes(flux)))
    body = dict(prompt="a red circle", steps=2, width=64, height=64, seed=3, sampler_name="Euler",
                distilled_cfg_scale=6.5)
    answer = rest.post("/sdapi/v1/txt2img", json=body)
    assert answer.status_code == 200, answer.text
    info = answer.json()["info"]
    assert "Distilled CFG Scale: 6.5" in info and "Schedule type: Simple" in info


def api_routes(studio):
    from studio.api.routes import api_routes as routes
    return routes(studio, [])


def test_kontext_edits_a_picture_by_instruction_and_edits_the_edit(folders, tmp_path_factory):
    kontext = _studio(folders["kontext"], tmp_path_factory)
    first = run(kontext, mode="img2img", prompt="make the circle blue", image=_picture())
    assert not np.array_equal(pixels(first), _picture().astype(np.int16))
    # an edit takes the picture whole: strength plays no part (not even 0, which elsewhere keeps the input)
    for strength in (0.9, 0.0):
        again = run(kontext, mode="img2img", prompt="make the circle blue", image=_picture(), strength=strength)
        assert np.array_equal(pixels(first), pixels(again))
    data = read_metadata(first.images[0].path)[1]
    assert data["prompt"] == "make the circle blue" and data["input_image_sha256"]
    second = run(kontext, mode="img2img", prompt="add a red square", image=np.asarray(first.images[0].image))
    assert read_metadata(second.images[0].path)[1]["input_image_sha256"] != data["input_image_sha256"]
    assert run(kontext, prompt="a red circle").images[0].image.size == (64, 64)        # text alone
    masked = run(kontext, mode="inpaint", prompt="a blue square", image=_picture(), mask=_mask(), mask_blur=0)
    keep = _mask() == 0
    assert np.array_equal(pixels(masked)[keep], _picture().astype(np.int16)[keep])


@pytest.mark.parametrize("which", ["flux", "sd3", "zimage"])
def test_variation_seeds_end_at_each_seeds_own_picture(which, request):
    studio = request.getfixturevalue(which)
    kw = dict(prompt="a red circle", scheduler="Euler", variation_seed=77)
    plain = pixels(run(studio, prompt="a red circle", scheduler="Euler"))
    assert np.array_equal(plain, pixels(run(studio, **kw, variation_strength=0.0)))
    other = pixels(run(studio, prompt="a red circle", scheduler="Euler", seed=77))
    assert np.array_equal(other, pixels(run(studio, **kw, variation_strength=1.0)))
    between = pixels(run(studio, **kw, variation_strength=0.5))
    assert not np.array_equal(between, plain) and not np.array_equal(between, other)


@pytest.mark.parametrize("which", ["flux", "sd3", "zimage"])
def test_live_previews_of_the_latents(which, request):
    """Flux's latents are a sequence of 2x2 patches: the preview unpacks them first."""
    studio, seen = request.getfixturevalue(which), []
    studio.local.run(make_request(**{**SMALL, "steps": 4}), on_preview=lambda make: seen.append(make()))
    assert len(seen) == 3 and all(p.size == (32, 32) for p in seen)       # 8x8 latents shown 4x
    assert len({np.asarray(p).tobytes() for p in seen}) == 3


def test_tools_compose_on_flux_a_plot_over_distilled_cfg_and_a_hires_fix(flux):
    from studio.plots.plot import make_xyz_plot, run_plot
    from studio.serving.sequence import Sequence
    from studio.upscale.hires import run_hires

    base = dict(prompt="a red circle", steps=3, seed=5, width=64, height=64, scheduler="Euler")
    plot = make_xyz_plot(flux, base, [("Distilled CFG scale", "2, 6"), ("Shift", "0, 4")])
    result = run_plot(plot, Sequence(flux, user="t", session="plot"))
    assert len(result.images) == 4
    for (x, y, _), picture in result.images.items():
        alone = run(flux, **{**base, "distilled_cfg": [2.0, 6.0][x], "shift": [0.0, 4.0][y]})
        assert np.array_equal(np.asarray(picture.image, dtype=np.int16), pixels(alone)), (x, y)
    hires = run_hires(flux, {**base, "hires": True, "hires_scale": 2.0, "hires_steps": 2, "hires_strength": 0.5},
                      Sequence(flux, user="t", session="hires"))
    assert hires.images[0].image.size == (128, 128) and "Distilled CFG Scale: 3.5" in hires.images[0].parameters


@pytest.mark.parametrize("which", ["flux", "sd3"])
def test_prompt_travel_mixes_the_t5_embeddings(which, request):
    from studio.families.text import T5Conditioner
    pipe = request.getfixturevalue(which).local.manager.base()
    a = T5Conditioner(pipe, "a red circle", "", 4, 64, True).pipeline_kwargs()
    b = T5Conditioner(pipe, "a blue square", "", 4, 64, True).pipeline_kwargs()
    half = T5Conditioner(pipe, "a red circle", "", 4, 64, True, toward=("a blue square", "", 0.5)).pipeline_kwargs()
    for key in ("prompt_embeds", "pooled_prompt_embeds"):
        assert torch.allclose(half[key], (a[key] + b[key]) / 2, atol=1e-5), key
    assert not torch.allclose(a["prompt_embeds"], b["prompt_embeds"])


def test_the_t5_token_limit_cuts_the_prompt_where_asked(flux):
    from studio.families.text import T5Conditioner
    pipe = flux.local.manager.base()
    long = "a red circle " + "on a blue background with a green star " * 3
    cut = [T5Conditioner(pipe, text, "", 4, 4, False).pipeline_kwargs()["prompt_embeds"] for text in ("a red circle", long)]
    assert cut[0].shape[1] == 4 and torch.equal(cut[0], cut[1])          # the words after the 4th are not read
    whole = [T5Conditioner(pipe, text, "", 4, 512, False).pipeline_kwargs()["prompt_embeds"] for text in ("a red circle", long)]
    assert whole[0].shape[1] == 512 and not torch.equal(whole[0], whole[1])
    assert not np.array_equal(pixels(run(flux, prompt=long)), pixels(run(flux, prompt=long, t5_tokens=4)))
    assert infotext(run(flux, prompt="a", t5_tokens=64))["T5 tokens"] == "64"
    report = flux.local.explain(make_request(prompt="Hello world", t5_tokens=128))
    assert report["per step"][0]["T5 limit"] == 128


def test_skip_layer_guidance_on_sd3(sd3):
    # Stability's schedule: the layers are skipped in the steps from 1% to 20% of the way (step 1 of 10)
    base = run(sd3, prompt="a red circle", scheduler="Euler", steps=10)
    guided = run(sd3, prompt="a red circle", scheduler="Euler", steps=10, slg_scale=2.8)
    assert not np.array_equal(pixels(base), pixels(guided))
    assert infotext(guided)["SLG scale"] == "2.8" and "SLG scale" not in infotext(base)


def test_z_image_reads_the_prompt_with_qwen3_and_its_cfg(zimage):
    """Z-Image: true CFG with the negative prompt above 1, none at 1 (Turbo's); a prompt's own length."""
    base = pixels(run(zimage, prompt="a red circle", negative_prompt="blue", cfg_scale=1.0))
    assert np.array_equal(base, pixels(run(zimage, prompt="a red circle", negative_prompt="green", cfg_scale=1.0)))
    assert not np.array_equal(pixels(run(zimage, prompt="a red circle", negative_prompt="blue", cfg_scale=3.0)),
                              pixels(run(zimage, prompt="a red circle", negative_prompt="green", cfg_scale=3.0)))
    assert not np.array_equal(base, pixels(run(zimage, prompt="a blue square", cfg_scale=1.0)))
    report = zimage.local.explain(make_request(prompt="Hello world"))["per step"][0]
    assert report["Qwen3 tokens"] == 2 and report["token limit"] == 512
    fields = infotext(run(zimage, prompt="a red circle"))
    assert fields["Sampler"] == "Euler" and "Distilled CFG Scale" not in fields
    weighted = run(zimage, prompt="a (red:1.3) circle")            # Qwen3 reads the words, and says so
    assert np.array_equal(pixels(weighted), pixels(run(zimage, prompt="a red circle")))
    assert any("plain words on Z-Image" in n for n in weighted.notes)
    with pytest.raises(InvalidRequest, match="prompt travel"):
        run(zimage, prompt="a red circle", blend=0.5, blend_prompt="a blue square")


@pytest.mark.parametrize("which, shown", [("studio", set()), ("flux", {"distilled_cfg", "shift", "t5_tokens"}),
                                          ("sd3", {"shift", "t5_tokens", "slg_scale"}), ("zimage", {"shift"})])
def test_the_tabs_show_the_controls_of_the_loaded_family(which, shown, request):
    import gradio as gr

    from studio.ui.form import Form
    studio = request.getfixturevalue(which)
    with gr.Blocks():
        form = Form.of("txt2img", studio)
        form.lay_out("sampling")
    familied = {"distilled_cfg", "shift", "t5_tokens", "slg_scale"}
    assert {name for name in familied if form.controls[name].visible} == shown


@pytest.mark.parametrize("which", ["dev", "fill", "zimage"])
def test_outpainting_keeps_the_picture_outside_the_band(which, folders, tmp_path_factory):
    """Outpainting is an inpainting request on a bigger canvas (studio/outpaint): on Flux dev, on
    Fill (Flux's own inpainting and outpainting model) and on Z-Image the original pixels outside
    the band are kept and the new edges drawn."""
    from studio.outpaint.canvas import outpaint_request, read_extend
    studio = _studio(folders[which], tmp_path_factory)
    image = Image.fromarray(_picture())
    request = outpaint_request(studio, dict(image=image, prompt="a red circle", steps=3, seed=4, strength=1.0),
                               read_extend(32, 0, 0, 16, "edge", 8))
    result = studio.local.run(request).images[0]
    out = np.asarray(result.image.convert("RGB"))
    assert result.image.size == (96, 80)
    assert np.array_equal(out[:64 - 8, 32 + 8:], _picture()[:64 - 8, 8:])
    assert "Outpaint pixels: left 32 right 0 up 0 down 16" in result.parameters


def test_live_on_schnell_is_the_saved_picture_of_the_same_request(folders, tmp_path_factory):
    """Live at schnell's few steps: the picture held (not written) equals the same request run and saved."""
    studio = _studio(folders["schnell"], tmp_path_factory)
    request = make_request(prompt="a red circle", steps=2, seed=7, width=64, height=64, scheduler="Euler")
    live = studio.live(request, user="ann", session="s-ann").images[0]
    assert live.path is None and "Steps: 2" in live.parameters
    saved = studio.submit(request, user="ann").result(timeout=60).images[0]
    assert saved.path.is_file() and np.array_equal(np.asarray(live.image), np.asarray(saved.image))


@pytest.mark.parametrize("repo, variant, label", [("black-forest-labs/FLUX.1-schnell", "schnell", "Flux.1 schnell"),
                                                  ("Tongyi-MAI/Z-Image-Turbo", "zimage", "Z-Image Turbo")])
def test_hub_ids_load_from_the_cache_offline(repo, variant, label, tmp_path, monkeypatch):
    """A hub id already in Hugging Face's cache (as a download left it: snapshots/<commit>, refs/main)."""
    import huggingface_hub.constants
    cache = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))    # read once, at its import
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = cache / f"models--{repo.replace('/', '--')}"
    snapshot = folder / "snapshots" / ("a" * 40)
    write_tiny_zimage(snapshot, turbo=True) if variant == "zimage" else write_tiny_flux(snapshot, variant)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text("a" * 40)
    studio = Studio.from_settings(Settings(model=repo, outputs=tmp_path / "out"))
    assert (studio.local.manager.info().kind, studio.local.manager.info().family) == ("hub", label)
    assert run(studio, prompt="a red circle", scheduler="Euler").images[0].image.size == (64, 64)
