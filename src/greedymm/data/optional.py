"""Packages only some data sets need, imported when first used.

A core install (``pip install greedymm``) reads the CG sets and the generated ones; the NVGesture sets (video
decoding, optical flow: OpenCV) and the ModelNet40 stand-in generator (meshes: trimesh) need an extra. Each
module that needs one binds ``cv2 = optional_module("cv2", ...)`` and uses it as usual; the import happens at
the first attribute read, and a missing package raises ``MissingExtra`` naming the extra to install.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

# module -> (pip package, greedymm extra, what needs it)
EXTRAS = {
    "cv2": ("opencv-python-headless", "video", "NVGesture (video decoding and optical flow)"),
    "trimesh": ("trimesh", "mesh", "the ModelNet40 stand-in generator (`greedymm data make modelnet-standin`)"),
}


class MissingExtra(ImportError):
    """An optional package is not installed; the message names the extra that installs it."""


def require(module: str) -> ModuleType:
    """Import ``module`` (a key of ``EXTRAS``) or raise ``MissingExtra`` with the install command."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        package, extra, user = EXTRAS[module]
        raise MissingExtra(
            f"{user} needs {package}, which is not installed; install it with pip install 'greedymm[{extra}]' "
            f"(or pip install {package})"
        ) from err


class _LazyModule:
    """Stands for a module until first used; then imports it (``require``) and forwards every attribute."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._module: ModuleType | None = None

    def __getattr__(self, attr: str) -> Any:
        if self._module is None:
            self._module = require(self._name)
        return getattr(self._module, attr)

    def __repr__(self) -> str:
        return f"<optional module {self._name!r} ({'loaded' if self._module else 'not loaded yet'})>"


def optional_module(name: str) -> Any:
    """A stand-in for ``import name`` that imports on first use (``name`` must be a key of ``EXTRAS``)."""
    if name not in EXTRAS:
        raise KeyError(f"{name!r} is not an optional module; known: {sorted(EXTRAS)}")
    return _LazyModule(name)
