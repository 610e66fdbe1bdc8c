"""Backbones, fusions and the two model families of docs/DESIGN.md; ``build_model`` makes one from names.

family (a) ``MMTMNet`` (mmtm_net.py): N branches joined by N-way MMTM (mmtm.py), one head per branch (the paper's
network for N = 2); family (b) ``LateFusionNet`` (late_fusion.py): encoders + a late fusion from ``fusions/``
(concat, sum, FiLM, gated: one file each), one fused head (N = 1: uni-modal).
Both implement ``MultiModalNet`` (network.py), the interface the rest of greedymm uses; forward modes are ``Mode``
values (modes.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn

from ..choices import FUSIONS, LATE_FUSIONS
from .branch import Branch, count_parameters
from .cnn import SMALL_CNN_FUSE_AFTER, pmr_convnet, small_cnn
from .fusions import FUSION_HEADS, Fusion, ParamSlice, register_fusion
from .i3d import I3D_FUSE_AFTER, i3d_branch
from .late_fusion import FeatureMeans, LateFusionNet
from .mlp import MLP_FUSE_AFTER, mlp
from .mmtm import MMTM
from .mmtm_net import MMTMNet
from .modes import CUT, REGULAR, Mode, drop, rebalance, remove
from .network import INTERMEDIATE, LATE, EvalPass, MultiModalNet, Output, SpeedLayout
from .resnet import RESNET18_FUSE_AFTER, resnet18_branch, resnet18_small_branch
from .seq1d import SEQ1D_FUSE_AFTER, seq1d
from .text import TEXT_FUSE_AFTER, one_hot_tokens, text

# fusions whose prediction splits into per-modality logits without new parameters (as the networks declare:
# MMTMNet's branch heads, and the late fusions whose ``Fusion.splits`` is true)
SPLITTING_FUSIONS = ("mmtm", *(name for name in LATE_FUSIONS if FUSION_HEADS[name].splits))

# name -> (branch builder(in_channels, num_classes or None, width), stages followed by MMTM)
ARCHITECTURES: dict[str, tuple[Callable[..., Branch], tuple[int, ...]]] = {
    "small-cnn": (small_cnn, SMALL_CNN_FUSE_AFTER),
    "pmr-convnet": (pmr_convnet, SMALL_CNN_FUSE_AFTER),  # PMR's CG-MNIST encoder, 512-d feature
    "i3d": (i3d_branch, I3D_FUSE_AFTER),
    "resnet18": (resnet18_branch, RESNET18_FUSE_AFTER),
    "resnet18-small": (resnet18_small_branch, RESNET18_FUSE_AFTER),  # 3x3 stride-1 stem for tiny CPU images
    "mlp": (mlp, MLP_FUSE_AFTER),  # tabular views: a feature vector per item
    "seq1d": (seq1d, SEQ1D_FUSE_AFTER),  # padded 1-D signals with a mask channel (inertial sensors, MFCCs)
    "text": (text, TEXT_FUSE_AFTER),  # one-hot tokens with a mask channel: embedding + 1-D convolutions
}


def _line_up(branches: list[Branch], archs: Sequence[str]) -> tuple[int, ...]:
    """Branches of different architectures in one MMTM network: each must be followed by MMTM after its last K
    stages (K the same for all); the stages before the first of them are merged into that stage, so stage i of
    every branch ends at its i-th fusion point. Returns the common ``fuse_after`` (0..K-1)."""
    points = [ARCHITECTURES[a][1] for a in archs]
    counts = {len(p) for p in points}
    if len(counts) != 1:
        raise ValueError(
            f"architectures {list(archs)} have different numbers of MMTM points {[len(p) for p in points]}; MMTM "
            "joins branches stage by stage, so pick architectures with as many fusion points, or a late fusion"
        )
    k = counts.pop()
    for branch, p, a in zip(branches, points, archs, strict=True):
        n = len(branch.stages)
        if tuple(p) != tuple(range(n - k, n)):
            raise ValueError(f"architecture {a!r} is not fused after its last {k} stages ({p}); it cannot be mixed")
        lead = n - k
        if lead:
            branch.stages = nn.ModuleList([nn.Sequential(*branch.stages[: lead + 1]), *branch.stages[lead + 1 :]])
            branch.channels = branch.channels[lead:]
    return tuple(range(k))


def build_model(
    arch: str | Sequence[str],
    modalities: Sequence[str],
    in_channels: Sequence[int],
    num_classes: int,
    width: float = 1.0,
    gate: str = "sigmoid",
    ratio: float = 4.0,
    fusion: str = "mmtm",
    unimodal_heads: bool = False,
) -> MultiModalNet:
    """A family (a) network for ``fusion="mmtm"`` (two or more modalities), family (b) otherwise.

    With one modality the model is uni-modal (family (b): encoder and one linear head) whatever ``fusion`` says.
    ``unimodal_heads`` adds a linear head per modality to a late-fusion model (methods that train them ask).
    ``arch``: one architecture for every branch, or one per modality (e.g. ``("small-cnn", "text")``); under MMTM
    mixed architectures need as many fusion points each (``_line_up``).
    """
    archs = [arch] * len(modalities) if isinstance(arch, str) else list(arch)
    for a in dict.fromkeys(archs):
        if a not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {a!r}; choose one of {sorted(ARCHITECTURES)}")
    if len(archs) != len(modalities):
        raise ValueError(f"one architecture per modality: {archs} for modalities {list(modalities)}")
    if fusion not in FUSIONS:
        raise ValueError(f"unknown fusion {fusion!r}; choose one of {FUSIONS}")
    if not width > 0:
        raise ValueError(f"width must be > 0 (1.0 is the paper's size), got {width}")
    if len(in_channels) != len(modalities):
        raise ValueError(f"one channel count per modality: {list(in_channels)} for {list(modalities)}")
    if fusion == "mmtm" and len(modalities) >= 2:
        branches = [ARCHITECTURES[a][0](c, num_classes, width=width) for a, c in zip(archs, in_channels, strict=True)]
        same = len({ARCHITECTURES[a][1] for a in archs}) == 1 and len({len(b.stages) for b in branches}) == 1
        fuse_after = ARCHITECTURES[archs[0]][1] if same else _line_up(branches, archs)
        return MMTMNet(branches, fuse_after, modalities, ratio=ratio, gate=gate)
    encoders = [ARCHITECTURES[a][0](c, None, width=width) for a, c in zip(archs, in_channels, strict=True)]
    late = "concat" if fusion == "mmtm" else fusion  # one modality: a single linear head
    return LateFusionNet(encoders, modalities, num_classes, fusion=late, unimodal_heads=unimodal_heads)


__all__ = [
    "ARCHITECTURES",
    "CUT",
    "FUSIONS",
    "FUSION_HEADS",
    "INTERMEDIATE",
    "LATE",
    "LATE_FUSIONS",
    "MMTM",
    "REGULAR",
    "SPLITTING_FUSIONS",
    "Branch",
    "EvalPass",
    "FeatureMeans",
    "Fusion",
    "LateFusionNet",
    "MMTMNet",
    "Mode",
    "MultiModalNet",
    "Output",
    "ParamSlice",
    "SpeedLayout",
    "build_model",
    "count_parameters",
    "drop",
    "one_hot_tokens",
    "rebalance",
    "register_fusion",
    "remove",
]
