"""Words a small model never saw. A model folder may carry `vocabulary.txt` (a `# knows: ...` line,
then the words of its training captions, one a line; the embedded model does): the studio then
tells the user which words of a prompt it does not know, instead of returning a random picture
without a word of explanation."""

from __future__ import annotations

import re
from pathlib import Path

KNOWS_PREFIX = "# knows:"


def read_vocabulary(folder: str | Path) -> tuple[frozenset[str], str]:
    """(the words, what they cover) from the folder's vocabulary.txt; empty when it has none."""
    path = Path(folder) / "vocabulary.txt"
    if not path.is_file():
        return frozenset(), ""
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    knows = next((line[len(KNOWS_PREFIX):].strip() for line in lines if line.startswith(KNOWS_PREFIX)), "")
    return frozenset(line.lower() for line in lines if not line.startswith("#")), knows


def unknown_words(text: str, vocabulary: frozenset[str]) -> list[str]:
    """The words of a prompt (A1111 syntax and BREAK left out) that are not in the vocabulary."""
    words = re.findall(r"[a-z]+", text.replace("BREAK", " ").lower())
    return list(dict.fromkeys(w for w in words if w not in vocabulary))


def vocabulary_note(model_name: str, knows: str, vocabulary: frozenset[str], prompts: list[str]) -> str | None:
    """A note for prompts with words the model never saw, or None."""
    if not vocabulary:
        return None
    unknown = list(dict.fromkeys(w for p in prompts for w in unknown_words(p, vocabulary)))
    if not unknown:
        return None
    return (f"The {model_name} model knows {knows or 'only the words it was trained on'}; unknown: "
            f"{', '.join(unknown[:12])}{' …' if len(unknown) > 12 else ''} — load a real model with --model "
            "(or pick one in the Model list) for anything else.")
