"""The model interface: what every multi-modal network in greedymm declares, so nothing outside ``models/`` asks
which family it is (docs/DESIGN.md section 1).

A network reads ``dict[modality, Tensor]`` and returns an ``Output``: the prediction's logits, the logits of every
uni-modal head it has, and the pooled feature of every modality. Besides the forward pass it declares:

    training modes          ``training_modes()``: the ``Mode`` values a training step may run in
    evaluation              ``eval_passes(utilization, pairwise)``: the modes an evaluation runs and, per mode, the
                            logits it scores and their accuracy names; ``eval_loss``; ``utilization(acc, pairwise)``:
                            the utilization rates computed from those accuracies
    loss                    ``loss(out, y)``: the default training loss (a method may replace it)
    learning speed          ``speed_groups()`` and ``speed_layout()`` (the steps.csv / results.jsonl names)
    uni-modal heads         ``has_unimodal_heads``, ``unimodal_logits(x, k)``
    per-modality parts      ``encoder(k)`` and ``encoder_head(k)``; ``splits_per_modality`` and, when it does,
                            ``modality_logits(out)`` and ``modality_slices(k)`` (the fusion parameters that read
                            modality k only); ``output_weights()``
    train-split means       ``reset_means`` / ``commit_means`` / ``recording_means`` (the utilization passes
                            replace a modality with them)

``family`` and ``fusion`` are plain attributes for the records (results.jsonl writes them); nothing branches on them.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..choices import LATE_FUSIONS
from .fusions import FUSION_HEADS, ParamSlice
from .modes import REGULAR, Mode

INTERMEDIATE = "intermediate"  # family (a) record name: MMTM between the branches, one head per branch
LATE = "late"  # family (b) record name: encoders, one fused head (and optional uni-modal heads)

K = TypeVar("K", bound=Hashable)


class Output(NamedTuple):
    """One forward pass. A NamedTuple, so DistributedDataParallel finds every tensor in it."""

    logits: Tensor  # (B, num_classes): the multi-modal prediction
    heads: tuple[Tensor, ...]  # (B, num_classes) per uni-modal head, in modality order (may be empty)
    features: tuple[Tensor, ...]  # (B, d_k) pooled feature per modality, in modality order


@dataclass(frozen=True)
class EvalPass:
    """One forward mode of an evaluation: the logits it scores (``scored(out)``) and their accuracy names."""

    mode: Mode
    names: tuple[str, ...]
    scored: Callable[[Output], Sequence[Tensor]]


@dataclass(frozen=True)
class SpeedLayout:
    """How the learning-speed groups read.

    ``conditional``: the groups are theta_0..theta_{N-1}, psi_0..psi_{N-1}, so the conditional learning speeds
    s_k = log10(M_psi_k / M_theta_k) and d_speed exist; otherwise the groups are theta_k only and each step's
    mu(theta_k) is logged for diagnosis. ``step_names``: the steps.csv columns of the speeds (s_k, or this step's
    mu); ``total_names``: the speed record of results.jsonl (s_k, or the cumulative M_theta_k).
    """

    conditional: bool
    step_names: tuple[str, ...]
    total_names: tuple[str, ...]


class MultiModalNet(nn.Module):
    """Base of every network; a family subclasses it and implements what the module docstring lists."""

    family: str = ""  # for the records only
    fusion: str = ""  # for the records only

    def __init__(self, modalities: Sequence[str]) -> None:
        super().__init__()
        if len(set(modalities)) != len(modalities) or not modalities:
            raise ValueError(f"modalities must be distinct names, at least one, got {list(modalities)}")
        self.modalities = tuple(modalities)

    @property
    def n_modalities(self) -> int:
        return len(self.modalities)

    def _inputs(self, inputs: dict[str, Tensor]) -> list[Tensor]:
        missing = [m for m in self.modalities if m not in inputs]
        if missing:
            raise KeyError(f"inputs lack modalities {missing}; the model reads {list(self.modalities)}")
        return [inputs[m] for m in self.modalities]

    # -- forward ------------------------------------------------------------------------------------------
    def forward(self, inputs: dict[str, Tensor], mode: Mode | str = REGULAR) -> Output:
        return self.forward_modes(inputs, [mode])[mode]

    def forward_modes(self, inputs: dict[str, Tensor], modes: Sequence[K]) -> dict[K, Output]:
        """Several modes (``Mode`` values or their names) on one batch, sharing whatever does not depend on the
        mode; the result is keyed as ``modes`` is."""
        parsed = {m: self._check_mode(m) for m in modes}  # refuse an unknown mode before any work
        outs = self._forward_modes(self._inputs(inputs), list(dict.fromkeys(parsed.values())))
        return {m: outs[p] for m, p in parsed.items()}

    def _forward_modes(self, xs: list[Tensor], modes: list[Mode]) -> dict[Mode, Output]:
        raise NotImplementedError

    def modes(self) -> tuple[Mode, ...]:
        """Every mode this network runs: training and evaluation."""
        return tuple(dict.fromkeys((*self.training_modes(), *self.utilization_modes(pairwise=True))))

    def _check_mode(self, mode: Mode | str) -> Mode:
        m = Mode.parse(mode)
        if m not in self.modes():
            valid = [str(v) for v in self.modes()]
            raise ValueError(f"unknown mode {str(mode)!r} for a {type(self).__name__}; choose one of {valid}")
        return m

    # -- training -----------------------------------------------------------------------------------------
    def training_modes(self) -> tuple[Mode, ...]:
        """Modes a training step may run in."""
        return (REGULAR,)

    def loss(self, out: Output, y: Tensor) -> Tensor:
        """The default training loss of the network (a method may replace it)."""
        raise NotImplementedError

    def speed_groups(self) -> list[list[nn.Parameter]]:
        """Parameter groups whose gradient-to-weight ratios the speed tracker accumulates (see ``speed_layout``)."""
        raise NotImplementedError

    def speed_layout(self) -> SpeedLayout:
        raise NotImplementedError

    # -- evaluation ---------------------------------------------------------------------------------------
    def utilization_modes(self, pairwise: bool = False) -> tuple[Mode, ...]:
        """Modes an evaluation runs besides the regular one to measure utilization."""
        raise NotImplementedError

    def eval_passes(self, utilization: bool = True, pairwise: bool = False) -> tuple[EvalPass, ...]:
        """The regular pass first (acc, acc_head<k>), then the utilization passes when asked."""
        raise NotImplementedError

    def eval_loss(self, out: Output, y: Tensor) -> Tensor:
        """The default loss without method terms, summed over the items (not averaged)."""
        raise NotImplementedError

    def utilization(self, acc: Mapping[str, float], pairwise: bool = False) -> dict[str, Any]:
        """Utilization rates (u_..., d_util for two modalities, util_spread, least_used) from the accuracies the
        evaluation passes produced (``acc`` keyed by their names)."""
        raise NotImplementedError

    # -- per modality -------------------------------------------------------------------------------------
    def encoder(self, k: int) -> nn.Module:
        """The module that reads modality k (for methods that act on one modality's parameters)."""
        raise NotImplementedError

    def encoder_head(self, k: int) -> nn.Module | None:
        """The classification head inside ``encoder(k)``, if it has one (methods that act on an encoder's feature
        extractor leave it out)."""
        return None

    @property
    def has_unimodal_heads(self) -> bool:
        """Whether ``Output.heads`` holds one uni-modal head's logits per modality."""
        raise NotImplementedError

    def unimodal_logits(self, inputs: dict[str, Tensor], k: int) -> Tensor:
        """The logits of modality k's uni-modal head computed from modality k's input alone."""
        raise NotImplementedError

    @property
    def splits_per_modality(self) -> bool:
        """Whether the prediction splits into per-modality logits with no extra parameters (``modality_logits``,
        ``modality_slices``)."""
        return False

    def modality_logits(self, out: Output) -> list[Tensor]:
        """o_m for every modality m, from the forward ``out``: (B, C) each."""
        raise ValueError(self.cannot_split())

    def modality_slices(self, k: int) -> list[ParamSlice]:
        """Parts of parameters outside ``encoder(k)`` that read modality k only (e.g. the columns of a concat
        head's weight that multiply z_k)."""
        raise ValueError(self.cannot_split())

    def cannot_split(self) -> str:
        """Why this network has no per-modality logits, and the fix."""
        late = ", ".join(name for name in LATE_FUSIONS if FUSION_HEADS[name].splits)
        return (
            f"a {self.fusion!r}-fusion model has no per-modality logits (its prediction does not split into one part "
            f"per modality without new parameters); use --fusion {late} or mmtm"
        )

    def output_weights(self) -> list[Tensor]:
        """The weight(s) of the layer(s) that output the logits."""
        raise NotImplementedError

    # -- train-split means used by the utilization passes -------------------------------------------------
    def _mean_holders(self) -> list[nn.Module]:
        raise NotImplementedError

    def reset_means(self) -> None:
        """Clear the sums the next train-split means come from."""
        for m in self._mean_holders():
            m.reset_sums()

    def commit_means(self) -> bool:
        """Turn the sums into the means (all-reduced); False (means kept) if nothing was recorded."""
        return all([m.commit_means() for m in self._mean_holders()])

    def has_means(self) -> bool:
        """Whether train-split means were committed (until the first commit they are all exactly zero)."""
        return all(m.has_means() for m in self._mean_holders())

    @contextmanager
    def recording_means(self) -> Iterator[None]:
        """Accumulate the sums on eval-mode forwards too (the exact train-split pass)."""
        holders = self._mean_holders()
        for m in holders:
            m.recording = True
        try:
            yield
        finally:
            for m in holders:
                m.recording = False

    # the names these had when only MMTM squeeze vectors were averaged
    reset_squeeze_sums = reset_means
    commit_squeeze_means = commit_means
    recording_squeeze = recording_means


def heads_loss(heads: Sequence[Tensor], y: Tensor) -> Tensor:
    """Sum of the heads' cross-entropies (the paper's loss for N = 2: CE(y_0, t) + CE(y_1, t))."""
    return sum((F.cross_entropy(h, y) for h in heads), start=torch.zeros((), device=y.device))


def summed_ce(logits: Sequence[Tensor], y: Tensor) -> Tensor:
    """sum_k CE(logits_k, y) summed over the items (the evaluation loss of one or more heads)."""
    terms = [F.cross_entropy(h, y, reduction="sum") for h in logits]
    return sum(terms[1:], start=terms[0])
