"""spandrel, the library that reads model files of image architectures from their tensors alone:
upscalers (ESRGAN, SwinIR, DAT ...) and face restorers (GFPGAN, RestoreFormer; CodeFormer through
spandrel-extra-arches, whose licences are non-commercial: installed by the user, never by the
studio). An optional extra: `pip install "sd-studio[restore]"`.

spandrel imports torchvision for two helpers only (RestoreFormer's `normalize`, LaMa's `rotate`),
and torchvision's wheels often cannot import beside a CPU or custom torch ("operator
torchvision::nms does not exist"). Where torchvision is missing or broken, spandrel is imported
with a stand-in for just those names — `normalize` done as torchvision does it, `rotate` refusing
with a clear message — that exists only while spandrel imports (the names are bound in spandrel's
modules then), so no other library ever sees a torchvision that is not there.

Files are read as state dicts only: .safetensors, or .pth through torch's weights-only unpickler.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
import types
from pathlib import Path

from studio.errors import StudioError

INSTALL = "pip install spandrel einops (or sd-studio[restore])"
_lock = threading.Lock()
_module: types.ModuleType | None = None


def spandrel() -> types.ModuleType:
    """The spandrel module (with spandrel-extra-arches' architectures when that is installed)."""
    global _module
    with _lock:
        if _module is None:
            _module = _import()
        return _module


def available() -> bool:
    """Whether spandrel imports here (model upscalers and face restorers can run)."""
    try:
        spandrel()
        return True
    except StudioError:
        return False


def read_model(path: Path, what: str):
    """A spandrel model descriptor for the file at `path` (`what` names the kind in messages:
    "an upscaler", "a face restorer")."""
    import torch
    library = spandrel()
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file
            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
        return library.ModelLoader().load_from_state_dict(state)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's to replace
        raise StudioError(f"{path.name} is not {what} spandrel can read: {exc}") from None


def _import() -> types.ModuleType:
    if importlib.util.find_spec("spandrel") is None:
        raise StudioError(f"Upscaler and face-restorer files need spandrel: {INSTALL}.")
    if not _torchvision_imports():
        with _torchvision_stand_in():
            module = importlib.import_module("spandrel")
            extra = _extra_arches()
    else:
        module = importlib.import_module("spandrel")
        extra = _extra_arches()
    if extra is not None:
        extra.install(ignore_duplicates=True)
    return module


def _extra_arches() -> types.ModuleType | None:
    if importlib.util.find_spec("spandrel_extra_arches") is None:
        return None
    return importlib.import_module("spandrel_extra_arches")


def _torchvision_imports() -> bool:
    if importlib.util.find_spec("torchvision") is None:
        return False
    try:
        importlib.import_module("torchvision.transforms.functional")
        return True
    except Exception:  # noqa: BLE001 - a torchvision built for another torch fails in many ways
        _forget("torchvision")
        return False


def _forget(package: str) -> None:
    for name in [n for n in sys.modules if n == package or n.startswith(package + ".")]:
        del sys.modules[name]


class _torchvision_stand_in:
    """torchvision.transforms.functional's two names that spandrel imports, while it imports."""
    NAMES = ("torchvision", "torchvision.transforms", "torchvision.transforms.functional")

    def __enter__(self):
        import enum
        functional = types.ModuleType("torchvision.transforms.functional")
        functional.normalize = _normalize
        functional.rotate = _rotate
        functional.InterpolationMode = enum.Enum("InterpolationMode", "NEAREST BILINEAR BICUBIC")
        modules = [types.ModuleType(self.NAMES[0]), types.ModuleType(self.NAMES[1]), functional]
        modules[0].transforms, modules[1].functional = modules[1], functional
        sys.modules.update(dict(zip(self.NAMES, modules)))
        return self

    def __exit__(self, *exc):
        for name in self.NAMES:
            sys.modules.pop(name, None)
        return False


def _normalize(tensor, mean, std, inplace: bool = False):
    """torchvision's normalize: (x - mean) / std per channel of a (..., C, H, W) tensor."""
    import torch
    mean = torch.as_tensor(mean, dtype=tensor.dtype, device=tensor.device).view(-1, 1, 1)
    std = torch.as_tensor(std, dtype=tensor.dtype, device=tensor.device).view(-1, 1, 1)
    return tensor.sub_(mean).div_(std) if inplace else (tensor - mean) / std


def _rotate(*args, **kwargs):
    raise StudioError("This architecture (LaMa) needs torchvision, which does not import beside this torch.")
