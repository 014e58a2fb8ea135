"""The original (LDM / AUTOMATIC1111) layout of a single checkpoint file: where each component's
tensors live, and the older tools' names for them that the studio renames on load.

Shapes or tensors alike (name -> anything): the functions only rename keys.
"""

from __future__ import annotations

UNET = "model.diffusion_model."
VAE = "first_stage_model."
CLIP_SD1 = "cond_stage_model.transformer.text_model."
OPENCLIP_SD2 = "cond_stage_model.model."
CLIP_XL = "conditioner.embedders.0.transformer.text_model."
OPENCLIP_XL = "conditioner.embedders.1.model."
# SD 2.x saved by Stability's generative-models code (sd_turbo.safetensors): the OpenCLIP text
# encoder under the SGM name; renamed to the original layout's on load
OPENCLIP_SD2_SGM = "conditioner.embedders.0.model."

# Older tools wrote SD 1.x's CLIP without the `text_model.` level; AUTOMATIC1111 renames those keys
# on load (its checkpoint_dict_replacements), and so does the studio: old prefix -> new prefix.
LEGACY_CLIP_SD1 = {
    "cond_stage_model.transformer.embeddings.": CLIP_SD1 + "embeddings.",
    "cond_stage_model.transformer.encoder.": CLIP_SD1 + "encoder.",
    "cond_stage_model.transformer.final_layer_norm.": CLIP_SD1 + "final_layer_norm.",
}

LEGACY_CLIP_NOTE = ("SD 1.x text encoder in the old layout (no text_model.): its keys are renamed on load, "
                    "as AUTOMATIC1111 does")
SGM_TEXT_NOTE = ("SD 2.x text encoder in generative-models' layout (conditioner.embedders.0): renamed on "
                 "load")


def rename_legacy_clip(tensors: dict) -> dict:
    """`tensors` (name -> tensor or shape) with SD 1.x CLIP keys in the old layout (no
    `text_model.` level) renamed by LEGACY_CLIP_SD1; the very same dict when none is."""
    def new_name(key: str) -> str:
        for old, new in LEGACY_CLIP_SD1.items():
            if key.startswith(old):
                return new + key[len(old):]
        return key
    if not any(key.startswith(tuple(LEGACY_CLIP_SD1)) for key in tensors):
        return tensors
    return {new_name(key): value for key, value in tensors.items()}


def is_sgm_sd2(shapes: dict) -> bool:
    """An SD 2.x OpenCLIP stored under OPENCLIP_SD2_SGM (an SDXL refiner keeps that name too: told
    apart by its UNet's size conditioning, `label_emb`, which SD 2.x has not)."""
    return (any(k.startswith(OPENCLIP_SD2_SGM) for k in shapes) and UNET + "label_emb.0.0.weight" not in shapes
            and not any(k.startswith(OPENCLIP_XL) for k in shapes))


def renamed(tensors: dict, old: str, new: str) -> dict:
    return {new + k[len(old):] if k.startswith(old) else k: v for k, v in tensors.items()}


def in_original_layout(raw: dict) -> tuple[dict, bool, bool]:
    """The shapes under the original layout's names, older tools' renamings undone: (shapes,
    whether SD 1.x's CLIP was in the old layout, whether SD 2.x's OpenCLIP was under SGM's name)."""
    s = rename_legacy_clip(raw)
    sgm_text = is_sgm_sd2(s)
    return (renamed(s, OPENCLIP_SD2_SGM, OPENCLIP_SD2) if sgm_text else s), s is not raw, sgm_text
