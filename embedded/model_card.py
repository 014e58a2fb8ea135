"""The embedded model's README (its model card): how it was made, from the folder's
training.json, and what it does, from `python -m embedded.evaluate --readme`'s figures."""

from __future__ import annotations

import json
from pathlib import Path

from studio.samplers import DEFAULT_SCHEDULER
from studio.models.sources import ALTERNATE_UNETS
from .fidelity import CFG, REFERENCE_COLOUR, REFERENCE_KEY, STEPS
from .world import COLOURS


def write_readme(model: Path, fig: dict) -> None:
    (model / "README.md").write_text(model_card(model, fig), encoding="utf-8")


def _figure_lines(fig: dict) -> tuple[list, int, str, str, str]:
    """(draws, prompts of one draw, the no-position row, the reconstruction row, the statistics)."""
    draws = fig.get("fidelity by draw") or []
    one = draws[0]["prompts"] if draws else fig["held-out prompts"]   # prompts of one draw
    g = fig.get("fidelity, prompts without a position word")
    nopos_row = (f'| without ("a red triangle on a blue background"; {one} prompts) | {g["colour"]:.1%} | '
                 f'{g["background"]:.1%} | - | {g["shape"]:.1%} | {g["all"]:.1%} |\n' if g else "")
    r = fig.get("VAE reconstructions of the held-out scenes")
    recon_row = (f'| no prompt: the VAE\'s reconstructions of the first draw\'s scenes\' renders ({one}; the decoder\'s ceiling) | '
                 f'{r["colour"]:.1%} | {r["background"]:.1%} | {r["position"]:.1%} | {r["shape"]:.1%} | '
                 f'{r["all"]:.1%} |\n' if r else "")
    ci = fig.get("fidelity, 95% intervals")
    stats = (f"\n95% intervals on {fig['held-out prompts']} prompts (Wilson): "
             + ", ".join(f"{k} {lo:.1%}-{hi:.1%}" for k, (lo, hi) in ci.items() if k != "all") + "."
             if ci else "")
    if len(draws) > 1:
        stats += ("\nBy draw (prompt seed: colour / background / position / shape): " + "; ".join(
            f"{d['prompt seed']}: {d['colour']:.1%} / {d['background']:.1%} / {d['position']:.1%} / {d['shape']:.1%}"
            for d in draws) + ".")
    pairs = fig.get("colour by held-out pair")
    if pairs:
        weak = list(pairs.items())[:3]
        stats += ("\nColour by held-out pair, weakest: " + "; ".join(
            f"{pair} {row['colour']:.0%}" + (" (misses: " + ", ".join(f"{c} {k}" for c, k in row["misses painted"].items())
                                             + ")" if row["misses painted"] else "")
            for pair, row in weak) + f"; the best {list(pairs.items())[-1][1]['colour']:.0%}.")
    return draws, one, nopos_row, recon_row, stats


def _recipe_lines(rec: dict, cfg: dict) -> tuple[str, str]:
    """(the layout phase's noise weighting, the stages after it: restarts, detail, inpainting)."""
    floor = (f" floored at {cfg['snr_floor']}, {cfg['high_noise_share']:.0%} of each batch at "
             f"t >= {cfg['high_noise_from']}" if cfg.get("snr_floor") else "")
    detail_how = ("plain min-SNR-gamma, uniform timesteps" if not cfg.get("detail_snr_floor")
                  and not cfg.get("detail_high_noise_share") else
                  f"weight floored at {cfg.get('detail_snr_floor')}, {cfg.get('detail_high_noise_share', 0):.0%} "
                  f"of each batch at t >= {cfg['high_noise_from']}")
    restarts = rec.get("layout_restart_steps_done") or []
    restart_stage = (f"\n- then the layout phase restarted {len(restarts)} time(s) from the previous EMA weights "
                     f"(fresh optimiser, warm-up and cosine decay again, the same weighting): "
                     f"{' + '.join(str(n) for n in restarts)} steps" if restarts else "")
    detail_stage = (f"\n- then {rec['detail_steps_done']} detail steps from those EMA weights (fresh "
                    f"optimiser, lr {cfg['detail_lr']}, {detail_how})" if rec.get("detail_steps_done") else "")
    inpaint_stage = (f"\n- inpainting UNet (9 input channels, `inpaint-unet/`): "
                     f"{rec['inpaint_steps_done']} steps from the trained UNet, text encoder frozen"
                     if rec.get("inpaint_steps_done") else "")
    return floor, restart_stage + detail_stage + inpaint_stage


def _history_lines(rec: dict, cfg: dict) -> tuple[str, str]:
    """(the decoder fine-tuning's PSNR, what earlier invocations and later commands did)."""
    decoder = (f", {rec['vae_psnr_db_after_decoder_finetune']} dB after fine-tuning the decoder "
               f"{cfg.get('decoder_steps')} steps on the frozen encoder's latents (held-out images)"
               if "vae_psnr_db_after_decoder_finetune" in rec else "")
    done_before = [k.split("_s_")[0] for k in rec["timings_s"] if k.endswith("_s_earlier_invocation")
                   and not (rec.get("autoencoder_from") and k.startswith(("vae", "decoder")))]
    earlier = (f"\n- resumed run: the {', '.join(done_before)} stage(s) were done by an earlier invocation "
               "(the same seed and settings for those stages; a checkpoint that began from other weights "
               "is refused); their time is counted above"
               if done_before else "")
    if rec.get("autoencoder_from"):
        earlier += ("\n- the autoencoder (VAE and decoder stages) is the previous model's, made by this "
                    "command and reused with --autoencoder (the latent space is unchanged); its "
                    "training time is counted above")
    for r in rec.get("inpaint_retrains", []):
        earlier += (f"\n- then the inpainting UNet trained again, from the text-to-image UNet (VAE, UNet and "
                    f"text encoder unchanged; it replaces the one above): `{r['command']}`, {r['steps']} steps, "
                    f"lr {r['lr']}, {r['seconds'] / 60:.0f} min on {r['machine']}, {r['threads']} threads")
    for r in rec.get("decoder_refines", []):
        earlier += (f"\n- then the decoder alone fine-tuned on the frozen encoder's latents (UNets, "
                    f"text encoder and latent space unchanged): `{r['command']}`, {r['steps']} steps, "
                    f"lr {r['lr']}, gradient norm clipped at {r['clip']}, PSNR {r['psnr_db_before']} -> "
                    f"{r['psnr_db']} dB, {r['seconds'] / 60:.0f} min on {r['machine']}, {r['threads']} threads")
    r = rec.get("two_object_refine")
    if r:
        earlier += (f"\n- then the text-to-image UNet trained on, text encoder frozen, on a world where "
                    f"{r['two_object_share']:.0%} of the pictures are two different objects captioned with their "
                    f"places (the rest the world's own mix): `{r['command']}`, {r['steps']} steps, lr {r['lr']} "
                    f"(cosine), {r['high_noise_share']:.0%} of each batch at high noise, then {r['detail_steps']} "
                    f"detail steps at lr {r['detail_lr']}; {r['seconds'] / 60:.0f} min on {r['machine']}, "
                    f"{r['threads']} threads")
    r = rec.get("regions_refine")
    if r:
        earlier += (f"\n- then the text-to-image UNet trained on, text encoder frozen, with {r['two_object_share']:.0%} "
                    f"of the pictures two objects, a third of those captioned whole, a third conditioned region by "
                    f"region through the studio's regional attention (each object's own caption in its region) and "
                    f"a third the same under the whole caption as base (embedded/regional.py): `{r['command']}`, "
                    f"{r['steps']} steps, lr {r['lr']} (cosine), then {r['detail_steps']} detail steps at lr "
                    f"{r['detail_lr']}; {r['seconds'] / 60:.0f} min on {r['machine']}, {r['threads']} threads")
    return decoder, earlier


def model_card(model: Path, fig: dict) -> str:
    """The README's text, from the folder's training.json and the evaluation's figures."""
    rec = json.loads((model / "training.json").read_text(encoding="utf-8"))
    cfg = rec["config"]
    f = fig["fidelity"]
    neg = fig["negative prompt: the colour's share of object pixels"]
    fav = neg["favourite colour"]
    inp = fig["inpaint 'a blue square'"]
    ref_without, ref_with = fig[REFERENCE_KEY].values()
    draws, one, nopos_row, recon_row, stats = _figure_lines(fig)
    floor, later_stages = _recipe_lines(rec, cfg)
    decoder, earlier = _history_lines(rec, cfg)
    blend = fig.get("inpaint 'a blue square', text-to-image UNet (latent blending)")
    inp_how = " (the model's own 9-channel inpainting UNet)" if fig.get("inpainting UNet") else ""
    blend_line = (f"\n  The text-to-image UNet with latent blending instead: "
                  f"{blend['blue object in mask (>=25% blue pixels)']:.0%}." if blend else "")
    size_mb = sum(p.stat().st_size for p in model.rglob("*")      # the student (lcm-unet/) has its own card
                  if p.is_file() and p.relative_to(model).parts[0] not in ALTERNATE_UNETS) / 1e6
    return f"""# The embedded default model: a tiny Stable Diffusion of a shape world

A latent diffusion model in the exact diffusers Stable Diffusion 1.x layout (AutoencoderKL,
UNet2DConditionModel, CLIPTextModel with CLIP's real 49,408-token BPE vocabulary, a scheduler
config), trained by this project on a synthetic world of coloured shapes
(`embedded/world.py`). It is for trying the studio offline: it knows circles, squares,
triangles, stars and rings in {len(COLOURS)} colours on flat backgrounds, small or large, in nine
positions — and nothing else.

Loads with `StableDiffusionPipeline.from_pretrained("assets/embedded-model")`; weights are fp16
({size_mb:.1f} MB in all) and run on the CPU in fp32.

## How it was made
    {rec.get("command") or "python -m embedded.train"}

- seed {cfg["seed"]}, {cfg["n_images"]:,} images at {cfg["size"]} px, VAE {cfg["vae_steps"]} steps
  (batch {cfg["vae_batch"]}), UNet + text encoder {rec["unet_steps_done"]} steps (batch
  {cfg["batch"]}, lr {cfg["lr"]} {cfg.get("layout_schedule", "cosine")} after a {cfg["warmup"]}-step warm-up,
  captions padded to {cfg.get("text_tokens", 77)} tokens, {int(cfg["caption_dropout"] * 100)}% empty captions, min-SNR-gamma
  {cfg["min_snr_gamma"]}{floor}, EMA {cfg["ema_decay"]}){later_stages}
- parameters: VAE {rec["params"]["vae"]:,}, UNet {rec["params"]["unet"]:,}, text encoder
  {rec["params"]["text_encoder"]:,} (mostly the CLIP token embeddings)
- machine: {rec["machine"]}, {rec["device"]}, {rec["threads"]} torch threads, torch {rec["torch"]}
- time: {sum(rec["timings_s"].values()) / 60:.0f} min ({", ".join(f"{k} {v:.0f}" for k, v in rec["timings_s"].items())})
- VAE reconstruction PSNR: {rec["vae_psnr_db"]} dB{decoder}
- objective: v-prediction on Stable Diffusion's scaled-linear noise schedule (why:
  `embedded/model.py`){earlier}

## What it does (python -m embedded.evaluate --readme)
{fig["held-out prompts"]} held-out prompts (colour/shape pairs never seen in training; {len(draws) or 1} draw(s) of
{one} pooled), {STEPS} steps, {DEFAULT_SCHEDULER}, CFG {CFG}, scored by the project's
pixel checker:

| prompts | colour | background | position | shape | all |
|---|---|---|---|---|---|
| with a position ("a large red triangle in the top left corner on a blue background") | {f["colour"]:.1%} | {f["background"]:.1%} | {f["position"]:.1%} | {f["shape"]:.1%} | {f["all"]:.1%} |
{nopos_row}{recon_row}{stats}

- Negative prompt: "a circle", share of red object pixels: {neg["red"]["without"]:.1%} without a
  negative prompt, {neg["red"]["with it as the negative prompt"]:.1%} with negative "red". The prompt names no
  colour and the model paints it {fav} most ({neg[fav]["without"]:.0%} of the object pixels):
  {neg[fav]["with it as the negative prompt"]:.0%} with negative "{fav}".
- img2img at strength 0.3 keeps the object in its cell: {fig["img2img 0.3 keeps position"]:.0%}.
- Inpainting "a blue square" in a masked cell{inp_how}: a blue object in the mask
  {inp["blue object in mask (>=25% blue pixels)"]:.0%} of the time (mean blue share
  {inp["mean blue share in mask"]:.0%}); pixels outside the mask changed in
  {inp["images with any changed pixel outside the mask"]} images.{blend_line}
- Reference image (a {REFERENCE_COLOUR} circle, reference-only attention) for "a circle on a gray
  background": {REFERENCE_COLOUR} share of object pixels {ref_without:.1%} without, {ref_with:.1%} with it.
- Speed: {fig["seconds per 20-step image (median)"]:.2f} s per 20-step image (median, batch 1,
  {fig["settings"]["device"]}, {fig["settings"]["torch threads"]} threads, {fig["settings"]["machine"]}).
"""
