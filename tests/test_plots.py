"""X/Y/Z plots and prompt matrices: A1111's value syntax, cells equal to single generations,
the grid and its metadata, checkpoints loaded once per plot, Stop keeping the finished cells."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from studio.config import Settings
from studio.errors import InvalidRequest
from studio.outputs.metadata import read_metadata
from studio.plots.axes import AXIS_TYPES, numbers, read_axis, sizes, split_values
from studio.plots.plot import make_prompt_matrix, make_xyz_plot, run_plot, save_grid
from studio.serving.sequence import Sequence
from studio.serving.studio import Studio

BASE = dict(prompt="a red circle on a blue background", steps=3, seed=12, width=64, height=64)


# -- the value syntax ------------------------------------------------------------------------------

@pytest.mark.parametrize("text, whole, expected", [
    ("1-5", True, [1, 2, 3, 4, 5]),
    ("1-10 (+2)", True, [1, 3, 5, 7, 9]),
    ("10-100 [5]", True, [10, 32, 55, 78, 100]),
    ("5-1", True, [5, 4, 3, 2, 1]),
    ("10-1 (-3)", True, [10, 7, 4, 1]),
    ("1, 3, 7-8", True, [1, 3, 7, 8]),
    ("-1, 2", True, [-1, 2]),
    ("3-9 [4]", False, [3.0, 5.0, 7.0, 9.0]),
    ("0.5-1.5 (+0.25)", False, [0.5, 0.75, 1.0, 1.25, 1.5]),
    ("7, 7.5", False, [7.0, 7.5]),
])
def test_values_read_as_a1111_reads_them(text, whole, expected):
    assert numbers("Axis", text, whole) == expected


@pytest.mark.parametrize("text, whole, message", [
    ("1-999999999", True, "at most 64"),
    ("1-5 [0]", True, "1 to 64 per axis"),
    ("1-5 (-1)", True, "never gets from 1 to 5"),
    ("1.5-3", False, "needs a step or a count"),
    ("1.5", True, "whole numbers"),
    ("nan", False, "numbers"),
    ("__import__('os').system('id')", True, "not a number or a range"),
    ("(lambda: 1)()", False, "not a number or a range"),
    ("9**9**9", True, "not a number or a range"),
])
def test_bad_values_are_refused_with_a_message(text, whole, message):
    with pytest.raises(InvalidRequest, match=message.replace("(", r"\(").replace("*", r"\*")):
        numbers("Axis", text, whole)


def test_quoted_values_keep_their_commas_and_sizes_read():
    assert split_values('red, "dark, green", blue') == ["red", "dark, green", "blue"]
    assert sizes("Size", "64x96, 128") == [(64, 96), (128, 128)]
    axis = read_axis("Sampler", "euler a, DPM++ 2M Karras", {"samplers": ["Euler a", "DPM++ 2M Karras"]})
    assert axis.values == ("Euler a", "DPM++ 2M Karras")
    with pytest.raises(InvalidRequest, match="unknown 'Nope'. Known: Euler a"):
        read_axis("Sampler", "Nope", {"samplers": ["Euler a"]})
    with pytest.raises(InvalidRequest, match="Unknown axis type"):
        read_axis("Eval", "1", {})
    assert read_axis("Nothing", "anything", {}) is None
    assert "Prompt S/R" in AXIS_TYPES and "Checkpoint" in AXIS_TYPES and "LoRA weight" in AXIS_TYPES


# -- plots on the tiny model ---------------------------------------------------------------------------

def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


def sequence(studio, session="plot-tests") -> Sequence:
    return Sequence(studio, user=session, session=session)


def test_a_seed_by_cfg_plot_cell_equals_the_same_request_alone(studio):
    plot = make_xyz_plot(studio, BASE, [("Seed", "1, 2"), ("CFG scale", "3, 9")])
    assert plot.count == 4 and plot.x_labels == ["Seed: 1", "Seed: 2"] and plot.y_labels == ["CFG scale: 3", "CFG scale: 9"]
    result = run_plot(plot, sequence(studio))
    grid = save_grid(result, studio)
    assert not result.stopped and len(result.images) == 4
    for (x, y, _), picture in result.images.items():
        alone = studio.local.run(studio.make_request("txt2img", **{**BASE, "seed": [1, 2][x], "cfg_scale": [3, 9][y]}))
        assert np.array_equal(pixels(picture.image), pixels(alone.images[0].image)), (x, y)
        assert picture.path.exists() and read_metadata(picture.path)[1]["seed"] == [1, 2][x]
    # the grid: beside its cells, two by two with labels around, its metadata naming the axes
    assert grid.parent == result.images[(0, 0, 0)].path.parent and grid.name.endswith("-grid.png")
    image = Image.open(grid)
    assert image.width > 2 * 64 and image.height > 2 * 64
    parameters, data = read_metadata(grid)
    assert "Script: X/Y/Z plot, X Type: Seed, X Values: \"1, 2\", Y Type: CFG scale" in parameters
    assert data["kind"] == "X/Y/Z plot" and len(data["cells"]) == 4
    assert {c["file"] for c in data["cells"]} == {p.path.name for p in result.images.values()}
    json.dumps(data, allow_nan=False)
    # each cell's picture sits in the grid as it was saved
    first = pixels(result.images[(0, 0, 0)].image)
    grid_pixels = pixels(image)
    found = [(r, c) for r in range(grid_pixels.shape[0] - 63) for c in range(grid_pixels.shape[1] - 63)
             if np.array_equal(grid_pixels[r:r + 64, c:c + 64], first)]
    assert found


def test_a_random_seed_is_drawn_once_for_the_whole_plot(studio):
    plot = make_xyz_plot(studio, {**BASE, "seed": -1}, [("Steps", "2, 3"), ("Nothing", "")])
    seeds = {cell.request.seed for cell in plot.cells}
    assert len(seeds) == 1 and -1 not in seeds


def test_prompt_search_replace_and_its_first_value(studio):
    plot = make_xyz_plot(studio, BASE, [("Prompt S/R", 'red, green, "blue, dark"')])
    assert [c.request.prompt for c in plot.cells] == [
        "a red circle on a blue background", "a green circle on a blue background",
        "a blue, dark circle on a blue background"]
    with pytest.raises(InvalidRequest, match="'yellow' \\(the first value\\) is not in the prompt"):
        make_xyz_plot(studio, BASE, [("Prompt S/R", "yellow, green")])


def test_every_cell_is_checked_before_any_runs(studio):
    with pytest.raises(InvalidRequest, match="Cell Steps: 999: Steps must be between"):
        make_xyz_plot(studio, BASE, [("Steps", "3, 999")])
    with pytest.raises(InvalidRequest, match="LoRA weight axis: add a LoRA"):
        make_xyz_plot(studio, BASE, [("LoRA weight", "0.5, 1")])
    with pytest.raises(InvalidRequest, match="at least one axis"):
        make_xyz_plot(studio, BASE, [("Nothing", ""), ("Nothing", "")])
    with pytest.raises(InvalidRequest, match="at most 100 in one plot"):
        make_xyz_plot(studio, BASE, [("Seed", "1-20"), ("Steps", "1-6")])


def test_prompt_matrix_makes_every_combination(studio):
    plot = make_prompt_matrix(studio, {**BASE, "prompt": "a red circle|on a blue background|large"})
    prompts = [c.request.prompt for c in plot.cells]
    assert prompts == ["a red circle", "a red circle, on a blue background", "a red circle, large",
                       "a red circle, on a blue background, large"]
    assert plot.x_labels == ["− on a blue background", "+ on a blue background"]
    assert plot.y_labels == ["− large", "+ large"]
    assert len({c.request.seed for c in plot.cells}) == 1
    result = run_plot(plot, sequence(studio))
    grid = save_grid(result, studio)
    assert len(result.images) == 4 and "Script: Prompt matrix" in read_metadata(grid)[0]
    with pytest.raises(InvalidRequest, match="parts split by \\|"):
        make_prompt_matrix(studio, {**BASE, "prompt": "no parts"})


def test_stop_keeps_the_finished_cells(studio):
    plot = make_xyz_plot(studio, BASE, [("Seed", "1, 2, 3")])
    run = sequence(studio, "stopper")
    result = run_plot(plot, run, on_cell=lambda cell, picture: studio.dispatcher.stop("stopper", "stopper"))
    assert result.stopped and len(result.images) == 1 and "1 of 3 pictures" in result.notes[0]
    grid = save_grid(result, studio)
    assert read_metadata(grid)[1]["stopped"] is True and len(read_metadata(grid)[1]["cells"]) == 1


def test_a_checkpoint_axis_loads_each_model_once(tiny_model, tmp_path):
    models = tmp_path / "models"
    for name in ("one", "two"):
        shutil.copytree(tiny_model, models / "checkpoints" / name)
    studio = Studio.from_settings(Settings(model="", models_dir=models, outputs=tmp_path / "out"))
    plot = make_xyz_plot(studio, BASE, [("Seed", "1, 2"), ("Checkpoint", "one, two")])
    loads = studio.local.manager.loads
    result = run_plot(plot, sequence(studio))
    assert len(result.images) == 4 and studio.local.manager.loads - loads == 2
    assert [c.request.model for c in plot.cells] == ["one", "one", "two", "two"]
    assert {p.data["model"]["name"] for (x, y, z), p in result.images.items() if y == 1} == {"two"}


def test_plots_over_hires_settings_and_img2img_strength(studio):
    """Hires axes turn the hires fix on for the cell (it shows the finished, bigger picture); an
    img2img plot over strength starts every cell from the same picture."""
    plot = make_xyz_plot(studio, BASE, [("Hires strength", "0.5, 0.75"), ("Hires upscaler", "Lanczos, latent")])
    assert plot.count == 4 and all(c.hires is not None and c.hires["hires"] for c in plot.cells)
    assert plot.y_labels == ["Lanczos", "Latent"]
    result = run_plot(plot, sequence(studio))
    assert len(result.images) == 4 and {p.image.size for p in result.images.values()} == {(128, 128)}
    assert "Hires strength" not in result.images[(0, 0, 0)].parameters         # the axes go on the grid
    assert "Denoising strength: 0.5" in result.images[(0, 0, 0)].parameters
    with pytest.raises(InvalidRequest, match="Strength 0.1 x 3 steps leaves no denoising step"):
        make_xyz_plot(studio, BASE, [("Hires strength", "0.1, 0.5")])       # found before anything runs
    image = np.zeros((64, 64, 3), np.uint8)
    plot = make_xyz_plot(studio, {**BASE, "image": image}, [("Strength", "0.34, 0.5, 1")], mode="img2img")
    result = run_plot(plot, sequence(studio))
    assert [c.request.mode for c in plot.cells] == ["img2img"] * 3 and len(result.images) == 3
    assert "Denoising strength: 0.34" in result.images[(0, 0, 0)].parameters
    with pytest.raises(InvalidRequest, match="text to image only"):
        make_xyz_plot(studio, {**BASE, "image": image}, [("Variation strength", "0.1")], mode="img2img")
