"""Family (b): encoders, a late fusion, one fused head, optional uni-modal heads (docs/DESIGN.md section 1b).

The fusion head is one of ``fusions.FUSION_HEADS`` (concat, sum for any N; film, gated for two modalities: one
file each in ``fusions/``). A uni-modal model is this family with one modality (its fusion is one linear layer).

What it declares (``MultiModalNet``): training mode regular; evaluation passes regular (acc, and acc_head<k> when
it has uni-modal heads) and drop(j) (acc_drop<j>: z_j replaced by its train-split mean, docs/DESIGN.md section
2b); utilization u(m_j) = (A(f) - A(f^{-j})) / A(f) (d_util = u(m1) - u(m0) for N = 2); speed groups theta_k =
encoder k (each step's mu logged, no conditional speed); per-modality logits and parameter slices when its fusion
splits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..choices import LATE_FUSIONS
from ..distributed import all_reduce_
from ..metrics.speed import mu_names
from ..metrics.utilization import own_util_names, utilization_rate, utilization_summary
from ..precision import KeepsFloat64
from .branch import Branch
from .fusions import FUSION_HEADS, ParamSlice
from .modes import REGULAR, Mode, drop
from .network import LATE, EvalPass, MultiModalNet, Output, SpeedLayout, summed_ce

_WORDS = {1: "one", 2: "two", 3: "three"}


class FeatureMeans(KeepsFloat64):
    """Train-split means of the pooled features z_k (float64 sums), which the drop(j) passes put in place of z_j.
    The buffers stay float64 under dtype casts such as ``model.float()``."""

    def __init__(self, dims: Sequence[int]) -> None:
        super().__init__()
        self.dims = tuple(dims)
        for k, d in enumerate(dims):
            self.register_buffer(f"mean{k}", torch.zeros(d, dtype=torch.float64))
            self.register_buffer(f"sum{k}", torch.zeros(d, dtype=torch.float64))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))
        self.recording = False  # set by the network's recording_means() for the exact pass

    def buffer(self, name: str, k: int) -> Tensor:
        return getattr(self, f"{name}{k}")

    @torch.no_grad()
    def accumulate(self, zs: Sequence[Tensor]) -> None:
        self.count += zs[0].shape[0]
        for k, z in enumerate(zs):
            self.buffer("sum", k).add_(z.detach().double().sum(dim=0))

    @torch.no_grad()
    def reset_sums(self) -> None:
        self.count.zero_()
        for k in range(len(self.dims)):
            self.buffer("sum", k).zero_()

    @torch.no_grad()
    def commit_means(self) -> bool:
        for t in (self.count, *(self.buffer("sum", k) for k in range(len(self.dims)))):
            all_reduce_(t)
        if int(self.count) == 0:
            return False
        for k in range(len(self.dims)):
            self.buffer("mean", k).copy_(self.buffer("sum", k) / self.count)
        return True

    def has_means(self) -> bool:
        """False until ``commit_means`` first set the means (all zero before)."""
        return any(bool(self.buffer("mean", k).any()) for k in range(len(self.dims)))


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
        if fusion not in FUSION_HEADS:
            raise ValueError(f"unknown late fusion {fusion!r}; choose one of {LATE_FUSIONS} (or mmtm)")
        if len(encoders) != len(modalities):
            raise ValueError(f"one encoder per modality: {len(encoders)} encoders for {list(modalities)}")
        counts = FUSION_HEADS[fusion].n_modalities
        if counts is not None and len(modalities) not in counts:
            raise ValueError(
                f"{fusion} fusion is defined for exactly {' or '.join(_WORDS.get(c, str(c)) for c in counts)} "
                f"modalities (the first conditions the second), got {list(modalities)}; use concat or sum for "
                f"{len(modalities)}"
            )
        self.fusion = fusion if len(modalities) > 1 else "none"
        self.encoders = nn.ModuleList(encoders)
        dims = [e.out_features for e in encoders]
        self.head = FUSION_HEADS[fusion](dims, num_classes)
        self.unimodal_heads = nn.ModuleList(nn.Linear(d, num_classes) for d in dims) if unimodal_heads else None
        self.means = FeatureMeans(dims)

    def _forward_modes(self, xs: list[Tensor], modes: list[Mode]) -> dict[Mode, Output]:
        zs = [e.encode(x) for e, x in zip(self.encoders, xs, strict=True)]  # (B, d_k) each
        if self.training or self.means.recording:
            self.means.accumulate(zs)
        heads = tuple(h(z) for h, z in zip(self.unimodal_heads, zs, strict=True)) if self.unimodal_heads else ()
        out = {}
        for mode in modes:
            used = list(zs)
            if mode.kind == "drop":
                j = mode.index
                used[j] = self.means.buffer("mean", j).to(zs[j].dtype).expand_as(zs[j])
            out[mode] = Output(self.head(used), heads, tuple(zs))
        return out

    def loss(self, out: Output, y: Tensor) -> Tensor:
        return nn.functional.cross_entropy(out.logits, y)

    # -- evaluation ------------------------------------------------------------------------------------
    def utilization_modes(self, pairwise: bool = False) -> tuple[Mode, ...]:
        return tuple(drop(j) for j in range(self.n_modalities))

    def eval_passes(self, utilization: bool = True, pairwise: bool = False) -> tuple[EvalPass, ...]:
        n_heads = self.n_modalities if self.has_unimodal_heads else 0

        def all_logits(out: Output) -> list[Tensor]:
            return [out.logits, *out.heads]

        def fused(out: Output) -> list[Tensor]:
            return [out.logits]

        passes = [EvalPass(REGULAR, ("acc", *(f"acc_head{k}" for k in range(n_heads))), all_logits)]
        if utilization:
            passes += [EvalPass(mode, (f"acc_{mode}",), fused) for mode in self.utilization_modes(pairwise)]
        return tuple(passes)

    def eval_loss(self, out: Output, y: Tensor) -> Tensor:
        return summed_ce([out.logits], y)

    def utilization(self, acc: Mapping[str, float], pairwise: bool = False) -> dict[str, Any]:
        n = self.n_modalities
        u = [utilization_rate(acc["acc"], acc[f"acc_{drop(j)}"]) for j in range(n)]
        out: dict[str, Any] = dict(zip(own_util_names(n), u, strict=True))
        out.update(utilization_summary(u, of_others=False))
        return out

    # -- learning speed ----------------------------------------------------------------------------------
    def speed_groups(self) -> list[list[nn.Parameter]]:
        """theta_k = encoder k (there is no psi: no gates; docs/DESIGN.md section 3 logs mu(theta_k) only)."""
        return [list(e.parameters()) for e in self.encoders]

    def speed_layout(self) -> SpeedLayout:
        n = self.n_modalities
        return SpeedLayout(False, mu_names(n), tuple(f"M_theta_m{k}" for k in range(n)))

    # -- per modality ----------------------------------------------------------------------------------
    def encoder(self, k: int) -> nn.Module:
        return self.encoders[k]

    @property
    def has_unimodal_heads(self) -> bool:
        return self.unimodal_heads is not None

    def unimodal_logits(self, inputs: dict[str, Tensor], k: int) -> Tensor:
        """Uni-modal head k on encoder k's feature (the other encoders are not run)."""
        if self.unimodal_heads is None:
            raise ValueError(
                "this late-fusion model has no uni-modal heads; build it with unimodal_heads=True "
                "(build_model(..., unimodal_heads=True), or greedymm.late_fusion(..., unimodal_heads=True))"
            )
        return self.unimodal_heads[k](self.encoders[k].encode(inputs[self.modalities[k]]))

    @property
    def splits_per_modality(self) -> bool:
        return self.head.splits

    def modality_logits(self, out: Output) -> list[Tensor]:
        """The fusion head's part for each modality (see ``fusions``), from the forward's features."""
        if not self.head.splits:
            raise ValueError(self.cannot_split())
        return self.head.modality_logits(out.features)

    def modality_slices(self, k: int) -> list[ParamSlice]:
        if not self.head.splits:
            raise ValueError(self.cannot_split())
        return self.head.modality_slices(k)

    def output_weights(self) -> list[Tensor]:
        return self.head.output_weights()

    def _mean_holders(self) -> list[nn.Module]:
        return [self.means]
