"""Balanced multi-modal learning, guided by the conditional learning speed (Wu et al., ICML 2022, Alg. 1).

SPEC.md section 5: after a regular step past warm-up, if |d_speed| > alpha, the next Q steps re-balance
branch k = 0 if d_speed > 0 else 1 (branch k's gates are replaced by their running means, so it learns from
m_k alone); after the Q-th re-balancing step the next step is regular again.
"""

from __future__ import annotations

from typing import Any

from .base import REBALANCE, REGULAR, Method, StepInfo, register_method


@register_method("guided")
class Guided(Method):
    rebalances = True
    hparams = {"alpha": 0.01, "Q": 5}

    def __init__(self, seed: int = 0, **hparams: Any) -> None:
        super().__init__(seed, **hparams)
        alpha, q = self.h["alpha"], self.h["Q"]
        if not isinstance(alpha, (int, float)) or alpha < 0:
            raise ValueError(f"alpha must be a number >= 0 (recommended 0.01), got {alpha!r}")
        if not isinstance(q, int) or isinstance(q, bool) or q < 1:
            raise ValueError(f"Q must be an integer >= 1 (recommended 5), got {q!r}")
        self.remaining = 0  # re-balancing steps still to run in the current window

    def next_mode(self, info: StepInfo) -> str:
        if info.mode != REGULAR:
            self.remaining -= 1
            return info.mode if self.remaining > 0 else REGULAR
        if info.step + 1 < info.warmup_steps or not abs(info.d_speed) > self.h["alpha"]:
            return REGULAR  # (a NaN d_speed never triggers)
        self.remaining = self.h["Q"]
        return REBALANCE[0] if info.d_speed > 0 else REBALANCE[1]

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "remaining": self.remaining}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.remaining = state["remaining"]
