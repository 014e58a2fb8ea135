"""Write a trained embedded model as a diffusers folder (fp16 weights, tokenizer files, the
example prompts the studio shows, and the training record)."""

from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path

import torch

from .model import BETAS, PREDICTION_TYPE, load_tokenizer


EXAMPLE_PROMPTS = (
    "a red circle on a blue background",
    "a small green square in the top left corner",
    "a large yellow star in the center on a purple background",
    "two white triangles on a black background",
    "a pink ring at the bottom right on a gray background",
    "an orange circle on the left and a cyan square on the right",
)


def write_examples(folder: Path) -> None:
    """Prompts the studio shows as examples for this model (one a line), and the words it knows
    (vocabulary.txt: a `# knows:` line, then one word a line), so the studio can say which words of
    a prompt it has never seen (studio/prompts/vocabulary.py)."""
    from .world import VOCABULARY_KNOWS, vocabulary
    (folder / "examples.txt").write_text("\n".join(EXAMPLE_PROMPTS) + "\n", encoding="utf-8")
    (folder / "vocabulary.txt").write_text(f"# knows: {VOCABULARY_KNOWS}\n" + "\n".join(vocabulary()) + "\n",
                                           encoding="utf-8")


def export(out: Path, vae, unet, text, tokenizer_dir: Path, scale: float, record: dict,
           inpaint_unet=None, text_tokens: int = 77) -> Path:
    """A diffusers folder that `StableDiffusionPipeline.from_pretrained(out)` loads, fp16; the
    inpainting UNet, if any, in its subfolder (not a pipeline component: the studio pairs it with
    the same VAE and text encoder through `from_pipe(pipe, unet=...)`)."""
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline

    tokenizer = load_tokenizer(tokenizer_dir, text_tokens)
    vae = copy.deepcopy(vae).cpu()
    vae.register_to_config(scaling_factor=scale)
    scheduler = DPMSolverMultistepScheduler(
        num_train_timesteps=1000, **BETAS, prediction_type=PREDICTION_TYPE, algorithm_type="dpmsolver++",
        use_karras_sigmas=True, steps_offset=1, timestep_spacing="leading")
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=copy.deepcopy(text).cpu(),
                                   tokenizer=tokenizer, unet=copy.deepcopy(unet).cpu(),
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.to(torch.float16)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.save_pretrained(tmp, safe_serialization=True)
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(tokenizer_dir / name, tmp / "tokenizer" / name)
    if inpaint_unet is not None:
        from studio.models.sources import INPAINT_FOLDER
        copy.deepcopy(inpaint_unet).cpu().to(torch.float16).save_pretrained(
            tmp / INPAINT_FOLDER, safe_serialization=True)
    write_examples(tmp)
    (tmp / "training.json").write_text(json.dumps(record, indent=2, default=str), encoding="utf-8")
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return out
