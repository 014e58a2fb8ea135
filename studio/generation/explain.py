"""How the studio reads a request's prompts, without generating: presets and styles applied, tags
and inline negatives taken out, the text of each denoising step and how the model's text
encoders take it (studio/families/run.py picks the family's conditioner)."""

from __future__ import annotations

from studio.families.run import conditioner
from studio.models.manager import ModelManager
from studio.prompts.conditioning import denoising_steps
from studio.prompts.presets import Presets
from studio.prompts.syntax import parse_prompts
from studio.requests import GenerationRequest


def explain(request: GenerationRequest, manager: ModelManager, presets: Presets) -> dict:
    """How the studio reads a request's prompts: presets and styles applied, tags and inline
    negatives taken out, the text of each denoising step, its weighted fragments and chunks."""
    prompt, negative = presets.resolve(request.prompt, request.negative_prompt,
                                       request.negative_presets, request.style)
    parsed = parse_prompts(prompt, negative)
    steps = denoising_steps(request.mode, request.steps, request.strength)
    with manager.lock:
        cond = conditioner(manager.base(), manager.info(), parsed.positive_text, parsed.negative, steps,
                           request.clip_skip, None, (), None, request.t5_tokens)
        report = cond.chunk_report()
    return {"prompt as typed": request.prompt, "after presets and style": prompt,
            "prompt": parsed.positive_text, "negative prompt": parsed.negative,
            "moved to the negative prompt": parsed.moved_negatives,
            "lora tags": [f"{n}:{w}" for n, w in parsed.loras], "denoising steps": steps,
            "per step": report}
