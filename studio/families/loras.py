"""LoRAs of the transformer families: which family a LoRA file was made for (read from its key
names, for the LoRA list and to refuse one made for another family), and Flux and SD 3.5 LoRAs
in the original module names turned into diffusers' (PEFT) form for `load_lora_weights`.
(Z-Image's layouts - kohya's, the original names, ai-toolkit's - diffusers' own loader converts.)

They come as kohya's sd-scripts writes them (`lora_unet_double_blocks_0_img_attn_qkv.lora_down.
weight` for Flux, `lora_unet_joint_blocks_0_x_block_attn_qkv...` for SD 3.5, `lora_up`, `alpha`;
`lora_te1_` / `lora_te2_` for CLIP-L / CLIP-G), in the original dotted names with `lora_A` /
`lora_B` (ComfyUI, `diffusion_model.` prefixed), or already in diffusers' names
(`transformer.transformer_blocks.0.attn.to_q.lora_A.weight`: passed through). The first two are
renamed with the tables that read the original transformer files (studio/families/bfl.py; SD 3.5's
here), the fused projections' `up` split by the model's widths (diffusers' own Flux converter
assumes Flux.1's 3072 channels and it has none for SD 3.5), kohya's alpha folded into `lora_B`,
the (shift, scale) modulations' rows swapped to diffusers' (scale, shift).
"""

from __future__ import annotations

import re

from studio.families.bfl import FLUX_DOUBLE, FLUX_FUSED, FLUX_SINGLE, FLUX_TOP, halves_swapped

# Stability's SD 3.5 module names (mmditx.py) -> diffusers' SD3Transformer2DModel's
SAI_TOP = {"context_embedder": ("context_embedder",), "final_layer.linear": ("proj_out",),
           "t_embedder.mlp.0": ("time_text_embed.timestep_embedder.linear_1",),
           "t_embedder.mlp.2": ("time_text_embed.timestep_embedder.linear_2",),
           "y_embedder.mlp.0": ("time_text_embed.text_embedder.linear_1",),
           "y_embedder.mlp.2": ("time_text_embed.text_embedder.linear_2",),
           "final_layer.adaLN_modulation.1": ("norm_out.linear",)}
SAI_BLOCK = {"x_block.attn.qkv": ("attn.to_q", "attn.to_k", "attn.to_v"), "x_block.attn.proj": ("attn.to_out.0",),
             "x_block.attn2.qkv": ("attn2.to_q", "attn2.to_k", "attn2.to_v"), "x_block.attn2.proj": ("attn2.to_out.0",),
             "x_block.mlp.fc1": ("ff.net.0.proj",), "x_block.mlp.fc2": ("ff.net.2",),
             "x_block.adaLN_modulation.1": ("norm1.linear",),
             "context_block.attn.qkv": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"),
             "context_block.attn.proj": ("attn.to_add_out",), "context_block.mlp.fc1": ("ff_context.net.0.proj",),
             "context_block.mlp.fc2": ("ff_context.net.2",), "context_block.adaLN_modulation.1": ("norm1_context.linear",)}
# kohya's text-encoder prefixes -> the pipeline's encoders
TEXT_PREFIXES = {"lora_te1_": "text_encoder", "lora_te2_": "text_encoder_2"}

FAMILY_MARKS = (           # (pattern in any key, family) - the first that matches
    (r"double_blocks|single_blocks|single_transformer_blocks", "flux"),
    (r"joint_blocks|context_block", "sd3"),
    (r"transformer\.transformer_blocks\.\d+\.attn\.add_q_proj", "sd3"),
    (r"noise_refiner|context_refiner|layers[._]\d+[._](attention|feed_forward|adaLN)", "zimage"),
    (r"down_blocks|input_blocks|up_blocks|output_blocks|lora_unet_|lora_te", "sd"),
)
FAMILY_LABELS = {"flux": "Flux.1", "sd3": "SD 3.5", "zimage": "Z-Image", "sd": "SD 1.x / 2.x / SDXL"}


def lora_family(keys) -> str:
    """flux, sd3, zimage or sd, from a LoRA file's key names ("" when nothing says)."""
    for pattern, fam in FAMILY_MARKS:
        rx = re.compile(pattern)
        if any(rx.search(k) for k in keys):
            return fam
    return ""


def file_family(path) -> str:
    """The family label of a LoRA file from its header ("" for a file whose keys say nothing or
    that is not a .safetensors: pickles are not opened for a listing)."""
    from pathlib import Path

    if Path(path).suffix.lower() != ".safetensors":
        return ""
    try:
        from safetensors import safe_open
        with safe_open(str(path), framework="pt") as f:
            return FAMILY_LABELS.get(lora_family(f.keys()), "")
    except Exception:  # noqa: BLE001 - an unreadable file is listed without a family
        return ""


def _bfl_modules(config: dict) -> tuple[dict[str, tuple[str, ...]], set[str]]:
    """BFL module name -> the diffusers module(s) it is (several: a fused projection), and the
    modules whose rows are (shift, scale)."""
    out = {old: (new,) for old, new in FLUX_TOP.items()}
    for i in range(config["num_layers"]):
        out.update({f"double_blocks.{i}.{old}": (f"transformer_blocks.{i}.{new}",) for old, new in FLUX_DOUBLE.items()
                    if not old.endswith("scale")})
        out.update({f"double_blocks.{i}.{old}": tuple(f"transformer_blocks.{i}.{n}" for n in news)
                    for old, news in FLUX_FUSED.items()})
    for i in range(config["num_single_layers"]):
        b, d = f"single_blocks.{i}", f"single_transformer_blocks.{i}"
        out.update({f"{b}.{old}": (f"{d}.{new}",) for old, new in FLUX_SINGLE.items() if not old.endswith("scale")})
        out[f"{b}.linear1"] = tuple(f"{d}.{n}" for n in ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"))
    out["final_layer.adaLN_modulation.1"] = ("norm_out.linear",)
    return out, {"final_layer.adaLN_modulation.1"}


def _sai_modules(config: dict) -> tuple[dict[str, tuple[str, ...]], set[str]]:
    """The same for Stability's SD 3.5 names: the last context block is pre-only, its
    modulation (shift, scale) as the final layer's."""
    out = dict(SAI_TOP)
    for i in range(config["num_layers"]):
        out.update({f"joint_blocks.{i}.{old}": tuple(f"transformer_blocks.{i}.{n}" for n in news)
                    for old, news in SAI_BLOCK.items()})
    last = config["num_layers"] - 1
    return out, {"final_layer.adaLN_modulation.1", f"joint_blocks.{last}.context_block.adaLN_modulation.1"}


MODULES = {"flux": _bfl_modules, "sd3": _sai_modules}


def _split_rows(up, parts: int, hidden: int):
    """A fused projection's `up` rows per part: q, k, v of `hidden` each, the rest the MLP's."""
    sizes = [hidden] * 3 + ([up.shape[0] - 3 * hidden] if parts == 4 else [])
    return up.split(sizes, dim=0)


def _pairs(tensors: dict) -> dict[str, dict]:
    """module -> {"down", "up", "alpha"} from kohya's or original-named LoRA keys."""
    groups: dict[str, dict] = {}
    for key, value in tensors.items():
        for suffix, part in ((".lora_down.weight", "down"), (".lora_up.weight", "up"), (".alpha", "alpha"),
                             (".lora_A.weight", "down"), (".lora_B.weight", "up")):
            if key.endswith(suffix):
                groups.setdefault(key[: -len(suffix)], {})[part] = value
    return groups


def _text_modules(text_encoders: dict) -> dict[str, tuple[str, str]]:
    """kohya's underscored name (with its lora_teN_ prefix) -> (encoder, module)."""
    out = {}
    for prefix, owner in TEXT_PREFIXES.items():
        encoder = text_encoders.get(owner)
        if encoder is None:
            continue
        for name, _ in encoder.named_modules():
            if name:
                bare = name.removeprefix("text_model.").replace(".", "_")
                out[prefix + bare] = out[prefix + "text_model_" + bare] = (owner, name)
    return out


def _module_name(name: str, by_kohya: dict[str, str], text: dict) -> tuple[str, str] | None:
    """("transformer" | an encoder, original or encoder module name) of a LoRA key's module."""
    for prefix in ("diffusion_model.", "model.diffusion_model.", "transformer."):
        if name.startswith(prefix):
            name = name[len(prefix):]
    if name.startswith("lora_unet_"):
        found = by_kohya.get(name[len("lora_unet_"):])
        return ("transformer", found) if found else None
    if name.startswith("lora_te"):
        return text.get(name)
    return ("transformer", name) if name in by_kohya.values() else None


def lora_to_diffusers(tensors: dict, family: str, config: dict, text_encoders: dict | None = None) -> dict:
    """A Flux or SD 3.5 LoRA's tensors in diffusers' names; raises ValueError naming keys that
    match nothing in this model. Already-diffusers files come back unchanged."""
    if any(k.startswith("transformer.") and ".lora_A." in k and "transformer_blocks" in k for k in tensors):
        return tensors
    modules, swapped = MODULES[family](config)
    by_kohya = {m.replace(".", "_"): m for m in modules}
    text = _text_modules(text_encoders or {})
    hidden = config["num_attention_heads"] * config["attention_head_dim"]
    out, unknown = {}, []
    for name, parts in _pairs(tensors).items():
        where = _module_name(name, by_kohya, text)
        if where is None or "down" not in parts or "up" not in parts:
            unknown.append(name)
            continue
        owner, module = where
        down, up = parts["down"], parts["up"]
        if "alpha" in parts:
            up = up * (float(parts["alpha"]) / down.shape[0])
        if owner != "transformer":
            out[f"{owner}.{module}.lora_A.weight"], out[f"{owner}.{module}.lora_B.weight"] = down, up
            continue
        targets = modules[module]
        ups = _split_rows(up, len(targets), hidden) if len(targets) > 1 else (up,)
        if module in swapped:
            ups = (halves_swapped(up),)
        for target, part in zip(targets, ups):
            out[f"transformer.{target}.lora_A.weight"] = down
            out[f"transformer.{target}.lora_B.weight"] = part.contiguous()
    if unknown:
        raise ValueError(f"{len(unknown)} of its modules are not in this model ({unknown[0]}, ...)")
    return out
