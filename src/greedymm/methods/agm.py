"""AGM: Adaptive Gradient Modulation (Li et al., ICCV 2023), as the official code has it (docs/BASELINES.md section 4).

Source: lihong2303/AGM_ICCV2023 @5a65542, model/CREMAD_net.py (GradMod, M = 2), model/URFunny_net.py (M = 3),
run/CREMAD_main.py:110-243 and run/URFunny_main.py:114-143 (coefficients), utils/config.py:74-76 (defaults).

Per step, besides the training forward f(full) (train mode, the loop's), the network runs on every other coalition
S of the modalities with the inputs outside S zeroed, in eval mode (BatchNorm running statistics, no dropout, no
running means recorded) with autograd on: 2^M - 1 extra forwards. The mono-modal responses are
    m_k = sum_{S not containing k} w(|S|) [f(S + k) - f(S) 1(S non-empty)],   w(s) = s! (M - s - 1)! / M!,
the Shapley value of k plus f({})/M, exactly as the code writes them (it leaves out the -f({}) term):
    M = 2:  m_a = (f(a,v) - f(0,v) + f(a,0)) / 2,   m_v = (f(a,v) - f(a,0) + f(0,v)) / 2
    M = 3:  1/3 on the singleton and full-set differences, 1/6 on the pair differences,
so sum_k m_k = f(full). f({}) is computed, as the code does, but enters nothing (it carries no gradient).
The loss is CE(out, y) with out = sum_k G_k(m_k), where G_k is the identity whose backward multiplies the incoming
gradient by c_k (the code's identity modules with full backward hooks). Hence every parameter's gradient is
sum_k c_k (dm_k/dtheta)^T dL/dout (not "encoder k's gradient x c_k").
Coefficients (the code's, per step, from this step's batch):
    s_k  = mean_i -log max(softmax(m_k,i)[y_i], 1e-8)
           (M = 2: the CREMA-D code's floor; M = 3: the floor is ours, the UR-Funny code takes -log of the float32
           softmax with no floor, which is infinite, and its coefficients NaN, once a probability underflows)
    r_k  = exp(s_other - s_k) (M = 2);  exp(M/(M-1) (mean_j s_j - s_k)) (M = 3)
    r*_k = the same of the running targets sbar_k, taken BEFORE this step's update
    sbar_k <- sbar_k (t-1)/t + s_k/t,   t = global step + 1 (a cumulative mean over all steps, not an EMA; sbar = 0)
    c_k  = exp(alpha min(r*_k - r_k, cap)),   cap 10 (M = 2), 7 (M = 3)
The scales c_k are set only on steps of epochs in [modulation_starts, modulation_ends], counted from 1 as the code
counts (our epoch e is the code's e + 1); the running targets update on every step. [our reading] As in the code,
outside the window the scales keep the value they last had: 1 before the window opens, the window's last c_k after
it closes (the code calls update_scale only inside the window and the hooks stay on).
After the backward pass: if any gradient entry of the output layer's weight lies outside [-b, b],
clip_grad_norm_(all parameters, b), with b = 1 for M = 2 (run/CREMAD_main.py:233-243) and b = 5 for M = 3
(run/URFunny_main.py:203-207). The code checks fusion_module.fc_out, the concat classifier (head.fc here);
[our reading] for the other heads: sum, every head.fcs; FiLM and gated, head.fc_out; MMTM, every branch head.
The clip runs on every step, window or not, as in the code.
Prediction and evaluation use the plain forward f(full); for MMTM f is the mean of the heads' logits [proposal].
Hyper-parameters: alpha 1.0 (in [0, 8]: c = exp(alpha cap) must stay finite in float32), modulation_starts 0,
modulation_ends 20. Scores are computed in float64 from log_softmax (the code: float32 softmax, then log).
Extra cost: 2^M - 1 forwards; the backward runs through the 2^M - 1 graphs that carry gradient (docs/BASELINES.md counts
2^M, including f({}), which the loss does not use), i.e. 2^M - 2 extra backward passes.

Not copied from the code: model selection on the test split; the audio-accuracy bug of test(); for M = 2 the
constant -log(1e-8) is kept (it is the CREMA-D code's clamp, not a bug), and for M = 3 it is added (ours).
BalanceBenchmark's AGM (flipped sign, no empty coalition, no_grad responses with scaled encoder gradients, clip 5
whatever M) is not followed.
M = 2 and M = 3 only: the code defines nothing else (the cap for M > 3 is unknown); other counts are refused.
Under DDP the extra forwards go through the bare model (not the DDP wrapper, which allows one forward per backward):
in eval mode they run no collective, and the one backward reaches every parameter's gradient accumulator once, so
DDP all-reduces the full gradient as usual. The scores s_k are averaged over ranks before use (equal shards: the
global batch's score), so every rank computes the same c_k and the step equals the single-process one.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..distributed import all_reduce_
from ..models.network import MultiModalNet
from .base import MODULATION_WINDOW, HParam, Method, StepContext, register_method

CAPS = {2: 10.0, 3: 7.0}  # run/CREMAD_main.py:151, run/URFunny_main.py:128
# the clip: a gradient entry of the output layer outside [-b, b] clips all gradients to norm b
CLIP_BOUNDS = {2: 1.0, 3: 5.0}  # run/CREMAD_main.py:233-243, run/URFunny_main.py:203-207
MIN_PROB = 1e-8  # run/CREMAD_main.py:134: p < 1e-8 scores -log(1e-8); for M = 3 ours (the UR-Funny code has none)


# -- the mono-modal responses -----------------------------------------------------------------------------
def shapley_weight(size: int, m: int) -> float:
    """w(|S|) = |S|! (M - |S| - 1)! / M! for a coalition S not containing the player."""
    return math.factorial(size) * math.factorial(m - size - 1) / math.factorial(m)


def responses(f: dict[int, Tensor], m: int) -> list[Tensor]:
    """m_k from the outputs ``f[S]`` of every coalition S (bit k set: modality k present), as the code writes them:
    the Shapley value of k plus f(empty)/M, so that sum_k m_k = f(full). ``f[0]`` is not needed."""
    out = []
    for k in range(m):
        terms = []
        for s in range(1 << m):
            if s >> k & 1:
                continue
            diff = f[s | 1 << k] - f[s] if s else f[s | 1 << k]
            terms.append(shapley_weight(s.bit_count(), m) * diff)
        out.append(sum(terms[1:], start=terms[0]))
    return out


def scores(m: Sequence[Tensor], y: Tensor) -> Tensor:
    """s_k = mean_i -log max(p_k,i, 1e-8), p = softmax(m_k)[y]; float64, shape (M,). The floor is the CREMA-D
    code's (M = 2); for M = 3 it is ours (the UR-Funny code has none and would give an infinite score)."""
    rows = []
    for mk in m:
        logp = F.log_softmax(mk.detach().double(), dim=1).gather(1, y.view(-1, 1)).squeeze(1)
        rows.append(-logp.clamp_min(math.log(MIN_PROB)).mean())
    return torch.stack(rows)


# -- the coefficients (pure, on host floats) --------------------------------------------------------------
def ratios(s: Sequence[float]) -> list[float]:
    """r_k: exp(s_other - s_k) for M = 2 (run/CREMAD_main.py:146); exp(M/(M-1) (mean s - s_k)) for M = 3."""
    m = len(s)
    if m == 2:
        return [math.exp(s[1] - s[0]), math.exp(s[0] - s[1])]
    mean = sum(s) / m
    return [math.exp((mean - sk) * m / (m - 1)) for sk in s]


def coefficients(s: Sequence[float], running: Sequence[float], alpha: float, cap: float) -> list[float]:
    """c_k = exp(alpha min(r*_k - r_k, cap)), r* from the running targets (taken before their update)."""
    return [math.exp(alpha * min(rs - r, cap)) for r, rs in zip(ratios(s), ratios(running), strict=True)]


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; the backward multiplies the incoming gradient by ``scale`` (the code's hooked module)."""

    @staticmethod
    def forward(ctx, x: Tensor, scale: float) -> Tensor:  # type: ignore[override]
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        return g * ctx.scale, None


def coalition_outputs(model: MultiModalNet, x: dict[str, Tensor], full: Tensor) -> dict[int, Tensor]:
    """f[S] for every coalition S (bit k set: modality k present; absent inputs zeroed), with autograd on.
    ``full`` is f(all), the loop's train-mode forward; the others run in eval mode on the bare model (not the DDP
    wrapper), as the code's padded passes do (BatchNorm running statistics)."""
    n = model.n_modalities
    f = {(1 << n) - 1: full}
    inputs = [x[name] for name in model.modalities]
    with eval_mode(model), torch.enable_grad():
        for s in range((1 << n) - 2, -1, -1):
            xs = {
                name: v if s >> k & 1 else torch.zeros_like(v)
                for k, (name, v) in enumerate(zip(model.modalities, inputs, strict=True))
            }
            f[s] = model(xs).logits
    return f


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Every module in eval mode; afterwards each module gets back its own flag (a frozen BN stays frozen)."""
    flags = [(mod, mod.training) for mod in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for mod, flag in flags:
            mod.training = flag


def output_weights(model: MultiModalNet) -> list[Tensor]:
    """The output layer's weight(s) whose gradient range triggers the clip, as the model declares them."""
    return model.output_weights()


@register_method("agm")
class AGM(Method):
    scales_gradients = True
    hparams = {
        "alpha": HParam(
            1.0,
            "strength: c = exp(alpha * min(gap, cap)), cap 10, stays finite in float32 up to 8 (the code's default "
            "1.0, its README uses 2.5)",
            type=float,
            low=0,
            high=8,
        ),
        "modulation_starts": HParam(0, "first epoch (epochs count from 1, inclusive) with modulation", low=0),
        "modulation_ends": HParam(20, "last epoch (epochs count from 1, inclusive) with modulation", low=0),
    }
    hparam_rules = (MODULATION_WINDOW,)
    fusions = None  # any network: the construction only zeroes inputs
    modality_counts = tuple(CAPS)  # the authors' code caps the coefficient for 2 (10) and 3 (7) modalities only
    # M = 2: f(a,0), f(0,v), f(0,0); one backward through the 3 graphs that carry gradient (f(0,0) carries none).
    # In general 2^M - 1 extra forwards and 2^M - 2 extra backward passes.
    extra_cost = {"forward": 3, "backward": 2}

    def __init__(self, seed: int = 0, **hparams: Any) -> None:
        super().__init__(seed, **hparams)
        self.running: list[float] = []  # sbar_k, the running targets (empty until the first step)
        self.scale: list[float] = []  # c_k currently on the hooks
        self._reset_log()

    def _reset_log(self) -> None:
        self.log: dict[str, Any] = {"steps": 0, "modulated": 0, "score": [], "coeff": []}

    def check(self, model: MultiModalNet) -> None:
        super().check(model)  # 2 or 3 modalities (modality_counts)
        try:
            output_weights(model)
        except NotImplementedError as e:
            raise ValueError(
                f"agm clips gradients by the output layer's gradient range, and a {type(model).__name__} does not "
                "declare its output layer; implement MultiModalNet.output_weights for it"
            ) from e

    def in_window(self, epoch: int) -> bool:
        # the code counts epochs from 1: our 0-based epoch e is its e + 1
        return self.h["modulation_starts"] <= epoch + 1 <= self.h["modulation_ends"]

    # -- the step ----------------------------------------------------------------------------------------
    def loss(self, ctx: StepContext) -> Tensor:
        model, n = ctx.model, ctx.model.n_modalities
        if n not in CAPS:
            self.check(model)  # raises the clear refusal
        f = coalition_outputs(model, ctx.x, ctx.out.logits)
        m = responses(f, n)
        s_now = all_reduce_(scores(m, ctx.y), "mean").tolist()  # the global batch's scores on every rank
        if not self.running:
            self.running, self.scale = [0.0] * n, [1.0] * n
        t = ctx.step + 1
        coeff = coefficients(s_now, self.running, self.h["alpha"], CAPS[n])
        self.running = [r * (t - 1) / t + sk / t for r, sk in zip(self.running, s_now, strict=True)]
        if self.in_window(ctx.epoch):
            self.scale = coeff
            self.log["modulated"] += 1
        self._accumulate(s_now)
        hooked = [_ScaleGrad.apply(mk, c) for mk, c in zip(m, self.scale, strict=True)]
        return F.cross_entropy(sum(hooked[1:], start=hooked[0]), ctx.y)

    def _accumulate(self, s_now: list[float]) -> None:
        log = self.log
        if not log["score"]:
            log["score"], log["coeff"] = [0.0] * len(s_now), [0.0] * len(s_now)
        log["steps"] += 1
        log["score"] = [a + b for a, b in zip(log["score"], s_now, strict=True)]
        log["coeff"] = [a + b for a, b in zip(log["coeff"], self.scale, strict=True)]

    def on_after_backward(self, ctx: StepContext) -> None:
        clip_if_out_of_range(ctx.model, CLIP_BOUNDS[ctx.model.n_modalities])

    # -- epochs and state --------------------------------------------------------------------------------
    def on_epoch_start(self, info: Any) -> None:
        self._reset_log()

    def epoch_log(self) -> dict[str, Any]:
        steps = max(self.log["steps"], 1)
        out: dict[str, Any] = {"modulated_steps": self.log["modulated"]}
        for k, (s, c) in enumerate(zip(self.log["score"], self.log["coeff"], strict=True)):
            out[f"score_m{k}"] = s / steps  # mean s_k over the epoch
            out[f"coeff_m{k}"] = c / steps  # mean c_k on the hooks over the epoch
        for k, r in enumerate(self.running):
            out[f"target_m{k}"] = r  # sbar_k at the epoch's end
        return out

    def state_dict(self) -> dict[str, Any]:
        log = {k: list(v) if isinstance(v, list) else v for k, v in self.log.items()}
        return {**super().state_dict(), "running": list(self.running), "scale": list(self.scale), "log": log}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.running = [float(v) for v in state["running"]]
        self.scale = [float(v) for v in state["scale"]]
        self.log = {k: list(v) if isinstance(v, list) else v for k, v in state["log"].items()}


def clip_if_out_of_range(model: MultiModalNet, max_norm: float = 1.0) -> bool:
    """The code's rule: clip every gradient to total norm ``max_norm`` if any entry of the output layer's weight
    gradient lies outside [-max_norm, max_norm] (``CLIP_BOUNDS``: 1 for two modalities, run/CREMAD_main.py:233-243;
    5 for three, run/URFunny_main.py:203-207). Returns whether it clipped."""
    grads = [w.grad for w in output_weights(model) if w.grad is not None]
    if not grads or not bool(torch.stack([g.detach().abs().max() for g in grads]).max() > max_norm):
        return False
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    return True
