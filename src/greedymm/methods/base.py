"""Training methods: one registry, one small hook of the training loop.

A method only decides the mode of the next training step (SPEC.md section 5): "regular", or "rebalance0" /
"rebalance1" (re-balancing step for branch k). The loop calls ``next_mode`` after each backward pass and
never branches on which method it runs.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from fnmatch import fnmatch
from typing import Any

REGULAR = "regular"
REBALANCE = ("rebalance0", "rebalance1")


@dataclass(frozen=True)
class StepInfo:
    """What the loop knows after the backward pass of step ``step`` (0-based, global)."""

    step: int
    mode: str  # the mode this step ran in
    d_speed: float  # current d_speed (NaN if no regular step has been seen yet)
    warmup_steps: int  # steps with index < warmup_steps are warm-up (regular only)


class Method:
    """Base class: vanilla training (regular steps only)."""

    name = "vanilla"
    # hyper-parameters this method reads, with defaults; the registry checks --set names against these
    hparams: dict[str, Any] = {}
    rebalances = False  # whether the method ever asks for re-balancing steps

    def __init__(self, seed: int = 0, **hparams: Any) -> None:
        self.seed = seed
        self.h = {**self.hparams, **hparams}
        self.mode = REGULAR  # mode of the next step

    def next_mode(self, info: StepInfo) -> str:
        """Decide the mode of step ``info.step + 1``; called after each backward pass."""
        return REGULAR

    def observe(self, info: StepInfo) -> None:
        self.mode = self.next_mode(info)

    def state_dict(self) -> dict[str, Any]:
        return {"mode": self.mode}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.mode = state["mode"]


_METHODS: dict[str, type[Method]] = {}


def register_method(name: str) -> Callable[[type[Method]], type[Method]]:
    def wrap(cls: type[Method]) -> type[Method]:
        if name in _METHODS:
            raise ValueError(f"method {name!r} is already registered")
        cls.name = name
        _METHODS[name] = cls
        return cls

    return wrap


def list_methods(pattern: str = "*") -> list[str]:
    return sorted(n for n in _METHODS if fnmatch(n, pattern))


def _suggest(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


def method_class(name: str) -> type[Method]:
    if name not in _METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {list_methods()}.{_suggest(name, list_methods())}")
    return _METHODS[name]


def create_method(name: str, seed: int = 0, **hparams: Any) -> Method:
    cls = method_class(name)
    unknown = [k for k in hparams if k not in cls.hparams]
    if unknown:
        k = unknown[0]
        raise ValueError(
            f"method {name!r} has no hyper-parameter {k!r}; it takes {sorted(cls.hparams) or 'none'}."
            + _suggest(k, list(cls.hparams))
        )
    return cls(seed=seed, **hparams)
