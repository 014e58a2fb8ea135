"""The text encoders of the transformer families as single files hold them: CLIP-L and CLIP-G
(Flux.1, SD 3.5), T5-XXL (Flux.1, SD 3.5; fp16 or fp8) and Qwen3 (Z-Image; ComfyUI's
qwen_3_4b.safetensors in Hugging Face's names, under `model.` or bare). Each is recognised by
its tensor names, its config read from the shapes (what shapes cannot say is the published
model's: Qwen3-4B's rotary base), and built offline with its weights in the working precision.
"""

from __future__ import annotations

import re

from studio.errors import ModelLoadError
from studio.families.tokenizers import T5_VOCAB

ROLES = ("clip_l", "clip_g", "t5xxl", "qwen3")
T5_MARK = "encoder.block.0.layer.0.SelfAttention.q.weight"
QWEN3_MARK = "layers.0.self_attn.q_norm.weight"         # Qwen3's per-head norms (Qwen2 has none)
QWEN3_4B = {"rope_theta": 1e6, "rms_norm_eps": 1e-6, "max_position_embeddings": 40960}   # its config.json


def count(shapes: dict, pattern: str) -> int:
    """How many distinct indices `pattern`'s group takes over the tensor names."""
    rx = re.compile(pattern)
    return len({m.group(1) for k in shapes for m in [rx.match(k)] if m})


def canonical_clip(tensors: dict) -> dict:
    """CLIP tensors under `text_model.` as CLIP files have them (transformers 5's CLIPTextModel
    saves them without it)."""
    if "embeddings.token_embedding.weight" not in tensors:
        return tensors
    return {k if k.startswith("text_projection") else f"text_model.{k}": v for k, v in tensors.items()}


def canonical_qwen(tensors: dict) -> dict:
    """Qwen3 tensors as Qwen3Model names them: without the causal LM's `model.` and its head."""
    return {k.removeprefix("model."): v for k, v in tensors.items() if not k.startswith("lm_head.")}


def kind(shapes: dict) -> tuple[str, int] | None:
    """("clip", hidden), ("t5", d_model), ("qwen3", hidden) or ("vae", latent channels) of a
    part's file; None for anything else."""
    clip, qwen = canonical_clip(shapes), canonical_qwen(shapes)
    if "text_model.embeddings.token_embedding.weight" in clip:
        return "clip", clip["text_model.embeddings.token_embedding.weight"][1]
    if T5_MARK in shapes:
        return "t5", shapes["shared.weight"][1] if "shared.weight" in shapes else shapes[T5_MARK][1]
    if QWEN3_MARK in qwen:
        return "qwen3", qwen["embed_tokens.weight"][1]
    if "decoder.conv_in.weight" in shapes:
        return "vae", shapes["decoder.conv_in.weight"][1]
    return None


def _clip_config(s: dict, role: str) -> dict:
    from studio.models.checkpoints import _clip_config as read

    s = canonical_clip(s)
    config = read(s, "text_model.")
    projection = s.get("text_projection.weight")
    config.update(architectures=["CLIPTextModelWithProjection"], projection_dim=(projection or
                  (config["hidden_size"],))[0], hidden_act="gelu" if role == "clip_g" else "quick_gelu")
    return config


def _t5_config(s: dict, role: str) -> dict:
    bias = s["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"]
    inner, d_model = s[T5_MARK]
    vocab = s.get("shared.weight", s.get("encoder.embed_tokens.weight", (T5_VOCAB,)))[0]
    return {"architectures": ["T5EncoderModel"], "model_type": "t5", "vocab_size": vocab, "d_model": d_model,
            "d_kv": inner // bias[1], "num_heads": bias[1], "d_ff": s["encoder.block.0.layer.1.DenseReluDense.wi_0.weight"][0],
            "num_layers": count(s, r"encoder\.block\.(\d+)\."), "feed_forward_proj": "gated-gelu",
            "is_encoder_decoder": False, "relative_attention_num_buckets": bias[0]}


def _qwen3_config(s: dict, role: str) -> dict:
    s = canonical_qwen(s)
    vocab, hidden = s["embed_tokens.weight"]
    head = s[QWEN3_MARK][0]
    return {"architectures": ["Qwen3Model"], "vocab_size": vocab, "hidden_size": hidden, "head_dim": head,
            "num_hidden_layers": count(s, r"layers\.(\d+)\."), "num_attention_heads": s["layers.0.self_attn.q_proj.weight"][0] // head,
            "num_key_value_heads": s["layers.0.self_attn.k_proj.weight"][0] // head,
            "intermediate_size": s["layers.0.mlp.gate_proj.weight"][0], **QWEN3_4B}


CONFIGS = {"clip_l": _clip_config, "clip_g": _clip_config, "t5xxl": _t5_config, "qwen3": _qwen3_config}


def config(role: str, shapes: dict) -> dict:
    """The transformers config (with `architectures`) of a role's encoder, from its tensor shapes."""
    return CONFIGS[role](shapes, role)


def _model(role: str, cfg: dict, flux: bool):
    import transformers

    name = "CLIPTextModel" if flux and role == "clip_l" else cfg["architectures"][0]
    config_cls = {"t5xxl": transformers.T5Config, "qwen3": transformers.Qwen3Config}.get(role, transformers.CLIPTextConfig)
    return getattr(transformers, name)(config_cls(**{k: v for k, v in cfg.items() if k != "architectures"}))


def _renamed(role: str, tensors: dict, model) -> dict:
    if role == "qwen3":
        return canonical_qwen(tensors)
    if role == "t5xxl":
        return tensors if "shared.weight" in tensors else {**tensors, "shared.weight": tensors["encoder.embed_tokens.weight"]}
    tensors = canonical_clip(tensors)
    if not any(k.startswith("text_model.") for k in model.state_dict()):
        tensors = {k.removeprefix("text_model."): v for k, v in tensors.items()}
    return tensors


def build(role: str, cfg: dict, tensors: dict, dtype, *, flux: bool, file: str):
    """An encoder from its config and a file's tensors (fp8 ones cast to `dtype`); a missing
    tensor is an error naming the file, never a silent random weight. Flux reads CLIP-L without
    its projection."""
    model = _model(role, cfg, flux)
    tensors = {k: v.to(dtype) for k, v in tensors.items() if not k.endswith("position_ids")}
    missing, _ = model.load_state_dict(_renamed(role, tensors, model), strict=False)
    missing = [m for m in missing if not m.endswith(("encoder.embed_tokens.weight", "position_ids"))]   # T5 ties it
    if missing:
        raise ModelLoadError(f"{file}: its {role} lacks {len(missing)} tensors ({missing[0]}, ...).")
    return model.to(dtype).eval()
