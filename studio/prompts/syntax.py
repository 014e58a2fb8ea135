"""The prompt language: AUTOMATIC1111's syntax (the de-facto standard) plus the seed's inline
negatives. Pure text processing; studio/prompts/conditioning.py turns the result into embeddings.

Order of processing, for each prompt of a request:
1. `<lora:name:weight>` tags are taken out (that LoRA for this generation only)
2. inline negatives: a parenthesised group whose items each begin with `-` moves to the
   negative prompt, `(-bad hands -unnatural hands:1.3)` -> negative `(bad hands:1.3), (unnatural hands:1.3)`
3. prompt editing and alternation give the text for each denoising step:
   `[from:to:when]`, `[to:when]`, `[from::when]`, `[a|b]` (when: `0.5` = a fraction of the
   steps, `10` = a step number)
4. emphasis on that text: `(w)` x1.1, `((w))` x1.21, `(w:1.3)`, `[w]` /1.1, `\\(` literal,
   `BREAK` starts a new 75-token chunk

Malformed input never raises: an unbalanced or unknown bracket is kept as literal text, as
AUTOMATIC1111 does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

EMPHASIS = 1.1


# ---------------------------------------------------------------------------------------------
# 1. <lora:name:weight>

_LORA_TAG = re.compile(r"<lora:([^:>]+)(?::\s*([^>]*))?>", re.IGNORECASE)


def take_lora_tags(text: str) -> tuple[str, list[tuple[str, str]]]:
    """Remove `<lora:name[:weight]>` tags; returns the text and (name, weight text) pairs."""
    found = [(m.group(1).strip(), (m.group(2) or "1").strip()) for m in _LORA_TAG.finditer(text)]
    return _tidy(_LORA_TAG.sub("", text)), found


# ---------------------------------------------------------------------------------------------
# 2. inline negatives

_GROUP = re.compile(r"(?<!\\)\(([^()]*?)(?<!\\)\)")
_WEIGHT = re.compile(r"^(.*?):\s*([+-]?(?:\d+\.?\d*|\.\d+))\s*$", re.DOTALL)


def _negative_items(content: str) -> list[str] | None:
    """The items of `( -a -b, -c )` without their dashes, or None if it is not such a group."""
    items: list[str] = []
    for piece in content.split(","):
        if not piece.strip():
            continue
        for item in re.split(r"\s+(?=-\S)", piece.strip()):
            if not re.match(r"-[^\s\d.-]", item):     # "-bad": an item; "- 1", "-0.5", "--": not
                return None
            items.append(item[1:].strip())
    return items or None


def take_inline_negatives(text: str) -> tuple[str, list[str]]:
    """Move `(-item ...)` groups to the negative side. Returns the prompt and the negative terms
    as prompt text (`bad hands` or `(bad hands:1.3)`)."""
    negatives: list[str] = []

    def repl(m: re.Match) -> str:
        content, weight = m.group(1), None
        w = _WEIGHT.match(content)
        if w:
            content, weight = w.group(1), w.group(2)
        items = _negative_items(content)
        if items is None:
            return m.group(0)
        negatives.extend(f"({i}:{weight})" if weight else i for i in items)
        return ""

    return _tidy(_GROUP.sub(repl, text)), negatives


def _tidy(text: str) -> str:
    """Spaces and commas left behind where something was taken out."""
    text = re.sub(r"[ \t]{2,}", " ", text)
    text = re.sub(r"\s+,", ",", text)
    text = re.sub(r",(\s*,)+", ",", text)
    return text.strip().strip(",").strip()


def split_terms(text: str) -> list[str]:
    """Comma-separated terms at the top level (commas inside brackets stay inside)."""
    terms, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "([" and (i == 0 or text[i - 1] != "\\"):
            depth += 1
        elif ch in ")]" and depth and text[i - 1] != "\\":
            depth -= 1
        elif ch == "," and depth == 0:
            terms.append(text[start:i])
            start = i + 1
    terms.append(text[start:])
    return [t.strip() for t in terms if t.strip()]


def merge_negatives(*parts: str | list[str]) -> str:
    """Join negative prompts without repeating a term (case and spacing aside)."""
    seen, out = set(), []
    for part in parts:
        for term in (split_terms(part) if isinstance(part, str) else part):
            key = re.sub(r"\s+", " ", term.lower())
            if key not in seen:
                seen.add(key)
                out.append(term)
    return ", ".join(out)


# ---------------------------------------------------------------------------------------------
# 3. prompt editing and alternation

@dataclass
class _Text:
    text: str


@dataclass
class _Group:                     # ( ... ) or [ ... ] kept for the emphasis parser
    open: str
    children: list
    close: str


@dataclass
class _Edit:                      # [from:to:when]
    before: list
    after: list
    when: str
    step: int = 0


@dataclass
class _Alternate:                 # [a|b|c]
    options: list[list]


_NUMBER = re.compile(r"\s*[+-]?(?:\d+\.?\d*|\.\d+)\s*$")


class _Parser:
    def __init__(self, text: str):
        self.s, self.i = text, 0

    def seq(self, stops: str) -> list:
        out: list = []
        buf: list[str] = []
        while self.i < len(self.s):
            ch = self.s[self.i]
            if ch == "\\" and self.i + 1 < len(self.s):
                buf.append(self.s[self.i:self.i + 2])
                self.i += 2
                continue
            if ch in stops:
                break
            if ch in "([":
                start = self.i
                node = self.bracket()
                if node is None:          # unbalanced or unknown: literal text
                    self.i = start + 1
                    buf.append(ch)
                    continue
                if buf:
                    out.append(_Text("".join(buf)))
                    buf = []
                out.append(node)
                continue
            buf.append(ch)
            self.i += 1
        if buf:
            out.append(_Text("".join(buf)))
        return out

    def bracket(self):
        open_ = self.s[self.i]
        self.i += 1
        if open_ == "(":
            children = self.seq(")")
            if self.i >= len(self.s):
                return None
            self.i += 1
            return _Group("(", children, ")")
        parts, seps = [self.seq(":|]")], []
        while self.i < len(self.s) and self.s[self.i] in ":|":
            seps.append(self.s[self.i])
            self.i += 1
            parts.append(self.seq(":|]"))
        if self.i >= len(self.s):
            return None
        self.i += 1                                        # the closing ]
        if not seps:
            return _Group("[", parts[0], "]")
        if all(s == "|" for s in seps):
            return _Alternate(parts)
        if all(s == ":" for s in seps) and len(parts) in (2, 3):
            when = _plain(parts[-1])
            if when is not None and _NUMBER.match(when):
                before = parts[0] if len(parts) == 3 else []
                return _Edit(before, parts[-2], when.strip())
        return None


def _plain(nodes: list) -> str | None:
    return "".join(n.text for n in nodes) if all(isinstance(n, _Text) for n in nodes) else None


def _walk(nodes: list):
    for n in nodes:
        yield n
        if isinstance(n, _Group):
            yield from _walk(n.children)
        elif isinstance(n, _Edit):
            yield from _walk(n.before)
            yield from _walk(n.after)
        elif isinstance(n, _Alternate):
            for o in n.options:
                yield from _walk(o)


def _render(nodes: list, step: int) -> str:
    out = []
    for n in nodes:
        if isinstance(n, _Text):
            out.append(n.text)
        elif isinstance(n, _Group):
            out.append(n.open + _render(n.children, step) + n.close)
        elif isinstance(n, _Edit):
            out.append(_render(n.before if step <= n.step else n.after, step))
        else:
            out.append(_render(n.options[(step - 1) % len(n.options)], step))
    return "".join(out)


def schedule(text: str, steps: int) -> list[tuple[int, str]]:
    """[(last step, text)] covering steps 1..steps: the prompt each denoising step uses.

    `when` with a decimal point is a fraction of the steps (`0.5`), without one a step number
    (`10`), as AUTOMATIC1111 reads it."""
    steps = max(1, int(steps))
    tree = _Parser(text).seq("")
    switches = {steps}
    for n in _walk(tree):
        if isinstance(n, _Edit):
            v = float(n.when) * steps if "." in n.when else float(n.when)
            n.step = min(steps, int(v))
            if n.step >= 1:
                switches.add(n.step)
        elif isinstance(n, _Alternate):
            switches.update(range(1, steps + 1))
    out: list[tuple[int, str]] = []
    for end in sorted(switches):
        rendered = _render(tree, end)
        if out and out[-1][1] == rendered:
            out[-1] = (end, rendered)
        else:
            out.append((end, rendered))
    return out


# ---------------------------------------------------------------------------------------------
# 4. emphasis

_BREAK = re.compile(r"\s*\bBREAK\b\s*", re.S)
_CLOSING_WEIGHT = re.compile(r":\s*([+-]?[.\d]+)\s*\)")
BREAK = "BREAK"


def _scan(text: str):
    """The emphasis tokens of `text`: ("lit", chars), ("(",), ("[",), (")", weight or None), ("]",)."""
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "\\":
            nxt = text[i + 1] if i + 1 < n else ""
            if nxt in ("(", ")", "[", "]", "\\"):
                yield ("lit", nxt)
                i += 2
            else:
                yield ("lit", "\\")
                i += 1
        elif ch in "([]":
            yield (ch,)
            i += 1
        elif ch == ")":
            yield (")", None)
            i += 1
        elif ch == ":":
            m = _CLOSING_WEIGHT.match(text, i)
            if m:
                yield (")", m.group(1), m.group(0))
                i = m.end()
            else:
                yield ("lit", ":")
                i += 1
        else:
            j = i
            while j < n and text[j] not in "\\()[]:":
                j += 1
            yield ("lit", text[i:j])
            i = j


def parse_attention(text: str) -> list[tuple[str, float]]:
    """[(text, weight)] with AUTOMATIC1111's emphasis rules; a BREAK is the pair ("BREAK", -1).
    Unmatched brackets: a closing one is literal text, an opening one still counts to the end.
    (A1111 multiplies a BREAK inside brackets too, which turns it into the word "BREAK" with a
    negative weight; here it stays a BREAK.)

    >>> parse_attention("a (red:1.5) [circle]")
    [('a ', 1.0), ('red', 1.5), (' ', 1.0), ('circle', 0.9090909090909091)]
    """
    res: list[list] = []
    round_, square = [], []

    def multiply(start: int, factor: float) -> None:
        for p in range(start, len(res)):
            if res[p][0] != BREAK or res[p][1] != -1.0:     # a BREAK stays a BREAK inside ( )
                res[p][1] *= factor

    def literal(chars: str) -> None:
        for i, part in enumerate(_BREAK.split(chars)):
            if i > 0:
                res.append([BREAK, -1.0])
            if part:
                res.append([part, 1.0])

    for tok in _scan(text):
        kind = tok[0]
        if kind == "lit":
            literal(tok[1])
        elif kind == "(":
            round_.append(len(res))
        elif kind == "[":
            square.append(len(res))
        elif kind == ")" and round_:
            weight = EMPHASIS
            if tok[1] is not None:
                try:
                    weight = float(tok[1])
                except ValueError:          # "(a:1.2.3)": the weight is text
                    literal(tok[2][:-1])
            multiply(round_.pop(), weight)
        elif kind == ")":
            literal(tok[2] if len(tok) > 2 else ")")
        elif kind == "]" and square:
            multiply(square.pop(), 1 / EMPHASIS)
        else:
            literal("]")
    for pos in round_:
        multiply(pos, EMPHASIS)
    for pos in square:
        multiply(pos, 1 / EMPHASIS)
    return _merged(res)


def _merged(res: list[list]) -> list[tuple[str, float]]:
    """Neighbouring pieces of the same weight as one (a BREAK stays apart)."""
    if not res:
        return [("", 1.0)]
    merged: list[list] = [res[0]]
    for text_, w in res[1:]:
        if w == merged[-1][1] and BREAK not in (text_, merged[-1][0]):
            merged[-1][0] += text_
        else:
            merged.append([text_, w])
    return [(t, w) for t, w in merged]


# ---------------------------------------------------------------------------------------------
# The whole prompt of a request

@dataclass
class ParsedPrompt:
    """What a request's prompts mean, for the conditioning and for showing the user."""
    prompt: str                                   # as typed (after presets and styles)
    negative: str                                 # typed + presets + inline negatives, deduplicated
    positive_text: str                            # the prompt without tags and inline negatives
    moved_negatives: list[str] = field(default_factory=list)
    loras: list[tuple[str, str]] = field(default_factory=list)   # from <lora:...> tags

    def schedules(self, steps: int) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
        return schedule(self.positive_text, steps), schedule(self.negative, steps)


def parse_prompts(prompt: str, negative: str) -> ParsedPrompt:
    text, loras = take_lora_tags(prompt)
    neg_text, neg_loras = take_lora_tags(negative)
    text, moved = take_inline_negatives(text)
    return ParsedPrompt(prompt=prompt, negative=merge_negatives(neg_text, moved), positive_text=text,
                        moved_negatives=moved, loras=loras + neg_loras)
