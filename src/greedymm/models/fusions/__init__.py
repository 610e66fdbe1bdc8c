"""The late fusions of family (b), one file each behind a registry (``FUSION_HEADS``): concat, sum, film, gated.

Every module in this folder registers its fusion when the package is imported, so a new late fusion is one new
file here (plus its name in ``greedymm.choices.LATE_FUSIONS``).
"""

import importlib
import pkgutil

from .base import FUSION_HEADS, Fusion, ParamSlice, register_fusion
from .concat import ConcatFusion
from .film import FiLMFusion
from .gated import GatedFusion
from .sum import SumFusion

for _module in pkgutil.iter_modules(__path__):  # any other fusion file in this folder registers itself too
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "FUSION_HEADS",
    "ConcatFusion",
    "FiLMFusion",
    "Fusion",
    "GatedFusion",
    "ParamSlice",
    "SumFusion",
    "register_fusion",
]
