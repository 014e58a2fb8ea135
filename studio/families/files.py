"""Flux.1, SD 3.5 and Z-Image as users have them: single files in the original layouts, loaded offline.

A file is recognised by its tensor names (Black Forest Labs' `double_blocks.N.img_attn.qkv` for
Flux, Stability's `joint_blocks.N.x_block.attn.qkv` for SD 3.5, Tongyi-MAI's
`noise_refiner.N.attention.qkv` for Z-Image), bare or under ComfyUI's and Stability's
`model.diffusion_model.`; every width, depth and head count is read from the shapes.
What the file lacks (transformer-only files hold neither text encoders nor VAE) is taken
from the folders beside it as ComfyUI lays them out: `text_encoders/` (or `clip/`) for CLIP-L,
CLIP-G, T5-XXL (fp16 or fp8) and Qwen3-4B, `vae/` for the 16-channel autoencoder; all-in-one files
(Stability's sd3.5_large.safetensors, ComfyUI's fp8 checkpoints) carry them under
`text_encoders.*.transformer.` and `first_stage_model.` or `vae.`. A missing part is a message
naming the file to add and where. diffusers' converters turn each part into its model, from
the tensors read here (`from_single_file` takes a dict) and configs written here (no hub); the
text encoders are studio/families/encoders.py's.
"""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from studio.errors import ModelLoadError
from studio.families import family, model_label, variant_key
from studio.families import encoders
from studio.families.bfl import flux_from_bfl
from studio.families.encoders import count
from studio.families.tokenizers import clip_tokenizer, qwen3_tokenizer, t5_tokenizer

DIFFUSION = "model.diffusion_model."
GGUF = ".gguf"
MARKS = {"flux": "double_blocks.0.img_attn.qkv.weight", "sd3": "joint_blocks.0.x_block.attn.qkv.weight",
         "zimage": "noise_refiner.0.attention.qkv.weight"}
TEXT_INSIDE = {"clip_l": "text_encoders.clip_l.transformer.", "clip_g": "text_encoders.clip_g.transformer.",
               "t5xxl": "text_encoders.t5xxl.transformer."}
VAE_INSIDE = ("first_stage_model.", "vae.")
TEXT_FOLDERS = ("text_encoders", "clip")
NEEDS = {"flux": ("clip_l", "t5xxl", "vae"), "sd3": ("clip_l", "clip_g", "t5xxl", "vae"), "zimage": ("qwen3", "vae")}
OPTIONAL = {"sd3": ("t5xxl",)}          # SD 3.5 runs on its two CLIPs alone, as its makers allow
WHERE = {"clip_l": "clip_l.safetensors in models/text_encoders",
         "clip_g": "clip_g.safetensors in models/text_encoders",
         "t5xxl": "t5xxl_fp16.safetensors (or t5xxl_fp8_e4m3fn.safetensors) in models/text_encoders",
         "qwen3": "qwen_3_4b.safetensors (Qwen3-4B) in models/text_encoders",
         "vae": "the 16-channel VAE (Flux and Z-Image: ae.safetensors) in models/vae"}
# VAE factors of each family (the VAEs share one architecture; Flux's and SD 3.5's latents differ,
# Z-Image uses Flux's VAE)
VAE_FACTORS = {"flux": {"scaling_factor": 0.3611, "shift_factor": 0.1159},
               "sd3": {"scaling_factor": 1.5305, "shift_factor": 0.0609}}
VAE_FACTORS["zimage"] = VAE_FACTORS["flux"]
TEXT_WIDTH = {"flux": "joint_attention_dim", "sd3": "joint_attention_dim", "zimage": "cap_feat_dim"}


@dataclass(frozen=True)
class Part:
    """Where one component's tensors are: a file and the prefix they sit under."""
    path: Path
    prefix: str = ""


@dataclass(frozen=True)
class DiTFile:
    """What a transformer-family file is and where each of its parts comes from."""
    path: Path
    family: str                          # flux | sd3 | zimage
    variant: str                         # a VARIANTS key
    label: str                           # "Flux.1 dev", "SD 3.5 Large"
    configs: dict = field(repr=False, compare=False)
    parts: dict = field(default_factory=dict)     # component -> Part
    notes: tuple[str, ...] = ()


def is_transformer_file(shapes: dict) -> str | None:
    """flux, sd3, zimage, or None (a UNet family's checkpoint), from the tensor names."""
    for fam, mark in MARKS.items():
        if mark in shapes or DIFFUSION + mark in shapes:
            return fam
    return None


def _bare(shapes: dict) -> tuple[dict, str]:
    prefix = DIFFUSION if any(k.startswith(DIFFUSION) for k in shapes) else ""
    return {k[len(prefix):]: v for k, v in shapes.items() if k.startswith(prefix)}, prefix


def flux_config(s: dict) -> dict:
    """FluxTransformer2DModel's config from BFL's tensor names and shapes."""
    hidden, in_channels = s["img_in.weight"]
    head = s["double_blocks.0.img_attn.norm.query_norm.scale"][0]
    rope = [head // 8, head * 7 // 16, head * 7 // 16]       # BFL's (16, 56, 56) at 128 per head
    return {"_class_name": "FluxTransformer2DModel", "patch_size": 1, "in_channels": in_channels,
            "out_channels": s["final_layer.linear.weight"][0], "num_layers": count(s, r"double_blocks\.(\d+)\."),
            "num_single_layers": count(s, r"single_blocks\.(\d+)\."), "attention_head_dim": head,
            "num_attention_heads": hidden // head, "joint_attention_dim": s["txt_in.weight"][1],
            "pooled_projection_dim": s["vector_in.in_layer.weight"][1],
            "guidance_embeds": "guidance_in.in_layer.weight" in s, "axes_dims_rope": rope}


def sd3_config(s: dict) -> dict:
    """SD3Transformer2DModel's config from Stability's names: 64 channels a head, as many heads
    as blocks (mmditx.py); MMDiT-X's second attention (3.5 Medium) where `attn2` is."""
    depth = count(s, r"joint_blocks\.(\d+)\.")
    hidden, in_channels, patch, _ = s["x_embedder.proj.weight"]
    return {"_class_name": "SD3Transformer2DModel", "sample_size": 128, "patch_size": patch,
            "in_channels": in_channels, "out_channels": s["final_layer.linear.weight"][0] // (patch * patch),
            "num_layers": depth, "attention_head_dim": hidden // depth, "num_attention_heads": depth,
            "joint_attention_dim": s["context_embedder.weight"][1], "caption_projection_dim": hidden,
            "pooled_projection_dim": s["y_embedder.mlp.0.weight"][1],
            "pos_embed_max_size": round(s["pos_embed"][1] ** 0.5),
            "qk_norm": "rms_norm" if "joint_blocks.0.x_block.attn.ln_q.weight" in s else None,
            "dual_attention_layers": sorted(int(i) for i in {m.group(1) for k in s for m in [
                re.match(r"joint_blocks\.(\d+)\.x_block\.attn2\.", k)] if m})}


def zimage_config(s: dict) -> dict:
    """ZImageTransformer2DModel's config from Tongyi-MAI's names: 2x2 patches, as many key/value
    heads as heads (the fused qkv splits in three), rotary axes in Z-Image's proportions (32, 48,
    48 at 128 per head) and its published lengths and bases."""
    dim, patch_in = s["x_embedder.weight"]
    head = s["layers.0.attention.q_norm.weight"][0]
    return {"_class_name": "ZImageTransformer2DModel", "all_patch_size": [2], "all_f_patch_size": [1],
            "in_channels": patch_in // 4, "dim": dim, "n_layers": count(s, r"layers\.(\d+)\."),
            "n_refiner_layers": count(s, r"noise_refiner\.(\d+)\."), "n_heads": dim // head, "n_kv_heads": dim // head,
            "cap_feat_dim": s["cap_embedder.0.weight"][0], "axes_dims": [head // 4, head * 3 // 8, head * 3 // 8],
            "axes_lens": [1536, 512, 512], "rope_theta": 256.0, "t_scale": 1000.0, "norm_eps": 1e-5, "qk_norm": True}


CONFIG_READERS = {"flux": flux_config, "sd3": sd3_config, "zimage": zimage_config}


def _variant(fam: str, config: dict, name: str) -> str:
    """The VARIANTS key of a file: its pipeline class from the tensors (Fill reads more channels
    than it writes) or the name (Kontext), then as a folder's (schnell, Turbo)."""
    if fam != "flux":
        return variant_key({"sd3": "StableDiffusion3Pipeline", "zimage": "ZImagePipeline"}[fam], config, name)
    fill, kontext = config["in_channels"] > config["out_channels"], "kontext" in name.lower()
    return variant_key("FluxFillPipeline" if fill else "FluxKontextPipeline" if kontext else "FluxPipeline",
                       config, name)


def inspect_file(path: Path, shapes: dict) -> DiTFile:
    """Family, variant, configs and every part's whereabouts. Raises ModelLoadError naming a
    missing part and where it goes."""
    fam = is_transformer_file(shapes)
    bare, prefix = _bare(shapes)
    config = CONFIG_READERS[fam](bare)
    key = _variant(fam, config, path.name)
    label = model_label(key, config)
    parts, notes = {"transformer": Part(path, prefix)}, []
    for role, inside in TEXT_INSIDE.items():
        if any(k.startswith(inside) for k in shapes):
            parts[role] = Part(path, inside)
    inside_vae = next((p for p in VAE_INSIDE if f"{p}decoder.conv_in.weight" in shapes), None)
    if inside_vae is not None:
        parts["vae"] = Part(path, inside_vae)
    parts.update(_beside(path, fam, config, [n for n in NEEDS[fam] if n not in parts]))
    missing = [n for n in NEEDS[fam] if n not in parts and n not in OPTIONAL.get(fam, ())]
    if missing:
        raise ModelLoadError(f"{path.name} is {label} but has no {', no '.join(missing)}: add "
                             + "; ".join(WHERE[m] for m in missing) + ".")
    if path.suffix.lower() == GGUF:
        notes.append(f"GGUF {gguf_kind(path)} transformer: its weights stay quantised, each layer computed at "
                     "the working precision.")
    if fam == "sd3" and "t5xxl" not in parts:
        notes.append(f"No T5-XXL for {path.name}: SD 3.5 runs on CLIP-L and CLIP-G alone (add "
                     f"{WHERE['t5xxl']} for its best prompt reading).")
    configs = {"transformer": config, **_text_configs(parts), "vae": _vae_config(parts["vae"], fam)}
    return DiTFile(path, fam, key, label, configs, parts, tuple(notes))


# -------------------------------------------------------------------------------------------------
# the parts beside a file (ComfyUI's folders)


def _shapes(path: Path) -> dict:
    """Tensor name -> logical shape, from the header alone (GGUF: as ggml stores it, reversed)."""
    if path.suffix.lower() == GGUF:
        return gguf_shapes(path)
    from studio.models.checkpoints import read_shapes
    return read_shapes(path)


def gguf_shapes(path: Path) -> dict:
    try:
        from gguf import GGUFReader
        return {t.name: tuple(int(i) for i in reversed(t.shape)) for t in GGUFReader(str(path)).tensors}
    except Exception as exc:  # noqa: BLE001 - a damaged file becomes a clear message
        raise ModelLoadError(f"{path.name} is not a readable GGUF file: {exc}") from None


def gguf_kind(path: Path) -> str:
    """The quantisation most of a GGUF file's weights have (Q8_0, Q4_K...)."""
    from collections import Counter

    from gguf import GGUFReader
    kinds = Counter(t.tensor_type.name for t in GGUFReader(str(path)).tensors if len(t.shape) > 1)
    return kinds.most_common(1)[0][0] if kinds else "F32"


def _candidates(path: Path, folders: tuple[str, ...]) -> list[Path]:
    """Files beside the model and in the models root's `folders` (ComfyUI: models/text_encoders
    and models/vae, the root being the first folder above the file that has one of them)."""
    root = next((p for p in list(path.parents)[1:4] if any((p / f).is_dir() for f in folders)), None)
    places = [path.parent] + ([root / f for f in folders] if root is not None else [])
    return sorted({f for r in places if r.is_dir() for f in r.rglob("*.safetensors") if f != path})


def _beside(path: Path, fam: str, config: dict, wanted: list[str]) -> dict[str, Part]:
    """The wanted parts found beside the file, each matched to the transformer by its width."""
    found: dict[str, Part] = {}
    if not wanted:
        return found
    text_width = config[TEXT_WIDTH[fam]]
    for f in _candidates(path, TEXT_FOLDERS + ("vae",)):
        kind = encoders.kind(_shapes(f))
        if kind is None:
            continue
        what, width = kind
        name = f.stem.lower().replace("-", "_")
        role = ("t5xxl" if what == "t5" and width == text_width else
                "qwen3" if what == "qwen3" and width == text_width else
                "vae" if what == "vae" and width == 16 else
                ("clip_g" if "clip_g" in name or width == 1280 else "clip_l") if what == "clip" else None)
        if role in wanted and role not in found and _fits(role, fam, config, width, name):
            found[role] = Part(f)
    return found


def _fits(role: str, fam: str, config: dict, width: int, name: str) -> bool:
    """Flux's pooled vector is CLIP-L's (its width); SD 3.5's is CLIP-L's and CLIP-G's side by side."""
    if role == "clip_l" and fam == "flux":
        return width == config["pooled_projection_dim"]
    if role == "vae" and fam in ("flux", "zimage"):     # Flux's ae.safetensors, not SD 3.5's VAE
        return "sd3" not in name
    return True


# -------------------------------------------------------------------------------------------------
# configs and loading

def _read(part: Part) -> dict:
    if part.path.suffix.lower() == GGUF:
        return _read_gguf(part)
    from safetensors import safe_open
    with safe_open(str(part.path), framework="pt") as f:
        return {k[len(part.prefix):]: f.get_tensor(k) for k in f.keys() if k.startswith(part.prefix)}


def _read_gguf(part: Part) -> dict:
    """A GGUF file's tensors: linear layers' weights stay quantised (GGUFParameter, dequantised
    as each layer runs); anything else a converter quantised (Z-Image's pad tokens are 2-D rows)
    is dequantised here, since only linear layers compute on quantised weights."""
    from diffusers.models.model_loading_utils import load_gguf_checkpoint
    from diffusers.quantizers.gguf.utils import dequantize_gguf_tensor

    out = {}
    for key, value in load_gguf_checkpoint(str(part.path)).items():
        if key.startswith(part.prefix):
            linear = key.endswith(".weight") and len(value.shape) == 2
            out[key[len(part.prefix):]] = value if linear else dequantize_gguf_tensor(value)
    return out


def _part_shapes(part: Part) -> dict:
    return {k[len(part.prefix):]: v for k, v in _shapes(part.path).items() if k.startswith(part.prefix)}


def _text_configs(parts: dict) -> dict:
    return {role: encoders.config(role, _part_shapes(parts[role])) for role in encoders.ROLES if role in parts}


def _vae_config(part: Part, fam: str) -> dict:
    s = _part_shapes(part)
    levels = count(s, r"encoder\.down\.(\d+)\.")
    widths = [s[f"encoder.down.{i}.block.0.conv1.weight"][0] for i in range(levels)]
    return {"_class_name": "AutoencoderKL", "in_channels": 3, "out_channels": 3,
            "latent_channels": s["decoder.conv_in.weight"][1], "block_out_channels": widths,
            "down_block_types": ["DownEncoderBlock2D"] * levels, "up_block_types": ["UpDecoderBlock2D"] * levels,
            "layers_per_block": count(s, r"encoder\.down\.0\.block\.(\d+)\."), "norm_num_groups": 32,
            "sample_size": 1024, "use_quant_conv": False, "use_post_quant_conv": False,
            **VAE_FACTORS[fam]}


def _scheduler(fam: str, key: str) -> dict:
    if fam != "flux":               # SD 3.5 and Z-Image: a fixed shift of 3
        return {"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000, "shift": 3.0}
    fixed = key == "FluxPipeline/schnell"
    return {"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000,
            "shift": 1.0 if fixed else 3.0, "use_dynamic_shifting": not fixed, "base_shift": 0.5,
            "max_shift": 1.15, "base_image_seq_len": 256, "max_image_seq_len": 4096}


def _write_configs(ck: DiTFile, folder: Path) -> Path:
    for name in ("transformer", "vae"):
        (folder / name).mkdir(parents=True, exist_ok=True)
        (folder / name / "config.json").write_text(json.dumps(ck.configs[name], indent=1), encoding="utf-8")
    return folder


def _encoder(ck: DiTFile, role: str, dtype):
    if role not in ck.parts:
        return None
    return encoders.build(role, ck.configs[role], _read(ck.parts[role]), dtype, flux=ck.family == "flux",
                          file=ck.parts[role].path.name)


def _transformer(ck: DiTFile, folder: Path, dtype):
    """Flux through BFL's names read here (diffusers' converter assumes Flux.1's 3072 channels),
    SD 3.5 and Z-Image through diffusers' converters; a GGUF file's weights stay quantised, each
    layer dequantised to `dtype` as it runs."""
    import diffusers

    net = getattr(diffusers, ck.configs["transformer"]["_class_name"])
    tensors = _read(ck.parts["transformer"])
    if ck.family == "flux":
        tensors = flux_from_bfl(tensors, ck.configs["transformer"])
    quantised = ck.parts["transformer"].path.suffix.lower() == GGUF
    extra = {"quantization_config": diffusers.GGUFQuantizationConfig(compute_dtype=dtype)} if quantised else {}
    return net.from_single_file(tensors, config=str(folder), subfolder="transformer", torch_dtype=dtype,
                                local_files_only=True, **extra)


def _text_parts(ck: DiTFile, dtype) -> dict:
    """The pipeline's text encoders and tokenizers under the names its class takes."""
    if ck.family == "zimage":
        return dict(text_encoder=_encoder(ck, "qwen3", dtype), tokenizer=qwen3_tokenizer())
    t5 = _encoder(ck, "t5xxl", dtype)
    t5_tokens = family(ck.family).t5_tokens if ck.variant != "FluxPipeline/schnell" else 256
    t5_tokenizer_ = t5_tokenizer(t5_tokens) if t5 is not None else None
    parts = dict(text_encoder=_encoder(ck, "clip_l", dtype), tokenizer=clip_tokenizer())
    if ck.family == "flux":
        return {**parts, "text_encoder_2": t5, "tokenizer_2": t5_tokenizer_}
    return {**parts, "text_encoder_2": _encoder(ck, "clip_g", dtype), "tokenizer_2": clip_tokenizer("!"),
            "text_encoder_3": t5, "tokenizer_3": t5_tokenizer_}


def load_dit(ck: DiTFile, dtype):
    """The diffusers pipeline of a transformer-family file and its parts, offline."""
    import diffusers

    cls = getattr(diffusers, ck.variant.split("/")[0])
    with tempfile.TemporaryDirectory(prefix="studio-config-") as tmp:
        folder = _write_configs(ck, Path(tmp))
        try:
            transformer = _transformer(ck, folder, dtype)
            vae = diffusers.AutoencoderKL.from_single_file(_read(ck.parts["vae"]), config=str(folder), subfolder="vae",
                                                           torch_dtype=dtype, local_files_only=True)
        except Exception as exc:  # noqa: BLE001 - any converter failure becomes a clear message
            raise ModelLoadError(f"Could not load {ck.path.name} as {ck.label}: {type(exc).__name__}: {exc}") from exc
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler.from_config(_scheduler(ck.family, ck.variant))
    return cls(transformer=transformer, vae=vae, scheduler=scheduler, **_text_parts(ck, dtype))
