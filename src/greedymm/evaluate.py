"""Evaluation in regular mode, with the conditional utilization rate computed in the same sweep.

Each batch runs the shared part of the network once (the stages before the first MMTM, or the encoders of a
late-fusion model) and then every evaluation pass the model declares (``MultiModalNet.eval_passes``, docs/DESIGN.md
section 2): MMTM's single cut pass gives A(f_k') for every head at once; a late-fusion model runs one drop pass per
modality. Each pass names the accuracies it yields; the model turns them into utilization rates
(``MultiModalNet.utilization``). Names for two modalities with MMTM are the paper's (acc_head0_cut, u_m1_given_m0,
d_util, ...).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch

from .data import eval_order
from .data.base import Split
from .distributed import all_reduce_, rank, world_size
from .models import REGULAR, MultiModalNet
from .precision import autocast, inputs_channels_last


@torch.no_grad()
def evaluate(
    model: MultiModalNet,
    split: Split,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    utilization: bool = True,
    pairwise: bool = False,
    precision: str = "fp32",
    channels_last: bool = False,
    name: str = "the evaluated split",
) -> dict[str, Any]:
    """Accuracy of the prediction and of each head, loss, utilization rates (see the module docstring).
    ``name``: the split's name in error messages ("val", "test")."""
    batches = (split.batch(idx) for idx in eval_order(len(split), batch_size, rank(), world_size()))
    return evaluate_batches(model, batches, device, utilization, pairwise, precision, channels_last, name)


@torch.no_grad()
def evaluate_batches(
    model: MultiModalNet,
    batches: Iterable[tuple[Mapping[str, torch.Tensor], torch.Tensor]],
    device: str | torch.device | None = None,
    utilization: bool = True,
    pairwise: bool = False,
    precision: str = "fp32",
    channels_last: bool = False,
    name: str = "the evaluated data",
) -> dict[str, Any]:
    """``evaluate`` over any iterable of ``(inputs by modality, labels)`` batches, e.g. a DataLoader (under DDP,
    each rank's own shard; the counts are summed over ranks). ``device``: default, the model's.

    Refuses (``FloatingPointError``, naming ``name`` and the number of items) when any item's logits in any pass
    are NaN or infinite: no accuracy or utilization is computed from them; refuses no items at all (``ValueError``).
    Utilization needs the train-split means: refused (``ValueError``) before they were first committed
    (``Balancer.epoch_end``)."""
    utilization = utilization and model.n_modalities > 1  # nothing to take away from a uni-modal model
    if utilization and not model.has_means():
        raise ValueError(
            "no train-split means yet, and the utilization passes replace a modality with its mean: evaluate after "
            "Balancer.epoch_end() (it commits the means of the epoch's training forwards), or record them with "
            "greedymm.evaluate.record_train_means(model, train_split) (`greedymm eval --squeeze-means exact` for a "
            "checkpoint saved before its first epoch ended); utilization=False gives accuracy alone"
        )
    was_training = model.training
    model.eval()
    passes = model.eval_passes(utilization, pairwise)
    modes = [p.mode for p in passes]
    cols = [name for p in passes for name in p.names]
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    correct = torch.zeros(len(cols), dtype=torch.long, device=dev)  # kept on the device until the end
    loss_sum = torch.zeros((), dtype=torch.float64, device=dev)
    bad = torch.zeros((), dtype=torch.float64, device=dev)  # items with a non-finite logit in any pass
    n = 0
    for x, y in batches:
        x = {k: v.to(dev, non_blocking=True) for k, v in x.items()}
        x = inputs_channels_last(x) if channels_last else x
        y = y.to(dev, non_blocking=True)
        with autocast(precision, dev):
            out = model.forward_modes(x, modes)
        # the model's training loss without method terms, summed over items (MMTM: sum of the heads' CEs)
        loss_sum += model.eval_loss(out[REGULAR], y).double()
        hits = [h for p in passes for h in p.scored(out[p.mode])]
        correct += torch.stack([(h.argmax(1) == y).sum() for h in hits])
        bad += (~torch.stack([torch.isfinite(h).all(1) for h in hits]).all(0)).sum()
        n += len(y)
    model.train(was_training)
    extra = torch.tensor([float(n)], device=dev)
    totals = all_reduce_(torch.cat([correct.double(), loss_sum.view(1), bad.view(1), extra]))
    n, bad = int(totals[-1]), int(totals[-2])
    if n == 0:
        raise ValueError(f"{name}: no items to evaluate (an empty split or loader); no accuracy comes from nothing")
    if bad:
        raise FloatingPointError(
            f"{name}: {bad} of {n} items give non-finite logits (NaN or Inf); no accuracy or utilization is "
            "computed from them. Check those inputs for NaN or infinite values, or the model's weights (a diverged "
            "run)"
        )
    acc = dict(zip(cols, (totals[: len(cols)] / max(n, 1)).tolist(), strict=True))
    metrics: dict[str, Any] = {"n": n, "loss": float(totals[len(cols)]) / max(n, 1), **acc}
    if utilization:
        metrics.update(model.utilization(acc, pairwise))
    return metrics


@torch.no_grad()
def record_train_squeeze_means(
    model: MultiModalNet,
    split: Split,
    batch_size: int = 256,
    subset: int = 0,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> None:
    """The exact train-split means (squeeze vectors or pooled features): an eval-mode pass over (a fixed subset
    of) the training split."""
    was_training = model.training
    model.eval()
    n = len(split)
    if subset and subset < n:
        idx_all = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:subset].sort().values
    else:
        idx_all = torch.arange(n)
    model.reset_means()
    with model.recording_means():
        for idx in idx_all.split(batch_size):
            x, _ = split.batch(idx)
            model({k: v.to(device) for k, v in x.items()})
    model.commit_means()
    model.train(was_training)


record_train_means = record_train_squeeze_means  # the name for both families' means
