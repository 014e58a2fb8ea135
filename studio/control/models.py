"""Control models from models/controlnet: diffusers folders (ControlNet, ControlNet-Union,
T2I-Adapter: their config.json says which) and single files as A1111 users keep them
(`control_v11p_sd15_canny.safetensors` in ControlNet's own layout, with or without the
`control_model.` prefix, or in diffusers' key names). A single file's config is read from its
tensors' shapes, its keys renamed by diffusers' own converter; nothing comes from the hub.

Loaded models are kept (a few, on the model's device and dtype) until the checkpoint changes.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from dataclasses import dataclass
from pathlib import Path

from studio.errors import InvalidRequest, ModelLoadError
from studio.models.hashes import model_sha256
from studio.models.library import PICKLE_SUFFIXES, Entry

log = logging.getLogger(__name__)

CLASSES = {"ControlNetModel": "controlnet", "ControlNetUnionModel": "union", "T2IAdapter": "adapter"}
KEEP = 4          # control models kept loaded at once


@dataclass
class ControlModel:
    name: str
    kind: str                  # controlnet | union | adapter
    module: object             # the diffusers model
    sha256: str
    cross_attention_dim: int | None   # what text embeddings it takes (None: an adapter takes none)

    @property
    def title(self) -> str:
        return _title(self.name, self.sha256)


def _title(name: str, sha256: str) -> str:
    """As sd-webui-controlnet lists models: the name without extension and a short hash."""
    return f"{re.sub(r'[.](safetensors|pth|pt|ckpt|bin)$', '', name)} [{sha256[:8]}]"


def model_title(entry: Entry) -> str:
    return _title(entry.name, _digest(entry))


# ---------------------------------------------------------------------------------------------
# single files

def _read(path: Path, allow_pickle: bool) -> dict:
    if path.suffix.lower() in PICKLE_SUFFIXES:
        if not allow_pickle:
            raise ModelLoadError(f"{path.name} is a pickle file: start with --allow-pickle to load it.")
        import torch
        sd = torch.load(str(path), map_location="cpu", weights_only=True)
        sd = sd.get("state_dict", sd) if isinstance(sd, dict) else sd
    else:
        from safetensors.torch import load_file
        sd = load_file(str(path))
    if not isinstance(sd, dict):
        raise ModelLoadError(f"{path.name} holds no tensors.")
    return {k: v for k, v in sd.items() if hasattr(v, "shape")}


def _count(sd: dict, pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in sd for m in [rx.match(k)] if m})


def to_diffusers_keys(sd: dict) -> dict:
    """A ControlNet state dict in ControlNet's own layout (`control_model.` prefix or none) with
    diffusers' names; one already in diffusers' names as it is."""
    if "time_embedding.linear_1.weight" in sd:
        return sd
    sd = {k.removeprefix("control_model."): v for k, v in sd.items()}
    if "input_blocks.0.0.weight" not in sd or "input_hint_block.0.weight" not in sd:
        raise ModelLoadError("not a ControlNet (no input_blocks / input_hint_block tensors)")
    downs = sorted(int(m.group(1)) for k in sd for m in [re.match(r"input_blocks\.(\d+)\.0\.op\.weight", k)] if m)
    from diffusers.loaders.single_file_utils import convert_controlnet_checkpoint
    out = convert_controlnet_checkpoint(sd, {"layers_per_block": (downs[0] - 1) if downs else 1})
    for old, new in (("label_emb.0.0", "add_embedding.linear_1"), ("label_emb.0.2", "add_embedding.linear_2")):
        for part in ("weight", "bias"):      # SDXL's size conditioning (the converter leaves it out)
            if f"{old}.{part}" in sd:
                out[f"{new}.{part}"] = sd[f"{old}.{part}"]
    return out


def controlnet_config(sd: dict) -> dict:
    """ControlNetModel's config from a state dict in diffusers' names."""
    levels = _count(sd, r"down_blocks\.(\d+)\.")
    channels = [sd[f"down_blocks.{i}.resnets.0.conv2.weight"].shape[0] for i in range(levels)]
    attention = [any(k.startswith(f"down_blocks.{i}.attentions.") for k in sd) for i in range(levels)]
    depth = [_count(sd, rf"down_blocks\.{i}\.attentions\.0\.transformer_blocks\.(\d+)\.") or 1 for i in range(levels)]
    to_k = next(v for k, v in sd.items() if k.endswith("attn2.to_k.weight"))
    proj_in = next(v for k, v in sd.items() if k.endswith(".proj_in.weight"))
    hint = [sd["controlnet_cond_embedding.conv_in.weight"].shape[0]] + [
        sd[f"controlnet_cond_embedding.blocks.{i}.weight"].shape[0]
        for i in range(1, _count(sd, r"controlnet_cond_embedding\.blocks\.(\d+)\."), 2)]
    cross = to_k.shape[1]
    cfg = {"in_channels": sd["conv_in.weight"].shape[1], "block_out_channels": channels,
           "layers_per_block": _count(sd, r"down_blocks\.0\.resnets\.(\d+)\."),
           "down_block_types": ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attention],
           "cross_attention_dim": cross, "attention_head_dim": 8 if cross == 768 else [max(1, c // 64) for c in channels],
           "use_linear_projection": len(proj_in.shape) == 2,
           "conditioning_channels": sd["controlnet_cond_embedding.conv_in.weight"].shape[1],
           "conditioning_embedding_out_channels": hint,
           "transformer_layers_per_block": [d if a else 1 for d, a in zip(depth, attention)],
           "norm_num_groups": 32}
    if "add_embedding.linear_1.weight" in sd:          # SDXL's size conditioning
        cfg.update(addition_embed_type="text_time", addition_time_embed_dim=256,
                   projection_class_embeddings_input_dim=sd["add_embedding.linear_1.weight"].shape[1])
    if "mid_block.attentions.0.proj_in.weight" not in sd:
        cfg["mid_block_type"] = "UNetMidBlock2D" if "mid_block.resnets.0.conv1.weight" in sd else None
    return cfg


def load_single_file(path: Path, dtype, allow_pickle: bool):
    import torch
    from diffusers import ControlNetModel

    sd = to_diffusers_keys(_read(path, allow_pickle))
    config = controlnet_config(sd)
    with torch.device("meta"):
        model = ControlNetModel(**config)
    missing, unexpected = model.load_state_dict(sd, strict=False, assign=True)
    if missing or unexpected:
        raise ModelLoadError(f"{len(missing)} tensors missing ({', '.join(missing[:2])}...) and {len(unexpected)} "
                             "not expected: not a ControlNet of a known layout")
    return model.to(dtype)


# ---------------------------------------------------------------------------------------------
# folders and the cache

def load_folder(path: Path, dtype):
    import diffusers

    try:
        name = json.loads((path / "config.json").read_text(encoding="utf-8")).get("_class_name", "")
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{path.name}/config.json cannot be read: {exc}") from None
    if name not in CLASSES:
        raise ModelLoadError(f"{path.name} is a {name or 'model of no known class'}, not a ControlNet, "
                             "ControlNet-Union or T2I-Adapter")
    return getattr(diffusers, name).from_pretrained(str(path), torch_dtype=dtype, local_files_only=True)


def _digest(entry: Entry) -> str:
    """The file's sha256; a folder's, of its weight files (as a checkpoint folder's)."""
    return model_sha256(entry.path)


class ControlModels:
    """The control models loaded for the current checkpoint, by file (reloaded if it changed)."""

    def __init__(self):
        self._kept: dict[tuple, ControlModel] = {}
        self._lock = threading.Lock()

    def get(self, entry: Entry, device: str, dtype, allow_pickle: bool) -> ControlModel:
        stat = entry.path.stat()
        key = (str(entry.path), stat.st_mtime_ns, stat.st_size, device, str(dtype))
        with self._lock:
            if key not in self._kept:
                while len(self._kept) >= KEEP:
                    self._kept.pop(next(iter(self._kept)))
                self._kept[key] = self._load(entry, device, dtype, allow_pickle)
            return self._kept[key]

    @staticmethod
    def _load(entry: Entry, device: str, dtype, allow_pickle: bool) -> ControlModel:
        try:
            module = (load_folder(entry.path, dtype) if entry.path.is_dir()
                      else load_single_file(entry.path, dtype, allow_pickle))
        except ModelLoadError as exc:
            raise InvalidRequest(f"ControlNet model {entry.name!r} cannot be loaded: {exc}.") from None
        except Exception as exc:  # noqa: BLE001 - any loader failure is the user's clear message
            raise InvalidRequest(f"ControlNet model {entry.name!r} cannot be loaded: {type(exc).__name__}: "
                                 f"{str(exc)[:300]}.") from None
        module.to(device).eval().requires_grad_(False)
        kind = CLASSES[type(module).__name__]
        log.info("Loaded the control model %s (%s)", entry.name, kind)
        return ControlModel(entry.name, kind, module, _digest(entry),
                            None if kind == "adapter" else module.config.cross_attention_dim)

    def clear(self) -> None:
        with self._lock:
            self._kept.clear()
