"""Single checkpoint files in the original (LDM / AUTOMATIC1111) layout, loaded offline.

diffusers' `from_single_file` needs a diffusers config folder for the file; without one it guesses
a hub repository and, offline, fails (diffusers issue #8752). So the studio reads the file's tensor
names and shapes (the safetensors header only, no weights), decides the family (SD 1.x, SD 2.x,
SDXL, and their inpainting variants) and writes the configs that family needs, with every width,
depth and head count taken from the tensors, into a temporary folder. The tokenizer is CLIP's BPE
vocabulary bundled in assets/clip-tokenizer (SD 2.x and SDXL's second encoder pad with "!").

What the tensors cannot say is decided by the family: attention heads (SD 1.x: 8 per block; SD 2.x
and SDXL: 64 channels per head), GroupNorm groups (32), the VAE scaling factor, and for SD 2.x the
prediction type and native size (v-prediction at 768 unless an A1111-style sidecar .yaml says
`parameterization: "eps"`; the 512 base model is the exception, the 768-v model the rule).
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from studio.config import ROOT
from studio.errors import ModelLoadError
from studio.models.fewstep import from_name
from studio.models.layouts import (CLIP_SD1, CLIP_XL, LEGACY_CLIP_NOTE, OPENCLIP_SD2, OPENCLIP_SD2_SGM, OPENCLIP_XL,
                                   SGM_TEXT_NOTE, UNET, VAE, in_original_layout, rename_legacy_clip, renamed)

TOKENIZER_FILES = ROOT / "assets" / "clip-tokenizer"
SAFE_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")

FAMILY_NAMES = {"sd1": "SD 1.x", "sd2": "SD 2.x", "sdxl": "SDXL"}


@dataclass(frozen=True)
class Checkpoint:
    """What a single file holds, read from its tensors."""
    path: Path
    family: str                     # sd1 | sd2 | sdxl
    inpainting: bool
    prediction_type: str            # epsilon | v_prediction
    native_size: int
    configs: dict = field(repr=False, hash=False, compare=False)   # folder name -> config dict
    notes: tuple[str, ...] = ()
    legacy_clip: bool = False       # SD 1.x CLIP keys without `text_model.` (see LEGACY_CLIP_SD1)
    sgm_text: bool = False          # SD 2.x OpenCLIP under OPENCLIP_SD2_SGM

    @property
    def family_name(self) -> str:
        return FAMILY_NAMES[self.family] + (" inpainting" if self.inpainting else "")

    @property
    def pipeline_class(self) -> str:
        if self.family == "sdxl":
            return "StableDiffusionXLInpaintPipeline" if self.inpainting else "StableDiffusionXLPipeline"
        return "StableDiffusionInpaintPipeline" if self.inpainting else "StableDiffusionPipeline"


def is_single_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in SAFE_SUFFIXES + PICKLE_SUFFIXES


def read_shapes(path: Path, allow_pickle: bool = False) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape. .safetensors: from the header alone. Pickled checkpoints (.ckpt)
    can run code when unpickled, so they are read only with `allow_pickle`, and then with
    torch's weights-only unpickler."""
    suffix = path.suffix.lower()
    if suffix in SAFE_SUFFIXES:
        from safetensors import safe_open
        try:
            with safe_open(str(path), framework="pt") as f:
                return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        except Exception as exc:  # noqa: BLE001 - a damaged file becomes a clear message
            raise ModelLoadError(f"{path.name} is not a readable .safetensors file: {exc}") from None
    if suffix in PICKLE_SUFFIXES:
        if not allow_pickle:
            raise ModelLoadError(
                f"{path.name} is a pickled checkpoint ({suffix}); unpickling can run code hidden in "
                "the file. Prefer a .safetensors version, or start the studio with "
                "--allow-pickle if you trust where it came from.")
        import torch
        try:
            sd = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        except Exception as exc:  # noqa: BLE001
            raise ModelLoadError(f"Could not read {path.name}: {exc}") from None
        sd = sd.get("state_dict", sd) if isinstance(sd, dict) else sd
        return {k: tuple(v.shape) for k, v in sd.items() if hasattr(v, "shape")}
    raise ModelLoadError(f"{path.name}: not a checkpoint file (.safetensors, or .ckpt with --allow-pickle).")


def _read_tensors(path: Path, prefix: str, allow_pickle: bool) -> dict:
    """The file's tensors whose names start with `prefix` (read as read_shapes reads the file)."""
    if path.suffix.lower() in SAFE_SUFFIXES:
        from safetensors import safe_open
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys() if k.startswith(prefix)}
    if not allow_pickle:
        raise ModelLoadError(f"{path.name} is a pickled checkpoint: start with --allow-pickle to load it.")
    import torch
    sd = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    sd = sd.get("state_dict", sd)
    return {k: v for k, v in sd.items() if k.startswith(prefix) and hasattr(v, "shape")}


# ---------------------------------------------------------------------------------------------
# Inference of each component's config from the shapes

def _indices(shapes, pattern: str) -> list[int]:
    rx = re.compile(pattern)
    return sorted({int(m.group(1)) for k in shapes for m in [rx.match(k)] if m})


def _unet_config(s: dict, family: str, size: int) -> dict:
    conv_in = s.get(UNET + "input_blocks.0.0.weight")
    if conv_in is None:
        raise ModelLoadError("no UNet in the file (model.diffusion_model.* tensors are missing)")
    downs = _indices(s, re.escape(UNET) + r"input_blocks\.(\d+)\.0\.op\.weight")
    if not downs:
        raise ModelLoadError("the UNet has no downsampling blocks: not a Stable Diffusion UNet")
    per_level = downs[0] - 1                 # resnets per level
    levels = len(downs) + 1
    channels, attention, depth = [], [], []
    for i in range(levels):
        first = 1 + i * (per_level + 1)
        channels.append(s[f"{UNET}input_blocks.{first}.0.out_layers.3.weight"][0])
        blocks = _indices(s, re.escape(f"{UNET}input_blocks.{first}.1.transformer_blocks.") + r"(\d+)\.")
        attention.append(bool(blocks))
        depth.append(len(blocks) or 1)
    mid_depth = len(_indices(s, re.escape(UNET + "middle_block.1.transformer_blocks.") + r"(\d+)\."))
    to_k = next(v for k, v in s.items() if k.startswith(UNET) and k.endswith("attn2.to_k.weight"))
    proj_in = next(v for k, v in s.items() if k.startswith(UNET) and k.endswith(".proj_in.weight"))
    heads = 8 if family == "sd1" else [max(1, c // 64) for c in channels]
    cfg = {
        "_class_name": "UNet2DConditionModel",
        "sample_size": size // 8,
        "in_channels": conv_in[1],
        "out_channels": s[UNET + "out.2.weight"][0],
        "layers_per_block": per_level,
        "block_out_channels": channels,
        "down_block_types": ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attention],
        "up_block_types": ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention)],
        "mid_block_type": "UNetMidBlock2DCrossAttn",
        "cross_attention_dim": to_k[1],
        "attention_head_dim": heads,
        "use_linear_projection": len(proj_in) == 2,
        "norm_num_groups": 32,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
    }
    if any(d > 1 for d in depth) or mid_depth > 1:
        cfg["transformer_layers_per_block"] = [d if a else 1 for d, a in zip(depth, attention)]
    label = s.get(UNET + "label_emb.0.0.weight")
    if label is not None:
        pooled = s[OPENCLIP_XL + "text_projection"][1]
        cfg.update(addition_embed_type="text_time", projection_class_embeddings_input_dim=label[1],
                   addition_time_embed_dim=(label[1] - pooled) // 6)
    return cfg


def _vae_config(s: dict, family: str, size: int) -> dict:
    if VAE + "encoder.conv_in.weight" not in s:
        raise ModelLoadError("the file has no VAE (first_stage_model.* tensors are missing); "
                             "choose a separate VAE file for it")
    levels = _indices(s, re.escape(VAE + "encoder.down.") + r"(\d+)\.block\.0\.conv1\.weight")
    return {
        "_class_name": "AutoencoderKL",
        "in_channels": s[VAE + "encoder.conv_in.weight"][1],
        "out_channels": s[VAE + "decoder.conv_out.weight"][0],
        "latent_channels": s[VAE + "post_quant_conv.weight"][0],
        "block_out_channels": [s[f"{VAE}encoder.down.{i}.block.0.conv1.weight"][0] for i in levels],
        "down_block_types": ["DownEncoderBlock2D"] * len(levels),
        "up_block_types": ["UpDecoderBlock2D"] * len(levels),
        "layers_per_block": len(_indices(s, re.escape(VAE + "encoder.down.0.block.") + r"(\d+)\.conv1")),
        "norm_num_groups": 32,
        "sample_size": size,
        "scaling_factor": 0.13025 if family == "sdxl" else 0.18215,
        **({"force_upcast": True} if family == "sdxl" else {}),
    }


def _clip_config(s: dict, prefix: str) -> dict:
    vocab, hidden = s[prefix + "embeddings.token_embedding.weight"]
    return {
        "architectures": ["CLIPTextModel"], "model_type": "clip_text_model",
        "vocab_size": vocab, "hidden_size": hidden,
        "intermediate_size": s[prefix + "encoder.layers.0.mlp.fc1.weight"][0],
        "num_hidden_layers": len(_indices(s, re.escape(prefix + "encoder.layers.") + r"(\d+)\.")),
        "num_attention_heads": max(1, hidden // 64),
        "max_position_embeddings": s[prefix + "embeddings.position_embedding.weight"][0],
        "hidden_act": "quick_gelu", "projection_dim": hidden,
        "bos_token_id": 49406, "eos_token_id": 49407, "pad_token_id": 49407,
    }


def _openclip_config(s: dict, prefix: str, drop_last: bool, with_projection: bool) -> dict:
    vocab, hidden = s[prefix + "token_embedding.weight"]
    layers = len(_indices(s, re.escape(prefix + "transformer.resblocks.") + r"(\d+)\."))
    proj = s.get(prefix + "text_projection", (hidden, hidden))
    return {
        "architectures": ["CLIPTextModelWithProjection" if with_projection else "CLIPTextModel"],
        "model_type": "clip_text_model",
        "vocab_size": vocab, "hidden_size": hidden,
        "intermediate_size": s[prefix + "transformer.resblocks.0.mlp.c_fc.weight"][0],
        # SD 2.x conditions on the penultimate layer: diffusers' encoder stops one layer early
        "num_hidden_layers": layers - 1 if drop_last else layers,
        "num_attention_heads": max(1, hidden // 64),
        "max_position_embeddings": s[prefix + "positional_embedding"][0],
        "hidden_act": "gelu", "projection_dim": proj[1],
        "bos_token_id": 49406, "eos_token_id": 49407, "pad_token_id": 0,
    }


def _sidecar_prediction(path: Path) -> str | None:
    """A1111's convention: `model.yaml` next to `model.safetensors` (the original LDM config)."""
    for yaml in (path.with_suffix(".yaml"), path.with_suffix(".yml")):
        if yaml.is_file():
            text = yaml.read_text(encoding="utf-8", errors="replace")
            m = re.search(r"parameterization:\s*['\"]?(\w+)", text)
            return "v_prediction" if m and m.group(1) == "v" else "epsilon"
    return None


def inspect(path: Path, allow_pickle: bool = False, prediction_type: str | None = None) -> Checkpoint:
    """Read a single file's family and every config it needs. Raises ModelLoadError."""
    path = Path(path)
    raw = read_shapes(path, allow_pickle)
    s, legacy_clip, sgm_text = in_original_layout(raw)
    notes = [note for flag, note in ((legacy_clip, LEGACY_CLIP_NOTE), (sgm_text, SGM_TEXT_NOTE)) if flag]
    family = _family(s, path)
    inpainting = s.get(UNET + "input_blocks.0.0.weight", (0, 4))[1] == 9
    few = from_name(path.name)
    pred = _prediction(path, family, inpainting, few, prediction_type, notes)
    size = {"sd1": 512, "sd2": 768 if pred == "v_prediction" else 512, "sdxl": 1024}[family]
    size = few.size if few is not None and few.size else size
    return Checkpoint(path=path, family=family, inpainting=inpainting, prediction_type=pred,
                      native_size=size, configs=_configs(s, family, pred, size), notes=tuple(notes),
                      legacy_clip=legacy_clip, sgm_text=sgm_text)


def _family(s: dict, path: Path) -> str:
    """sd1, sd2 or sdxl, from the text encoders the file holds (SDXL also from its UNet)."""
    if any(k.startswith(OPENCLIP_XL) for k in s) or UNET + "label_emb.0.0.weight" in s:
        return "sdxl"
    if any(k.startswith(OPENCLIP_SD2) for k in s):
        return "sd2"
    if any(k.startswith(CLIP_SD1) for k in s):
        return "sd1"
    ctx = next((v[1] for k, v in s.items() if k.startswith(UNET) and k.endswith("attn2.to_k.weight")), None)
    if ctx is None:
        raise ModelLoadError(f"{path.name} holds no Stable Diffusion UNet: is it a LoRA, an "
                             "embedding or a VAE? Those go in models/loras, embeddings or vae.")
    raise ModelLoadError(f"{path.name} has a UNet (context width {ctx}) but no text encoder the "
                         "studio recognises (SD 1.x CLIP, SD 2.x OpenCLIP or SDXL's pair).")


def _prediction(path: Path, family: str, inpainting: bool, few, asked: str | None, notes: list[str]) -> str:
    """epsilon or v_prediction: as asked, else a sidecar .yaml, else a few-step model's makers'
    configuration, else v for an SD 2.x file (768-v is the rule); a note says which."""
    sidecar = _sidecar_prediction(path)
    if asked:
        return asked
    if sidecar:
        notes.append(f"prediction type {sidecar} from {path.with_suffix('.yaml').name}")
        return sidecar
    if family != "sd2" or inpainting:
        return "epsilon"
    if few is not None and few.size:
        notes.append(f"{few.method}: epsilon prediction at {few.size} px, as its makers' configuration says")
        return "epsilon"
    notes.append("SD 2.x file without a .yaml beside it: assumed v-prediction at 768 px "
                 "(SD 2.x 768-v). For the 512 base model put a .yaml with "
                 "parameterization: \"eps\" next to it, or pass --prediction-type epsilon.")
    return "v_prediction"


def _configs(s: dict, family: str, pred: str, size: int) -> dict[str, dict]:
    """Every component's diffusers config, widths and depths read from the shapes."""
    configs: dict[str, dict] = {"unet": _unet_config(s, family, size), "vae": _vae_config(s, family, size)}
    if family == "sd2" and pred == "v_prediction":
        configs["unet"]["upcast_attention"] = True   # as SD 2.1 768-v's own config (fp16 overflow)
    if family == "sd1":
        configs["text_encoder"] = _clip_config(s, CLIP_SD1)
    elif family == "sd2":
        configs["text_encoder"] = _openclip_config(s, OPENCLIP_SD2, drop_last=True, with_projection=False)
    else:
        configs["text_encoder"] = _clip_config(s, CLIP_XL)
        configs["text_encoder_2"] = _openclip_config(s, OPENCLIP_XL, drop_last=False, with_projection=True)
    configs["scheduler"] = {
        "_class_name": "EulerDiscreteScheduler" if family == "sdxl" else "PNDMScheduler",
        "num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
        "beta_schedule": "scaled_linear", "steps_offset": 1, "clip_sample": False,
        "set_alpha_to_one": False, "prediction_type": pred, "timestep_spacing": "leading",
        **({"skip_prk_steps": True} if family != "sdxl" else {}),
    }
    return configs


# ---------------------------------------------------------------------------------------------
# The config folder from_single_file reads

def _tokenizer(folder: Path, pad: str) -> None:
    folder.mkdir(parents=True)
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(TOKENIZER_FILES / name, folder / name)
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
               "unk_token": "<|endoftext|>", "pad_token": pad}
    (folder / "special_tokens_map.json").write_text(json.dumps(special), encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "do_lower_case": True, **special}),
        encoding="utf-8")


def write_config_folder(ck: Checkpoint, folder: Path) -> Path:
    """The diffusers folder (configs and tokenizers, no weights) for `ck`."""
    folder.mkdir(parents=True, exist_ok=True)
    index = {"_class_name": ck.pipeline_class, "_diffusers_version": "0.30.0",
             "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
             "scheduler": ["diffusers", ck.configs["scheduler"]["_class_name"]],
             "text_encoder": ["transformers", "CLIPTextModel"],
             "tokenizer": ["transformers", "CLIPTokenizer"]}
    if ck.family == "sdxl":
        index.update(text_encoder_2=["transformers", "CLIPTextModelWithProjection"],
                     tokenizer_2=["transformers", "CLIPTokenizer"], force_zeros_for_empty_prompt=True)
        if ck.inpainting:
            index["requires_aesthetics_score"] = False
    else:
        index.update(safety_checker=[None, None], feature_extractor=[None, None],
                     requires_safety_checker=False)
    (folder / "model_index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")
    for name, cfg in ck.configs.items():
        sub = folder / name
        sub.mkdir(exist_ok=True)
        file = "scheduler_config.json" if name == "scheduler" else "config.json"
        (sub / file).write_text(json.dumps(cfg, indent=2), encoding="utf-8")
    _tokenizer(folder / "tokenizer", "<|endoftext|>" if ck.family != "sd2" else "!")
    if ck.family == "sdxl":
        _tokenizer(folder / "tokenizer_2", "!")
    return folder


def load_pipeline(ck: Checkpoint, dtype, allow_pickle: bool = False):
    """The diffusers pipeline for a single file, with no network access."""
    import tempfile

    import diffusers

    cls = getattr(diffusers, ck.pipeline_class)
    if ck.path.suffix.lower() in PICKLE_SUFFIXES and not allow_pickle:
        raise ModelLoadError(f"{ck.path.name} is a pickled checkpoint: start with --allow-pickle to load it.")
    with tempfile.TemporaryDirectory(prefix="studio-config-") as tmp:
        folder = write_config_folder(ck, Path(tmp) / "config")
        kwargs = dict(config=str(folder), local_files_only=True, torch_dtype=dtype)
        if ck.family != "sdxl":
            kwargs.update(safety_checker=None, requires_safety_checker=False)
        try:
            if ck.legacy_clip or ck.sgm_text:   # diffusers reads only the usual layout: give it the encoder built
                kwargs["text_encoder"] = _renamed_text_encoder(ck, folder, dtype, allow_pickle)
            return cls.from_single_file(str(ck.path), **kwargs)
        except ModelLoadError:
            raise
        except Exception as exc:  # noqa: BLE001 - any loader failure becomes a clear message
            raise ModelLoadError(f"Could not load {ck.path.name} as {ck.family_name}: "
                                 f"{type(exc).__name__}: {exc}") from exc


def _renamed_text_encoder(ck: Checkpoint, folder: Path, dtype, allow_pickle: bool):
    """The text encoder of a file in a layout diffusers does not read (SD 1.x's old CLIP layout,
    SD 2.x's generative-models layout): its tensors, renamed to the usual names, through the
    converter diffusers uses for the usual layout."""
    from diffusers.loaders.single_file_utils import create_diffusers_clip_model_from_ldm
    from transformers import CLIPTextModel

    if ck.sgm_text:
        tensors = renamed(_read_tensors(ck.path, OPENCLIP_SD2_SGM, allow_pickle), OPENCLIP_SD2_SGM, OPENCLIP_SD2)
    else:
        tensors = rename_legacy_clip(_read_tensors(ck.path, "cond_stage_model.transformer.", allow_pickle))
    model = create_diffusers_clip_model_from_ldm(CLIPTextModel, tensors, config=str(folder),
                                                 subfolder="text_encoder", torch_dtype=dtype,
                                                 local_files_only=True)
    missing = [n for n, p in model.named_parameters() if p.is_meta]
    if missing:
        raise ModelLoadError(f"{ck.path.name}: the text encoder lacks {len(missing)} tensors ({missing[0]}, ...)")
    return model
