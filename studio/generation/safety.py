"""An optional content filter for shared links.

- Prompt blocklist: presets/blocklist.txt (a word or phrase a line), matched case-insensitively as
  whole words in the prompt of every image (after presets, styles and variants). A blocked
  prompt is refused before anything is generated; the message says which entry matched.
- Image check: diffusers' Stable Diffusion safety checker, when its weights are in
  models/safety-checker/ (config.json, the weights and preprocessor_config.json, as
  `save_pretrained` writes them). A flagged image is neither saved nor shown; the user is told.
  Without the weights only the blocklist runs, and the studio says so at start.

On by default with --share, off locally; --content-filter on|off overrides.
"""

from __future__ import annotations

import logging
import re
import threading
from pathlib import Path

from studio.errors import InvalidRequest

log = logging.getLogger(__name__)


def read_blocklist(path: Path) -> list[str]:
    if not path.is_file():
        return []
    terms = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            terms.append(" ".join(line.lower().split()))
    return terms


class ContentFilter:
    def __init__(self, enabled: bool, blocklist: Path, checker_dir: Path | None = None):
        self.enabled = enabled
        self.terms = read_blocklist(blocklist) if enabled else []
        self._patterns = [re.compile(r"(?<!\w)" + r"\s+".join(map(re.escape, t.split())) + r"(?!\w)",
                                     re.IGNORECASE) for t in self.terms]
        self.checker_dir = checker_dir
        self._checker = None
        self._lock = threading.Lock()

    @property
    def checker_available(self) -> bool:
        return bool(self.enabled and self.checker_dir and (self.checker_dir / "config.json").is_file())

    def status(self) -> str:
        if not self.enabled:
            return "content filter off"
        image = ("images checked by the safety checker" if self.checker_available else
                 f"no image check (safety-checker weights not in {self.checker_dir})")
        return f"content filter on: {len(self.terms)} blocked prompt terms, {image}"

    def check_prompt(self, text: str) -> None:
        if not self.enabled:
            return
        for term, pattern in zip(self.terms, self._patterns):
            if pattern.search(text):
                raise InvalidRequest(f"This shared studio's content filter blocks this prompt "
                                     f"(it contains {term!r}). Nothing was generated.")

    def _load(self, device: str):
        from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
        from transformers import CLIPImageProcessor
        with self._lock:
            if self._checker is None:
                checker = StableDiffusionSafetyChecker.from_pretrained(str(self.checker_dir), local_files_only=True)
                self._checker = (checker.to(device).eval(),
                                 CLIPImageProcessor.from_pretrained(str(self.checker_dir), local_files_only=True))
        return self._checker

    def flagged(self, images, device: str = "cpu") -> list[bool]:
        """Which images the safety checker flags (all False when it is off or absent)."""
        if not self.checker_available or not images:
            return [False] * len(images)
        import numpy as np
        import torch
        checker, processor = self._load(device)
        clip_input = processor(images=[i.convert("RGB") for i in images], return_tensors="pt").pixel_values
        arrays = np.stack([np.asarray(i.convert("RGB"), dtype=np.float32) / 255 for i in images])
        with torch.no_grad():
            _, flags = checker(clip_input=clip_input.to(device, next(checker.parameters()).dtype), images=arrays)
        return [bool(f) for f in flags]
