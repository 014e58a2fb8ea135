"""Images sent by users (uploads, file paths, arrays) decoded safely, and masks read from them."""

from __future__ import annotations

import base64
import binascii
import io
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps, UnidentifiedImageError

from studio.errors import InvalidRequest

MAX_INPUT_PIXELS = 4 * 2048 * 2048   # any uploaded image: checked from its header, before decoding


def load_image(name: str, value: Any, mode: str = "RGB", max_pixels: int = MAX_INPUT_PIXELS) -> Image.Image:
    """An uploaded image (PIL, file path, or numpy array) as a fully decoded PIL image. Its size
    is checked from the header first, so a huge or forged image is refused before any decoding."""
    if value is None:
        raise InvalidRequest(f"{name}: no image was given.")
    try:
        if isinstance(value, Image.Image):
            image = value
        elif isinstance(value, (str, Path)):
            image = Image.open(value)
        elif hasattr(value, "__array_interface__"):
            shape = getattr(value, "shape", ())
            if len(shape) not in (2, 3) or (len(shape) == 3 and shape[2] not in (1, 3, 4)):
                raise InvalidRequest(f"{name}: an array of shape {shape} is not an image.")
            image = Image.fromarray(value)
        else:
            raise InvalidRequest(f"{name}: expected an image, got {type(value).__name__}.")
        if image.width * image.height > max_pixels:
            raise InvalidRequest(f"{name} is {image.width}x{image.height}; this studio takes images "
                                 f"of at most {max_pixels:,} pixels.")
        image.load()
        image = ImageOps.exif_transpose(image)
    except InvalidRequest:
        raise
    except (UnidentifiedImageError, OSError, ValueError, TypeError, SyntaxError, EOFError,
            Image.DecompressionBombError, MemoryError) as exc:
        raise InvalidRequest(f"{name}: the file could not be read as an image ({exc}).") from None
    if image.width < 1 or image.height < 1:
        raise InvalidRequest(f"{name} is empty (0 pixels).")
    if mode == "RGB" and image.mode in ("RGBA", "LA", "P"):
        rgba = image.convert("RGBA")
        flat = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        flat.alpha_composite(rgba)
        return flat.convert("RGB")
    try:
        return image if mode == "keep" else image.convert(mode)
    except (ValueError, OSError) as exc:
        raise InvalidRequest(f"{name}: images of mode {image.mode} cannot be used ({exc}).") from None


def mask_from_image(name: str, value: Any) -> Image.Image:
    """A mask as "L": alpha if the image has transparency (a painted layer), else luminance."""
    image = load_image(name, value, mode="keep") if value is not None else None
    if image is None:
        raise InvalidRequest(f"{name}: no mask was given.")
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        return image.convert("RGBA").getchannel("A")
    return image.convert("L")


def encode_base64(picture: Any) -> str:
    """A picture (PIL or a numpy array) as base64 PNG, what decode_base64 reads back."""
    buffer = io.BytesIO()
    (picture if isinstance(picture, Image.Image) else Image.fromarray(picture)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def decode_base64(name: str, text: Any) -> Image.Image:
    """A base64 picture (with or without a `data:image/...;base64,` prefix), opened lazily so that
    load_image checks its size from the header before decoding. URLs are not fetched."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidRequest(f"{name}: no image was given.")
    text = text.strip()
    if text.startswith(("http://", "https://")):
        raise InvalidRequest(f"{name}: this studio does not fetch URLs; send the picture as base64.")
    if text.startswith("data:"):
        text = text.partition(",")[2]
    try:
        data = base64.b64decode(text)
        return Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise InvalidRequest(f"{name} is too large: {exc}") from None
    except (binascii.Error, ValueError):
        raise InvalidRequest(f"Invalid encoded image: {name} is not base64.") from None
    except (UnidentifiedImageError, OSError):
        raise InvalidRequest(f"Invalid encoded image: {name} is not a picture (PNG, JPEG, WebP...).") from None
