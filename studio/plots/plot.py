"""X/Y/Z plots and prompt matrices: a grid of ordinary text-to-image requests, run one by one
through the dispatcher (other users' jobs take turns between the cells), each cell saved with its
own metadata as it finishes, then one labelled grid PNG saved next to them.

    make_xyz_plot / make_prompt_matrix    the cells (every request checked before any runs)
    run_plot                              the cells in turn, a checkpoint's cells together
    save_grid                             the grid PNG, its metadata naming the axes
"""

from __future__ import annotations

import itertools
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from PIL import Image

from studio.errors import InvalidRequest, StudioError
from studio.outputs.metadata import add_keys, strict_json
from studio.plots.axes import NO_PRESET, Axis, read_axis
from studio.plots.grid import draw_grid
from studio.requests import MAX_SEED, GeneratedImage, GenerationRequest, GenerationResult
from studio.serving.dispatcher import Update
from studio.serving.sequence import Sequence
from studio.requests.tools import without_tools
from studio.upscale.hires import hires_upscalers, plan_hires, run_hires

MAX_CELLS = 100
MAX_MATRIX_PARTS = 6            # optional parts of a prompt matrix: 2**6 = 64 pictures


@dataclass(frozen=True)
class Cell:
    x: int
    y: int
    z: int
    request: GenerationRequest                  # the cell's request (a hires fix: its first pass)
    hires: dict | None = None                   # a hires fix: the fields it runs on


@dataclass
class Plot:
    kind: str                                   # "X/Y/Z plot" or "Prompt matrix"
    cells: list[Cell]                           # in the order they run
    x_labels: list[str]
    y_labels: list[str]
    z_labels: list[str]
    describe: dict[str, Any]                    # for the grid's metadata (A1111's keys)

    @property
    def count(self) -> int:
        return len(self.cells)


@dataclass
class PlotResult:
    plot: Plot
    images: dict[tuple[int, int, int], GeneratedImage] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    stopped: bool = False
    grid: Path | None = None
    grid_image: Image.Image | None = None


def known_names(studio) -> dict[str, list[str]]:
    """What the choice axes may name: this studio's samplers, models, VAEs, presets, styles."""
    from studio.control.preprocessors import names as preprocessor_names
    from studio.samplers import scheduler_names

    return {"samplers": scheduler_names(), "checkpoints": studio.model_choices(),
            "vaes": ["Automatic", *studio.names("vae")], "presets": [NO_PRESET, *studio.preset_names()],
            "styles": ["None", *studio.style_names()], "hires_upscalers": hires_upscalers(studio),
            "preprocessors": preprocessor_names()}


def _fixed_seeds(raw: dict, axes: list[Axis]) -> dict:
    """A random seed is drawn once for the whole plot (so cells differ only by their axes),
    unless an axis sets it; one picture a cell."""
    raw = {**raw, "batch_count": 1, "batch_size": 1}
    named = {a.type.name for a in axes}
    for key, axis in (("seed", "Seed"), ("variation_seed", "Variation seed")):
        if axis not in named and int(float(raw.get(key, -1) if raw.get(key) not in (None, "") else -1)) == -1:
            raw[key] = secrets.randbelow(MAX_SEED + 1)
    return raw


def _cell(studio, base: dict, picks: list[tuple[Axis, Any]], mode: str, where: str, at: tuple[int, int, int]) -> Cell:
    """A cell with its request checked (a hires fix: both passes, through plan_hires)."""
    raw = dict(base)
    for axis, value in picks:
        axis.type.apply(raw, value)
    try:
        if raw.get("hires"):
            if mode != "txt2img":
                raise InvalidRequest("Hires fix is for text to image.")
            return Cell(*at, plan_hires(studio, raw)[0], raw)
        for switch, name in (("sd_upscale", "SD upscale"), ("ad_enable", "The detailer")):
            if raw.get(switch):
                raise InvalidRequest(f"{name} does not run inside a plot: turn it off for the plot.")
        return Cell(*at, studio.make_request(mode, **without_tools(raw)))
    except InvalidRequest as exc:
        raise InvalidRequest(f"{where}: {exc}") from None


def make_xyz_plot(studio, base: dict, axes: list[tuple[Any, Any]], mode: str = "txt2img") -> Plot:
    """Up to three axes (type, values text) over the fields in `base` (raw, as a txt2img or
    img2img tab sends them, hires fix included). Every cell's request is made and checked here,
    before any picture is drawn."""
    known = known_names(studio)
    read = [read_axis(kind, text, known) for kind, text in axes]
    if len(read) > 3:
        raise InvalidRequest("At most three axes: X, Y and Z.")
    x, y, z = (read + [None] * 3)[:3]
    if x is None and y is None and z is None:
        raise InvalidRequest("Pick at least one axis type and its values.")
    present = [a for a in (x, y, z) if a is not None]
    _check_search_replace(present, base)
    base = _fixed_seeds(base, present)
    lists = [list(enumerate(a.values)) if a else [(0, None)] for a in (x, y, z)]
    count = len(lists[0]) * len(lists[1]) * len(lists[2])
    if count > MAX_CELLS:
        raise InvalidRequest(f"This plot is {count} pictures; at most {MAX_CELLS} in one plot.")
    cells = []
    for (k, zv), (j, yv), (i, xv) in itertools.product(lists[2], lists[1], lists[0]):
        picks = [(a, v) for a, v in ((x, xv), (y, yv), (z, zv)) if a is not None]
        where = ", ".join(a.type.label(v) for a, v in picks)
        cells.append(_cell(studio, base, picks, mode, f"Cell {where}", (i, j, k)))
    names = {"X": x, "Y": y, "Z": z}
    describe = {"Script": "X/Y/Z plot"}
    for letter, axis in names.items():
        if axis is not None:
            describe[f"{letter} Type"], describe[f"{letter} Values"] = axis.type.name, axis.text
    return Plot("X/Y/Z plot", _checkpoints_together(cells), x.labels if x else [""], y.labels if y else [""],
                z.labels if z else [""], describe)


def _check_search_replace(axes: list[Axis], base: dict) -> None:
    for axis in axes:
        if axis.type.name == "Prompt S/R":
            search = axis.values[0][0]
            text = f"{base.get('prompt') or ''}\n{base.get('negative_prompt') or ''}"
            if search not in text:
                raise InvalidRequest(f"Prompt S/R: {search!r} (the first value) is not in the prompt or the "
                                     "negative prompt; the first value is what each cell replaces.")


def _checkpoints_together(cells: list[Cell]) -> list[Cell]:
    """A model's cells one after another (a stable sort by model), so each loads once a plot."""
    first = {}
    for cell in cells:
        first.setdefault(cell.request.model, len(first))
    return sorted(cells, key=lambda c: first[c.request.model])


def make_prompt_matrix(studio, base: dict, mode: str = "txt2img") -> Plot:
    """`a red circle|on a blue background|large`: the first part always, every combination of
    the others (on/off), one seed for all; the optional parts split between the X and Y axes."""
    prompt = str(base.get("prompt") or "")
    parts = [p.strip() for p in prompt.split("|")]
    if len(parts) < 2 or not all(parts):
        raise InvalidRequest("Prompt matrix: write the prompt as parts split by |, like "
                             "a red circle|on a blue background|large (every part non-empty).")
    optional = parts[1:]
    if len(optional) > MAX_MATRIX_PARTS:
        raise InvalidRequest(f"Prompt matrix: {len(optional)} optional parts make {2 ** len(optional)} "
                             f"pictures; at most {MAX_MATRIX_PARTS} parts.")
    across, down = optional[:(len(optional) + 1) // 2], optional[(len(optional) + 1) // 2:]
    base = _fixed_seeds(base, [])
    x_sets, y_sets = _subsets(across), _subsets(down)
    cells = []
    for j, y_parts in enumerate(y_sets):
        for i, x_parts in enumerate(x_sets):
            text = ", ".join([parts[0], *[p for p in optional if p in x_parts or p in y_parts]])
            cells.append(_cell(studio, {**base, "prompt": text}, [], mode, f"Prompt {text!r}", (i, j, 0)))
    return Plot("Prompt matrix", cells, [_label(s, across) for s in x_sets], [_label(s, down) for s in y_sets],
                [""], {"Script": "Prompt matrix", "Prompt matrix": prompt})


def _subsets(parts: list[str]) -> list[tuple[str, ...]]:
    """Every on/off combination, the first part changing fastest (none, a, b, a+b, ...)."""
    return [tuple(p for bit, p in enumerate(parts) if n >> bit & 1) for n in range(2 ** len(parts))]


def _label(chosen: tuple[str, ...], parts: list[str]) -> str:
    if not parts:
        return ""
    return "\n".join(("+ " if p in chosen else "− ") + p for p in parts)


# -- running ------------------------------------------------------------------------------------------

def run_plot(plot: Plot, sequence: Sequence, on_progress: Callable[[float, str], None] | None = None,
             on_cell: Callable[[Cell, GeneratedImage | None], None] | None = None) -> PlotResult:
    """Each cell in turn; Stop keeps the finished cells (the grid shows the rest empty)."""
    result = PlotResult(plot)
    for n, cell in enumerate(plot.cells):
        def say(part: float, text: str, n=n) -> None:
            if on_progress is not None:
                on_progress((n + part) / plot.count, f"Picture {n + 1} of {plot.count}: {text}")
        try:
            done = _run_cell(cell, sequence, say)
        except StudioError as exc:
            if not result.images:
                raise
            result.stopped = True
            result.notes.append(f"Stopped at picture {n + 1} of {plot.count}: {exc}")
            break
        if done is None or done.stopped:
            result.stopped = True
            result.notes.append(f"Stopped: {len(result.images)} of {plot.count} pictures were made and kept.")
            break
        result.notes += [note for note in done.notes if note not in result.notes]
        picture = done.images[0] if done.images else None
        if picture is not None:
            result.images[(cell.x, cell.y, cell.z)] = picture
        if on_cell is not None:
            on_cell(cell, picture)
    return result


def _run_cell(cell: Cell, sequence: Sequence, say: Callable[[float, str], None]) -> GenerationResult | None:
    """One cell: its request, or a hires fix's two passes (the cell shows the finished picture)."""
    if cell.hires is None:
        def tell(update: Update) -> None:
            if update.kind == "progress" and update.total:
                say(update.done / update.total, f"step {update.done}/{update.total}")
            elif update.kind == "queued":
                say(0, f"{update.ahead} job(s) first")
        return sequence.run(cell.request, tell)
    made = run_hires(sequence.studio, cell.hires, sequence, say)
    if made.seed is None and made.stopped:
        return None
    return GenerationResult(request=cell.request, images=made.images, seed=made.seed or 0, stopped=made.stopped,
                            notes=made.notes)


def grid_image(result: PlotResult) -> Image.Image:
    p = result.plot
    cells = [[[result.images[(i, j, k)].image if (i, j, k) in result.images else None
               for i in range(len(p.x_labels))] for j in range(len(p.y_labels))] for k in range(len(p.z_labels))]
    return draw_grid(cells, p.x_labels, p.y_labels, p.z_labels)


def save_grid(result: PlotResult, studio, user: str | None = None) -> Path | None:
    """The grid beside its cells (NNNNN-grid.png): A1111's parameters of the first cell plus the
    plot's keys, and a JSON record of the axes and each cell's file."""
    if not result.images:
        return None
    first = next(iter(sorted(result.images.items(), key=lambda kv: (kv[0][2], kv[0][1], kv[0][0]))))[1]
    parameters = add_keys(first.parameters, result.plot.describe)
    data = strict_json({
        "format": 1, "kind": result.plot.kind, "describe": result.plot.describe,
        "x_labels": result.plot.x_labels, "y_labels": result.plot.y_labels, "z_labels": result.plot.z_labels,
        "stopped": result.stopped,
        "cells": [{"x": x, "y": y, "z": z, "file": picture.path.name, "seed": picture.seed,
                   "prompt": picture.data.get("prompt")}
                  for (x, y, z), picture in sorted(result.images.items(), key=lambda kv: kv[0][::-1])],
        "request": first.data.get("request"),
    })
    result.grid_image = grid_image(result)
    result.grid = studio.save(result.grid_image, parameters, data, seed=first.seed, kind="grid", user=user)
    return result.grid
