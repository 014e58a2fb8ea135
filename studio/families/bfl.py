"""Black Forest Labs' Flux names (src/flux/model.py, modules/layers.py) as diffusers names them:
the tables that read BFL's transformer files (studio/families/files.py) and LoRAs in BFL's or
kohya's names (studio/families/loras.py). diffusers' own converters assume Flux.1's 3072 channels;
these read any width from the model's config.
"""

from __future__ import annotations

# Black Forest Labs' names -> diffusers' (src/flux/model.py, modules/layers.py). diffusers' own
# converter assumes Flux.1's 3072 channels; this reads any width from the shapes.
FLUX_TOP = {"img_in": "x_embedder", "txt_in": "context_embedder", "final_layer.linear": "proj_out",
            "time_in.in_layer": "time_text_embed.timestep_embedder.linear_1",
            "time_in.out_layer": "time_text_embed.timestep_embedder.linear_2",
            "vector_in.in_layer": "time_text_embed.text_embedder.linear_1",
            "vector_in.out_layer": "time_text_embed.text_embedder.linear_2",
            "guidance_in.in_layer": "time_text_embed.guidance_embedder.linear_1",
            "guidance_in.out_layer": "time_text_embed.guidance_embedder.linear_2"}
FLUX_DOUBLE = {"img_mod.lin": "norm1.linear", "txt_mod.lin": "norm1_context.linear", "img_attn.proj": "attn.to_out.0",
               "txt_attn.proj": "attn.to_add_out", "img_mlp.0": "ff.net.0.proj", "img_mlp.2": "ff.net.2",
               "txt_mlp.0": "ff_context.net.0.proj", "txt_mlp.2": "ff_context.net.2",
               "img_attn.norm.query_norm.scale": "attn.norm_q.weight", "img_attn.norm.key_norm.scale": "attn.norm_k.weight",
               "txt_attn.norm.query_norm.scale": "attn.norm_added_q.weight",
               "txt_attn.norm.key_norm.scale": "attn.norm_added_k.weight"}
FLUX_SINGLE = {"linear2": "proj_out", "modulation.lin": "norm.linear", "norm.query_norm.scale": "attn.norm_q.weight",
               "norm.key_norm.scale": "attn.norm_k.weight"}
FLUX_FUSED = {"img_attn.qkv": ("attn.to_q", "attn.to_k", "attn.to_v"),
              "txt_attn.qkv": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj")}


def halves_swapped(t):
    """BFL's final adaLN gives (shift, scale); diffusers' AdaLayerNormContinuous (scale, shift)."""
    import torch
    shift, scale = t.chunk(2, dim=0)
    return torch.cat([scale, shift], dim=0)


def _renamed(tensors: dict, old: str, new: str, out: dict) -> None:
    """`old` as `new`: a whole parameter name (a norm's scale), else its .weight and .bias."""
    if old in tensors:
        out[new] = tensors[old]
        return
    for suffix in (".weight", ".bias"):
        if old + suffix in tensors:
            out[new + suffix] = tensors[old + suffix]


def flux_from_bfl(t: dict, config: dict) -> dict:
    """diffusers' FluxTransformer2DModel state dict from BFL's tensors."""
    out: dict = {}
    hidden = config["num_attention_heads"] * config["attention_head_dim"]
    for old, new in FLUX_TOP.items():
        _renamed(t, old, new, out)
    for w in ("weight", "bias"):
        out[f"norm_out.linear.{w}"] = halves_swapped(t[f"final_layer.adaLN_modulation.1.{w}"])
    for i in range(config["num_layers"]):
        b, d = f"double_blocks.{i}.", f"transformer_blocks.{i}."
        for old, new in FLUX_DOUBLE.items():
            _renamed(t, b + old, d + new, out)
        for old, news in FLUX_FUSED.items():
            for w in ("weight", "bias"):
                if f"{b}{old}.{w}" in t:
                    for part, new in zip(t[f"{b}{old}.{w}"].chunk(3, dim=0), news):
                        out[f"{d}{new}.{w}"] = part
    for i in range(config["num_single_layers"]):
        b, d = f"single_blocks.{i}.", f"single_transformer_blocks.{i}."
        for old, new in FLUX_SINGLE.items():
            _renamed(t, b + old, d + new, out)
        for w in ("weight", "bias"):
            fused = t[f"{b}linear1.{w}"]
            q, k, v, mlp = fused.split([hidden, hidden, hidden, fused.shape[0] - 3 * hidden], dim=0)
            out.update({f"{d}attn.to_q.{w}": q, f"{d}attn.to_k.{w}": k, f"{d}attn.to_v.{w}": v,
                        f"{d}proj_mlp.{w}": mlp})
    return out
