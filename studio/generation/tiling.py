"""Tiling: pictures that continue across their edges (seamless textures), left-right, top-bottom
or both. Every padded convolution of the UNet and the VAE pads circularly along the tiled axes
(the far edge's pixels stand next to the near edge's) and with zeros along the others, for one
generation: the layers are shared with other requests, so they are put back afterwards.
"""

from __future__ import annotations

import contextlib

AXES = {"off": (False, False), "x": (True, False), "y": (False, True), "both": (True, True)}


def _conv_forward(conv, wrap_x: bool, wrap_y: bool):
    import torch.nn.functional as F

    pad_y, pad_x = conv.padding

    def forward(input, weight, bias):
        x = F.pad(input, (pad_x, pad_x, 0, 0), mode="circular" if wrap_x else "constant")
        x = F.pad(x, (0, 0, pad_y, pad_y), mode="circular" if wrap_y else "constant")
        return F.conv2d(x, weight, bias, conv.stride, 0, conv.dilation, conv.groups)
    return forward


def padded_convolutions(*modules) -> list:
    import torch

    return [m for module in modules if module is not None for m in module.modules()
            if isinstance(m, torch.nn.Conv2d) and isinstance(m.padding, tuple) and any(m.padding)]


@contextlib.contextmanager
def tiling(axes: str, *modules):
    """`modules` (the UNet, the VAE) pad circularly along `axes` ("x", "y", "both"; "off": as they
    are) while the block runs."""
    wrap_x, wrap_y = AXES[axes]
    convs = padded_convolutions(*modules) if (wrap_x or wrap_y) else []
    try:
        for conv in convs:
            conv._conv_forward = _conv_forward(conv, wrap_x, wrap_y)
        yield
    finally:
        for conv in convs:
            conv.__dict__.pop("_conv_forward", None)
