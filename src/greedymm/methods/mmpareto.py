"""MMPareto (Wei & Hu, ICML 2024), as the official code trains (docs/BASELINES.md section 5).

Source: GeWu-Lab/MMPareto_ICML2024 @a339db3, code/MMPareto.py:57-213 (train_epoch), code/min_norm_solvers.py:9-30,
code/models/models.py:133-184 (AVClassifier: fused head plus separate uni-modal heads).

Losses: L_mm = CE(fused logits), L_k = CE(uni-modal head k). Per step, on the parameters theta_k of encoder k:
    g_mm^k = dL_mm/dtheta_k,   g_u^k = dL_k/dtheta_k                 (torch.autograd.grad, graph retained)
    cos_k  = cos(g_mm^k, g_u^k) over encoder k's whole flattened gradient
    (l1, l2) = (1/2, 1/2) if cos_k > 0, else the two-task MGDA minimum-norm weights
               l1 = (|g_u|^2 - g_mm.g_u) / |g_mm - g_u|^2, with l1 = 0.999 if g_mm.g_u >= |g_mm|^2,
               else l1 = 0.001 if g_mm.g_u >= |g_u|^2;  l2 = 1 - l1
then the summed loss L_mm + sum_k L_k is backpropagated (through DDP when distributed), and per parameter tensor of
encoder k, with g_sum that tensor's gradient of the summed loss:
    h = 2 (l1 g_mm + l2 g_u),   r = |g_sum| / |h|,   final = gamma r h if r > 1 else gamma h   (gamma = 1.5)
Every other parameter (the fused head, the uni-modal heads, MMTM modules) keeps the summed gradient.
With cos > 0 this is 1.5 x the summed gradient on the encoders of a late-fusion model (there g_sum = g_mm + g_u);
with cos <= 0 it is the common-descent direction, its norm raised to at least the sum's, times 1.5.

Differences from the code, on purpose:
    - parameter sets from the module tree (model.encoder(k), without its head), not from name substrings (the
      code records by substring and modifies by re.split tokens, so the two sets can diverge);
    - autograd.grad on the encoders instead of backward + clone + zero_grad: the same gradients;
    - dot products in float64 (the code's float32 sums, doubled by the duplicated "concat" entry: the weights
      are unaffected by the doubling);
    - [our reading] h = 0 (a Pareto-stationary tensor: l1 g_mm + l2 g_u = 0) gives r = inf and a NaN gradient in
      the code; here the final gradient is gamma h = 0 (the common-descent direction is zero: no step);
    - no model selection on the test split. BalanceBenchmark's version (g_mm = g_u, always 3 x the sum) is broken
      and not followed.
M > 2: each encoder sees only (L_mm, L_k), a two-task problem, so the rule applies per encoder unchanged.
MMTM [proposal]: L_mm = CE(mean of the heads' logits), L_k = CE(head k); encoder k is branch k without its head
(so dL_j/dtheta_k, j != k, reaches theta_k through the MMTM modules and is part of g_sum only).
Late fusion: any head (concat, sum, FiLM, gated), with the uni-modal heads the method asks for
(needs_unimodal_heads; for sum fusion these are separate from the head's own per-modality layers, as in the code).
Hyper-parameter: gamma 1.5 (> 0; BalanceBenchmark calls it alpha). Extra cost: no extra forward; M + 1 extra
backward passes (autograd.grad of L_mm on all encoders, of each L_k on encoder k, then the summed backward: the
code's 3 retained + 1 for M = 2), plus float64 dot products and per-tensor norms. epoch_log: per encoder the mean
cos, the share of conflicting steps (cos <= 0) and the mean weight l1 of L_mm.
Under DDP the autograd.grad gradients are rank-local: they are averaged over ranks (one all-reduce) before use, as
DDP averages the summed-loss gradient in its one backward, so every rank computes the same final gradient and it
equals the single-process one.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..distributed import all_reduce_, is_distributed
from ..models.network import MultiModalNet
from .base import HParam, Method, StepContext, register_method


def encoder_parameters(model: MultiModalNet, k: int) -> list[nn.Parameter]:
    """theta_k: encoder k's trainable parameters without its head (MMTM: branch k's stages)."""
    enc = model.encoder(k)
    head = model.encoder_head(k)
    skip = {id(p) for p in head.parameters()} if head is not None else set()
    return [p for p in enc.parameters() if p.requires_grad and id(p) not in skip]


def min_norm_weight(v11: Tensor, v12: Tensor, v22: Tensor) -> Tensor:
    """l1 of min_l |l x1 + (1 - l) x2|, from <x1,x1>, <x1,x2>, <x2,x2> (min_norm_solvers.py:9-30, in that order)."""
    denom = v11 + v22 - 2 * v12  # |x1 - x2|^2 >= 0; zero only when x1 = x2, which the first case catches
    free = (v22 - v12) / torch.where(denom > 0, denom, torch.ones_like(denom))
    low = torch.where(v12 >= v22, torch.full_like(free, 0.001), free)
    return torch.where(v12 >= v11, torch.full_like(free, 0.999), low)


def pareto_weights(v11: Tensor, v12: Tensor, v22: Tensor) -> tuple[Tensor, Tensor]:
    """(l1, cos): 1/2 when cos(g_mm, g_u) > 0, else the minimum-norm weight (0-d tensors)."""
    norms = torch.sqrt(v11 * v22)
    cos = torch.where(norms > 0, v12 / torch.where(norms > 0, norms, torch.ones_like(norms)), 0.0)
    return torch.where(cos > 0, torch.full_like(v11, 0.5), min_norm_weight(v11, v12, v22)), cos


def combine(g_mm: Tensor, g_u: Tensor, g_sum: Tensor, l1: Tensor, gamma: float) -> Tensor:
    """The final gradient of one parameter tensor: gamma max(r, 1) h, h = 2 (l1 g_mm + (1 - l1) g_u),
    r = |g_sum| / |h|; h = 0 gives 0 (the code's NaN)."""
    l1 = l1.to(g_mm.dtype)
    h = 2 * (l1 * g_mm + (1 - l1) * g_u)
    h_norm = torch.linalg.vector_norm(h)
    r = torch.linalg.vector_norm(g_sum) / torch.where(h_norm > 0, h_norm, torch.ones_like(h_norm))
    return h * (gamma * torch.where(r > 1, r, torch.ones_like(r)))


def _dot(a: list[Tensor], b: list[Tensor]) -> Tensor:
    """<a, b> over a list of tensors, in float64."""
    terms = [torch.sum(x.double() * z.double()) for x, z in zip(a, b, strict=True)]
    return torch.stack(terms).sum()


@register_method("mmpareto")
class MMPareto(Method):
    hparams = {
        "gamma": HParam(
            1.5, "scale of the multi-modal gradient's weight (the code's 1.5)", type=float, low=0, low_open=True
        )
    }
    fusions = None  # late fusion with uni-modal heads (any head), and MMTM [proposal]
    needs_unimodal_heads = True
    # M = 2: autograd.grad for L_mm, L_a, L_v, then the summed backward (the code's 3 retained + 1); M + 1 in general
    extra_cost = {"forward": 0, "backward": 3}

    def __init__(self, seed: int = 0, **hparams: Any) -> None:
        super().__init__(seed, **hparams)
        self.gamma = float(self.h["gamma"])
        self._reset_log()

    def _reset_log(self) -> None:
        self.log: dict[str, Any] = {"steps": 0, "cos": [], "conflict": [], "weight_mm": []}

    def check(self, model: MultiModalNet) -> None:
        super().check(model)
        if model.n_modalities < 2:
            raise ValueError(
                f"mmpareto balances each encoder's multi-modal and uni-modal losses; a uni-modal model has one loss. "
                f"Train it on two or more modalities (--modalities), got {list(model.modalities)}"
            )
        if not model.has_unimodal_heads:
            raise ValueError(
                "mmpareto needs a linear head per modality besides the fused head; build the model with "
                "unimodal_heads=True (greedymm.train does so for this method)"
            )

    # -- the step ----------------------------------------------------------------------------------------
    def loss(self, ctx: StepContext) -> Tensor:
        """L_mm + sum_k L_k (the summed loss: what is logged and backpropagated)."""
        l_mm, l_u = self._losses(ctx)
        return l_mm + sum(l_u[1:], start=l_u[0])

    @staticmethod
    def _losses(ctx: StepContext) -> tuple[Tensor, list[Tensor]]:
        heads = ctx.out.heads
        if len(heads) != ctx.model.n_modalities:
            raise ValueError("mmpareto needs one uni-modal head output per modality (model.unimodal_heads)")
        return F.cross_entropy(ctx.out.logits, ctx.y), [F.cross_entropy(h, ctx.y) for h in heads]

    def backward(self, loss: Tensor, ctx: StepContext) -> None:
        model = ctx.model
        n = model.n_modalities
        enc = [encoder_parameters(model, k) for k in range(n)]
        l_mm, l_u = self._losses(ctx)
        flat = [p for ps in enc for p in ps]
        g_mm_all = _grads(l_mm, flat)
        g_mm, g_u, at = [], [], 0
        for k in range(n):
            g_mm.append(list(g_mm_all[at : at + len(enc[k])]))
            at += len(enc[k])
            g_u.append(_grads(l_u[k], enc[k]))
        if is_distributed():  # rank-local gradients -> the global batch's (DDP averages likewise)
            _average_over_ranks([g for gs in g_mm + g_u for g in gs])
        loss.backward()  # the summed loss, through DDP's all-reduce when distributed
        cos_all, l1_all = [], []
        with torch.no_grad():
            for k in range(n):
                l1, cos = pareto_weights(_dot(g_mm[k], g_mm[k]), _dot(g_mm[k], g_u[k]), _dot(g_u[k], g_u[k]))
                for p, a, b in zip(enc[k], g_mm[k], g_u[k], strict=True):
                    if p.grad is not None:
                        p.grad.copy_(combine(a, b, p.grad, l1, self.gamma))
                cos_all.append(cos)
                l1_all.append(l1)
        self._accumulate(torch.stack(cos_all), torch.stack(l1_all))

    def _accumulate(self, cos: Tensor, l1: Tensor) -> None:
        stats = torch.stack([cos, (cos <= 0).double(), l1]).tolist()  # one host sync
        log = self.log
        if not log["cos"]:
            log["cos"], log["conflict"], log["weight_mm"] = ([0.0] * len(stats[0]) for _ in range(3))
        log["steps"] += 1
        for key, row in zip(("cos", "conflict", "weight_mm"), stats, strict=True):
            log[key] = [a + b for a, b in zip(log[key], row, strict=True)]

    # -- epochs and state --------------------------------------------------------------------------------
    def on_epoch_start(self, info: Any) -> None:
        self._reset_log()

    def epoch_log(self) -> dict[str, Any]:
        steps = max(self.log["steps"], 1)
        out: dict[str, Any] = {}
        for key, name in (("cos", "cos"), ("conflict", "conflict_share"), ("weight_mm", "weight_mm")):
            for k, v in enumerate(self.log[key]):
                out[f"{name}_m{k}"] = v / steps  # means over the epoch's steps, per encoder
        return out

    def state_dict(self) -> dict[str, Any]:
        log = {k: list(v) if isinstance(v, list) else v for k, v in self.log.items()}
        return {**super().state_dict(), "log": log}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.log = {k: list(v) if isinstance(v, list) else v for k, v in state["log"].items()}


def _grads(loss: Tensor, params: list[nn.Parameter]) -> list[Tensor]:
    """d loss / d params with the graph kept; a parameter the loss does not reach gets zeros."""
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)]


def _average_over_ranks(grads: list[Tensor]) -> None:
    flat = all_reduce_(torch.cat([g.reshape(-1) for g in grads]), "mean")
    at = 0
    for g in grads:
        g.copy_(flat[at : at + g.numel()].view_as(g))
        at += g.numel()
