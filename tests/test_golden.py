"""The pictures and records of fixed requests do not change unless a change means them to
(tests/golden.py says how to record them again): txt2img, img2img, inpainting, a plot's cells and
grid, a hires fix's two passes and a live picture, made through the dispatcher as callers make them."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from tests.golden import FOLDER, RECORD, cpu_kind, make_all


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    return make_all(tmp_path_factory.mktemp("golden"))


@pytest.fixture(scope="module")
def record():
    return json.loads(RECORD.read_text())


def test_every_path_makes_the_recorded_pictures(made, record):
    assert sorted(made) == sorted(record["cases"])
    for name, items in made.items():
        expected = record["cases"][name]
        assert len(items) == len(expected), name
        for i, ((entry, image), want) in enumerate(zip(items, expected)):
            where = f"{name}[{i}]"
            assert entry["size"] == want["size"], where
            assert entry["parameters"] == want["parameters"], where
            assert entry.get("data") == want.get("data"), where
            assert entry.get("saved") == want.get("saved"), where
            if record["cpu"] == cpu_kind():
                assert entry["sha256"] == want["sha256"], f"{where}: the pixels changed"
            else:       # other CPU kernels round differently: close to the stored picture
                stored = np.asarray(Image.open(FOLDER / f"{name}-{i}.png").convert("RGB"), dtype=np.int16)
                diff = np.abs(np.asarray(image, dtype=np.int16) - stored)
                assert diff.mean() < 1.0 and diff.max() <= 24, f"{where}: mean {diff.mean():.2f} max {diff.max()}"
