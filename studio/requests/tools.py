"""The fields of the tools a tab runs around its request (hires fix, SD upscale, Restore faces,
the detailer), each declared in its own table: what a plain request leaves out."""

from __future__ import annotations

from typing import Any

from studio.requests.detailer import FIELDS as DETAILER_FIELDS, detailer_fields
from studio.requests.face_restoration import FIELDS as FACE_FIELDS, face_fields
from studio.requests.hires import FIELDS as HIRES_FIELDS
from studio.requests.sd_upscale import FIELDS as SD_UPSCALE_FIELDS, sd_upscale_fields

TOOL_FIELDS = frozenset((*HIRES_FIELDS, *SD_UPSCALE_FIELDS, *DETAILER_FIELDS, *FACE_FIELDS))
# the tools that record each field under its label (the switch first): PNG Info reads them back
# (the hires fix writes A1111's own keys, read apart)
RECORDED_BY_LABEL = (sd_upscale_fields, face_fields, detailer_fields)


def without_tools(raw: dict[str, Any]) -> dict[str, Any]:
    """A tab's or a caller's fields without any tool's."""
    return {k: v for k, v in raw.items() if k not in TOOL_FIELDS}
