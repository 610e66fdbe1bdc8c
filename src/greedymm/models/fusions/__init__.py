"""The late fusions of family (b), one file each behind a registry (``FUSION_HEADS``): concat, sum, film, gated.

Every module in this folder registers its fusion when the package is imported, so a new late fusion is one new
file here (plus its name in ``greedymm.choices.LATE_FUSIONS``).
"""

import importlib
import pkgutil

from .base import FUSION_HEADS, Fusion, ParamSlice, register_fusion

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")

from .concat import ConcatFusion  # noqa: E402
from .film import FiLMFusion  # noqa: E402
from .gated import GatedFusion  # noqa: E402
from .sum import SumFusion  # noqa: E402

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
