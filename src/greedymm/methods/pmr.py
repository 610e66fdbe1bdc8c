"""PMR: Prototypical Modal Rebalance (Fan et al., CVPR 2023), as the official code does (docs/BASELINES.md section 3).

Prototypes. For every class c and modality m, c_m[c] = mean of the pooled feature z_m over the items of class c,
from an eval-mode, no-grad pass (constants for the step), recomputed in ``on_epoch_start`` (before epoch 0 and
every later epoch; official: before epoch 0 and after every epoch, the same moments). With momentum mu:
P <- (1 - mu) P_new + mu P_old (every official run uses mu = 0), from epoch 2 on: as in the official code, whose
prototype function skips the momentum when called with epoch 0, which it is twice (before epoch 0 and after it),
the prototypes of epochs 0 and 1 are the fresh class means.

Per step, for epochs in [modulation_starts, modulation_ends] (inclusive, as the code):
    sim_m  = -||z_m - c_m[k]||_2 for every class k                  # (B, C), no temperature
    PCE_m  = CE(sim_m, y)
    s_m    = sum_i softmax(sim_m)_i[y_i]                             # summed over the global batch (all ranks)
    M = 2: rho = s_0 / s_1; rho > 1: L = L_base + alpha PCE_1; rho < 1: L = L_base + alpha PCE_0; rho = 1: L_base
    M > 2 [proposal, docs/BASELINES.md]: rho_m = s_m / mean_{k != m} s_k; L = L_base + alpha sum_{m: rho_m < 1} PCE_m
    (exact for M = 2). Outside the window L = L_base.
L_base is the model family's own loss: CE of the fused logits for late fusion (the official), the sum of the
branch heads' CEs for MMTM. Fusion-agnostic: only z_m is used (Output.features; for MMTM, the inputs of the branch
heads [proposal, docs/BASELINES.md]). Evaluation uses the model's prediction only.

What we follow and where we differ from the official code (PMR ``main_Prototype_grad.py``):
  - Prototype data: the official code reads the first len(loader) // 10 batches of a shuffled loader, which is the
    TEST split on CG-MNIST (and the val split on AVE). Ours reads only the TRAINING split (EpochInfo.train, never
    test): a fraction ``proto_fraction`` (default 0.1) of it, drawn from a permutation fixed by (seed, epoch), so a
    resumed run uses the same items.
  - A class absent from that subset made the official prototype 0/0 = NaN. Ours keeps the previous prototype of
    that class; when there is none yet (the first computation), the rest of the epoch's permutation (the whole
    training split) is read for the missing classes; a class with no training item at all gets a zero prototype
    (it is never a target, so it only enters the softmax denominators) [our reading].
  - Distances: ``torch.cdist`` without the matrix-product shortcut (exact), not the official Python double loop.
    sqrt has no derivative at distance 0; torch's cdist backward defines it there as 0 (a subgradient), which a
    test checks, so a feature that sits exactly on its prototype gets a finite (zero) gradient from that term.
  - The paper's adaptive coefficient is not in the code: alpha is a constant on the weaker modality, 0 otherwise.
  - PER, the paper's prototype entropy regulariser on the dominant modality early in training, is not in the
    official code (issues #4, #7, #9 unanswered). [our reading] Off by default (per_mu = 0): when per_mu > 0, for
    epochs < per_epochs, L += per_mu * mean_i sum_k p_ik log p_ik (the negative entropy of softmax(sim_m)) for every
    dominant m (rho_m > 1; for M = 2 the stronger modality).

DDP: prototype sums and counts are all-reduced (each rank reads its shard of the subset), and so are the
scores s_m before the comparison, so every rank adds the same terms. Cost: no extra pass per step (B x C distances
per modality); per epoch one no-grad forward over ``proto_fraction`` of the training split (0.1 forward per step on
average, declared in ``extra_cost``).
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..distributed import all_reduce_, rank, world_size
from ..models.network import MultiModalNet
from .base import MODULATION_WINDOW, EpochInfo, HParam, HParamRule, Method, StepContext, register_method


def prototype_similarity(z: Tensor, prototypes: Tensor) -> Tensor:
    """sim[i, k] = -||z_i - prototypes_k||_2: (B, d), (C, d) -> (B, C)."""
    return -torch.cdist(z, prototypes.to(z.dtype), compute_mode="donot_use_mm_for_euclid_dist")


def weaker_mask(scores: Tensor) -> Tensor:
    """rho_m < 1, i.e. s_m < mean_{k != m} s_k, for each modality (no division: exact for M = 2: s_0 < s_1)."""
    m = scores.shape[0]
    return scores * (m - 1) < scores.sum() - scores


def dominant_mask(scores: Tensor) -> Tensor:
    """rho_m > 1."""
    m = scores.shape[0]
    return scores * (m - 1) > scores.sum() - scores


def rho(scores: Tensor) -> Tensor:
    """rho_m = s_m / mean_{k != m} s_k (M = 2: rho_0 = s_0 / s_1, the paper's rho)."""
    m = scores.shape[0]
    return scores / ((scores.sum() - scores) / (m - 1))


def _generator(*stream: object) -> torch.Generator:
    # a hash of the stream's name, so that no (seed, epoch) pair collides with another stream's
    digest = hashlib.sha256(repr(("pmr", *stream)).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


@register_method("pmr")
class PMR(Method):
    hparams = {
        "alpha": HParam(1.0, "coefficient of the weaker modality's prototypical CE (CG-MNIST runs: 1.0)", low=0),
        "modulation_starts": HParam(0, "first epoch with the PCE term (inclusive)", low=0),
        "modulation_ends": HParam(60, "last epoch with the PCE term (inclusive; CG-MNIST runs: 60)", low=0),
        "mu": HParam(
            0.0,
            "prototype momentum: P <- (1 - mu) P_new + mu P_old; 1 never updates them (official runs: 0.0)",
            low=0,
            high=1,
            high_open=True,
        ),
        "proto_fraction": HParam(
            0.1,
            "share of the training split read for the prototypes each epoch (official ~10 %)",
            low=0,
            high=1,
            low_open=True,
        ),
        "per_mu": HParam(0.0, "[our reading] entropy regulariser on the dominant modality; 0 = off (official)", low=0),
        "per_epochs": HParam(0, "epochs (from 0) with the regulariser when per_mu > 0", low=0),
    }
    hparam_rules = (
        MODULATION_WINDOW,
        HParamRule(
            lambda h: h["per_mu"] == 0 or h["per_epochs"] >= 1,
            "per_mu > 0 needs per_epochs >= 1 (the epochs the regulariser runs), e.g. --set per_epochs=10",
        ),
    )
    fusions = None  # only z_m is used
    extra_cost = {"forward": 0.1, "backward": 0}  # the per-epoch prototype pass, per step on average

    def __init__(self, seed: int = 0, **hparams: Any) -> None:
        super().__init__(seed, **hparams)
        h = self.h
        self.alpha, self.mu, self.per_mu = float(h["alpha"]), float(h["mu"]), float(h["per_mu"])
        self.fraction = float(h["proto_fraction"])
        self.starts, self.ends, self.per_epochs = h["modulation_starts"], h["modulation_ends"], h["per_epochs"]
        self.prototypes: list[Tensor] | None = None  # per modality (C, d_m), float32
        # this epoch's log: [window steps, items, s_0..s_{M-1}, PCE added 0..M-1] (identical on every rank)
        self.stats: Tensor | None = None

    def check(self, model: MultiModalNet) -> None:
        super().check(model)
        if model.n_modalities < 2:
            raise ValueError(
                "method 'pmr' compares modalities; a uni-modal model has nothing to rebalance. Train it with "
                "--method vanilla, or give two or more --modalities"
            )

    # -- prototypes ---------------------------------------------------------------------------------------
    def _active(self, epoch: int) -> tuple[bool, bool]:
        return self.in_window(epoch), self.per_mu > 0 and epoch < self.per_epochs

    def in_window(self, epoch: int) -> bool:
        """Whether epoch (from 0) adds the prototypical CE: modulation_starts <= epoch <= modulation_ends."""
        return self.starts <= epoch <= self.ends

    def on_epoch_start(self, info: EpochInfo) -> None:
        if info.train is None:
            raise ValueError(
                "pmr computes its class prototypes from the training split at each epoch start: pass it, "
                "bal.epoch_start(train=train_split) (a greedymm split: len() and batch(idx) -> (inputs, labels))"
            )
        self.stats = None
        window, per = self._active(info.epoch)
        if window or per or info.epoch < self.starts:  # needed now or later (keeps the momentum chain)
            self.update_prototypes(info)

    @torch.no_grad()
    def _sums(self, model: MultiModalNet, info: EpochInfo, idx_all: Tensor) -> tuple[list[Tensor], Tensor]:
        """Per-class feature sums (float64, per modality) and counts over ``idx_all``, summed over ranks."""
        sums: list[Tensor] = []
        counts = torch.zeros(0)
        local = idx_all.tensor_split(world_size())[rank()]  # this rank's shard of the items
        # a rank with no item (fewer items than ranks) still needs the shapes for the all-reduce: one item, weight 0
        for idx, weight in [(b, 1.0) for b in local.split(info.batch_size)] or [(idx_all[:1], 0.0)]:
            x, y = info.train.batch(idx)
            x = {k: v.to(info.device) for k, v in x.items()}
            y = y.to(info.device)
            out = model(x)
            if not sums:
                c = out.logits.shape[1]
                sums = [torch.zeros(c, z.shape[1], dtype=torch.float64, device=info.device) for z in out.features]
                counts = torch.zeros(c, dtype=torch.float64, device=info.device)
            for s, z in zip(sums, out.features, strict=True):
                s.index_add_(0, y, z.double() * weight)
            counts.index_add_(0, y, torch.full_like(y, weight, dtype=torch.float64))
        flat = all_reduce_(torch.cat([counts, *(s.flatten() for s in sums)]))
        counts, rest = flat[: len(counts)], flat[len(counts) :]
        return [r.view_as(s) for r, s in zip(rest.split([s.numel() for s in sums]), sums, strict=True)], counts

    @torch.no_grad()
    def update_prototypes(self, info: EpochInfo) -> None:
        """New prototypes from ``proto_fraction`` of the training split (eval mode, no grad), with momentum from
        epoch 2 on (the official code's first two computations, before and after epoch 0, take none)."""
        model, n = info.model, len(info.train)
        was_training = model.training
        model.eval()
        try:
            perm = torch.randperm(n, generator=_generator(info.seed, info.epoch))
            n_sub = max(1, int(self.fraction * n))  # official: floor(len(loader) / 10) batches
            sums, counts = self._sums(model, info, perm[:n_sub])
            old = [p.to(info.device) for p in self.prototypes] if self.prototypes is not None else None
            missing = counts == 0
            if old is None and bool(missing.any()) and n_sub < n:
                more, more_counts = self._sums(model, info, perm[n_sub:])  # the same decision on every rank
                for s, m in zip(sums, more, strict=True):
                    s[missing] = m[missing]
                counts = torch.where(missing, more_counts, counts)
            new = [s / counts.clamp_min(1).unsqueeze(1) for s in sums]  # a class never seen: zeros
            if old is not None:
                absent = (counts == 0).unsqueeze(1)
                new = [torch.where(absent, o.double(), p) for p, o in zip(new, old, strict=True)]
                if info.epoch >= 2:  # the official code: no momentum on the prototypes computed after epoch 0
                    new = [(1 - self.mu) * p + self.mu * o.double() for p, o in zip(new, old, strict=True)]
            self.prototypes = [p.float() for p in new]
        finally:
            model.train(was_training)

    # -- the loss -------------------------------------------------------------------------------------------
    def loss(self, ctx: StepContext) -> Tensor:
        base = ctx.model.loss(ctx.out, ctx.y)
        window, per = self._active(ctx.epoch)
        if not (window or per):
            return base
        if self.prototypes is None:
            raise RuntimeError("pmr: no prototypes yet; on_epoch_start(info) computes them before the first step")
        y, feats = ctx.y, ctx.out.features
        sims = [prototype_similarity(z, p.to(z.device)) for z, p in zip(feats, self.prototypes, strict=True)]
        with torch.no_grad():
            s = torch.stack([sim.softmax(1).gather(1, y.unsqueeze(1)).sum() for sim in sims]).double()
            n = torch.tensor([float(len(y))], dtype=torch.float64, device=s.device)
            total = all_reduce_(torch.cat([s, n]))  # scores of the global batch: every rank decides alike
            scores = total[:-1]
            weaker, dominant = weaker_mask(scores), dominant_mask(scores)
        loss = base
        if window and self.alpha > 0:
            for m, sim in enumerate(sims):
                loss = loss + (self.alpha * weaker[m].to(sim.dtype)) * F.cross_entropy(sim, y)
        if per:
            for m, sim in enumerate(sims):
                neg_entropy = (sim.softmax(1) * sim.log_softmax(1)).sum(1).mean()
                loss = loss + (self.per_mu * dominant[m].to(sim.dtype)) * neg_entropy
        added = weaker.double() * float(window and self.alpha > 0)
        row = torch.cat([torch.ones(1, dtype=torch.float64, device=s.device), total[-1:], scores, added])
        self.stats = row if self.stats is None else self.stats.to(row.device) + row
        return loss

    def epoch_log(self) -> dict[str, Any]:
        if self.stats is None:
            return {}
        v = self.stats.tolist()
        m = (len(v) - 2) // 2
        steps, items = v[0], v[1]
        log: dict[str, Any] = {"steps": int(steps)}
        for k in range(m):
            log[f"score_m{k}"] = v[2 + k] / items  # mean softmax probability of the true class
            log[f"pce_share_m{k}"] = v[2 + m + k] / steps  # share of steps that added alpha * PCE_m
        return log

    # -- state ------------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "prototypes": None if self.prototypes is None else [p.detach().cpu().clone() for p in self.prototypes],
            "stats": None if self.stats is None else self.stats.detach().cpu().clone(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.prototypes = None if state["prototypes"] is None else [p.clone() for p in state["prototypes"]]
        self.stats = None if state["stats"] is None else state["stats"].clone()
