"""Family (b): encoders, late fusion, one fused head, optional uni-modal heads (DESIGN.md section 1b).

Fusions (METHODS.md section 6, as the field's official code builds them; z_k is modality k's pooled feature):
    concat   Linear(sum_k d_k -> C) on [z_1; ...; z_N]
    sum      sum_k Linear_k(d_k -> C)(z_k)
    film     two modalities: (gamma, beta) = split(Linear(d_0 -> 2 d_1)(z_0)); Linear(d_1 -> C)(gamma * z_1 + beta)
    gated    two modalities: Linear(h -> C)(sigmoid(Linear(d_0 -> h)(z_0)) * Linear(d_1 -> h)(z_1)), h = d_1
In FiLM and gated the first modality conditions the second (order them with --modalities).
A uni-modal model is this family with one modality (its fusion is one linear layer).

Modes: "regular", and for the utilization pass "drop<j>": z_j replaced by its train-split mean (DESIGN 2b).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..distributed import all_reduce_
from .branch import Branch
from .network import LATE, MultiModalNet, Output

LATE_FUSIONS = ("concat", "sum", "film", "gated")
TWO_MODALITY_FUSIONS = ("film", "gated")


class ConcatFusion(nn.Module):
    def __init__(self, dims: Sequence[int], num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(sum(dims), num_classes)

    def forward(self, zs: Sequence[Tensor]) -> Tensor:
        return self.fc(torch.cat(list(zs), dim=1))


class SumFusion(nn.Module):
    def __init__(self, dims: Sequence[int], num_classes: int) -> None:
        super().__init__()
        self.fcs = nn.ModuleList(nn.Linear(d, num_classes) for d in dims)

    def forward(self, zs: Sequence[Tensor]) -> Tensor:
        outs = [fc(z) for fc, z in zip(self.fcs, zs, strict=True)]
        return sum(outs[1:], start=outs[0])


class FiLMFusion(nn.Module):
    def __init__(self, dims: Sequence[int], num_classes: int) -> None:
        super().__init__()
        self.film = nn.Linear(dims[0], 2 * dims[1])
        self.fc_out = nn.Linear(dims[1], num_classes)

    def forward(self, zs: Sequence[Tensor]) -> Tensor:
        gamma, beta = self.film(zs[0]).chunk(2, dim=1)
        return self.fc_out(gamma * zs[1] + beta)


class GatedFusion(nn.Module):
    def __init__(self, dims: Sequence[int], num_classes: int) -> None:
        super().__init__()
        self.fc_x = nn.Linear(dims[0], dims[1])
        self.fc_y = nn.Linear(dims[1], dims[1])
        self.fc_out = nn.Linear(dims[1], num_classes)

    def forward(self, zs: Sequence[Tensor]) -> Tensor:
        return self.fc_out(torch.sigmoid(self.fc_x(zs[0])) * self.fc_y(zs[1]))


_FUSION_MODULES = {"concat": ConcatFusion, "sum": SumFusion, "film": FiLMFusion, "gated": GatedFusion}


class FeatureMeans(nn.Module):
    """Train-split means of the pooled features (float64 sums), for the "drop" passes."""

    def __init__(self, dims: Sequence[int]) -> None:
        super().__init__()
        self.dims = tuple(dims)
        for k, d in enumerate(dims):
            self.register_buffer(f"mean{k}", torch.zeros(d, dtype=torch.float64))
            self.register_buffer(f"sum{k}", torch.zeros(d, dtype=torch.float64))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))
        self.record_squeeze = False

    def buffer(self, name: str, k: int) -> Tensor:
        return getattr(self, f"{name}{k}")

    @torch.no_grad()
    def accumulate(self, zs: Sequence[Tensor]) -> None:
        self.count += zs[0].shape[0]
        for k, z in enumerate(zs):
            self.buffer("sum", k).add_(z.detach().double().sum(dim=0))

    @torch.no_grad()
    def reset_squeeze_sums(self) -> None:
        self.count.zero_()
        for k in range(len(self.dims)):
            self.buffer("sum", k).zero_()

    @torch.no_grad()
    def commit_squeeze_means(self) -> bool:
        for t in (self.count, *(self.buffer("sum", k) for k in range(len(self.dims)))):
            all_reduce_(t)
        if int(self.count) == 0:
            return False
        for k in range(len(self.dims)):
            self.buffer("mean", k).copy_(self.buffer("sum", k) / self.count)
        return True


class LateFusionNet(MultiModalNet):
    """Encoders (branches without heads) -> pooled features -> one fusion head; optional uni-modal heads."""

    family = LATE

    def __init__(
        self,
        encoders: Sequence[Branch],
        modalities: Sequence[str],
        num_classes: int,
        fusion: str = "concat",
        unimodal_heads: bool = False,
    ) -> None:
        super().__init__(modalities)
        if fusion not in _FUSION_MODULES:
            raise ValueError(f"unknown late fusion {fusion!r}; choose one of {LATE_FUSIONS} (or mmtm)")
        if len(encoders) != len(modalities):
            raise ValueError(f"one encoder per modality: {len(encoders)} encoders for {list(modalities)}")
        if fusion in TWO_MODALITY_FUSIONS and len(modalities) != 2:
            raise ValueError(
                f"{fusion} fusion is defined for exactly two modalities (the first conditions the second), got "
                f"{list(modalities)}; use concat or sum for {len(modalities)}"
            )
        self.fusion = fusion if len(modalities) > 1 else "none"
        self.encoders = nn.ModuleList(encoders)
        dims = [e.out_features for e in encoders]
        self.head = _FUSION_MODULES[fusion](dims, num_classes)
        self.unimodal_heads = nn.ModuleList(nn.Linear(d, num_classes) for d in dims) if unimodal_heads else None
        self.means = FeatureMeans(dims)

    def forward_modes(self, inputs: dict[str, Tensor], modes: Sequence[str]) -> dict[str, Output]:
        drops = {mode: self._parse(mode) for mode in modes}
        zs = [e.encode(x) for e, x in zip(self.encoders, self._inputs(inputs), strict=True)]  # (B, d_k) each
        if self.training or self.means.record_squeeze:
            self.means.accumulate(zs)
        heads = tuple(h(z) for h, z in zip(self.unimodal_heads, zs, strict=True)) if self.unimodal_heads else ()
        out = {}
        for mode, j in drops.items():
            used = list(zs)
            if j >= 0:
                used[j] = self.means.buffer("mean", j).to(zs[j].dtype).expand_as(zs[j])
            out[mode] = Output(self.head(used), heads, tuple(zs))
        return out

    def _parse(self, mode: str) -> int:
        if mode == "regular":
            return -1
        if mode.startswith("drop") and mode[4:].isdigit() and int(mode[4:]) < self.n_modalities:
            return int(mode[4:])
        valid = ["regular", *self.utilization_modes()]
        raise ValueError(f"unknown mode {mode!r} for a late-fusion model; choose one of {valid}")

    def utilization_modes(self, pairwise: bool = False) -> tuple[str, ...]:
        return tuple(f"drop{j}" for j in range(self.n_modalities))

    def loss(self, out: Output, y: Tensor) -> Tensor:
        return nn.functional.cross_entropy(out.logits, y)

    def speed_groups(self) -> list[list[nn.Parameter]]:
        """theta_k = encoder k (there is no psi: no gates; DESIGN section 3 logs mu(theta_k) only)."""
        return [list(e.parameters()) for e in self.encoders]

    def encoder(self, k: int) -> nn.Module:
        return self.encoders[k]

    def _mean_holders(self) -> list[nn.Module]:
        return [self.means]
