"""Tiny Flux.1, SD 3.5 and Z-Image folders written as the original single files users have.

The key maps are derived from the reference code's module names: Black Forest Labs' `flux`
repository (src/flux/model.py, modules/layers.py: img_in, txt_in, time_in / vector_in /
guidance_in MLPEmbedders, double_blocks with img_/txt_ mod, attn (fused qkv, QKNorm, proj) and
mlp.0/.2, single_blocks with linear1 (qkv + mlp in) and linear2, final_layer.linear and
adaLN_modulation.1 = (shift, scale)) and Stability's sd3.5 (mmditx.py: x_embedder.proj, pos_embed,
t_embedder / y_embedder mlp.0/.2, context_embedder, joint_blocks.N.{context_block,x_block} with
fused attn.qkv, attn.ln_q/ln_k, attn.proj, attn2 (MMDiT-X), mlp.fc1/fc2, adaLN_modulation.1; the
last context block pre-only with (shift, scale); final_layer) and Tongyi-MAI's Z-Image (x_embedder,
t_embedder.mlp.0/.2, cap_embedder.0/.1, x_pad_token / cap_pad_token, noise_refiner,
context_refiner and layers with attention.qkv fused, attention.out, q_norm / k_norm,
feed_forward.w1/w2/w3, final_layer.linear and adaLN_modulation.1, as ComfyUI's
z_image_turbo_bf16.safetensors; its Qwen3-4B in Hugging Face's names under `model.`). Each map is the inverse of what
the studio's loader must undo, written from those names, not from diffusers' converter.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from studio.families.encoders import canonical_clip

from .ldm_layout import vae_to_ldm


def _swap(t: torch.Tensor) -> torch.Tensor:
    """diffusers' AdaLayerNormContinuous is (scale, shift); the originals' adaLN is (shift, scale)."""
    scale, shift = t.chunk(2, dim=0)
    return torch.cat([shift, scale], dim=0)


def _linear(out: dict, new: str, sd: dict, old: str, bias: bool = True) -> None:
    out[f"{new}.weight"] = sd[f"{old}.weight"]
    if bias and f"{old}.bias" in sd:
        out[f"{new}.bias"] = sd[f"{old}.bias"]


def _fused(out: dict, new: str, sd: dict, olds: list[str]) -> None:
    out[f"{new}.weight"] = torch.cat([sd[f"{o}.weight"] for o in olds])
    if all(f"{o}.bias" in sd for o in olds):
        out[f"{new}.bias"] = torch.cat([sd[f"{o}.bias"] for o in olds])


def flux_to_bfl(transformer) -> dict:
    sd, cfg, out = transformer.state_dict(), transformer.config, {}
    _linear(out, "img_in", sd, "x_embedder")
    _linear(out, "txt_in", sd, "context_embedder")
    for bfl, ours in (("time_in", "timestep_embedder"), ("vector_in", "text_embedder"),
                      ("guidance_in", "guidance_embedder")):
        if f"time_text_embed.{ours}.linear_1.weight" in sd:
            _linear(out, f"{bfl}.in_layer", sd, f"time_text_embed.{ours}.linear_1")
            _linear(out, f"{bfl}.out_layer", sd, f"time_text_embed.{ours}.linear_2")
    for i in range(cfg.num_layers):
        b, d = f"double_blocks.{i}", f"transformer_blocks.{i}"
        _linear(out, f"{b}.img_mod.lin", sd, f"{d}.norm1.linear")
        _linear(out, f"{b}.txt_mod.lin", sd, f"{d}.norm1_context.linear")
        _fused(out, f"{b}.img_attn.qkv", sd, [f"{d}.attn.to_q", f"{d}.attn.to_k", f"{d}.attn.to_v"])
        _fused(out, f"{b}.txt_attn.qkv", sd, [f"{d}.attn.add_q_proj", f"{d}.attn.add_k_proj", f"{d}.attn.add_v_proj"])
        out[f"{b}.img_attn.norm.query_norm.scale"] = sd[f"{d}.attn.norm_q.weight"]
        out[f"{b}.img_attn.norm.key_norm.scale"] = sd[f"{d}.attn.norm_k.weight"]
        out[f"{b}.txt_attn.norm.query_norm.scale"] = sd[f"{d}.attn.norm_added_q.weight"]
        out[f"{b}.txt_attn.norm.key_norm.scale"] = sd[f"{d}.attn.norm_added_k.weight"]
        _linear(out, f"{b}.img_attn.proj", sd, f"{d}.attn.to_out.0")
        _linear(out, f"{b}.txt_attn.proj", sd, f"{d}.attn.to_add_out")
        _linear(out, f"{b}.img_mlp.0", sd, f"{d}.ff.net.0.proj")
        _linear(out, f"{b}.img_mlp.2", sd, f"{d}.ff.net.2")
        _linear(out, f"{b}.txt_mlp.0", sd, f"{d}.ff_context.net.0.proj")
        _linear(out, f"{b}.txt_mlp.2", sd, f"{d}.ff_context.net.2")
    for i in range(cfg.num_single_layers):
        b, d = f"single_blocks.{i}", f"single_transformer_blocks.{i}"
        _fused(out, f"{b}.linear1", sd, [f"{d}.attn.to_q", f"{d}.attn.to_k", f"{d}.attn.to_v", f"{d}.proj_mlp"])
        _linear(out, f"{b}.linear2", sd, f"{d}.proj_out")
        out[f"{b}.norm.query_norm.scale"] = sd[f"{d}.attn.norm_q.weight"]
        out[f"{b}.norm.key_norm.scale"] = sd[f"{d}.attn.norm_k.weight"]
        _linear(out, f"{b}.modulation.lin", sd, f"{d}.norm.linear")
    _linear(out, "final_layer.linear", sd, "proj_out")
    out["final_layer.adaLN_modulation.1.weight"] = _swap(sd["norm_out.linear.weight"])
    out["final_layer.adaLN_modulation.1.bias"] = _swap(sd["norm_out.linear.bias"])
    return out


def _sd3_attention(out: dict, new: str, sd: dict, old: str, q: str, k: str, v: str, proj: str | None,
                   norms: tuple[str, str]) -> None:
    _fused(out, f"{new}.qkv", sd, [f"{old}.{q}", f"{old}.{k}", f"{old}.{v}"])
    if proj is not None:
        _linear(out, f"{new}.proj", sd, f"{old}.{proj}")
    if f"{old}.{norms[0]}.weight" in sd:
        out[f"{new}.ln_q.weight"] = sd[f"{old}.{norms[0]}.weight"]
        out[f"{new}.ln_k.weight"] = sd[f"{old}.{norms[1]}.weight"]


def sd3_to_sai(transformer) -> dict:
    sd, cfg, out = transformer.state_dict(), transformer.config, {}
    _linear(out, "x_embedder.proj", sd, "pos_embed.proj")
    out["pos_embed"] = sd["pos_embed.pos_embed"] if "pos_embed.pos_embed" in sd else transformer.pos_embed.pos_embed
    _linear(out, "t_embedder.mlp.0", sd, "time_text_embed.timestep_embedder.linear_1")
    _linear(out, "t_embedder.mlp.2", sd, "time_text_embed.timestep_embedder.linear_2")
    _linear(out, "y_embedder.mlp.0", sd, "time_text_embed.text_embedder.linear_1")
    _linear(out, "y_embedder.mlp.2", sd, "time_text_embed.text_embedder.linear_2")
    _linear(out, "context_embedder", sd, "context_embedder")
    for i in range(cfg.num_layers):
        b, d, last = f"joint_blocks.{i}", f"transformer_blocks.{i}", i == cfg.num_layers - 1
        _linear(out, f"{b}.x_block.adaLN_modulation.1", sd, f"{d}.norm1.linear")
        _sd3_attention(out, f"{b}.x_block.attn", sd, f"{d}.attn", "to_q", "to_k", "to_v", "to_out.0",
                       ("norm_q", "norm_k"))
        if f"{d}.attn2.to_q.weight" in sd:
            _sd3_attention(out, f"{b}.x_block.attn2", sd, f"{d}.attn2", "to_q", "to_k", "to_v", "to_out.0",
                           ("norm_q", "norm_k"))
        _linear(out, f"{b}.x_block.mlp.fc1", sd, f"{d}.ff.net.0.proj")
        _linear(out, f"{b}.x_block.mlp.fc2", sd, f"{d}.ff.net.2")
        _sd3_attention(out, f"{b}.context_block.attn", sd, f"{d}.attn", "add_q_proj", "add_k_proj", "add_v_proj",
                       None if last else "to_add_out", ("norm_added_q", "norm_added_k"))
        if last:       # pre-only: (shift, scale) as the final layer
            out[f"{b}.context_block.adaLN_modulation.1.weight"] = _swap(sd[f"{d}.norm1_context.linear.weight"])
            out[f"{b}.context_block.adaLN_modulation.1.bias"] = _swap(sd[f"{d}.norm1_context.linear.bias"])
        else:
            _linear(out, f"{b}.context_block.adaLN_modulation.1", sd, f"{d}.norm1_context.linear")
            _linear(out, f"{b}.context_block.mlp.fc1", sd, f"{d}.ff_context.net.0.proj")
            _linear(out, f"{b}.context_block.mlp.fc2", sd, f"{d}.ff_context.net.2")
    _linear(out, "final_layer.linear", sd, "proj_out")
    out["final_layer.adaLN_modulation.1.weight"] = _swap(sd["norm_out.linear.weight"])
    out["final_layer.adaLN_modulation.1.bias"] = _swap(sd["norm_out.linear.bias"])
    return out


def zimage_to_original(transformer) -> dict:
    """Z-Image's tensors under Tongyi-MAI's names, with its unused `norm_final` as the files carry it."""
    sd, out = transformer.state_dict(), {}
    renames = (("all_x_embedder.2-1.", "x_embedder."), ("all_final_layer.2-1.", "final_layer."),
               (".attention.to_out.0.", ".attention.out."), (".attention.norm_q.", ".attention.q_norm."),
               (".attention.norm_k.", ".attention.k_norm."))
    for key, value in sd.items():
        if any(f".attention.to_{x}." in key for x in "qkv"):
            continue
        for new, old in renames:
            key = key.replace(new, old)
        out[key] = value
    for block in {k.split(".attention.to_q.")[0] for k in sd if ".attention.to_q." in k}:
        _fused(out, f"{block}.attention.qkv", sd, [f"{block}.attention.to_{x}" for x in "qkv"])
    out["norm_final.weight"] = torch.ones(transformer.config.dim)
    return out


def _save(tensors: dict, path: Path, dtype=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().clone().contiguous()
               for k, v in tensors.items()}, str(path))
    return path


def _ldm_vae(vae, prefix: str = "") -> dict:
    return {prefix + k.removeprefix("first_stage_model."): v for k, v in vae_to_ldm(vae.state_dict(), vae.config).items()}


def _text(model) -> dict:
    """An encoder's tensors as its files have them (CLIP's under `text_model.`)."""
    return canonical_clip({k: v for k, v in model.state_dict().items() if not k.endswith("position_ids")})


def write_comfyui_split(pipe, root: Path, name: str, t5_dtype=None) -> Path:
    """ComfyUI's folders: models/diffusion_models/<name> (BFL, Stability or Tongyi-MAI layout,
    transformer alone), models/text_encoders/clip_l, clip_g (SD 3.5), t5xxl_fp16 (or
    t5xxl_fp8_e4m3fn with `t5_dtype`) or qwen_3_4b (Z-Image), models/vae/ae (LDM layout)."""
    flux = hasattr(pipe, "text_encoder_2") and not hasattr(pipe, "text_encoder_3")
    models = root / "models"
    if not hasattr(pipe, "text_encoder_2"):      # Z-Image: its transformer, Qwen3-4B, Flux's VAE
        _save({f"model.diffusion_model.{k}": v for k, v in zimage_to_original(pipe.transformer).items()},
              models / "diffusion_models" / name)
        _save({f"model.{k}": v for k, v in pipe.text_encoder.state_dict().items()},
              models / "text_encoders" / "qwen_3_4b.safetensors")
        _save(_ldm_vae(pipe.vae), models / "vae" / "ae.safetensors")
        return models / "diffusion_models" / name
    _save((flux_to_bfl if flux else sd3_to_sai)(pipe.transformer), models / "diffusion_models" / name)
    _save(_text(pipe.text_encoder), models / "text_encoders" / "clip_l.safetensors")
    t5 = pipe.text_encoder_2 if flux else pipe.text_encoder_3
    if not flux:
        _save(_text(pipe.text_encoder_2), models / "text_encoders" / "clip_g.safetensors")
    if t5 is not None:
        t5_name = "t5xxl_fp8_e4m3fn.safetensors" if t5_dtype == torch.float8_e4m3fn else "t5xxl_fp16.safetensors"
        _save(_text(t5), models / "text_encoders" / t5_name, t5_dtype)
    _save(_ldm_vae(pipe.vae), models / "vae" / ("ae.safetensors" if flux else "sd3_vae.safetensors"))
    return models / "diffusion_models" / name


def write_all_in_one(pipe, path: Path, vae_prefix: str = "first_stage_model.") -> Path:
    """Stability's sd3.5_large.safetensors / ComfyUI's all-in-one checkpoints: everything in one
    file, the transformer under model.diffusion_model., the encoders under text_encoders.*."""
    flux = not hasattr(pipe, "text_encoder_3")
    out = {f"model.diffusion_model.{k}": v for k, v in
           (flux_to_bfl if flux else sd3_to_sai)(pipe.transformer).items()}
    encoders = {"clip_l": pipe.text_encoder, "t5xxl": pipe.text_encoder_2 if flux else pipe.text_encoder_3}
    if not flux:
        encoders["clip_g"] = pipe.text_encoder_2
    for role, model in encoders.items():
        if model is not None:
            out.update({f"text_encoders.{role}.transformer.{k}": v for k, v in _text(model).items()})
    out.update(_ldm_vae(pipe.vae, vae_prefix))
    return _save(out, path)


# -- GGUF ------------------------------------------------------------------------------------------

def q4_k(x):
    """ggml's Q4_K blocks of `x` (rows of a multiple of 256 values), as numpy uint8 rows: per
    256 values an fp16 scale and min of the sub-block scales, twelve bytes of 6-bit sub-block
    scales and mins, and 128 bytes of 4-bit values (sub-blocks 2g and 2g+1 in the low and high
    nibbles of the g-th 32 bytes). gguf-py reads these (its `dequantize`) but writes no k-quants."""
    import numpy as np

    rows, width = x.shape
    blocks = x.reshape(-1, 8, 32).astype(np.float32)
    low, high = blocks.min(axis=2), blocks.max(axis=2)
    mins = np.maximum(0.0, -low)                                 # subtracted, as ggml's dmin * m
    scales = (high + mins) / 15.0
    d = np.maximum(scales.max(axis=1), 1e-12) / 63.0
    dmin = np.maximum(mins.max(axis=1), 1e-12) / 63.0
    sc = np.clip(np.rint(scales / d[:, None]), 0, 63).astype(np.uint8)
    mn = np.clip(np.rint(mins / dmin[:, None]), 0, 63).astype(np.uint8)
    d16, dmin16 = d.astype(np.float16), dmin.astype(np.float16)
    step = d16.astype(np.float32)[:, None] * sc
    offset = dmin16.astype(np.float32)[:, None] * mn
    q = np.clip(np.rint((blocks + offset[:, :, None]) / np.where(step == 0, 1, step)[:, :, None]), 0, 15).astype(np.uint8)
    packed = np.empty((len(blocks), 12), np.uint8)
    packed[:, 0:4] = sc[:, 0:4] | ((sc[:, 4:8] >> 4) << 6)
    packed[:, 4:8] = mn[:, 0:4] | ((mn[:, 4:8] >> 4) << 6)
    packed[:, 8:12] = (sc[:, 4:8] & 0x0F) | ((mn[:, 4:8] & 0x0F) << 4)
    qs = q.reshape(-1, 4, 2, 32)
    qs = (qs[:, :, 0, :] | (qs[:, :, 1, :] << 4)).reshape(-1, 128)
    out = np.concatenate([d16.view(np.uint8).reshape(-1, 2), dmin16.view(np.uint8).reshape(-1, 2), packed, qs], axis=1)
    return out.reshape(rows, width // 256 * 144)


def write_gguf(tensors: dict, path: Path, kind: str, arch: str = "flux") -> Path:
    """A GGUF file as city96's converter makes them: 2-D weights quantised (`kind` Q8_0 or
    Q4_K) where their rows fit the blocks, the rest in F32."""
    import gguf

    qtype = gguf.GGMLQuantizationType[kind]
    block = {"Q8_0": 32, "Q4_K": 256}[kind]
    writer = gguf.GGUFWriter(str(path), arch)
    for name, tensor in tensors.items():
        a = tensor.float().numpy()
        if a.ndim == 2 and a.shape[1] % block == 0:
            q = gguf.quants.quantize(a, qtype) if kind == "Q8_0" else q4_k(a)
            writer.add_tensor(name, q, raw_shape=q.shape, raw_dtype=qtype)
        else:
            writer.add_tensor(name, a)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


# -- LoRAs -----------------------------------------------------------------------------------------

def write_flux_lora(transformer, path: Path, layout: str, text_encoder=None, seed: int = 0, rank: int = 4,
                    scale: float = 0.3) -> Path:
    """A Flux LoRA on the attention projections (fused qkv, proj), single blocks' linear1 and the
    MLPs, random weights, in `layout`: "kohya" (sd-scripts: lora_unet_<BFL module with _>,
    lora_down / lora_up / alpha; lora_te1_ for CLIP-L), "bfl" (BFL's dotted names under
    diffusion_model., lora_A / lora_B, as ComfyUI saves them) or "diffusers" (PEFT names under
    transformer.)."""
    g = torch.Generator().manual_seed(seed)
    cfg, hidden = transformer.config, transformer.config.num_attention_heads * transformer.config.attention_head_dim
    mlp = int(hidden * 4)
    modules = {}
    for i in range(cfg.num_layers):
        modules.update({f"double_blocks.{i}.img_attn.qkv": (3 * hidden, hidden), f"double_blocks.{i}.img_attn.proj": (hidden, hidden),
                        f"double_blocks.{i}.txt_attn.qkv": (3 * hidden, hidden), f"double_blocks.{i}.img_mlp.0": (mlp, hidden)})
    for i in range(cfg.num_single_layers):
        modules[f"single_blocks.{i}.linear1"] = (3 * hidden + mlp, hidden)
    out = {}
    for module, (rows, cols) in modules.items():
        down = torch.randn(rank, cols, generator=g) * scale
        up = torch.randn(rows, rank, generator=g) * scale
        if layout == "kohya":
            key = "lora_unet_" + module.replace(".", "_")
            out.update({f"{key}.lora_down.weight": down, f"{key}.lora_up.weight": up, f"{key}.alpha": torch.tensor(2.0)})
        elif layout == "bfl":
            out.update({f"diffusion_model.{module}.lora_A.weight": down, f"diffusion_model.{module}.lora_B.weight": up})
        else:
            out.update(_diffusers_lora(module, down, up, hidden))
    if text_encoder is not None and layout == "kohya":
        for name, m in text_encoder.named_modules():
            if name.endswith(("q_proj", "v_proj")):
                key = "lora_te1_" + ("text_model." + name.removeprefix("text_model.")).replace(".", "_")
                out.update({f"{key}.lora_down.weight": torch.randn(rank, m.in_features, generator=g) * scale,
                            f"{key}.lora_up.weight": torch.randn(m.out_features, rank, generator=g) * scale})
    return _save(out, path)


def _diffusers_lora(module: str, down, up, hidden: int) -> dict:
    """One BFL module's LoRA in diffusers' names, written from BFL's layout (fused rows split)."""
    block, i, rest = module.split(".", 2)
    if block == "single_blocks":
        names = ["attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"]
        ups = up.split([hidden, hidden, hidden, up.shape[0] - 3 * hidden])
        base = f"single_transformer_blocks.{i}"
    else:
        base = f"transformer_blocks.{i}"
        names, ups = {"img_attn.qkv": (["attn.to_q", "attn.to_k", "attn.to_v"], up.chunk(3)),
                      "txt_attn.qkv": (["attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"], up.chunk(3)),
                      "img_attn.proj": (["attn.to_out.0"], (up,)), "img_mlp.0": (["ff.net.0.proj"], (up,))}[rest]
    out = {}
    for name, part in zip(names, ups):
        out[f"transformer.{base}.{name}.lora_A.weight"] = down
        out[f"transformer.{base}.{name}.lora_B.weight"] = part
    return out


# SD 3.5 and Z-Image LoRAs: (original module, the diffusers modules its rows are, in order,
# rows (shift, scale) - diffusers' (scale, shift)) for block 0, from mmditx.py's and Z-Image's names
SD3_LORA_MODULES = [("joint_blocks.0.x_block.attn.qkv", ["transformer_blocks.0.attn.to_q", "transformer_blocks.0.attn.to_k",
                                                          "transformer_blocks.0.attn.to_v"], False),
                    ("joint_blocks.0.x_block.attn.proj", ["transformer_blocks.0.attn.to_out.0"], False),
                    ("joint_blocks.0.x_block.mlp.fc1", ["transformer_blocks.0.ff.net.0.proj"], False),
                    ("joint_blocks.0.context_block.attn.qkv", ["transformer_blocks.0.attn.add_q_proj",
                     "transformer_blocks.0.attn.add_k_proj", "transformer_blocks.0.attn.add_v_proj"], False),
                    ("joint_blocks.1.context_block.adaLN_modulation.1", ["transformer_blocks.1.norm1_context.linear"], True),
                    ("final_layer.adaLN_modulation.1", ["norm_out.linear"], True)]
ZIMAGE_LORA_MODULES = [("layers.0.attention.qkv", ["layers.0.attention.to_q", "layers.0.attention.to_k",
                                                   "layers.0.attention.to_v"], False),
                       ("layers.0.attention.out", ["layers.0.attention.to_out.0"], False),
                       ("layers.0.feed_forward.w1", ["layers.0.feed_forward.w1"], False),
                       ("noise_refiner.0.attention.qkv", ["noise_refiner.0.attention.to_q", "noise_refiner.0.attention.to_k",
                                                          "noise_refiner.0.attention.to_v"], False)]


def write_dit_lora(transformer, modules: list, path: Path, layout: str, seed: int = 0, rank: int = 4,
                   scale: float = 0.3, text_encoders: dict | None = None) -> Path:
    """A random LoRA on `modules` in `layout`: "kohya" (lora_unet_<original module with _>,
    lora_down / lora_up / alpha 2, fused rows; lora_te1_ / lora_te2_ for `text_encoders`),
    "original" (dotted original names under diffusion_model., lora_A / lora_B, as ComfyUI saves
    them), "diffusers" (PEFT names under transformer.) or "ai-toolkit" (diffusers' module names
    under diffusion_model.). The same seed gives the same LoRA in every layout."""
    g = torch.Generator().manual_seed(seed)
    named, out = dict(transformer.named_modules()), {}
    for module, targets, swapped in modules:
        rows = [named[t].out_features for t in targets]
        down = torch.randn(rank, named[targets[0]].in_features, generator=g) * scale
        up = torch.randn(sum(rows), rank, generator=g) * scale
        if layout == "kohya":
            key = "lora_unet_" + module.replace(".", "_")
            out.update({f"{key}.lora_down.weight": down, f"{key}.lora_up.weight": up / (2.0 / rank),
                        f"{key}.alpha": torch.tensor(2.0)})
        elif layout == "original":
            out.update({f"diffusion_model.{module}.lora_A.weight": down, f"diffusion_model.{module}.lora_B.weight": up})
        else:
            prefix = "transformer." if layout == "diffusers" else "diffusion_model."
            parts = _swap(up) if swapped else up        # (shift, scale) rows as diffusers' (scale, shift)
            for target, part in zip(targets, parts.split(rows)):
                out.update({f"{prefix}{target}.lora_A.weight": down, f"{prefix}{target}.lora_B.weight": part})
    for prefix, encoder in (text_encoders or {}).items():
        for name, m in encoder.named_modules():
            if name.endswith(("q_proj", "v_proj")):
                key = prefix + ("text_model." + name.removeprefix("text_model.")).replace(".", "_")
                out.update({f"{key}.lora_down.weight": torch.randn(rank, m.in_features, generator=g) * scale,
                            f"{key}.lora_up.weight": torch.randn(m.out_features, rank, generator=g) * scale})
    return _save(out, path)
