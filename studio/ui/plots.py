"""X/Y/Z plot and prompt matrix, under the text-to-image and image-to-image controls (API:
`/xyz_plot`, `/prompt_matrix`, and `_img2img` of each). They use the tab's settings for everything
an axis does not set; the grid and its cells go to the tab's results."""

from __future__ import annotations

from typing import Any

import gradio as gr

from studio.errors import StudioError
from studio.plots.axes import AXIS_NAMES, NOTHING, read_axis
from studio.plots.plot import (Plot, known_names, make_prompt_matrix, make_xyz_plot, run_plot,
                               save_grid)
from studio.serving.studio import Studio
from studio.ui.jobs import dispatched, event_function, login, panel_values, raw_fields, run_composed
from studio.ui.widgets import ResultsPanel, result_outputs

EXAMPLE = "Seed: 1, 2, 3 · Steps: 10-30 (+10) · CFG scale: 3-9 [4] · Prompt S/R: red, blue, \"dark, green\""
API_NAMES = {"txt2img": ("xyz_plot", "prompt_matrix"), "img2img": ("xyz_plot_img2img", "prompt_matrix_img2img")}


def build(studio: Studio, inputs: list, fields: list[tuple[str, Any]], panel: ResultsPanel, mode: str = "txt2img") -> None:
    """The panel; `inputs` are the tab's request controls, `fields` their (request field, API
    default). Ids: `plot-...` on the txt2img tab, `img2img-plot-...` on the img2img tab."""
    ids = "plot" if mode == "txt2img" else f"{mode}-plot"
    with gr.Accordion("X/Y/Z plot · prompt matrix", open=False, elem_id=f"{ids}-panel"):
        gr.Markdown(f"<small>Values: lists and ranges as in AUTOMATIC1111 — {EXAMPLE}. Prompt S/R: the "
                    "first value is searched for in the prompt and each value takes its place. One "
                    "picture a cell (with the hires fix on, its finished picture); a random seed is drawn "
                    "once for the whole plot.</small>")
        axes = []
        for letter in "XYZ":
            with gr.Row():
                kind = gr.Dropdown(AXIS_NAMES, value=NOTHING, label=f"{letter} type", scale=1,
                                   elem_id=f"{ids}-{letter.lower()}-type")
                values = gr.Textbox(label=f"{letter} values", scale=3, elem_id=f"{ids}-{letter.lower()}-values")
            axes += [kind, values]
        count = gr.Markdown("", elem_id=f"{ids}-count")
        with gr.Row():
            run_xyz = gr.Button("Run X/Y/Z plot", variant="primary", elem_id=f"{ids}-run")
            run_matrix = gr.Button("Run prompt matrix (parts split by |)", elem_id=f"{ids}-matrix-run")

    def counted(*axis_values) -> str:
        try:
            known = known_names(studio)
            total = 1
            for kind, text in zip(axis_values[::2], axis_values[1::2]):
                axis = read_axis(kind, text, known)
                total *= len(axis.values) if axis else 1
        except StudioError as exc:
            return f"⚠️ {exc}"
        return "" if all(k in (None, NOTHING) for k in axis_values[::2]) else f"**{total} picture(s)** and a grid"

    for control in axes:
        control.change(counted, axes, count, api_visibility="private", queue=False)

    axis_fields = [(f"{a}_{part}", NOTHING if part == "type" else None) for a in "xyz" for part in ("type", "values")]

    def xyz_plot(raw: dict, progress, request):
        pairs = [(raw.pop(f"{a}_type"), raw.pop(f"{a}_values")) for a in "xyz"]
        yield from _run(studio, lambda base: make_xyz_plot(studio, base, pairs, mode), raw, progress, request)

    def prompt_matrix(raw: dict, progress, request):
        yield from _run(studio, lambda base: make_prompt_matrix(studio, base, mode), raw, progress, request)

    xyz_name, matrix_name = API_NAMES[mode]
    run_xyz.click(event_function(xyz_plot, fields + axis_fields, f"An X/Y/Z plot: the {mode} fields, then the "
                                "type and values of up to three axes. Returns the grid first, then each cell."),
                  inputs + axes, result_outputs(panel), api_name=xyz_name, **dispatched(studio))
    run_matrix.click(event_function(prompt_matrix, fields, f"A prompt matrix: the {mode} fields, the prompt's "
                                    "parts split by |. Returns the grid first, then each combination."),
                     inputs, result_outputs(panel), api_name=matrix_name, **dispatched(studio))


def _run(studio: Studio, make, raw: dict[str, Any], progress: gr.Progress, request: gr.Request | None):
    try:
        plot: Plot = make(raw_fields(studio, raw))
    except StudioError as exc:
        raise gr.Error(str(exc)) from None
    progress(0, desc=f"{plot.kind}: {plot.count} pictures")
    result = run_composed(studio, lambda seq, say: run_plot(plot, seq, on_progress=say), progress, request)
    grid = save_grid(result, studio, login(request))
    cells = [result.images[key] for key in sorted(result.images, key=lambda k: k[::-1])]
    yield panel_values(cells, result.notes, cells[0].seed if cells else None,
                       [(str(grid), f"{plot.kind} grid")] if grid else [])
