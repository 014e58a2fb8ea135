"""Makes the README's pictures with the embedded model (CPU, about a minute):

    python docs/make_pictures.py            # writes docs/images/xyz-plot.png, animation-travel.gif

Each picture is made through the studio itself (the same calls as the UI), so it shows what a
user gets; the grid keeps its metadata (drop it on the PNG Info tab)."""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from studio.config import Settings  # noqa: E402
from studio.plots.plot import make_xyz_plot, run_plot, save_grid  # noqa: E402
from studio.serving.sequence import Sequence  # noqa: E402
from studio.serving.studio import Studio  # noqa: E402

IMAGES = Path(__file__).resolve().parent / "images"


def xyz_plot(studio: Studio) -> Path:
    base = dict(prompt="a red circle on a blue background", seed=7, steps=20)
    plot = make_xyz_plot(studio, base, [("Prompt S/R", "red circle, green square, yellow triangle"),
                                        ("Prompt S/R", "blue background, white background, black background")])
    result = run_plot(plot, Sequence(studio, user="docs", session="docs"))
    return save_grid(result, studio.outputs)


# a prompt-travel loop: red circle -> blue square -> yellow triangle -> back, with one fixed seed (the
# object stays about where it is while its colour and shape travel); 24 frames at 8 a second, each an
# ordinary 20-step request
TRAVEL = dict(mode="travel", frames=24, fps=8, seed=3, seed_mode="fixed", loop="loop", steps="0:(20)", cfg="0:(5)",
              prompts="0: a red circle on a white background\n8: a blue square on a white background\n"
                      "16: a yellow triangle on a white background", formats=["gif"])


def travel_gif(studio: Studio) -> Path:
    from studio.animation.start import begin, run
    animation = begin(studio, TRAVEL)
    return run(animation, Sequence(studio, user="docs", session="docs", save=False))["gif"]


def main() -> None:
    IMAGES.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as outputs:
        studio = Studio.from_settings(Settings(model="", outputs=Path(outputs)))
        grid = xyz_plot(studio)
        shutil.copy(grid, IMAGES / "xyz-plot.png")
        shutil.copy(travel_gif(studio), IMAGES / "animation-travel.gif")
    print(IMAGES / "xyz-plot.png", IMAGES / "animation-travel.gif")


if __name__ == "__main__":
    main()
