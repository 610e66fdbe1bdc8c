"""Training methods (vanilla, guided balanced learning, its random variant) behind one registry and contract."""

from . import guided, random, vanilla  # noqa: F401  (registers the methods)
from .base import (
    REGULAR,
    EpochInfo,
    Method,
    StepInfo,
    create_method,
    list_methods,
    method_class,
    rebalance_mode,
    register_method,
)

__all__ = [
    "REGULAR",
    "EpochInfo",
    "Method",
    "StepInfo",
    "create_method",
    "list_methods",
    "method_class",
    "rebalance_mode",
    "register_method",
]
