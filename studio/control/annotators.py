"""Preprocessors that need weights (annotators): each reads a model the user put in
models/annotators/<folder> (the files as its hub repository has them; nothing is downloaded) and
says which folder and files are missing otherwise. Loaded on first use and kept; they run on the
CPU, in the request's prepare stage, outside the model lock.

- Depth: a transformers depth-estimation model (Depth Anything V2 Small by default; any
  `AutoModelForDepthEstimation` folder works), its relative depth scaled to [0, 1], near = white,
  as ControlNet's depth models take it.
- Normals: from that depth map, as sd-webui-controlnet's normal_midas makes them (surfaces from the
  depth's slopes, the far background flat): x right in red, y up in green, towards the viewer in
  blue, each (n + 1) / 2, so a flat picture is (0.5, 0.5, 1).
- Pose: a transformers ViTPose model (each person's 17 COCO keypoints), drawn as ControlNet's
  openpose models take it: OpenPose's 18 points (the neck between the shoulders) and 17 limbs in
  its colours on black. People are found by an RT-DETR detector in models/annotators/rtdetr-persons
  when it is there; without it the whole picture is taken as one person (a portrait, a figure).
- Segmentation: a transformers semantic-segmentation model trained on ADE20K (SegFormer B0 by
  default; any `AutoModelForSemanticSegmentation` folder with ADE20K's 150 classes), each class in
  ADE20K's colour (ade20k_palette.json), as ControlNet's segmentation models take them.
"""

from __future__ import annotations

import functools
import json
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from studio.errors import InvalidRequest


@dataclass(frozen=True)
class Annotator:
    kind: str                        # what it makes: a key of Annotators.MAKERS
    folder: str                      # under models/annotators/
    repository: str                  # where the user gets its files
    files: tuple[str, ...]           # what the folder must hold
    model_class: str                 # the transformers Auto class that loads it


_DEPTH_MODEL = dict(folder="depth-anything", repository="depth-anything/Depth-Anything-V2-Small-hf",
                    files=("config.json", "model.safetensors", "preprocessor_config.json"),
                    model_class="AutoModelForDepthEstimation")
DEPTH = Annotator("depth", **_DEPTH_MODEL)
NORMAL = Annotator("normal", **_DEPTH_MODEL)
SEGMENT = Annotator("segment", "segformer-ade20k", "nvidia/segformer-b0-finetuned-ade-512-512",
                    ("config.json", "model.safetensors", "preprocessor_config.json"),
                    "AutoModelForSemanticSegmentation")
POSE = Annotator("pose", "vitpose", "usyd-community/vitpose-base-simple",
                 ("config.json", "model.safetensors", "preprocessor_config.json"), "VitPoseForPoseEstimation")
PERSONS = Annotator("persons", "rtdetr-persons", "PekingU/rtdetr_r50vd_coco_o365",
                    ("config.json", "model.safetensors", "preprocessor_config.json"), "RTDetrForObjectDetection")
PERSON_LABEL, PERSON_SCORE = 0, 0.5   # COCO's person class; detections below this score are not people
KEYPOINT_SCORE = 0.3                  # keypoints below this are not drawn
# OpenPose's 18 points, by the COCO keypoint each is (None: the neck, between the shoulders)
OPENPOSE_FROM_COCO = (0, None, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3)
OPENPOSE_LIMBS = ((1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12),
                  (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17))
OPENPOSE_COLOURS = ((255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
                    (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
                    (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85))
NORMAL_BACKGROUND = 0.4    # depth below this share of the range is the flat background (normal_midas's default)
NORMAL_RELIEF = 1.0        # the depth range, in picture widths: how steep the surfaces come out
ADE20K_CLASSES = 150


def missing(annotator: Annotator, root: Path | None) -> str | None:
    """The message naming what is missing, or None when the folder is complete."""
    folder = None if root is None else root / annotator.folder
    absent = [f for f in annotator.files if folder is None or not (folder / f).is_file()]
    if not absent:
        return None
    return (f"This preprocessor needs the files of {annotator.repository} ({', '.join(annotator.files)}) in "
            f"models/annotators/{annotator.folder}/; missing: {', '.join(absent)}. The studio never downloads them.")


@functools.lru_cache(maxsize=1)
def ade20k_palette() -> np.ndarray:
    """ADE20K's 150 class colours (uint8, 150 x 3, read-only), wall first: read once, not a map."""
    table = json.loads((Path(__file__).with_name("ade20k_palette.json")).read_text(encoding="utf-8"))
    palette = np.asarray(table["palette"], dtype=np.uint8)
    palette.flags.writeable = False
    return palette


def normals_from_depth(depth: np.ndarray, background: float = NORMAL_BACKGROUND,
                       relief: float = NORMAL_RELIEF) -> np.ndarray:
    """A normal map (float32 HxWx3 in [0, 1]) of a depth map in [0, 1] (near = 1) read as a height
    field `relief` picture widths deep; where depth is below `background` the surface is flat."""
    import cv2

    height = depth.astype(np.float32) * relief * depth.shape[1]
    dx = cv2.Sobel(height, cv2.CV_32F, 1, 0, ksize=3) / 8.0     # Sobel's 3x3 kernel sums to 8x the slope
    dy = cv2.Sobel(height, cv2.CV_32F, 0, 1, ksize=3) / 8.0
    flat = depth < background
    dx[flat], dy[flat] = 0.0, 0.0
    n = np.stack([-dx, dy, np.ones_like(dx)], axis=2)           # image rows run down: up is -y
    n /= np.linalg.norm(n, axis=2, keepdims=True)
    return ((n + 1.0) / 2.0).astype(np.float32)


def openpose_points(keypoints: np.ndarray, scores: np.ndarray, threshold: float = KEYPOINT_SCORE) -> list:
    """One person's 17 COCO keypoints (x, y) and scores as OpenPose's 18 points ((x, y) or None)."""
    seen = [tuple(map(float, k)) if s >= threshold else None for k, s in zip(keypoints, scores)]
    points = [seen[c] if c is not None else None for c in OPENPOSE_FROM_COCO]
    if seen[5] is not None and seen[6] is not None:
        points[1] = ((seen[5][0] + seen[6][0]) / 2, (seen[5][1] + seen[6][1]) / 2)
    return points


def draw_openpose(height: int, width: int, people: list[list]) -> np.ndarray:
    """OpenPose's picture of `people` (each 18 points or None) as ControlNet's openpose models take
    it (float32 HxWx3 in [0, 1]): limbs as ellipses in 0.6 of their colour, then the points."""
    import cv2

    canvas = np.zeros((height, width, 3), np.uint8)
    scale = max(1.0, min(height, width) / 512)
    stick, radius = max(1, round(4 * scale)), max(1, round(4 * scale))
    for points in people:
        for i, (a, b) in enumerate(OPENPOSE_LIMBS):
            if points[a] is None or points[b] is None:
                continue
            (xa, ya), (xb, yb) = points[a], points[b]
            length = ((xa - xb) ** 2 + (ya - yb) ** 2) ** 0.5
            angle = np.degrees(np.arctan2(yb - ya, xb - xa))
            polygon = cv2.ellipse2Poly((round((xa + xb) / 2), round((ya + yb) / 2)),
                                       (max(1, round(length / 2)), stick), round(angle), 0, 360, 1)
            cv2.fillConvexPoly(canvas, polygon, [round(c * 0.6) for c in OPENPOSE_COLOURS[i]])
        for i, point in enumerate(points):
            if point is not None:
                cv2.circle(canvas, (round(point[0]), round(point[1])), radius, OPENPOSE_COLOURS[i], thickness=-1)
    return canvas.astype(np.float32) / 255.0


class Annotators:
    """The annotator models loaded so far, one a folder (reloaded when its weights change)."""

    def __init__(self):
        self._kept: dict[str, tuple] = {}     # folder -> (its weights' key, (processor, model))
        self._lock = threading.Lock()

    def _load(self, annotator: Annotator, root: Path | None):
        import transformers

        why = missing(annotator, root)
        if why:
            raise InvalidRequest(why)
        folder = root / annotator.folder
        weights = folder / "model.safetensors"
        key = (str(folder), annotator.model_class, weights.stat().st_mtime_ns, weights.stat().st_size)
        with self._lock:
            kept = self._kept.get(str(folder))
            if kept is None or kept[0] != key:         # one model a folder, the newest weights
                try:
                    model_class = getattr(transformers, annotator.model_class)
                    kept = key, (transformers.AutoImageProcessor.from_pretrained(str(folder), local_files_only=True),
                                 model_class.from_pretrained(str(folder), local_files_only=True).eval())
                except Exception as exc:  # noqa: BLE001 - the user's folder: a clear message
                    raise InvalidRequest(f"models/annotators/{folder.name} cannot be loaded as a {annotator.kind} "
                                         f"model: {type(exc).__name__}: {str(exc)[:200]}") from None
                self._kept[str(folder)] = kept
            return kept[1]

    def run(self, annotator: Annotator, rgb: np.ndarray, root: Path | None) -> np.ndarray:
        """The map `annotator` makes of `rgb` (float32 HxWx3 in [0, 1]), with its files from `root`
        (models/annotators)."""
        return self.MAKERS[annotator.kind](self, annotator, rgb, root)

    def depth(self, annotator: Annotator, rgb: np.ndarray, root: Path | None) -> np.ndarray:
        return np.repeat(self._depth01(annotator, rgb, root)[..., None], 3, axis=2)

    def normal(self, annotator: Annotator, rgb: np.ndarray, root: Path | None) -> np.ndarray:
        return normals_from_depth(self._depth01(annotator, rgb, root))

    def _depth01(self, annotator: Annotator, rgb: np.ndarray, root: Path | None) -> np.ndarray:
        import torch
        from PIL import Image

        processor, model = self._load(annotator, root)
        inputs = processor(images=Image.fromarray(rgb), return_tensors="pt")
        with torch.no_grad():
            depth = model(**inputs).predicted_depth[0]
        depth = torch.nn.functional.interpolate(depth[None, None].float(), size=rgb.shape[:2], mode="bicubic",
                                                align_corners=False)[0, 0].numpy()
        low, high = float(depth.min()), float(depth.max())
        return ((depth - low) / (high - low) if high > low else np.zeros_like(depth)).astype(np.float32)

    def segment(self, annotator: Annotator, rgb: np.ndarray, root: Path | None) -> np.ndarray:
        import torch
        from PIL import Image

        processor, model = self._load(annotator, root)
        if model.config.num_labels != ADE20K_CLASSES:
            raise InvalidRequest(f"models/annotators/{annotator.folder} has {model.config.num_labels} classes; "
                                 f"segmentation maps take ADE20K's {ADE20K_CLASSES} (e.g. {annotator.repository}).")
        inputs = processor(images=Image.fromarray(rgb), return_tensors="pt")
        with torch.no_grad():
            logits = model(**inputs).logits
        logits = torch.nn.functional.interpolate(logits.float(), size=rgb.shape[:2], mode="bilinear",
                                                 align_corners=False)
        classes = logits[0].argmax(dim=0).numpy()
        return ade20k_palette()[classes].astype(np.float32) / 255.0

    def pose(self, annotator: Annotator, rgb: np.ndarray, root: Path | None) -> np.ndarray:
        import torch
        from PIL import Image

        processor, model = self._load(annotator, root)
        picture = Image.fromarray(rgb)
        boxes = self._persons(picture, root)
        if not len(boxes):
            return draw_openpose(rgb.shape[0], rgb.shape[1], [])
        inputs = processor(picture, boxes=[boxes], return_tensors="pt")
        with torch.no_grad():
            outputs = model(**inputs)
        people = processor.post_process_pose_estimation(outputs, boxes=[boxes])[0]
        return draw_openpose(rgb.shape[0], rgb.shape[1],
                             [openpose_points(p["keypoints"].numpy(), p["scores"].numpy()) for p in people])

    def _persons(self, picture, root: Path | None) -> np.ndarray:
        """The people in `picture` as COCO boxes (x, y, w, h): RT-DETR's when the detector is in
        models/annotators, else the whole picture as one."""
        import torch

        if missing(PERSONS, root):
            return np.array([[0.0, 0.0, picture.width, picture.height]], dtype=np.float32)
        processor, model = self._load(PERSONS, root)
        with torch.no_grad():
            outputs = model(**processor(images=picture, return_tensors="pt"))
        found = processor.post_process_object_detection(outputs, target_sizes=torch.tensor([(picture.height, picture.width)]),
                                                        threshold=PERSON_SCORE)[0]
        boxes = found["boxes"][found["labels"] == PERSON_LABEL].numpy().astype(np.float32)
        boxes[:, 2:] -= boxes[:, :2]                  # corners -> width and height
        return boxes

    MAKERS = {"depth": depth, "normal": normal, "segment": segment, "pose": pose}
