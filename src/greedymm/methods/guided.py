"""Balanced multi-modal learning, guided by the conditional learning speed (Wu et al., ICML 2022, Alg. 1).

docs/PAPER.md section 5, for N branches as docs/DESIGN.md section 3 extends it: after a regular step past warm-up, if
d_speed > alpha (N = 2: |d_speed| > alpha), the next Q steps re-balance branch argmax_k s_k (N = 2: k = 0 when
d_speed > 0, else 1: the paper's rule); re-balancing branch k replaces its MMTM gates by their running means, so
it learns from m_k alone. After the Q-th re-balancing step the next step is regular again. Warm-up: as in the
authors' code, the first re-balancing step is global step P * warmup_epochs + 1 (see ``StepInfo.in_warmup``).
Needs MMTM gates: a model without a re-balancing mode per modality (late fusion) is refused.
"""

from __future__ import annotations

from typing import Any

from ..models.modes import Mode
from ..models.modes import rebalance as rebalance_mode
from ..models.network import MultiModalNet
from .base import REGULAR, HParam, Method, StepInfo, register_method


def check_rebalancing(name: str, model: MultiModalNet) -> None:
    """Refuse a model that has no re-balancing training mode for every modality."""
    modes = model.training_modes()
    if not all(rebalance_mode(k) in modes for k in range(model.n_modalities)):
        raise ValueError(
            f"method {name!r} re-balances a branch by freezing its MMTM gates; a {model.fusion!r}-fusion model has no "
            "gates. Use --fusion mmtm (with two or more modalities), or a method for late fusion (`greedymm list`)"
        )


@register_method("guided")
class Guided(Method):
    hparams = {
        "alpha": HParam(0.01, "re-balance when |d_speed| > alpha (recommended 0.01)", type=float, low=0),
        "Q": HParam(5, "re-balancing steps per window (recommended 5)", low=1),
    }
    fusions = ("mmtm",)
    leaves_unused_parameters = True  # the re-balanced branch's gate layer gets no gradient

    def __init__(self, seed: int = 0, **hparams: Any) -> None:
        super().__init__(seed, **hparams)
        self.remaining = 0  # re-balancing steps still to run in the current window

    def check(self, model: MultiModalNet) -> None:
        check_rebalancing(self.name, model)

    def next_mode(self, info: StepInfo) -> Mode:
        if info.mode != REGULAR:
            self.remaining -= 1
            return info.mode if self.remaining > 0 else REGULAR
        d = info.d_speed
        triggered = abs(d) > self.h["alpha"] if info.n_modalities == 2 else d > self.h["alpha"]
        if info.in_warmup or not triggered:  # (a NaN d_speed never triggers)
            return REGULAR
        self.remaining = self.h["Q"]
        if info.n_modalities == 2:
            return rebalance_mode(0 if d > 0 else 1)
        return rebalance_mode(max(range(len(info.speeds)), key=lambda k: info.speeds[k]))

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "remaining": self.remaining}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.remaining = state["remaining"]
