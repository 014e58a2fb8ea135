"""Prompt variants, with the dynamicprompts library: `{red|blue|green} circle` and `__colors__`
(a line of presets/wildcards/colors.txt). Random mode picks per image from that image's seed,
so every image of a batch can be made again alone; "all" makes every combination.

`{image}` and `{image:name}` are reference-image tags, not variants: they are kept as written.
"""

from __future__ import annotations

import re
from pathlib import Path

from studio.errors import InvalidRequest

VARIANT_MODES = ("random", "all")
_REFERENCE = re.compile(r"\{image(?::[^{}|]*)?\}")
_WILDCARD = re.compile(r"__([\w./-]+?)__")
_HOLD = "\ue000{}\ue001"


def has_variants(text: str) -> bool:
    stripped = _REFERENCE.sub("", text)
    return "{" in stripped or bool(_WILDCARD.search(stripped))


def _protect(text: str) -> tuple[str, list[str]]:
    kept: list[str] = []

    def hold(m: re.Match) -> str:
        kept.append(m.group(0))
        return _HOLD.format(len(kept) - 1)
    return _REFERENCE.sub(hold, text), kept


def _restore(text: str, kept: list[str]) -> str:
    for i, original in enumerate(kept):
        text = text.replace(_HOLD.format(i), original)
    return text


def _manager(folder: Path | None):
    from dynamicprompts.wildcards import WildcardManager
    return WildcardManager(Path(folder) if folder else None)


def _check_wildcards(text: str, folder: Path | None) -> None:
    for name in _WILDCARD.findall(text):
        if folder is None or not (Path(folder) / f"{name}.txt").is_file():
            raise InvalidRequest(f"__{name}__: no wildcard file {Path(folder or 'presets/wildcards') / (name + '.txt')}"
                                 " (one choice a line).")


def expand_random(text: str, seeds: list[int], folder: Path | None) -> list[str]:
    """One prompt per seed, each drawn with its own seed."""
    if not has_variants(text):
        return [text] * len(seeds)
    from dynamicprompts.generators import RandomPromptGenerator

    _check_wildcards(text, folder)
    held, kept = _protect(text)
    wm = _manager(folder)
    out = []
    for seed in seeds:
        try:
            out.append(_restore(RandomPromptGenerator(wm, seed=seed).generate(held, num_images=1)[0], kept))
        except Exception as exc:  # noqa: BLE001 - a template it cannot read is the user's message
            raise InvalidRequest(f"Could not read the variants in {text!r}: {exc}") from None
    return out


def expand_all(text: str, folder: Path | None, limit: int) -> list[str]:
    """Every combination (at most `limit`, else a clear message)."""
    if not has_variants(text):
        return [text]
    from dynamicprompts.generators import CombinatorialPromptGenerator

    _check_wildcards(text, folder)
    held, kept = _protect(text)
    try:
        prompts = CombinatorialPromptGenerator(_manager(folder)).generate(held, max_prompts=limit + 1)
    except Exception as exc:  # noqa: BLE001
        raise InvalidRequest(f"Could not read the variants in {text!r}: {exc}") from None
    if len(prompts) > limit:
        raise InvalidRequest(f"{text!r} has more than {limit} combinations; this studio makes at most "
                             f"{limit} images a request. Use random variants, or fewer choices.")
    return [_restore(p, kept) for p in prompts]
