"""Family (a): N uni-modal branches joined by N-way MMTM, one head per branch (SPEC.md section 1, DESIGN.md 1a).

Branch k reads modality m_k and ends in its own linear head (logits y_k). MMTM modules join the branches after
some of their stages. The prediction is the mean of the heads' logits; the training loss is the sum of the
heads' cross-entropies. With two branches this is the paper's network, parameter for parameter. Parameter
groups theta_k / psi_k come from the module tree.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from .branch import Branch, pool
from .mmtm import MMTM, parse_mode
from .network import INTERMEDIATE, MultiModalNet, Output, heads_loss


class MMTMNet(MultiModalNet):
    """N >= 2 branches fused by MMTM after the stages listed in ``fuse_after`` (0-based stage indices)."""

    family = INTERMEDIATE
    fusion = "mmtm"

    def __init__(
        self,
        branches: Sequence[Branch],
        fuse_after: Sequence[int],
        modalities: Sequence[str],
        ratio: float = 4.0,
        gate: str = "sigmoid",
    ) -> None:
        super().__init__(modalities)
        if len(branches) < 2 or len(branches) != len(modalities):
            raise ValueError(
                f"MMTM fusion needs two or more branches, one per modality; got {len(branches)} branches for "
                f"modalities {list(modalities)} (a uni-modal model is a late-fusion model with one modality)"
            )
        if any(b.head is None for b in branches):
            raise ValueError("every branch of an MMTM network needs its own head (build it with num_classes)")
        n_stages = len(branches[0].stages)
        if any(len(b.stages) != n_stages for b in branches):
            raise ValueError("all branches must have the same number of stages")
        if sorted(set(fuse_after)) != list(fuse_after) or not fuse_after:
            raise ValueError(f"fuse_after must be strictly increasing and non-empty, got {fuse_after}")
        if fuse_after[0] < 0 or fuse_after[-1] >= n_stages:
            raise ValueError(f"fuse_after {fuse_after} out of range for {n_stages} stages")
        self.branches = nn.ModuleList(branches)
        self.fuse_after = tuple(fuse_after)
        self.fusions = nn.ModuleList(
            MMTM(*(b.channels[i] for b in branches), ratio=ratio, gate=gate) for i in fuse_after
        )

    # -- forward ---------------------------------------------------------------------------------------
    def _stem(self, xs: list[Tensor]) -> list[Tensor]:
        # the stages before the first MMTM do not depend on the mode, so passes can share them
        for i in range(self.fuse_after[0] + 1):
            xs = [b.stages[i](x) for b, x in zip(self.branches, xs, strict=True)]
        return xs

    def _rest(self, xs: list[Tensor], mode: str) -> Output:
        fusions = dict(zip(self.fuse_after, self.fusions, strict=True))
        first = self.fuse_after[0]
        for i in range(first, len(self.branches[0].stages)):
            if i > first:
                xs = [b.stages[i](x) for b, x in zip(self.branches, xs, strict=True)]
            if i in fusions:
                xs = list(fusions[i](*xs, mode=mode))
        features = tuple(pool(x) for x in xs)
        heads = tuple(b.head(z) for b, z in zip(self.branches, features, strict=True))
        return Output(self.fuse(heads), heads, features)

    def forward_modes(self, inputs: dict[str, Tensor], modes: Sequence[str]) -> dict[str, Output]:
        for mode in modes:
            parse_mode(mode, self.n_modalities)  # refuse an unknown mode before any work
        stem = self._stem(self._inputs(inputs))
        return {mode: self._rest(stem, mode) for mode in modes}

    @staticmethod
    def fuse(heads: Sequence[Tensor]) -> Tensor:
        """The multi-modal prediction: mean of the heads' logits."""
        return sum(heads[1:], start=heads[0]) / len(heads)

    def training_modes(self) -> tuple[str, ...]:
        return ("regular", *(f"rebalance{k}" for k in range(self.n_modalities)))

    def utilization_modes(self, pairwise: bool = False) -> tuple[str, ...]:
        removes = tuple(f"remove{j}" for j in range(self.n_modalities)) if pairwise else ()
        return ("cut", *removes)

    def loss(self, out: Output, y: Tensor) -> Tensor:
        return heads_loss(out.heads, y)

    # -- parameter groups (SPEC section 1, DESIGN section 3), from the module tree ---------------------
    def theta(self, k: int) -> list[nn.Parameter]:
        """Everything in branch k, its head included."""
        return list(self.branches[k].parameters())

    def psi(self, k: int) -> list[nn.Parameter]:
        """The shared squeeze layer of every MMTM plus the gate layer into branch k."""
        params: list[nn.Parameter] = []
        for f in self.fusions:
            params += list(f.squeeze.parameters()) + list(f.gates[k].parameters())
        return params

    def speed_groups(self) -> list[list[nn.Parameter]]:
        """theta_0, ..., theta_{N-1}, psi_0, ..., psi_{N-1}."""
        n = self.n_modalities
        return [self.theta(k) for k in range(n)] + [self.psi(k) for k in range(n)]

    def encoder(self, k: int) -> nn.Module:
        return self.branches[k]

    def _mean_holders(self) -> list[nn.Module]:
        return list(self.fusions)
