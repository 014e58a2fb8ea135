"""Regional Prompter's REST form: `alwayson_scripts: {"Regional Prompter": {"args": [...]}}` in
/sdapi/v1/txt2img and img2img, its positional arguments as its clients send them (the order of
its UI: active, debug, divide mode, matrix submode, mask submode, prompt submode, divide ratio,
base ratio, use base, use common, use negative common, calculation mode, options, ...).

It becomes the studio's own regional prompt (studio/control/regions.py): the prompt's BREAKs turn
into the keywords Regional Prompter would put there (ADDCOMM with "use common", ADDBASE with "use
base", then ADDCOL in Columns mode, ADDROW in Rows mode, or both by the groups of a `;` ratio),
the ratios into the fields regions_ratio and base_ratio. What the studio does not do (Mask and
Prompt modes, the Latent calculation) is a 400 that says so, never a picture without regions.
"""

from __future__ import annotations

import re
from typing import Any

from studio.api.schema import Txt2ImgBody
from studio.errors import InvalidRequest
from studio.requests.request import REGION_KEYWORDS as KEYS

SCRIPT = "regional prompter"
# the positional arguments the conversion reads (the rest are LoRA and mask settings)
ARGS = ("active", "debug", "mode", "matrix", "mask", "prompt_mode", "ratios", "base_ratios", "use_base",
        "use_common", "use_negative_common", "calculation", "options")
DEFAULTS = dict(active=False, mode="Matrix", matrix="Columns", ratios="1,1", base_ratios="0.2", use_base=False,
                use_common=False, calculation="Attention", options=False)
# Regional Prompter's matrix submodes: its current names and the ones it had before
SPLITS = {"columns": "ADDCOL", "horizontal": "ADDCOL", "rows": "ADDROW", "vertical": "ADDROW"}


def is_regional_prompter(title: str) -> bool:
    return title.strip().lower() == SCRIPT


def arguments(body: Txt2ImgBody) -> dict[str, Any] | None:
    """The script's arguments by name (None: not sent, or not active)."""
    entry = next((v for k, v in (body.alwayson_scripts or {}).items() if is_regional_prompter(k)), None)
    args = entry.get("args") if isinstance(entry, dict) else entry
    if not args:
        return None
    if not isinstance(args, list):
        raise InvalidRequest("alwayson_scripts['Regional Prompter'].args must be a list, in the order of its UI.")
    named = {**DEFAULTS, **dict(zip(ARGS, args))}
    return named if named["active"] is True or str(named["active"]).lower() == "true" else None


def fields(body: Txt2ImgBody) -> dict[str, Any]:
    """The request fields Regional Prompter's arguments ask for: the prompt with its keywords,
    regions_ratio and base_ratio; nothing when it is off or the prompt has no region in it."""
    named = arguments(body)
    if named is None:
        return {}
    _refuse_what_is_not_here(named)
    prompt = body.prompt or ""
    if not _option(named["options"], "disable convert 'and' to 'break'"):
        prompt = re.sub(r"\bAND\b", "BREAK", prompt)
    if "BREAK" not in prompt and not KEYS.search(prompt):
        return {}                                 # as Regional Prompter: no region asked for, plain
    ratios = str(named["ratios"] or "").strip()
    if not KEYS.search(prompt.replace("ADDCOMM", "").replace("ADDBASE", "")):
        prompt = _keywords(prompt, named, ratios)
    base = _base_ratio(str(named["base_ratios"]))
    return {"prompt": prompt, "regions_ratio": ratios, **({"base_ratio": base} if base is not None else {})}


def _refuse_what_is_not_here(named: dict) -> None:
    mode = str(named["mode"] or "Matrix").strip().lower()
    if mode == "mask":
        raise InvalidRequest("Regional Prompter's Mask mode is not available here: send the painting as "
                             "`regions_mask` (a base64 picture, one colour a region: red, green, blue...) with the "
                             "prompt's parts joined by ADDCOL, the first for what is left unpainted.")
    if mode not in ("matrix", "nope"):
        raise InvalidRequest(f"Regional Prompter's {named['mode']} mode is not available here: use Matrix "
                             "(ADDCOL / ADDROW or BREAK with a divide ratio).")
    if not str(named["calculation"] or "Attention").strip().lower().startswith("att"):
        raise InvalidRequest(f"Regional Prompter's {named['calculation']} calculation is not available here: "
                             "regions are applied by Attention.")
    if str(named["matrix"]).strip().lower() not in SPLITS:
        raise InvalidRequest(f"Regional Prompter's matrix submode {named['matrix']!r}: Columns or Rows.")


def _option(options: Any, name: str) -> bool:
    if isinstance(options, bool):
        return options            # Regional Prompter's old form: a checkbox for this one option
    items = options.split(",") if isinstance(options, str) else list(options or [])
    return any(str(o).strip().lower() == name for o in items)


def _keywords(prompt: str, named: dict, ratios: str) -> str:
    """The prompt's BREAKs as Regional Prompter turns them into its keywords, in order."""
    parts = prompt.split("BREAK")
    keys = []
    if named["use_common"] is True and "ADDCOMM" not in prompt:
        keys.append("ADDCOMM")
    if named["use_base"] is True and "ADDBASE" not in prompt:
        keys.append("ADDBASE")
    split = SPLITS[str(named["matrix"]).strip().lower()]
    if ";" in ratios:
        if split == "ADDROW":
            raise InvalidRequest("Regional Prompter's Rows mode with a ';' ratio (columns of rows) is not "
                                 "available here: give it row by row in Columns mode (height,widths;...).")
        for g, group in enumerate(ratios.split(";")):
            columns = max(1, len([v for v in group.split(",") if v.strip()]) - 1)
            keys += (["ADDROW"] if g else []) + ["ADDCOL"] * (columns - 1)
    keys += [split] * (len(parts) - 1 - len(keys))
    if len(keys) > len(parts) - 1:
        raise InvalidRequest(f"Regional Prompter: the divide ratio {ratios!r} asks for more regions than the "
                             f"prompt's {len(parts)} parts (BREAK separates them).")
    out = parts[0]
    for key, part in zip(keys, parts[1:]):
        out += f"{key}{part}"
    return out


def _base_ratio(text: str) -> float | None:
    """One base ratio for every region (the studio's); several equal ones are that one."""
    values = {v.strip() for v in text.split(",") if v.strip()}
    if not values:
        return None
    try:
        numbers = {float(v) for v in values}
    except ValueError:
        raise InvalidRequest(f"Regional Prompter's base ratio {text!r} must be a number like 0.2.") from None
    if len(numbers) > 1:
        raise InvalidRequest(f"Regional Prompter's base ratio {text!r}: one ratio for every region here.")
    return numbers.pop()
