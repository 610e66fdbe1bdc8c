"""Training methods behind one registry and contract; every module in this package registers its method."""

import importlib
import pkgutil

from ..models.modes import rebalance as rebalance_mode
from .base import (
    REGULAR,
    EpochInfo,
    HParam,
    HParamRule,
    Method,
    StepContext,
    StepInfo,
    create_method,
    list_methods,
    method_class,
    optimizer_warning,
    register_method,
)

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "REGULAR",
    "EpochInfo",
    "HParam",
    "HParamRule",
    "Method",
    "StepContext",
    "StepInfo",
    "create_method",
    "list_methods",
    "method_class",
    "optimizer_warning",
    "rebalance_mode",
    "register_method",
]
