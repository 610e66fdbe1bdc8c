"""The random variant of balanced learning (the authors' ablation, SPEC.md section 5).

After warm-up each step is drawn uniformly from {regular, re-balance 0, re-balance 1}; no speeds, no alpha, no
window. The draws come from the method's own seeded generator, which is part of its state.
"""

from __future__ import annotations

from typing import Any

import torch

from .base import REBALANCE, REGULAR, Method, StepInfo, register_method

_CHOICES = (REGULAR, *REBALANCE)


@register_method("random")
class RandomRebalance(Method):
    rebalances = True

    def __init__(self, seed: int = 0, **hparams: Any) -> None:
        super().__init__(seed, **hparams)
        self.generator = torch.Generator().manual_seed(10_007 + seed)

    def next_mode(self, info: StepInfo) -> str:
        if info.step + 1 < info.warmup_steps:
            return REGULAR
        return _CHOICES[int(torch.randint(3, (1,), generator=self.generator))]

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.generator.set_state(state["generator"])
