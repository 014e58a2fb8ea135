"""A few-step model's settings in the tabs: on a switch to one (and when a page opens with one
loaded) each tab's sampler, steps and CFG take its defaults, which the banner names; a switch back
to a regular model restores the studio's. A few-step LoRA (LCM-LoRA, Hyper-SD, TCD, Lightning)
added to a tab's LoRA table sets its own, with a note. The negative prompt is greyed out where it
has no effect (a guidance embedding, or CFG at 1 or below) and comes back when it has one again."""

from __future__ import annotations

import gradio as gr

from studio.errors import StudioError
from studio.models.fewstep import LORA_NAMES, FewStep, from_name, looks_few_step, negative_has_effect
from studio.serving.studio import Studio
from studio.ui.form import lora_rows

INERT = "No effect here: guidance is off (CFG 1 or below) or built into the model."
ACTIVE = ""


def _few_step(studio: Studio) -> FewStep | None:
    try:
        return studio.model_info().few_step
    except StudioError:
        return None


def negative_box(studio: Studio, cfg: float) -> gr.Textbox:
    active = negative_has_effect(_few_step(studio), float(cfg or 0))
    return gr.Textbox(interactive=active, placeholder=ACTIVE if active else INERT)


def _arch(studio: Studio) -> str:
    try:
        return studio.model_info().arch
    except StudioError:
        return "sd"


def wire(demo: gr.Blocks, switched, studio: Studio, tabs: list[dict]) -> None:
    """`tabs`: each tab's field -> control map (scheduler, steps, cfg_scale, distilled_cfg,
    negative_prompt...). Controls of fields only some families read (Distilled CFG scale, Shift)
    are shown while such a model is loaded."""
    from studio.requests import request_fields

    for fields in tabs:
        scheduler, steps, cfg, distilled, negative = (
            fields[k] for k in ("scheduler", "steps", "cfg_scale", "distilled_cfg", "negative_prompt"))
        standard = (scheduler.value, steps.value, cfg.value, distilled.value)
        familied = [(f.families, fields[f.name]) for f in request_fields() if f.families and f.name in fields]

        def defaults(sampler_now, cfg_now, standard=standard, familied=familied):
            arch = _arch(studio)
            shown = [gr.update(visible=arch in families) for families, _ in familied]
            few = _few_step(studio)
            if few is not None:
                chosen = (few.sampler, few.steps, few.cfg, few.distilled or standard[3])
            elif looks_few_step(sampler_now, float(cfg_now or 0)):
                chosen = standard
            else:
                return [gr.skip()] * 4 + [negative_box(studio, cfg_now), *shown]
            return [*chosen, negative_box(studio, chosen[2]), *shown]

        outputs = [scheduler, steps, cfg, distilled, negative, *(c for _, c in familied)]
        for event in (switched.then, demo.load):
            event(defaults, [scheduler, cfg], outputs, api_visibility="private", queue=False)
        cfg.change(lambda value: negative_box(studio, value), [cfg], [negative], api_visibility="private",
                   queue=False)
        _wire_loras(studio, fields["loras"], scheduler, steps, cfg, negative)


def _wire_loras(studio: Studio, loras, scheduler, steps, cfg, negative) -> None:
    """A few-step LoRA newly in the table sets its sampler, steps and CFG (once: later edits of
    the table, such as its weight, leave the user's settings alone)."""
    seen = gr.State([])

    def added(rows, before):
        names = [str(row[0]) for row in lora_rows(rows) if row and from_name(str(row[0]), LORA_NAMES)]
        new = [n for n in names if n not in before]
        if not new:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip(), names
        few = from_name(new[0], LORA_NAMES)
        gr.Info(f"{new[0]}: {few.banner()}")
        return few.sampler, few.steps, few.cfg, negative_box(studio, few.cfg), names

    loras.change(added, [loras, seen], [scheduler, steps, cfg, negative, seen], api_visibility="private",
                 queue=False)
