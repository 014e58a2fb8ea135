"""What a family's denoiser learns from a batch — a table keyed by the family (studio/families'
`arch`), so the trainer's step is the same for every model:

- `sd` (SD 1.x, 2.x, SDXL): DDPM noise at a uniform timestep, the UNet predicts the noise or
  v (the model's own `prediction_type`), min-SNR weights (Hang et al. 2023); noise offset.
- `flux` (Flux.1): rectified flow as Black Forest Labs train it — a picture and noise mixed at
  sigma drawn from a logit-normal (kohya's `sigmoid` sampling, SD3 paper), the transformer
  predicts noise minus picture, on the packed 2x2 latents with their position ids, Flux dev's
  guidance input at 1 (kohya's and ai-toolkit's advice for LoRAs); T5 and CLIP are not trained.

Each gives the latents of pictures, the cached text of captions, the per-picture loss, the LoRA
targets on the denoiser and the file's tensors (export.py: kohya's layout of that family).
"""

from __future__ import annotations

import torch

from studio.finetune import text as txt
from studio.finetune.export import UNET_TARGETS, flux_kohya_tensors, kohya_tensors, lora_state

# diffusers' FluxTransformer2DModel: every attention projection and feed-forward of both block
# kinds (single blocks: q, k, v, the MLP in and the fused out), not the modulations nor the embedders
FLUX_TARGETS = (r".*transformer_blocks\.\d+\.(attn\.(to_q|to_k|to_v|to_out\.0|add_q_proj|add_k_proj|add_v_proj|"
                r"to_add_out)|ff\.net\.(0\.proj|2)|ff_context\.net\.(0\.proj|2)|proj_mlp|proj_out)$")


class Diffusion:
    """SD 1.x, 2.x and SDXL."""
    denoiser, targets = "unet", list(UNET_TARGETS)
    text_trainable = True

    def __init__(self, pipe):
        from diffusers import DDPMScheduler
        self.scheduler = DDPMScheduler.from_config(pipe.scheduler.config)

    def latents(self, vae, pictures: torch.Tensor) -> torch.Tensor:
        return vae.encode(pictures).latent_dist.mean.float() * vae.config.scaling_factor

    def text(self, run, captions: list[str], trained: bool) -> dict:
        ids = txt.token_ids(run.pipe, run.side, captions)
        if trained:
            return {"ids": ids}
        encoders = [getattr(run.pipe, n) for n in run.side.encoders]
        parts = [txt.encode(run.side, encoders, ids[i:i + 32]) for i in range(0, len(ids), 32)]
        return {k: torch.cat([p[k] for p in parts]).cpu() for k in parts[0]}

    def per_sample(self, run, x0: torch.Tensor, text: dict) -> torch.Tensor:
        from diffusers.training_utils import compute_snr

        from studio.models.precision import autocast
        s, sched = run.settings, self.scheduler
        noise = torch.randn(x0.shape, generator=run.gen)
        if s.noise_offset:
            noise = noise + s.noise_offset * torch.randn((*x0.shape[:2], 1, 1), generator=run.gen)
        t = torch.randint(sched.config.num_train_timesteps, (len(x0),), generator=run.gen)
        x0, noise, t = x0.to(run.device), noise.to(run.device), t.to(run.device)
        noisy = sched.add_noise(x0, noise, t)
        v_pred = sched.config.prediction_type == "v_prediction"
        target = sched.get_velocity(x0, noise, t) if v_pred else noise
        if "ids" in text:
            text = txt.encode(run.side, run.text_encoders, text["ids"])
        with autocast(run.device, run.device.startswith("cuda")):
            size = (x0.shape[-2] * run.pipe.vae_scale_factor, x0.shape[-1] * run.pipe.vae_scale_factor)
            pred = run.denoiser(noisy, t, **txt.denoiser_inputs(run.side, text, size)).sample
        per_sample = ((pred.float() - target.float()) ** 2).mean(dim=(1, 2, 3))
        if s.min_snr_gamma:
            snr = compute_snr(sched, t)
            per_sample = per_sample * snr.clamp(max=s.min_snr_gamma) / (snr + 1 if v_pred else snr)
        return per_sample

    def tensors(self, run) -> dict:
        blocks = run.denoiser.config.layers_per_block if run.side.pooled_from is not None else None  # SDXL: SGM names
        return kohya_tensors(lora_state(run.denoiser), "unet", run.settings.alpha, sgm_blocks=blocks)


class Flow:
    """Flux.1 (dev, schnell)."""
    denoiser, targets = "transformer", FLUX_TARGETS
    text_trainable = False

    def __init__(self, pipe):
        self.pipe = pipe

    def latents(self, vae, pictures: torch.Tensor) -> torch.Tensor:
        z = vae.encode(pictures).latent_dist.mean.float()
        return (z - vae.config.shift_factor) * vae.config.scaling_factor

    def text(self, run, captions: list[str], trained: bool) -> dict:
        tokens = min(512, self.pipe.tokenizer_2.model_max_length)
        embeds, pooled = [], []
        for i in range(0, len(captions), 8):
            e, p, _ = self.pipe.encode_prompt(prompt=captions[i:i + 8], prompt_2=None, device=run.device,
                                              max_sequence_length=tokens)
            embeds.append(e.float().cpu())
            pooled.append(p.float().cpu())
        return {"embeds": torch.cat(embeds), "pooled": torch.cat(pooled)}

    def per_sample(self, run, x0: torch.Tensor, text: dict) -> torch.Tensor:
        from studio.models.precision import autocast
        n, c, h, w = x0.shape
        noise = torch.randn(x0.shape, generator=run.gen)
        sigma = torch.sigmoid(torch.randn(n, generator=run.gen))
        x0, noise, sigma = x0.to(run.device), noise.to(run.device), sigma.to(run.device)
        noisy = (1 - sigma.view(-1, 1, 1, 1)) * x0 + sigma.view(-1, 1, 1, 1) * noise
        pack = self.pipe._pack_latents
        image_ids = self.pipe._prepare_latent_image_ids(n, h // 2, w // 2, run.device, torch.float32)
        guided = run.denoiser.config.guidance_embeds
        with autocast(run.device, run.device.startswith("cuda")):
            pred = run.denoiser(hidden_states=pack(noisy, n, c, h, w), timestep=sigma,
                                guidance=torch.ones(n, device=run.device) if guided else None,
                                pooled_projections=text["pooled"], encoder_hidden_states=text["embeds"],
                                txt_ids=torch.zeros(text["embeds"].shape[1], 3, device=run.device),
                                img_ids=image_ids, return_dict=False)[0]
        target = pack(noise - x0, n, c, h, w)
        return ((pred.float() - target.float()) ** 2).mean(dim=(1, 2))

    def tensors(self, run) -> dict:
        return flux_kohya_tensors(lora_state(run.denoiser), dict(run.denoiser.config), run.settings.alpha)


OBJECTIVES = {"sd": Diffusion, "flux": Flow}
