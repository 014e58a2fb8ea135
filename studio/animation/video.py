"""Video out and in: H.264 MP4 (yuv420p, plays in every browser) through imageio and the ffmpeg
that the imageio-ffmpeg wheel bundles (no system ffmpeg assumed), GIF and animated WebP through
Pillow. The animation's settings travel in each file's metadata (MP4 comment, GIF comment, WebP
XMP). Reading a video: its frames through the same ffmpeg, every Nth."""

from __future__ import annotations

import json
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
from PIL import Image

from studio.errors import InvalidRequest

MAX_INPUT_FRAMES = 2000
MAX_INPUT_PIXELS = 300_000_000      # of all the frames read, together (~0.9 GB of RGB)


def looped(frames: list[Path], loop: str) -> list[Path]:
    """Ping-pong plays the frames forward then back (the ends once each)."""
    return frames + frames[-2:0:-1] if loop == "pingpong" and len(frames) > 2 else frames


def write_mp4(frames: list[Path], out: Path, fps: int, comment: str) -> Path:
    import imageio.v2 as imageio

    writer = imageio.get_writer(out, format="FFMPEG", mode="I", fps=fps, codec="libx264", pixelformat="yuv420p",
                                macro_block_size=2, ffmpeg_log_level="error",
                                output_params=["-crf", "17", "-metadata", f"comment={comment}"])
    try:
        for path in frames:
            writer.append_data(_even(np.asarray(Image.open(path).convert("RGB"))))
    finally:
        writer.close()
    return out


def _even(image: np.ndarray) -> np.ndarray:
    """yuv420p halves the colour planes: an odd side loses its last row or column."""
    h, w = image.shape[:2]
    return image[: h - h % 2, : w - w % 2]


def write_gif(frames: list[Path], out: Path, fps: int, comment: str) -> Path:
    pictures = [Image.open(p).convert("RGB") for p in frames]
    pictures[0].save(out, format="GIF", save_all=True, append_images=pictures[1:], loop=0,
                     duration=max(20, round(1000 / fps)), comment=comment.encode("utf-8")[:65000])
    return out


def write_webp(frames: list[Path], out: Path, fps: int, comment: str) -> Path:
    pictures = [Image.open(p).convert("RGB") for p in frames]
    xmp = (f'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
           f'<rdf:Description xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:description>{escape(comment)}'
           f'</dc:description></rdf:Description></rdf:RDF></x:xmpmeta>')
    pictures[0].save(out, format="WEBP", save_all=True, append_images=pictures[1:], loop=0,
                     duration=round(1000 / fps), quality=90, xmp=xmp.encode("utf-8"))
    return out


WRITERS = {"mp4": write_mp4, "gif": write_gif, "webp": write_webp}


def write_videos(frames: list[Path], folder: Path, name: str, formats: tuple[str, ...], fps: int,
                 loop: str, settings: dict) -> dict[str, Path]:
    """Each asked-for format from the saved frames; {format: path}."""
    comment = json.dumps({"studio animation": settings}, separators=(",", ":"))
    order = looped(frames, loop)
    return {fmt: WRITERS[fmt](order, folder / f"{name}.{fmt}", fps, comment) for fmt in formats}


def _probe(name: str, meta: dict, every: int, limit: int, max_side: int | None) -> None:
    """The video's frame size and count from its header, checked before decoding."""
    width, height = (int(v) for v in meta.get("size") or (0, 0))
    if max_side and max(width, height) > max_side:
        raise InvalidRequest(f"The video {name} is {width}x{height}; this studio takes videos up to {max_side} px "
                             "a side.")
    frames = meta.get("nframes")
    frames = limit if not isinstance(frames, (int, float)) or frames != frames or frames == float("inf") \
        else min(limit, int(frames) // max(1, every) + 1)
    if width * height * frames > MAX_INPUT_PIXELS:
        raise InvalidRequest(f"The video {name}: {frames} frames of {width}x{height} would take "
                             f"{width * height * frames * 3 / 2**30:.1f} GB; use fewer frames, every Nth frame, "
                             "or a smaller video.")


def read_video(path: str | Path, every: int = 1, limit: int = MAX_INPUT_FRAMES,
               max_side: int | None = None) -> tuple[list[np.ndarray], float]:
    """Every Nth frame of a video file (at most `limit`) and its frame rate; a clear message for a
    file that is not a video, and for one whose frames are wider or taller than `max_side` or
    would take more than MAX_INPUT_PIXELS together: both probed from the file's header, before
    a frame is decoded."""
    import imageio.v2 as imageio

    try:
        reader = imageio.get_reader(str(path), format="FFMPEG")
    except Exception as exc:  # noqa: BLE001 - imageio raises several kinds for a bad file
        raise InvalidRequest(f"Cannot read the video {Path(path).name}: {exc}") from None
    try:
        meta = reader.get_meta_data()
        _probe(Path(path).name, meta, every, limit, max_side)
        fps = float(meta.get("fps") or 0) or 12.0
        frames = []
        for i, frame in enumerate(reader):
            if i % every == 0:
                frames.append(np.ascontiguousarray(frame[..., :3]))
                if len(frames) >= limit:
                    break
    except InvalidRequest:
        raise
    except Exception as exc:  # noqa: BLE001
        raise InvalidRequest(f"Cannot read the video {Path(path).name}: {exc}") from None
    finally:
        reader.close()
    if not frames:
        raise InvalidRequest(f"The video {Path(path).name} has no frames.")
    return frames, fps / every
