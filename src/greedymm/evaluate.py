"""Evaluation in regular mode, with the conditional utilization rate computed in the same sweep.

Each batch runs the stages before the first MMTM once and the rest twice: in regular mode (A(f_0), A(f_1) and the
fused accuracy) and in "cut" mode (A(f_0'), A(f_1') from one forward, SPEC.md section 3).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .data import eval_order
from .data.base import Split
from .distributed import all_reduce_, rank, world_size
from .metrics import Utilization
from .models import TwoBranchNet


@torch.no_grad()
def evaluate(
    model: TwoBranchNet,
    split: Split,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    utilization: bool = True,
) -> dict[str, float]:
    """Accuracy of the fused prediction and of each head, loss, and (optionally) u and d_util."""
    was_training = model.training
    model.eval()
    modes = ["regular", "cut"] if utilization else ["regular"]
    # correct counts: fused, head0, head1, head0_cut, head1_cut; kept on the device until the end
    correct = torch.zeros(5, dtype=torch.long, device=device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    n = 0
    for idx in eval_order(len(split), batch_size, rank(), world_size()):
        x, y = split.batch(idx)
        x = {k: v.to(device, non_blocking=True) for k, v in x.items()}
        y = y.to(device, non_blocking=True)
        out = model.forward_modes(x, modes)
        l0, l1 = out["regular"]
        loss_sum += (F.cross_entropy(l0, y, reduction="sum") + F.cross_entropy(l1, y, reduction="sum")).double()
        hits = [TwoBranchNet.fuse((l0, l1)), l0, l1]
        if utilization:
            hits += list(out["cut"])
        correct[: len(hits)] += torch.stack([(h.argmax(1) == y).sum() for h in hits])
        n += len(y)
    model.train(was_training)
    totals = all_reduce_(torch.cat([correct.double(), loss_sum.view(1), torch.tensor([float(n)], device=device)]))
    n = int(totals[-1])
    loss_sum = totals[5]
    c = (totals[:5] / max(n, 1)).tolist()
    metrics = {"n": n, "loss": float(loss_sum) / max(n, 1), "acc": c[0], "acc_head0": c[1], "acc_head1": c[2]}
    if utilization:
        u = Utilization(c[1], c[2], c[3], c[4])
        metrics.update({"acc_head0_cut": c[3], "acc_head1_cut": c[4], **u.as_dict()})
    return metrics


@torch.no_grad()
def record_train_squeeze_means(
    model: TwoBranchNet,
    split: Split,
    batch_size: int = 256,
    subset: int = 0,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> None:
    """The exact train-split squeeze means: an eval-mode pass over (a fixed subset of) the training split."""
    was_training = model.training
    model.eval()
    n = len(split)
    if subset and subset < n:
        idx_all = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:subset].sort().values
    else:
        idx_all = torch.arange(n)
    model.reset_squeeze_sums()
    with model.recording_squeeze():
        for idx in idx_all.split(batch_size):
            x, _ = split.batch(idx)
            model({k: v.to(device) for k, v in x.items()})
    model.commit_squeeze_means()
    model.train(was_training)
