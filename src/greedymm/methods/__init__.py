"""Training methods (vanilla, guided balanced learning, its random variant) behind one registry."""

from . import guided, random, vanilla  # noqa: F401  (registers the methods)
from .base import (
    REBALANCE,
    REGULAR,
    Method,
    StepInfo,
    create_method,
    list_methods,
    method_class,
    register_method,
)

__all__ = [
    "REBALANCE",
    "REGULAR",
    "Method",
    "StepInfo",
    "create_method",
    "list_methods",
    "method_class",
    "register_method",
]
