"""What ControlNet units cost: seconds per picture with 0, 1 and 2 units, same seeds, same run.

    python bench/control.py                          # the embedded model, 64 px, 2 CPU cores
    python bench/control.py --model sd15 --size 512  # random-weight SD 1.5 (a GPU: when one is lent)

The units' ControlNets are random weights made from the model's own UNet (ControlNetModel.from_unet,
the same layers and sizes as a real one for that model: SD 1.5's costs what
control_v11p_sd15_canny costs), each with a canny map of a drawn square. The baseline is the
same request with no unit, measured in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def write_controlnets(unet, vae_scale: int, folder: Path, count: int) -> list[str]:
    import torch
    from diffusers import ControlNetModel

    hint = {4: (16, 32, 96), 8: (16, 32, 96, 256)}[vae_scale]
    names = []
    for i in range(count):
        torch.manual_seed(i)
        ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=hint).save_pretrained(
            folder / "controlnet" / f"random-{i}")
        names.append(f"random-{i}")
    return names


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="embedded", choices=("embedded", "sd15"))
    p.add_argument("--size", type=int, default=0, help="0: the model's native size")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    import torch
    torch.set_num_threads(args.threads)
    from studio.config import Settings
    from studio.serving.studio import Studio

    work = Path(tempfile.mkdtemp(prefix="bench-control-"))
    model = ""
    if args.model == "sd15":
        from real_models import real_model
        model = str(real_model("sd15"))
    studio = Studio.from_settings(Settings(model=model, models_dir=work / "models", outputs=work / "outputs",
                                           device="auto"))
    base = studio.local.manager.base()
    names = write_controlnets(base.unet, base.vae_scale_factor, work / "models", 2)
    studio.names("controlnet", rescan=True)
    size = args.size or studio.local.manager.info().native_size
    square = np.zeros((size, size, 3), np.uint8)
    square[size // 4:3 * size // 4, size // 4:3 * size // 4] = 255
    units = [{"model": n, "module": "canny", "image": square} for n in names]
    print(f"{args.model} at {size}x{size}, {args.steps} steps, {studio.local.manager.device}, "
          f"{torch.get_num_threads()} threads, median of {args.repeats}")
    print("| ControlNet units | s / picture | vs none |")
    print("|---|---|---|")
    baseline = None
    for count in (0, 1, 2):
        request = studio.make_request("txt2img", prompt="a red circle on a blue background", seed=1,
                                      steps=args.steps, width=size, height=size, control=units[:count])
        studio.local.run(request, save=False)                   # warm: models loaded, first call made
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            studio.local.run(request, save=False)
            times.append(time.perf_counter() - start)
        median = statistics.median(times)
        baseline = baseline or median
        print(f"| {count} | {median:.3f} | {median / baseline:.2f}x |")


if __name__ == "__main__":
    main()
