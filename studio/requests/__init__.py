"""Requests: the one object that crosses from every caller to the engine, its fields' table and
the boundary that checks them.

    request.py    GenerationRequest (its fields declared once, in the API's order), the result types
    boundary.py   make_request: every field checked, then the checks of pairs of fields
    parsers.py    the fields read by functions of their own (pictures, LoRAs, references...)
    hires.py      the hires fix's own fields (a tool composing two requests) and their check
"""

from studio.requests.boundary import make_request
from studio.requests.request import (CFG_RANGE, CLIP_SKIP_RANGE, LORA_WEIGHT_RANGE, MAX_SEED, MIN_SIDE, MODES,
                                     STEPS_RANGE, GeneratedImage, GenerationRequest, GenerationResult, Limits,
                                     Mode, request_field, request_fields)

__all__ = ["CFG_RANGE", "CLIP_SKIP_RANGE", "LORA_WEIGHT_RANGE", "MAX_SEED", "MIN_SIDE", "MODES", "STEPS_RANGE",
           "GeneratedImage", "GenerationRequest", "GenerationResult", "Limits", "Mode", "make_request",
           "request_field", "request_fields"]
