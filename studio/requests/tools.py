"""The fields of the tools a tab runs around its request (hires fix, SD upscale, detailer), each
declared in its own table: what a plain request leaves out."""

from __future__ import annotations

from typing import Any

from studio.requests.detailer import FIELDS as DETAILER_FIELDS
from studio.requests.hires import FIELDS as HIRES_FIELDS
from studio.requests.sd_upscale import FIELDS as SD_UPSCALE_FIELDS

TOOL_FIELDS = frozenset((*HIRES_FIELDS, *SD_UPSCALE_FIELDS, *DETAILER_FIELDS))


def without_tools(raw: dict[str, Any]) -> dict[str, Any]:
    """A tab's or a caller's fields without any tool's."""
    return {k: v for k, v in raw.items() if k not in TOOL_FIELDS}
