"""The truth after training: on the dataset's own captions, at fixed seeds, the LoRA at 1 against
the model without it — how far the pictures of the captions move (the LoRA does something) and
how far the same captions without the new words move (the LoRA leaks into prompts it should leave
alone), in mean pixel levels (0-255). Written to the job folder and the LoRA's sidecar, shown in
the Train tab. (On the embedded model, `python -m embedded.finetune_measure` reads the pictures
with the pixel checker too: hit rates, shapes, drift.)"""

from __future__ import annotations

from typing import Callable

import numpy as np

from studio.finetune.prior import without_words

PROMPTS = 8                    # captions evaluated (the first distinct ones)
SEED_OFFSET = 200_000          # apart from the samples' and the class pictures' seeds
LEAK_NOTE = 8.0                # mean levels a prompt without the new words may move before the card warns


def evaluate(captions: list[str], words: list[str], seed: int,
             draw: Callable[[str, int, float], np.ndarray], text_encoder: bool = False,
             check: Callable | None = None) -> dict:
    """Figures of the LoRA on `captions` (`draw(prompt, seed, weight)` -> RGB array; `text_encoder`:
    the LoRA has text-encoder layers; `check(drawn, draw)`: the model's own reading of the
    pictures, where it has one — the embedded model's pixel checker — whose `summary` is added)."""
    chosen = list(dict.fromkeys(captions))[:PROMPTS]
    with_words, without, drawn = [], [], []
    for i, caption in enumerate(chosen):
        s = seed + SEED_OFFSET + i
        drawn.append((caption, draw(caption, s, 1.0), draw(caption, s, 0.0)))
        with_words.append(_moved(*drawn[-1][1:]))
        control = without_words(caption, words)
        if control and control != caption:
            without.append(_moved(draw(control, s, 1.0), draw(control, s, 0.0)))
    out = {"prompts": len(chosen), "new_words": words,
           "captions_moved": round(float(np.mean(with_words)), 2),
           "without_new_words_moved": round(float(np.mean(without)), 2) if without else None}
    out["summary"] = summary(out, text_encoder)
    if check is not None:
        out["checker"] = check(drawn, draw)
        out["summary"] += " " + out["checker"]["summary"]
    return out


def _moved(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def summary(figures: dict, text_encoder: bool = False) -> str:
    """One sentence an artist reads (with what to change when the LoRA leaks)."""
    text = (f"On {figures['prompts']} of your captions the LoRA moves the picture by "
            f"{figures['captions_moved']:.1f} levels on average")
    leak = figures["without_new_words_moved"]
    if leak is None:
        return text + " (no new word to leave out, so no control prompts)."
    text += f"; the same captions without {', '.join(figures['new_words'])} move by {leak:.1f}"
    fix = "lower the text encoder's rate or raise the prior weight" if text_encoder else \
        "raise the prior weight or lower the learning rate"
    return text + (f" — it leaks into other prompts: {fix}." if leak > LEAK_NOTE else ".")
