"""One browser session's Live: the fixed seed, the last picture (what Keep saves) and the rate
the session's pictures arrive at."""

from __future__ import annotations

import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from studio.requests import MAX_SEED, GeneratedImage
from studio.requests.tools import without_tools

BURST_GAP_S = 1.5      # frames further apart than this belong to different bursts of typing
WINDOW = 10            # the achieved rate is measured over at most this many frames


def live_fields(raw: dict[str, Any]) -> dict[str, Any]:
    """A live request's raw fields: one picture, and none of the composing tools (hires fix, SD upscale)."""
    return {**without_tools(raw), "batch_count": 1, "batch_size": 1}


def draw_seed() -> int:
    return secrets.randbelow(MAX_SEED + 1)


@dataclass
class LiveSession:
    picture: GeneratedImage | None = None
    seconds: float = 0.0                     # the last picture's time, from request to picture
    arrivals: deque = field(default_factory=lambda: deque(maxlen=WINDOW))

    def frame(self, picture: GeneratedImage, seconds: float, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if self.arrivals and now - self.arrivals[-1] > BURST_GAP_S:
            self.arrivals.clear()
        self.picture, self.seconds = picture, seconds
        self.arrivals.append(now)

    def achieved_fps(self) -> float | None:
        """Pictures a second over the current burst (None until two have arrived in it)."""
        if len(self.arrivals) < 2 or self.arrivals[-1] <= self.arrivals[0]:
            return None
        return (len(self.arrivals) - 1) / (self.arrivals[-1] - self.arrivals[0])

    def status(self) -> str:
        if self.picture is None:
            return "Live: waiting for the first picture…"
        text = f"Live: {self.seconds * 1000:.0f} ms a picture ({1 / max(self.seconds, 1e-6):.1f} a second possible)"
        fps = self.achieved_fps()
        return text + (f" · {fps:.1f} frames a second while you type" if fps else "") + \
            f" · seed {self.picture.seed} · not saved: Keep saves it"
