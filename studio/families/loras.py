"""LoRAs of the transformer families: which family a LoRA file was made for (read from its key
names, for the LoRA list and to refuse one made for another family), and Flux LoRAs in the
original module names turned into diffusers' (PEFT) form for `load_lora_weights`.

Flux LoRAs come as kohya's sd-scripts writes them (`lora_unet_double_blocks_0_img_attn_qkv.
lora_down.weight`, `lora_up`, `alpha`; `lora_te1_...` for CLIP-L), in BFL's dotted names with
`lora_A` / `lora_B` (ComfyUI, `diffusion_model.` prefixed), or already in diffusers' names
(`transformer.transformer_blocks.0.attn.to_q.lora_A.weight`: passed through). The first two are
renamed with the same tables that read BFL's transformer files (studio/families/bfl.py), the
fused projections' `up` split by the model's widths (diffusers' own converter assumes Flux.1's
3072 channels), kohya's alpha folded into `lora_B`.
"""

from __future__ import annotations

import re

from studio.families.bfl import FLUX_DOUBLE, FLUX_FUSED, FLUX_SINGLE, FLUX_TOP, halves_swapped

FAMILY_MARKS = (           # (pattern in any key, family) - the first that matches
    (r"double_blocks|single_blocks|single_transformer_blocks", "flux"),
    (r"joint_blocks|context_block", "sd3"),
    (r"transformer\.transformer_blocks\.\d+\.attn\.add_q_proj", "sd3"),
    (r"down_blocks|input_blocks|up_blocks|output_blocks|lora_unet_|lora_te", "sd"),
)
FAMILY_LABELS = {"flux": "Flux.1", "sd3": "SD 3.5", "sd": "SD 1.x / 2.x / SDXL"}


def lora_family(keys) -> str:
    """flux, sd3 or sd, from a LoRA file's key names ("" when nothing says)."""
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


def _bfl_modules(config: dict) -> dict[str, tuple[str, ...]]:
    """BFL module name -> the diffusers module(s) it is (several: a fused projection)."""
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
    return out


def _split_rows(up, parts: int, hidden: int):
    """A fused projection's `up` rows per part: q, k, v of `hidden` each, the rest the MLP's."""
    sizes = [hidden] * 3 + ([up.shape[0] - 3 * hidden] if parts == 4 else [])
    return up.split(sizes, dim=0)


def _pairs(tensors: dict) -> dict[str, dict]:
    """module -> {"down", "up", "alpha"} from kohya's or BFL-named LoRA keys."""
    groups: dict[str, dict] = {}
    for key, value in tensors.items():
        for suffix, part in ((".lora_down.weight", "down"), (".lora_up.weight", "up"), (".alpha", "alpha"),
                             (".lora_A.weight", "down"), (".lora_B.weight", "up")):
            if key.endswith(suffix):
                groups.setdefault(key[: -len(suffix)], {})[part] = value
    return groups


def _module_name(name: str, by_kohya: dict[str, str], te_modules: dict[str, str]) -> tuple[str, str] | None:
    """("transformer" | "text_encoder", BFL or CLIP module name) of a LoRA key's module."""
    for prefix in ("diffusion_model.", "model.diffusion_model.", "transformer."):
        if name.startswith(prefix):
            name = name[len(prefix):]
    if name.startswith("lora_unet_"):
        found = by_kohya.get(name[len("lora_unet_"):])
        return ("transformer", found) if found else None
    if name.startswith("lora_te1_"):
        found = te_modules.get(name[len("lora_te1_"):])
        return ("text_encoder", found) if found else None
    return ("transformer", name) if name in by_kohya.values() else None


def flux_lora_to_diffusers(tensors: dict, config: dict, text_encoder=None) -> dict:
    """A Flux LoRA's tensors in diffusers' names; raises ValueError naming keys that match
    nothing in this model. Already-diffusers files come back unchanged."""
    if any(k.startswith("transformer.") and ".lora_A." in k and "transformer_blocks" in k for k in tensors):
        return tensors
    modules = _bfl_modules(config)
    by_kohya = {m.replace(".", "_"): m for m in modules}
    te_modules = {}
    if text_encoder is not None:
        te_modules = {n.removeprefix("text_model.").replace(".", "_"): n for n, _ in text_encoder.named_modules() if n}
        te_modules.update({"text_model_" + k: v for k, v in list(te_modules.items())})
    hidden = config["num_attention_heads"] * config["attention_head_dim"]
    out, unknown = {}, []
    for name, parts in _pairs(tensors).items():
        where = _module_name(name, by_kohya, te_modules)
        if where is None or "down" not in parts or "up" not in parts:
            unknown.append(name)
            continue
        owner, module = where
        down, up = parts["down"], parts["up"]
        if "alpha" in parts:
            up = up * (float(parts["alpha"]) / down.shape[0])
        if owner == "text_encoder":
            out[f"text_encoder.{module}.lora_A.weight"], out[f"text_encoder.{module}.lora_B.weight"] = down, up
            continue
        targets = modules[module]
        ups = _split_rows(up, len(targets), hidden) if len(targets) > 1 else (up,)
        if module == "final_layer.adaLN_modulation.1":
            ups = (halves_swapped(up),)                # BFL (shift, scale) -> diffusers (scale, shift)
        for target, part in zip(targets, ups):
            out[f"transformer.{target}.lora_A.weight"] = down
            out[f"transformer.{target}.lora_B.weight"] = part.contiguous()
    if unknown:
        raise ValueError(f"{len(unknown)} of its modules are not in this Flux model ({unknown[0]}, ...)")
    return out
