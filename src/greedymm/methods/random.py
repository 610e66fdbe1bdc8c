"""The random variant of balanced learning (the authors' ablation, docs/PAPER.md section 5), for N branches.

After warm-up each step is drawn uniformly from {regular, re-balance 0, ..., re-balance N-1}; no speeds, no alpha,
no window. The draws come from the method's own seeded generator, which is part of its state (and identical on
every rank, since every rank seeds it alike and draws once a step).
"""

from __future__ import annotations

from typing import Any

import torch

from ..models.modes import Mode
from ..models.modes import rebalance as rebalance_mode
from ..models.network import MultiModalNet
from .base import REGULAR, Method, StepInfo, register_method
from .guided import check_rebalancing


@register_method("random")
class RandomRebalance(Method):
    fusions = ("mmtm",)
    leaves_unused_parameters = True

    def __init__(self, seed: int = 0, **hparams: Any) -> None:
        super().__init__(seed, **hparams)
        self.generator = torch.Generator().manual_seed(10_007 + seed)

    def check(self, model: MultiModalNet) -> None:
        check_rebalancing(self.name, model)

    def next_mode(self, info: StepInfo) -> Mode:
        if info.in_warmup:
            return REGULAR
        choice = int(torch.randint(info.n_modalities + 1, (1,), generator=self.generator))
        return REGULAR if choice == 0 else rebalance_mode(choice - 1)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.generator.set_state(state["generator"])
