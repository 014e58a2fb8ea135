"""Face restoration's cost on this machine: each restorer architecture at its release size (random
weights in the release's key layout — no real weights can be fetched here, and the cost does not
depend on the weights), read by the real spandrel, one 512 px face through it; then a whole
picture's faces (detection with OpenCV's YuNet on a YuNet-layout graph, crop, restore, paste) beside
the same picture's plain detection, in the same run.

    python bench/faces.py [--rounds 3] [--threads 2]

Measures, asserts nothing; prints load and seconds a face per architecture. Quality needs real
weights and photographs: not measured here.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def release_models():
    """(name, file name, a model of the release's size) for each architecture spandrel reads."""
    from studio.models.arches import spandrel
    spandrel()
    from spandrel.architectures.GFPGAN import GFPGAN
    from spandrel.architectures.RestoreFormer import RestoreFormer
    yield "GFPGAN v1.4", "GFPGANv1.4.pth", lambda: GFPGAN(
        out_size=512, num_style_feat=512, channel_multiplier=2, decoder_load_path=None, fix_decoder=False, num_mlp=8,
        input_is_latent=True, different_w=True, narrow=1, sft_half=True)
    yield "RestoreFormer", "RestoreFormer.pth", lambda: RestoreFormer()


def timed(fn, rounds: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(rounds):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main() -> None:
    import numpy as np
    import torch

    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from studio.face_restoration import restorers
    from studio.face_restoration.restore import restore_faces
    sys.path.insert(0, str(ROOT / "tests"))
    from test_face_restoration import write_cell_detector

    from studio.face_restoration.detect import yunet
    folder = Path(tempfile.mkdtemp())
    detector = write_cell_detector(folder / "yunet.onnx")
    import cv2
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    picture = np.zeros((512, 512, 3), np.uint8)
    picture[96:128, 64:96] = 220                  # two bright 32 px cells: two "faces" for the graph
    picture[320:352, 320:352] = 220
    print(f"{args.threads} threads, median of {args.rounds}; faces at 512 px")
    print(f"{'restorer':<16}{'params M':>9}{'load s':>8}{'s a face':>10}{'detect s':>10}{'picture s':>11}{'faces':>7}")
    for name, file, build in release_models():
        torch.manual_seed(0)
        model = build()
        params = sum(p.numel() for p in model.parameters()) / 1e6
        torch.save(model.state_dict(), folder / file)
        del model
        restorers._cache.clear()
        load_s, restorer = timed(lambda: (restorers._cache.clear(), restorers.load(folder / file, "cpu"))[1], 1)
        face = torch.rand(1, 3, 512, 512)
        face_s, _ = timed(lambda: restorer.run(face, 0.5), args.rounds)
        detect_s, faces = timed(lambda: yunet(detector, picture, 0.5), args.rounds)

        def one(crop):
            from PIL import Image
            small = np.asarray(Image.fromarray(crop).resize((512, 512)), np.float32) / 255
            out = restorer.run(torch.from_numpy(small).permute(2, 0, 1)[None], 0.5)
            return np.round(out[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
        whole_s, _ = timed(lambda: restore_faces(picture, faces, one, 1.0), 1)
        print(f"{name:<16}{params:>9.1f}{load_s:>8.2f}{face_s:>10.2f}{detect_s:>10.4f}{whole_s:>11.2f}{len(faces):>7}")
        (folder / file).unlink()


if __name__ == "__main__":
    main()
