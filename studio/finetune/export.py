"""A trained LoRA as the file every tool loads: kohya's layout, written by the studio's own code.

Keys are `lora_unet_<module path with . -> _>` and `lora_te_text_model_<...>` with
`.lora_down.weight` (PEFT's lora_A), `.lora_up.weight` (lora_B) and `.alpha`, the alpha actually
used (the scale is alpha / rank in kohya, AUTOMATIC1111, ComfyUI and diffusers). diffusers' own
kohya converter writes alpha = rank and SD1 text encoders as `lora_te1_`, so it is not used.
SDXL's are kohya's SDXL layout: the UNet's modules under their original (SGM) names
(`lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q`), CLIP-L as `lora_te1_`, OpenCLIP
bigG as `lora_te2_`. A new word's learned vectors (pivotal tuning, words.py) ride along as
AUTOMATIC1111's bundled embeddings, `bundle_emb.<word>.string_to_param.*` (SDXL: `.clip_l`, `.clip_g`).
Tensors are fp16 and contiguous; the header carries kohya's `ss_*` training metadata (all strings),
`modelspec.*` and `sshs_model_hash` (sha256 of the bytes after the header, which AUTOMATIC1111
shows as the LoRA's hash). The file is written to a temporary name and renamed, so a reader never
sees half a file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

UNET_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2")
TEXT_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")
KEY_RULE = re.compile(r"^lora_(unet|te|te1|te2)_[a-z0-9_]+\.(lora_down\.weight|lora_up\.weight|alpha)$"
                      r"|^bundle_emb\.[^.]+\.(string_to_param\.\*|clip_l|clip_g)$")   # a new word's vectors
BASE_VERSIONS = {"SD 1.x": "sd_v1", "SD 2.x": "sd_v2", "SDXL": "sdxl_base_v1-0", "Flux.1": "flux1"}
ARCHITECTURES = {"sd_v1": "stable-diffusion-v1/lora", "sd_v2": "stable-diffusion-v2-512/lora",
                 "sdxl_base_v1-0": "stable-diffusion-xl-v1-base/lora", "flux1": "flux-1-dev/lora"}


def kohya_name(prefix: str, module: str) -> str:
    """`lora_unet_` / `lora_te_` (SDXL: `lora_te1_`, `lora_te2_`) + the module path with dots as
    underscores. The text encoders' paths are written under `text_model_` (transformers 5 dropped
    that level from CLIPTextModel; the readers match `lora_te_text_model_encoder_layers_N_...`)."""
    if prefix.startswith("te") and not module.startswith("text_model."):
        module = "text_model." + module
    return f"lora_{prefix}_" + module.replace(".", "_")


SGM_BLOCKS = [(re.compile(r"^down_blocks\.(\d+)\.attentions\.(\d+)\.(.+)$"), "input_blocks.{n}.1.{rest}", 1),
              (re.compile(r"^up_blocks\.(\d+)\.attentions\.(\d+)\.(.+)$"), "output_blocks.{n}.1.{rest}", 0)]


def sgm_module(module: str, layers_per_block: int) -> str:
    """A UNet attention module's path in the original (SGM) layout kohya's SDXL LoRAs use:
    down level i's attention j is input block 1 + i(l+1) + j, up level i's is output block
    i(l+1) + j (l layers a level, plus the down- or upsampler); the middle one is middle_block.1."""
    if module.startswith("mid_block.attentions.0."):
        return "middle_block.1." + module[len("mid_block.attentions.0."):]
    for rule, form, first in SGM_BLOCKS:
        match = rule.match(module)
        if match:
            level, layer, rest = int(match[1]), int(match[2]), match[3]
            return form.format(n=first + level * (layers_per_block + 1) + layer, rest=rest)
    raise ValueError(f"no SGM name for {module}")


def lora_state(model) -> dict:
    """The LoRA weights PEFT added to `model` (`<module>.lora_A.<adapter>.weight`, `lora_B`)."""
    return {name: p for name, p in model.named_parameters() if ".lora_A." in name or ".lora_B." in name}


def kohya_tensors(peft_state: dict, prefix: str, alpha: float, sgm_blocks: int | None = None) -> dict:
    """One model's LoRA weights (`lora_state`, or PEFT's `get_peft_model_state_dict`) as kohya
    tensors: fp16, contiguous, one `.alpha` per module; `sgm_blocks` (the UNet's layers a level):
    the UNet's modules under their SGM names, as kohya writes SDXL's."""
    import torch

    out = {}
    for module, pair in _peft_modules(peft_state).items():
        name = kohya_name(prefix, sgm_module(module, sgm_blocks) if sgm_blocks else module)
        for which, part in (("A", "lora_down"), ("B", "lora_up")):
            if which in pair:
                out[f"{name}.{part}.weight"] = pair[which].to(torch.float16).contiguous()
        out[f"{name}.alpha"] = torch.tensor(float(alpha), dtype=torch.float16)
    return out


def _peft_modules(peft_state: dict) -> dict[str, dict]:
    """module -> {"A": lora_A, "B": lora_B} of a PEFT state (fp32, on the CPU)."""
    import torch

    out: dict[str, dict] = {}
    for key, tensor in peft_state.items():
        match = re.match(r"^(?:base_model\.model\.)?(.+)\.lora_([AB])(?:\.[^.]+)?\.weight$", key)
        if not match:
            raise ValueError(f"not a LoRA weight: {key}")
        out.setdefault(match[1], {})[match[2]] = tensor.detach().to("cpu", torch.float32)
    return out


def flux_kohya_tensors(peft_state: dict, config: dict, alpha: float) -> dict:
    """A Flux transformer's LoRA in kohya's Flux layout (`lora_unet_double_blocks_0_img_attn_qkv`,
    Black Forest Labs' module names, the ones the studio, ComfyUI, Forge and A1111-Forge read).
    Where BFL fuses what diffusers keeps apart (q, k, v; a single block's q, k, v and MLP in),
    the parts' LoRAs become one, exactly: their downs stacked, their ups block-diagonal, alpha
    times the number of parts so alpha / rank stays the same."""
    import torch

    from studio.families.loras import MODULES

    parts = _peft_modules(peft_state)
    out = {}
    for bfl, modules in MODULES["flux"](config)[0].items():
        if not all(m in parts for m in modules):
            continue
        downs = [parts[m]["A"] for m in modules]
        up = torch.block_diag(*[parts[m]["B"] for m in modules])
        name = "lora_unet_" + bfl.replace(".", "_")
        out[f"{name}.lora_down.weight"] = torch.cat(downs).to(torch.float16).contiguous()
        out[f"{name}.lora_up.weight"] = up.to(torch.float16).contiguous()
        out[f"{name}.alpha"] = torch.tensor(float(alpha) * len(modules), dtype=torch.float16)
    missing = set(parts) - {m for ms in MODULES["flux"](config)[0].values() for m in ms}
    if missing:
        raise ValueError(f"no Flux name for {sorted(missing)[:3]}")
    return out


def data_hash(tensors: dict, metadata: dict[str, str]) -> str:
    """sha256 of a safetensors file's data section (after the header): kohya's `sshs_model_hash`,
    which AUTOMATIC1111 computes the same way for a LoRA's hash."""
    from safetensors.torch import save

    blob = save(tensors, metadata)
    header = int.from_bytes(blob[:8], "little")
    return hashlib.sha256(blob[8 + header:]).hexdigest()


def write_lora(path: Path, tensors: dict, metadata: dict) -> Path:
    """Write `tensors` with `metadata` (values made strings) and the hashes, atomically."""
    bad = [k for k in tensors if not KEY_RULE.match(k)]
    if bad:
        raise ValueError(f"not kohya LoRA keys: {bad[:3]}")
    return _save(path, tensors, {**metadata, "sshs_model_hash": data_hash(tensors, {})})


def _save(path: Path, tensors: dict, metadata: dict) -> Path:
    """A safetensors file written to a temporary name and renamed (a reader never sees half a
    file), readable like any saved file; metadata values made strings."""
    from safetensors.torch import save_file

    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), meta)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)          # (safetensors makes it 0600)
    os.replace(tmp, path)
    return path


def embedding_files(bundle: dict, name: str) -> dict[str, dict]:
    """Textual-inversion files from a run's bundled words (`bundle_emb.<word>.<part>`): one per
    word, named `name` (`name-word` when there are several), in the layout A1111 reads:
    `emb_params` (SD 1.x/2.x), `clip_l` and `clip_g` (SDXL)."""
    words: dict[str, dict] = {}
    for key, tensor in bundle.items():
        _, word, part = key.split(".", 2)
        words.setdefault(word, {})["emb_params" if part.startswith("string_to_param") else part] = tensor
    return {(name if len(words) == 1 else f"{name}-{word}"): tensors for word, tensors in words.items()}


def write_embedding(path: Path, tensors: dict, metadata: dict) -> Path:
    """An embedding file, atomically, with the run's metadata."""
    return _save(path, tensors, metadata)


def training_metadata(settings, *, family: str, model_name: str, model_hash: str, dataset_dirs: dict,
                      tag_frequency: dict, images: int, step: int, epoch: int, total: int,
                      started: float, finished: float, resolution: int,
                      sizes: list | None = None) -> dict[str, str]:
    """kohya's `ss_*` keys (and modelspec's) for a run with these settings (`sizes`: each
    picture's (width, height), for `ss_bucket_info`)."""
    version = next((v for k, v in BASE_VERSIONS.items() if family.startswith(k)), "sd_v1")
    meta = {
        "ss_output_name": settings.name, "ss_network_module": "networks.lora",
        "ss_network_dim": settings.rank, "ss_network_alpha": settings.alpha,
        "ss_network_args": {"text_encoder": settings.text_encoder_lr > 0},
        "ss_embedding_lr": settings.embedding_lr,
        "ss_base_model_version": version, "ss_v2": version == "sd_v2",
        "ss_sd_model_name": model_name, "ss_new_sd_model_hash": model_hash,
        "ss_resolution": f"({resolution}, {resolution})", "ss_seed": settings.seed,
        "ss_learning_rate": settings.lr, "ss_unet_lr": settings.lr, "ss_text_encoder_lr": settings.text_encoder_lr,
        "ss_lr_scheduler": settings.schedule, "ss_lr_warmup_steps": round(settings.warmup * total),
        "ss_optimizer": {"adamw8bit": "bitsandbytes.optim.AdamW8bit"}.get(settings.optimizer, "torch.optim.AdamW"), "ss_min_snr_gamma": settings.min_snr_gamma,
        "ss_noise_offset": settings.noise_offset, "ss_cache_latents": True, "ss_flip_aug": settings.flip,
        "ss_enable_bucket": settings.buckets, "ss_batch_size_per_device": settings.batch,
        "ss_num_train_images": images, "ss_num_reg_images": 0, "ss_steps": step, "ss_epoch": epoch,
        "ss_max_train_steps": total, "ss_num_epochs": settings.epochs,
        "ss_dataset_dirs": dataset_dirs, "ss_tag_frequency": tag_frequency,
        "ss_training_started_at": round(started, 3), "ss_training_finished_at": round(finished, 3),
        "ss_training_comment": f"sd-studio; trigger: {settings.trigger}" if settings.trigger else "sd-studio",
        "modelspec.sai_model_spec": "1.0.0", "modelspec.architecture": ARCHITECTURES[version],
        "modelspec.implementation": "https://github.com/Stability-AI/generative-models",
        "modelspec.title": settings.name, "modelspec.resolution": f"{resolution}x{resolution}",
    }
    if settings.trigger:
        meta["modelspec.trigger_phrase"] = settings.trigger
    if settings.buckets and sizes:
        counts = {size: sizes.count(size) for size in sorted(set(sizes))}
        meta["ss_bucket_info"] = {"buckets": {str(i): {"resolution": list(size), "count": n}
                                              for i, (size, n) in enumerate(counts.items())}}
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()}


def sidecar(settings, family: str, description: str) -> dict:
    """AUTOMATIC1111's user metadata beside a LoRA (`NAME.json`): shown on its card, the
    activation text added to the prompt with the LoRA."""
    version = next((v for k, v in BASE_VERSIONS.items() if family.startswith(k)), "sd_v1")
    return {"description": description,
            "sd version": {"sd_v1": "SD1", "sd_v2": "SD2", "sdxl_base_v1-0": "SDXL"}.get(version, "Unknown"),
            "activation text": settings.trigger, "preferred weight": 1.0, "negative text": "",
            "notes": f"Trained in sd-studio: rank {settings.rank}, alpha {settings.alpha}."}
