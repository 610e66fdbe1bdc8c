"""Gradient-Blending, online (Wang, Tran & Feiszli, CVPR 2020; docs/BASELINES.md section 2).

Loss: L = sum_k w_k CE_k over the heads k in {each modality's uni-modal head, the fused head}, weights in
modality order then the fused head (``weights[M]``), summing to 1:
    late fusion   L = sum_m w_m CE(unimodal_heads[m](z_m)) + w_f CE(fused logits)   (the VMZ model: separate heads)
    MMTM          L = sum_m w_m CE(head m) + w_f CE(mean of the heads' logits)      [proposal, docs/BASELINES.md]
Evaluation uses the model's prediction (the fused head, or the mean of the MMTM heads).

Weights, online: training is split into super-epochs of ``super_epoch`` = n epochs (published default 10, BB
``GBlending_trainer.py``; ours 5 for short CPU runs). At the start of each super-epoch (epochs 0, n, 2n, ...), for
every head k the current model is copied and the copy trained on head k alone (fresh optimizer state) for n epochs;
with L^T the mean CE on the training part and L^V on the held-out part, measured before (N) and after (N + n):
    dG_k = L^V_N - L^V_{N+n}        clipped at 0 (a head whose held-out loss rose gets weight 0)
    dO_k = (L^V - L^T)_{N+n} - (L^V - L^T)_N,     dO_k^2 floored at 1e-8
    w_k  = (dG_k / dO_k^2) / sum_j (dG_j / dO_j^2)                     (``blend_weights``; M + 1 weights for any M)
Then the real model trains n epochs with these weights. ``super_epoch`` >= the run's epochs estimates once (at
epoch 0): the offline variant with an n-epoch estimate.

Held-out data: a fixed ``holdout`` share (default 0.1, as tsai's V_pct) of the TRAINING split, drawn once from the
seed; the copies train on the rest. The real model trains on the whole training split; the validation split stays
for model selection and the test split is never read.

Single-head copies (estimation only): late fusion, head m = encoder m + ``unimodal_heads[m]`` (the other encoders
are not run); MMTM, head m = the whole network with every other modality's input set to zero, loss CE(head m)
(the BB style; docs/BASELINES.md); the fused head = the whole network, loss CE(prediction). The copy's optimizer is not
the run's (EpochInfo does not carry it): ``est_optimizer`` "sgd" (momentum 0.9, no weight decay: greedymm's default
optimizer) or "adam", learning rate ``est_lr`` (default 0.01, greedymm's default lr): set them to the run's.
[our reading] Losses L^T and L^V are measured in eval mode over the whole part (not recorded during training).
When every dG is 0 (no head improved on held-out data) the previous weights are kept (uniform at the start).

What we do NOT copy: BB's abs() (gives weight to a head whose held-out loss rose), its summed losses over unequal
numbers of batches (they scale O arbitrarily), its use of the test set as "validation", and its "uni-modal model" as
the fused head with other inputs zeroed for late fusion (we use the separate heads, as VMZ). VMZ's stored
``add_weighted_loss`` passes ``prefix=`` for ``loss_prefix=`` (a TypeError); irrelevant here.

Determinism and resume: the estimation runs under a forked RNG seeded from (seed, epoch, k) and reads batches in an
order fixed by (seed, epoch), so it does not disturb the run's random draws, and re-running it on resume at a
super-epoch start gives the same weights. Weights and the epoch of the last estimate are in ``state_dict``.
DDP: every rank runs the same estimation on the same (whole) data with synchronized BatchNorm swapped for local
BatchNorm in the copies, so the result is the single-process one; the measured losses are then averaged over ranks
(a no-op on CPU, where ranks agree bit for bit) so GPU non-determinism cannot split the ranks' weights. The
estimation is not sharded: each rank pays its full cost.

Cost: per step, nothing but the uni-modal heads. Per super-epoch, M + 1 copies trained n epochs on 1 - holdout of
the training split plus 2 no-grad loss passes each over the training split: about (M + 1) n extra epochs of
forward and backward (late fusion: the M uni-modal copies run one encoder each, so about 2n), i.e. about
(M + 1) extra forward and backward passes per step (``extra_cost``, for M = 2).
"""

from __future__ import annotations

import copy
import hashlib
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..choices import OPTIMIZERS
from ..data.base import epoch_order
from ..distributed import DistBatchNorm, all_reduce_
from ..models.network import MultiModalNet
from .base import EpochInfo, HParam, Method, StepContext, register_method

DG_MIN, DO2_MIN = 0.0, 1e-8  # the guards of tsai: dG clipped at 0, dO^2 floored


def blend_weights(losses: Sequence[Sequence[float]]) -> list[float] | None:
    """w_k from (L^T_N, L^V_N, L^T_{N+n}, L^V_{N+n}) per head; None when every dG_k is 0 (nothing to blend)."""
    raw = []
    for lt0, lv0, lt1, lv1 in losses:
        dg = max(lv0 - lv1, DG_MIN)
        do = (lv1 - lt1) - (lv0 - lt0)
        raw.append(dg / max(do * do, DO2_MIN))
    total = sum(raw)
    if not total > 0:
        return None
    return [r / total for r in raw]


def _seed(*stream: object) -> int:
    digest = hashlib.sha256(repr(("gblending", *stream)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


class _LocalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Plain BatchNorm for any input rank (the copies' replacement for synchronized BatchNorm)."""

    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2-D input, got {x.dim()}-D")


def _local_batchnorm(module: nn.Module) -> nn.Module:
    for name, child in module.named_children():
        if isinstance(child, (nn.SyncBatchNorm, DistBatchNorm)):
            new = _LocalBatchNorm(
                child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats
            )
            new.load_state_dict(child.state_dict())
            setattr(module, name, new.to(next(iter(child.state_dict().values())).device))
        else:
            _local_batchnorm(child)
    return module


def head_logits(model: MultiModalNet, x: dict[str, Tensor], k: int) -> Tensor:
    """Logits of head k alone: k < M a uni-modal head (see the module docstring), k = M the prediction."""
    if k == model.n_modalities:
        return model(x).logits
    return model.unimodal_logits(x, k)


@torch.no_grad()
def _mean_loss(model: MultiModalNet, k: int, split: Any, idx_all: Tensor, bs: int, dev: torch.device) -> float:
    model.eval()
    total, n = 0.0, 0
    for idx in idx_all.split(bs):
        x, y = split.batch(idx)
        x, y = {m: v.to(dev) for m, v in x.items()}, y.to(dev)
        total += float(F.cross_entropy(head_logits(model, x, k), y, reduction="sum"))
        n += len(y)
    model.train()
    return total / max(n, 1)


@register_method("gblending")
class GBlending(Method):
    hparams = {
        "super_epoch": HParam(5, "n: epochs per super-epoch and per estimate (published default 10)", low=1),
        "holdout": HParam(
            0.1,
            "share of the training split held out for L^V (recommended 0.1)",
            type=float,
            low=0,
            high=1,
            low_open=True,
            high_open=True,
        ),
        "est_lr": HParam(
            0.01, "learning rate of the copies (set it to the run's lr)", type=float, low=0, low_open=True
        ),
        "est_optimizer": HParam(
            "sgd", "optimizer of the copies, sgd (momentum 0.9) or adam (set it to the run's)", choices=OPTIMIZERS
        ),
    }
    fusions = None
    needs_unimodal_heads = True
    extra_cost = {"forward": 3.0, "backward": 3.0}  # (M + 1) copies for M = 2, per step on average

    def __init__(self, seed: int = 0, **hparams: Any) -> None:
        super().__init__(seed, **hparams)
        n, hold, lr, opt = (self.h[k] for k in ("super_epoch", "holdout", "est_lr", "est_optimizer"))
        self.super_epoch, self.holdout, self.est_lr, self.est_optimizer = n, float(hold), float(lr), opt
        self.weights: list[float] | None = None  # w_0..w_{M-1}, w_fused
        self.estimated_at = -1  # epoch of the last estimate
        self.last_losses: list[list[float]] = []  # (L^T_N, L^V_N, L^T_{N+n}, L^V_{N+n}) per head, last estimate

    def check(self, model: MultiModalNet) -> None:
        super().check(model)
        if model.n_modalities < 2:
            raise ValueError(
                "method 'gblending' blends uni-modal and multi-modal heads; a uni-modal model has one head. Train it "
                "with --method vanilla, or give two or more --modalities"
            )
        if not model.has_unimodal_heads:
            raise ValueError(
                "method 'gblending' needs a linear head per modality; build the model with unimodal_heads=True "
                "(greedymm's training loop does this for methods with needs_unimodal_heads)"
            )

    # -- the loss ---------------------------------------------------------------------------------------------
    def loss(self, ctx: StepContext) -> Tensor:
        if self.weights is None:
            raise RuntimeError("gblending: no weights yet; on_epoch_start(info) estimates them before the first step")
        heads = [*ctx.out.heads, ctx.out.logits]
        if len(heads) != len(self.weights):
            raise RuntimeError(f"gblending: {len(self.weights)} weights for {len(heads)} heads (M + 1 expected)")
        terms = [w * F.cross_entropy(h, ctx.y) for w, h in zip(self.weights, heads, strict=True)]
        return sum(terms[1:], start=terms[0])

    # -- the estimate -------------------------------------------------------------------------------------------
    def on_epoch_start(self, info: EpochInfo) -> None:
        if info.train is None:
            raise ValueError(
                "gblending estimates its weights on a held-out part of the training split at epoch starts: pass it, "
                "bal.epoch_start(train=train_split) (a greedymm split: len() and batch(idx) -> (inputs, labels))"
            )
        if info.epoch % self.super_epoch == 0 and self.estimated_at != info.epoch:
            self.estimate(info)

    def split(self, n: int, seed: int) -> tuple[Tensor, Tensor]:
        """(training part, held-out part) of the training split: fixed by the seed, sorted."""
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(_seed(seed, "holdout")))
        n_hold = max(1, round(self.holdout * n))
        if n - n_hold < 2:
            raise ValueError(
                f"gblending: holdout {self.holdout} of {n} training items leaves {n - n_hold} to train the copies; "
                "lower holdout or use more data"
            )
        return perm[n_hold:].sort().values, perm[:n_hold].sort().values

    def optimizer_note(self, optimizers: Sequence[torch.optim.Optimizer]) -> str | None:
        """The copies should learn as the model does: a warning when the run's optimizer or learning rate is not
        the copies' (``est_optimizer``, ``est_lr``)."""
        kinds = {torch.optim.Adam: "adam", torch.optim.SGD: "sgd"}
        if not optimizers or (kind := kinds.get(type(optimizers[0]))) is None:
            return None  # an optimizer the copies cannot take: nothing to compare
        lr = float(optimizers[0].param_groups[0]["lr"])
        if kind == self.est_optimizer and math.isclose(lr, self.est_lr, rel_tol=1e-9):
            return None
        return (
            f"gblending estimates its blend weights from copies trained with {self.est_optimizer} at lr "
            f"{self.est_lr:g}, while the run trains with {kind} at lr {lr:g}: the copies' loss trends are then not the "
            f"model's. Set them to the run's: --set est_optimizer={kind} est_lr={lr:g}"
        )

    def _optimizer(self, params: Any) -> torch.optim.Optimizer:
        if self.est_optimizer == "adam":
            return torch.optim.Adam(params, lr=self.est_lr)
        return torch.optim.SGD(params, lr=self.est_lr, momentum=0.9)

    def head_losses(self, info: EpochInfo, k: int, rest: Tensor, hold: Tensor) -> list[float]:
        """Train a copy of the model on head k alone for n epochs; (L^T_N, L^V_N, L^T_{N+n}, L^V_{N+n})."""
        dev, bs, train = info.device, info.batch_size, info.train
        devices = [dev.index if dev.index is not None else torch.cuda.current_device()] if dev.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(_seed(info.seed, info.epoch, k))
            model = _local_batchnorm(copy.deepcopy(info.model))
            for p in model.parameters():
                p.grad = None
            opt = self._optimizer(model.parameters())
            before = [_mean_loss(model, k, train, part, bs, dev) for part in (rest, hold)]
            model.train()
            for e in range(self.super_epoch):
                for idx in epoch_order(len(rest), bs, _seed(info.seed, info.epoch) % 2**31, e):
                    x, y = train.batch(rest[idx], train=True)
                    x, y = {m: v.to(dev) for m, v in x.items()}, y.to(dev)
                    loss = F.cross_entropy(head_logits(model, x, k), y)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
            after = [_mean_loss(model, k, train, part, bs, dev) for part in (rest, hold)]
        return before + after

    def estimate(self, info: EpochInfo) -> None:
        """Re-estimate the weights from the current model (every rank alike)."""
        was_training = info.model.training
        rest, hold = self.split(len(info.train), info.seed)
        losses = [self.head_losses(info, k, rest, hold) for k in range(info.model.n_modalities + 1)]
        t = all_reduce_(torch.tensor(losses, dtype=torch.float64, device=info.device), "mean")
        self.last_losses = t.tolist()
        w = blend_weights(self.last_losses)
        n_heads = len(losses)
        self.weights = w if w is not None else (self.weights or [1.0 / n_heads] * n_heads)
        self.estimated_at = info.epoch
        info.model.train(was_training)

    def epoch_log(self) -> dict[str, Any]:
        if self.weights is None:
            return {}
        log: dict[str, Any] = {f"w_m{k}": w for k, w in enumerate(self.weights[:-1])}
        log["w_fused"] = self.weights[-1]
        log["estimated_at"] = self.estimated_at
        return log

    # -- state --------------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "weights": None if self.weights is None else list(self.weights),
            "estimated_at": self.estimated_at,
            "last_losses": [list(r) for r in self.last_losses],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.weights = None if state["weights"] is None else list(state["weights"])
        self.estimated_at = state["estimated_at"]
        self.last_losses = [list(r) for r in state["last_losses"]]
