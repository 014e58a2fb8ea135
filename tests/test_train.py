"""The training command's smoke configuration: the same code as the full run, in seconds."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from embedded.config import CONFIGS
from embedded.train import TOKENIZER_SOURCE, train


def test_clip_tokenizer_files_are_clips_real_vocabulary():
    from transformers import CLIPTokenizer
    tok = CLIPTokenizer(str(TOKENIZER_SOURCE / "vocab.json"), str(TOKENIZER_SOURCE / "merges.txt"),
                        model_max_length=77)
    assert len(tok) == 49408
    assert tok("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    for text in ("🎨🔴 ∆ 日本語 café", "x" * 5000, "word " * 1000, ""):
        ids = tok(text, truncation=True, max_length=77).input_ids
        assert 2 <= len(ids) <= 77 and ids[0] == 49406 and ids[-1] == 49407


def test_smoke_training_writes_a_loadable_sd_folder_and_resumes(tmp_path, monkeypatch):
    from diffusers import StableDiffusionPipeline
    cfg = CONFIGS["smoke"]
    out, work = tmp_path / "model", tmp_path / "work"

    # Interrupted in the VAE stage right after its checkpoint at step 3 ...
    monkeypatch.setenv("STUDIO_TRAIN_INTERRUPT_AT", "3")
    with pytest.raises(KeyboardInterrupt):
        train(cfg, out, work, TOKENIZER_SOURCE)
    assert (work / "vae.pt").exists() and not out.exists()
    # ... then in the decoder fine-tune (the VAE resumes and finishes first) ...
    with pytest.raises(KeyboardInterrupt):
        train(cfg, out, work, TOKENIZER_SOURCE)
    assert torch.load(work / "decoder.pt", weights_only=False)["step"] == 3
    # ... then in the UNet stage (the decoder resumes and finishes first) ...
    with pytest.raises(KeyboardInterrupt):
        train(cfg, out, work, TOKENIZER_SOURCE)
    assert torch.load(work / "decoder.pt", weights_only=False)["done"]
    assert torch.load(work / "unet.pt", weights_only=False)["step"] == 3
    # ... then in the detail phase (the UNet stage resumes and finishes first) ...
    with pytest.raises(KeyboardInterrupt):
        train(cfg, out, work, TOKENIZER_SOURCE)
    assert torch.load(work / "unet.pt", weights_only=False)["done"]
    assert torch.load(work / "unet-detail.pt", weights_only=False)["step"] == 3
    # ... and the same command once more finishes from the detail checkpoint.
    monkeypatch.delenv("STUDIO_TRAIN_INTERRUPT_AT")
    record = train(cfg, out, work, TOKENIZER_SOURCE)
    assert record["resumed"] == ["UNet+text detail from step 3"]
    from studio.models.precision import bf16_native
    assert record["vae_bf16_autocast"] is bf16_native("cpu")   # bf16 only where the CPU runs it natively
    assert record["unet_steps_done"] == cfg.unet_steps and record["detail_steps_done"] == cfg.detail_steps

    pipe = StableDiffusionPipeline.from_pretrained(out, local_files_only=True, dtype=torch.float32)
    assert pipe.unet.dtype == torch.float32
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        assert (out / "tokenizer" / name).is_file()
    assert json.loads((out / "training.json").read_text())["config"]["name"] == "smoke"
    assert pipe.vae.config.scaling_factor == pytest.approx(record["latent_scale"])
    assert record["inpaint_steps_done"] == cfg.inpaint_steps
    from diffusers import StableDiffusionInpaintPipeline, UNet2DConditionModel
    unet9 = UNet2DConditionModel.from_pretrained(out / "inpaint-unet")
    assert unet9.config.in_channels == 9 and "_name_or_path" not in json.loads((out / "vae" / "config.json").read_text())
    from safetensors import safe_open
    with safe_open(out / "inpaint-unet" / "diffusion_pytorch_model.safetensors", "pt") as f:
        assert f.get_tensor("conv_in.weight").dtype == torch.float16
    inpaint = StableDiffusionInpaintPipeline.from_pipe(pipe, unet=unet9.float())
    from PIL import Image
    painted = inpaint("a blue square", image=Image.new("RGB", (64, 64)), mask_image=Image.new("L", (64, 64), 255),
                      num_inference_steps=2, height=64, width=64, output_type="np").images[0]
    assert painted.shape == (64, 64, 3)
    image = pipe("a red circle 🎨 " * 200, num_inference_steps=2, height=64, width=64,
                 output_type="np").images[0]
    assert image.shape == (64, 64, 3)


def test_the_inpainting_unet_starts_as_the_text_to_image_unet():
    """Zero-initialised mask and masked-image channels: whatever they hold, the 9-channel copy
    predicts exactly what the original predicts from the noisy latents alone."""
    from diffusers import UNet2DConditionModel

    from embedded.inpaint import inpaint_unet_from
    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(8, 16), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=8,
                                attention_head_dim=2, norm_num_groups=4).eval()
    unet9 = inpaint_unet_from(unet).eval()
    assert unet9.config.in_channels == 9 and unet.config.in_channels == 4
    x, extra, text = torch.randn(2, 4, 8, 8), torch.randn(2, 5, 8, 8), torch.randn(2, 3, 8)
    t = torch.tensor([10, 900])
    with torch.no_grad():
        assert torch.equal(unet(x, t, text).sample, unet9(torch.cat([x, extra], 1), t, text).sample)


def test_training_masks_cover_the_object_or_a_region():
    from embedded.inpaint import draw_masks, object_boxes
    from embedded.world import Obj, Scene, render
    import numpy as np
    img = np.asarray(render(Scene((Obj("square", "red", "small", "top left"),), "blue"), 64))
    boxes = object_boxes(img[None])
    (x0, y0, x1, y1), = boxes[0]
    assert x1 <= 32 and y1 <= 32 and (x1 - x0) > 8          # the object, in the top left
    masks = draw_masks(boxes * 400, 64, torch.Generator().manual_seed(0))
    assert masks.shape == (400, 1, 64, 64) and set(masks.unique().tolist()) == {0.0, 1.0}
    covers_object = (masks[:, 0, y0:y1, x0:x1].mean(dim=(1, 2)) == 1).float().mean()
    everything = (masks.flatten(1).mean(1) == 1).float().mean()
    assert 0.5 <= covers_object <= 0.8 and 0.05 <= everything <= 0.15


def test_loss_weight_keeps_high_noise_steps_and_min_snr_elsewhere():
    from embedded.model import noise_scheduler
    from embedded.model import loss_weight, timesteps as _timesteps
    cfg = CONFIGS["full"]
    ab = noise_scheduler().alphas_cumprod
    snr = ab / (1 - ab)
    w = loss_weight(snr, cfg)
    x0_weight = w * (snr + 1)          # what each step weighs in x0 terms
    assert torch.allclose(x0_weight[999], torch.tensor(1.0)) and torch.allclose(x0_weight[700], torch.tensor(1.0))
    assert torch.allclose(x0_weight[0], torch.tensor(cfg.min_snr_gamma))   # min-SNR cap at low noise
    plain_min_snr = torch.clamp(snr, max=cfg.min_snr_gamma)
    assert plain_min_snr[999] < 0.01                   # what the old weighting gave the last step
    t = torch.cat([_timesteps(cfg, torch.Generator().manual_seed(i)) for i in range(100)])
    high = (t >= cfg.high_noise_from).float().mean()
    expected = cfg.high_noise_share + (1 - cfg.high_noise_share) * (1000 - cfg.high_noise_from) / 1000
    assert abs(high - expected) < 0.03


def test_autoencoder_of_an_earlier_run_is_reused_with_its_time(tmp_path):
    from diffusers import AutoencoderKL
    cfg = CONFIGS["smoke"]
    first = train(cfg, tmp_path / "a", tmp_path / "work-a", TOKENIZER_SOURCE)
    second = train(cfg, tmp_path / "b", tmp_path / "work-b", TOKENIZER_SOURCE, autoencoder=tmp_path / "a")
    assert not (tmp_path / "work-b" / "vae.pt").exists()          # stages 2-4 skipped
    a, b = (AutoencoderKL.from_pretrained(tmp_path / n / "vae").state_dict() for n in ("a", "b"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert second["timings_s"]["vae_s_earlier_invocation"] == pytest.approx(first["timings_s"]["vae_s"], abs=0.2)
    assert second["vae_psnr_db"] == first["vae_psnr_db"]
    assert "_name_or_path" not in json.loads((tmp_path / "b" / "vae" / "config.json").read_text())


def test_the_detail_phase_starts_from_the_layout_phases_ema(tmp_path):
    """With a learning rate of 0 the detail phase changes nothing, so the exported UNet and text
    encoder are the layout phase's EMA weights (not its raw ones, and not a fresh start)."""
    from dataclasses import replace

    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel
    cfg = replace(CONFIGS["smoke"], detail_lr=0.0)
    train(cfg, tmp_path / "m", tmp_path / "w", TOKENIZER_SOURCE)
    layout = torch.load(tmp_path / "w" / "unet.pt", weights_only=False)
    detail = torch.load(tmp_path / "w" / "unet-detail.pt", weights_only=False)
    assert detail["done"] and detail["step"] == cfg.detail_steps
    unet = UNet2DConditionModel.from_pretrained(tmp_path / "m" / "unet").state_dict()
    text = CLIPTextModel.from_pretrained(tmp_path / "m" / "text_encoder").state_dict()
    for exported, ema in ((unet, layout["ema_unet"]), (text, layout["ema_text"])):
        assert all(torch.equal(exported[k], ema[k].half().to(exported[k].dtype)) for k in ema if k in exported)
    moved = sum(not torch.equal(detail["ema_unet"][k], layout["ema_unet"][k]) for k in layout["ema_unet"])
    assert moved == 0


def test_a_layout_restart_goes_on_from_a_finished_layout_phase(tmp_path):
    """Adding a layout restart to a finished run trains on from the layout phase's EMA weights
    without retraining it, records it, and the detail phase of the old recipe is refused as
    stale instead of silently reused."""
    from dataclasses import replace

    from diffusers import UNet2DConditionModel
    cfg = replace(CONFIGS["smoke"], detail_lr=0.0)
    work = tmp_path / "w"
    train(cfg, tmp_path / "m", work, TOKENIZER_SOURCE)
    layout_before = torch.load(work / "unet.pt", weights_only=False)
    longer = replace(cfg, layout_restart_steps=(3, 2))
    with pytest.raises(SystemExit, match="unet-detail.pt was trained from other weights"):
        train(longer, tmp_path / "m2", work, TOKENIZER_SOURCE)
    (work / "unet-detail.pt").unlink()
    with pytest.raises(SystemExit, match="inpaint.pt was trained from other weights"):
        train(longer, tmp_path / "m2", work, TOKENIZER_SOURCE)
    (work / "inpaint.pt").unlink()
    record = train(longer, tmp_path / "m2", work, TOKENIZER_SOURCE)
    assert record["unet_steps_done"] == cfg.unet_steps and record["layout_restart_steps_done"] == [3, 2]
    assert record["detail_steps_done"] == cfg.detail_steps and "restart_s" in record["timings_s"]
    layout = torch.load(work / "unet.pt", weights_only=False)
    assert layout["seconds"] == layout_before["seconds"]          # not retrained
    first = torch.load(work / "unet-restart.pt", weights_only=False)
    restart = torch.load(work / "unet-restart2.pt", weights_only=False)
    assert first["done"] and first["step"] == 3 and restart["done"] and restart["step"] == 2
    for before, after in ((layout, first), (first, restart)):
        assert sum(not torch.equal(after["ema_unet"][k], before["ema_unet"][k]) for k in before["ema_unet"]) > 0
    # detail lr 0: the exported UNet is the last restart's EMA
    unet = UNet2DConditionModel.from_pretrained(tmp_path / "m2" / "unet").state_dict()
    ema = restart["ema_unet"]
    assert all(torch.equal(unet[k], ema[k].half().to(unet[k].dtype)) for k in ema if k in unet)


def test_the_layout_lr_is_constant_after_warm_up_when_asked_and_decays_otherwise():
    from embedded.common import _lr_at
    cfg = CONFIGS["full"]
    lrs = [_lr_at(s, cfg, 7000, 4e-4, "constant") for s in (0, cfg.warmup - 1, cfg.warmup, 3500, 6999)]
    assert lrs[0] < lrs[1] == lrs[2] == lrs[3] == lrs[4] == 4e-4
    cosine = [_lr_at(s, cfg, 7000, 4e-4) for s in (cfg.warmup, 3500, 6999)]
    assert cosine[0] == pytest.approx(4e-4) and cosine[0] > cosine[1] > cosine[2] == pytest.approx(4e-5, rel=1e-3)


def test_captions_and_the_exported_tokenizer_stop_at_text_tokens(tmp_path):
    """--text-tokens 32: the captions are padded to 32 tokens in training and the exported
    tokenizer's model_max_length is 32, so the pipeline pads and cuts every prompt the same way."""
    from dataclasses import replace

    from diffusers import StableDiffusionPipeline

    from embedded.model import load_tokenizer
    from embedded.data import _tokens
    ids, empty = _tokens(load_tokenizer(TOKENIZER_SOURCE), ["a red circle", "a red circle " * 40], 32)
    assert ids.shape == (2, 32) and empty.shape == (32,) and ids[1, -1] == 49407
    cfg = replace(CONFIGS["smoke"], text_tokens=32, layout_schedule="constant")
    train(cfg, tmp_path / "m", tmp_path / "w", TOKENIZER_SOURCE)
    pipe = StableDiffusionPipeline.from_pretrained(tmp_path / "m", local_files_only=True, dtype=torch.float32)
    assert pipe.tokenizer.model_max_length == 32
    assert pipe.encode_prompt("a red circle " * 40, "cpu", 1, False)[0].shape[1] == 32


def test_the_evaluation_prints_every_figure_and_writes_the_model_readme(tmp_path, capsys):
    """`python -m embedded.evaluate --quick --readme` on a smoke model: every figure of issue 3
    is measured and lands in the folder's README (the figures of a 6-step model mean nothing)."""
    from embedded.evaluate import main
    train(CONFIGS["smoke"], tmp_path / "m", tmp_path / "w", TOKENIZER_SOURCE)
    fig = main(["--model", str(tmp_path / "m"), "--quick", "--n", "4", "--readme", "--draws", "2"])
    assert set(fig["fidelity"]) == {"colour", "background", "position", "shape", "all"}
    for k, (lo, hi) in fig["fidelity, 95% intervals"].items():
        assert 0 <= lo <= fig["fidelity"][k] <= hi <= 1
    pairs = fig["colour by held-out pair"]
    assert sum(row["n"] for row in pairs.values()) == 8 == fig["held-out prompts"]   # both draws pooled
    assert [row["colour"] for row in pairs.values()] == sorted(row["colour"] for row in pairs.values())
    by_draw = fig["fidelity by draw"]
    assert [d["prompt seed"] for d in by_draw] == [0, 101] and [d["prompts"] for d in by_draw] == [4, 4]
    assert fig["fidelity"]["colour"] == (by_draw[0]["colour"] + by_draw[1]["colour"]) / 2
    assert set(fig["fidelity, prompts without a position word"]) == {"colour", "background", "shape", "all"}
    assert set(fig["VAE reconstructions of the held-out scenes"]) == set(fig["fidelity"])
    neg = fig["negative prompt: the colour's share of object pixels"]
    assert "red" in neg and neg["favourite colour"] in neg
    assert fig["inpainting UNet"] is True and fig["seconds per 20-step image (median)"] > 0
    readme = (tmp_path / "m" / "README.md").read_text()
    for text in ("with negative \"red\"", "without (\"a red triangle", "the VAE's reconstructions",
                 "detail steps", "inpainting UNet", "python -m embedded.train", "95% intervals",
                 "By draw (prompt seed", "Colour by held-out pair", "8 held-out prompts"):
        assert text in readme, text
    assert json.loads((tmp_path / "m" / "evaluation.json").read_text())["held-out prompts"] == 8
    assert '"fidelity"' in capsys.readouterr().out
    val = main(["--model", str(tmp_path / "m"), "--n", "4", "--validation", "--draws", "1"])
    assert val["validation prompts"] == 4 and set(val["fidelity"]) == set(fig["fidelity"])


def test_record_and_validation_draws_never_share_prompts_or_noise():
    """Settings are chosen on validation draws, the record is measured on its own draws: no
    (prompt seed) or noise seed (for up to 10,000 prompts a draw) is in both."""
    from embedded.evaluate import RECORD_DRAWS, draw_seeds
    record = [draw_seeds(d) for d in range(RECORD_DRAWS + 5)]
    valid = [draw_seeds(d, validation=True) for d in range(1, 9)]
    assert record[0] == (0, 0) and RECORD_DRAWS == 3
    assert not {p for p, _ in record} & ({p for p, _ in valid} | {2})   # 2: the no-position prompts
    noise = [range(b, b + 10_000) for _, b in record + valid]
    assert all(not set(a) & set(b) for i, a in enumerate(noise) for b in noise[i + 1:])
    with pytest.raises(ValueError):
        draw_seeds(0, validation=True)


def test_a_resumed_stages_time_is_counted_once():
    import time

    from embedded.train import _stage_time
    timings: dict = {}
    _stage_time(timings, "unet", time.time() - 2.0, 10.0)   # 8 s before the interruption, 2 s now
    assert timings["unet_s"] == pytest.approx(2.0, abs=0.2)
    assert timings["unet_s"] + timings["unet_s_earlier_invocation"] == pytest.approx(10.0, abs=1e-6)
    fresh: dict = {}
    _stage_time(fresh, "unet", time.time() - 2.0, 2.0)        # all done by this invocation
    assert set(fresh) == {"unet_s"}


def test_bf16_autocast_where_it_runs_and_nowhere_else(monkeypatch):
    from studio.models import precision as common
    layer = torch.nn.Linear(4, 4)
    x = torch.randn(2, 4)
    monkeypatch.setattr(common, "bf16_native", lambda device: True)
    with common.autocast("cpu", True):
        assert layer(x).dtype == torch.bfloat16
    with common.autocast("cpu", False):
        assert layer(x).dtype == torch.float32
    with common.autocast("mps", True):      # not attempted on devices other than CUDA and the CPU
        assert layer(x).dtype == torch.float32
    assert layer.weight.dtype == torch.float32   # weights (and so the optimiser) stay fp32
    # a CPU without native bf16 (AVX2 only) emulates it ~14x slower than fp32: not used there
    monkeypatch.setattr(common, "bf16_native", lambda device: False)
    with common.autocast("cpu", True):
        assert layer(x).dtype == torch.float32


def test_wilson_interval_of_a_share():
    from embedded.evaluate import wilson
    lo, hi = wilson(0.895, 200)
    assert 0.84 < lo < 0.85 and 0.93 < hi < 0.94          # 179/200: about +-4.5 points
    assert wilson(1.0, 200)[1] == 1.0 and wilson(1.0, 200)[0] > 0.98
    assert wilson(0.0, 10)[0] == 0.0 and wilson(0.5, 0) == [0.0, 1.0]
    assert wilson(0.9, 2000)[1] - wilson(0.9, 2000)[0] < wilson(0.9, 200)[1] - wilson(0.9, 200)[0]


def test_bf16_native_answers_for_every_device_and_the_record_names_the_cpu():
    from embedded.common import machine_name
    from studio.models.precision import bf16_native
    assert isinstance(bf16_native("cpu"), bool)
    assert bf16_native("mps") is False
    if not torch.cuda.is_available():
        assert bf16_native("cuda") is False
    name = machine_name()
    assert f"{os.cpu_count()} cores" in name
    if Path("/proc/cpuinfo").exists():       # Linux: the model name, which platform.processor() lacks
        model = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name"))
        assert model in name


def test_refine_decoder_changes_only_the_decoder_and_records_it(tmp_path):
    """`--refine-decoder`: the decoder of a finished model is fine-tuned on its frozen encoder's
    latents; the encoder, the latent scale, both UNets and the text encoder stay bit for bit, the
    record says what was done and its time counts, and the evaluation's README says so."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from embedded.evaluate import main as evaluate
    from embedded.train import main
    train(CONFIGS["smoke"], tmp_path / "m", tmp_path / "w", TOKENIZER_SOURCE)
    main(["--config", "smoke", "--refine-decoder", str(tmp_path / "m"), "--out", str(tmp_path / "r"),
          "--work", str(tmp_path / "w")])
    a, b = (AutoencoderKL.from_pretrained(tmp_path / n / "vae") for n in ("m", "r"))
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa if not k.startswith(("decoder.", "post_quant_conv.")))
    assert any(not torch.equal(sa[k], sb[k]) for k in sa if k.startswith("decoder."))
    assert a.config.scaling_factor == b.config.scaling_factor
    assert "_name_or_path" not in json.loads((tmp_path / "r" / "vae" / "config.json").read_text())
    for sub in ("unet", "inpaint-unet"):
        ua, ub = (UNet2DConditionModel.from_pretrained(tmp_path / n / sub).state_dict() for n in ("m", "r"))
        assert all(torch.equal(ua[k], ub[k]) for k in ua)
    rec = json.loads((tmp_path / "r" / "training.json").read_text())
    (refine,) = rec["decoder_refines"]
    assert refine["steps"] == CONFIGS["smoke"].refine_decoder_steps and "--refine-decoder" in refine["command"]
    assert rec["timings_s"]["decoder_refine1_s"] > 0
    evaluate(["--model", str(tmp_path / "r"), "--quick", "--n", "2", "--readme"])
    assert "decoder alone" in (tmp_path / "r" / "README.md").read_text()


def same(a, b) -> bool:
    """Two models with the same weights, bit for bit."""
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_retrain_inpaint_changes_only_the_inpainting_unet_and_records_it(tmp_path):
    """`--retrain-inpaint`: the inpainting UNet of a finished model is trained again from its
    text-to-image UNet; the VAE, that UNet and the text encoder stay bit for bit, the record
    says what was done and its time counts."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    from embedded.train import main
    train(CONFIGS["smoke"], tmp_path / "m", tmp_path / "w", TOKENIZER_SOURCE)
    main(["--config", "smoke", "--retrain-inpaint", str(tmp_path / "m"), "--out", str(tmp_path / "r"),
          "--work", str(tmp_path / "w"), "--inpaint-steps", "3"])
    assert same(*(AutoencoderKL.from_pretrained(tmp_path / n / "vae") for n in ("m", "r")))
    assert same(*(UNet2DConditionModel.from_pretrained(tmp_path / n / "unet") for n in ("m", "r")))
    assert same(*(CLIPTextModel.from_pretrained(tmp_path / n / "text_encoder") for n in ("m", "r")))
    a, b = (UNet2DConditionModel.from_pretrained(tmp_path / n / "inpaint-unet") for n in ("m", "r"))
    assert b.config.in_channels == 9 and not same(a, b)
    assert "_name_or_path" not in json.loads((tmp_path / "r" / "inpaint-unet" / "config.json").read_text())
    rec = json.loads((tmp_path / "r" / "training.json").read_text())
    (retrain,) = rec["inpaint_retrains"]
    assert retrain["steps"] == 3 and retrain["lr"] == CONFIGS["smoke"].inpaint_lr
    assert "--retrain-inpaint" in retrain["command"] and rec["timings_s"]["inpaint_retrain1_s"] > 0
    assert not (tmp_path / "r" / "README.md").exists()   # old figures dropped
    from embedded.evaluate import main as evaluate
    evaluate(["--model", str(tmp_path / "r"), "--quick", "--n", "2", "--draws", "1", "--readme"])
    assert "inpainting UNet trained again" in (tmp_path / "r" / "README.md").read_text()


def test_two_objects_trains_only_the_unet_on_and_records_it(tmp_path):
    """`--two-objects`: the text-to-image UNet of a finished model goes on training on a world
    with more two-object pictures; the VAE, the text encoder (frozen: the student, the inpainting
    UNet and the ControlNet read it) and the inpainting UNet stay bit for bit, the record says
    what was done, and the model card says so."""
    from embedded.train import main
    from embedded.world import two_object_dataset
    train(CONFIGS["smoke"], tmp_path / "m", tmp_path / "w", TOKENIZER_SOURCE)
    main(["--config", "smoke", "--two-objects", str(tmp_path / "m"), "--out", str(tmp_path / "r"),
          "--work", str(tmp_path / "w"), "--two-object-steps", "3"])
    _only_the_unet_changed(tmp_path / "m", tmp_path / "r")
    rec = json.loads((tmp_path / "r" / "training.json").read_text())
    refine = rec["two_object_refine"]
    assert refine["steps"] == 3 and refine["text_encoder"] == "frozen" and "--two-objects" in refine["command"]
    assert rec["timings_s"]["two_objects_s"] > 0
    _, captions = two_object_dataset(400, seed=1, share=0.5)
    two = [c for c in captions if " and " in c and "two " not in c]
    assert 0.4 < len(two) / 400 < 0.75           # the share, plus the world's own two-object pictures
    from embedded.evaluate import main as evaluate
    evaluate(["--model", str(tmp_path / "r"), "--quick", "--n", "2", "--draws", "1", "--readme"])
    assert "two different objects captioned with their places" in (tmp_path / "r" / "README.md").read_text()


def test_regions_trains_only_the_unet_on_and_records_it(tmp_path):
    """`--regions`: the text-to-image UNet goes on training with a share of its pictures
    conditioned region by region; everything else stays bit for bit and the record says so."""
    from embedded.train import main
    train(CONFIGS["smoke"], tmp_path / "m", tmp_path / "w", TOKENIZER_SOURCE)
    main(["--config", "smoke", "--regions", str(tmp_path / "m"), "--out", str(tmp_path / "r"),
          "--work", str(tmp_path / "w"), "--regions-steps", "3"])
    _only_the_unet_changed(tmp_path / "m", tmp_path / "r")
    refine = json.loads((tmp_path / "r" / "training.json").read_text())["regions_refine"]
    assert refine["steps"] == 3 and refine["detail_steps"] == 3 and "--regions" in refine["command"]
    from embedded.evaluate import main as evaluate
    evaluate(["--model", str(tmp_path / "r"), "--quick", "--n", "2", "--draws", "1", "--readme"])
    assert "region by region" in (tmp_path / "r" / "README.md").read_text()


def _only_the_unet_changed(before, after) -> None:
    """A UNet refinement's output: VAE, text encoder and inpainting UNet bit for bit, the UNet not."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel
    assert same(*(AutoencoderKL.from_pretrained(m / "vae") for m in (before, after)))
    assert same(*(CLIPTextModel.from_pretrained(m / "text_encoder") for m in (before, after)))
    assert same(*(UNet2DConditionModel.from_pretrained(m / "inpaint-unet") for m in (before, after)))
    assert not same(*(UNet2DConditionModel.from_pretrained(m / "unet") for m in (before, after)))
