"""OGM-GE and OGM: on-the-fly gradient modulation, with generalization enhancement (Peng et al., CVPR 2022).

docs/BASELINES.md section 1, as the official code does it (GeWu-Lab/OGM-GE_CVPR2022 ``main.py``, ``train_epoch``):

    loss          L = CE(o, y) on the fused logits only (the code never backpropagates the uni-modal losses)
    uni-modal     o_m from the fusion head, with no extra parameters and no extra pass (the forward's z_m):
      logits        concat  o_m = W[:, columns of z_m] z_m + b / M   (the code: b / 2 for M = 2; b / M is [our reading])
                    sum     o_m = fc_m(z_m) with its full bias        (training code since commit 5480329)
                    mmtm    o_m = the logits of branch head m         ([proposal] of docs/BASELINES.md)
    scores        s_m = sum_{i in B} softmax(o_m,i)[y_i], a sum over the batch (the global batch: all-reduced)
    coefficients  M = 2 (modality 0 is the code's audio, 1 its visual): rho = s_1 / s_0;
                    rho > 1: k_1 = 1 - tanh(alpha rho), k_0 = 1;   otherwise: k_0 = 1 - tanh(alpha / rho), k_1 = 1
                    (so an exact tie suppresses modality 0 with k_0 = 1 - tanh(alpha), as the code does)
                  M > 2, the maintainer's pairwise average (issue #16): rho_m = 1/(M-1) sum_{k != m} s_m / s_k,
                    k_m = 1 - tanh(alpha rho_m) if rho_m > 1, else 1 (the M = 2 rule above except at a tie)
    modulation    after backward and before the optimizer step, while modulation_starts <= epoch <= modulation_ends
                  (epochs from 0, both inclusive), for every Conv and Linear weight of encoder m:
                    OGM     g <- k_m g
                    OGM-GE  g <- k_m g + eps, eps ~ N(0, (std(g) + 1e-8)^2) elementwise, std of the unscaled g,
                            on every encoder (k_m = 1 included)
                  Not modulated: BatchNorm parameters, biases, the fusion head, MMTM modules, branch heads.
                  Linear weights inside an encoder are modulated too (the maintainer, issue #22); the code's
                  4-D test only reaches Conv2d weights.

What we do not copy from the official code (docs/BASELINES.md "Pitfalls"):
  - parameters chosen by ``name.split('.')[1]``, which without DataParallel selects nothing and says nothing: ours
    come from the module tree (``model.encoder(m)`` minus its head), and ``check`` refuses an encoder with no
    Conv or Linear weight;
  - the noise drawn from the global RNG with a host sync per tensor (``.std().item()``): ours comes from a
    generator the method owns, seeded alike on every rank and saved in its state (so DDP ranks add identical
    noise and keep identical weights, and a resumed run draws what a straight run draws); the std stays on the
    device (N(0, s^2) drawn as s * N(0, 1): the same distribution);
  - the checkpoint selected on the test loader (the loop selects on validation);
  - FiLM and gated fusion, where the code slices ``fc_out`` as a concat head and crashes: refused here;
  - BalanceBenchmark's ``OGM_GE3``, which divides only the last modality's ratio by M - 1.
A single-element gradient has no std: its noise std is 1e-8 (our choice; no such tensor in our backbones).

Extra cost: no extra pass; per step, M small matmuls (concat) and one Gaussian draw per modulated tensor.
Defaults: alpha 0.1 (the README's default command; its tips recommend 0.8 on CREMA-D), window 0..50.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.conv import _ConvNd

from ..distributed import all_reduce_
from ..models import SPLITTING_FUSIONS, MultiModalNet, Output
from .base import MODULATION_WINDOW, EpochInfo, HParam, Method, StepContext, register_method

SPLITTABLE = SPLITTING_FUSIONS  # mmtm, concat, sum: fusions whose head gives uni-modal logits without new parameters


def check_splittable(name: str, model: MultiModalNet) -> None:
    """Refuse models whose prediction does not split into per-modality logits (as the model declares)."""
    if model.n_modalities < 2:
        raise ValueError(
            f"method {name!r} balances two or more modalities; this model reads one ({list(model.modalities)}). "
            "Train it with --method vanilla, or give it more --modalities"
        )
    if not model.splits_per_modality:
        raise ValueError(
            f"method {name!r} reads each modality's logits off the fusion head, and {model.cannot_split()}"
        )


def fusion_head_logits(model: MultiModalNet, out: Output) -> list[Tensor]:
    """o_m for every modality (module docstring), from the forward's features: (B, C) each."""
    return model.modality_logits(out)


def encoder_weights(model: MultiModalNet, k: int) -> list[nn.Parameter]:
    """The Conv and Linear weights inside encoder k, its head excluded (MMTM: branch k without its head)."""
    enc = model.encoder(k)
    head = model.encoder_head(k)
    skip = {id(m) for m in head.modules()} if head is not None else set()
    return [
        m.weight
        for m in enc.modules()
        if isinstance(m, (_ConvNd, nn.Linear)) and id(m) not in skip and isinstance(m.weight, nn.Parameter)
    ]


def ogm_coefficients(scores: Tensor, alpha: float) -> Tensor:
    """k_m for scores s_m (M,) > 0, as in the module docstring; float64."""
    s = scores.double()
    m = s.numel()
    if m == 2:
        rho = s[1] / s[0]  # the code's ratio_v; ratio_a = 1 / ratio_v
        one = torch.ones((), dtype=s.dtype, device=s.device)
        visual = rho > 1
        k0 = torch.where(visual, one, 1 - torch.tanh(alpha / rho))
        k1 = torch.where(visual, 1 - torch.tanh(alpha * rho), one)
        return torch.stack([k0, k1])
    pair = s[:, None] / s[None, :]  # (M, M): s_m / s_k
    rho = (pair.sum(1) - pair.diagonal()) / (m - 1)
    return torch.where(rho > 1, 1 - torch.tanh(alpha * rho), torch.ones_like(rho))


def modulate_(grads: list[Tensor], k: Tensor, ge: bool, generator: torch.Generator | None = None) -> None:
    """g <- k g (+ N(0, (std(g) + 1e-8)^2) noise with ``ge``, std of the unscaled g), in place."""
    for g in grads:
        kk = k.to(device=g.device, dtype=g.dtype)
        if ge:
            std = g.std() if g.numel() > 1 else torch.zeros((), dtype=g.dtype, device=g.device)
            noise = torch.randn(g.shape, generator=generator, dtype=g.dtype, device=g.device) * (std + 1e-8)
            g.mul_(kk).add_(noise)
        else:
            g.mul_(kk)


@register_method("ogm-ge")
class OGMGE(Method):
    scales_gradients = True
    hparams = {
        "alpha": HParam(0.1, "modulation strength (README: 0.1; tips: 0.1 VGGSound, 0.8 CREMA-D)", type=float, low=0),
        "ge": HParam(True, "add the generalization-enhancement noise (false: plain OGM)"),
        "modulation_starts": HParam(0, "first epoch (from 0, inclusive) with modulated gradients", low=0),
        "modulation_ends": HParam(50, "last epoch (from 0, inclusive) with modulated gradients", low=0),
    }
    hparam_rules = (MODULATION_WINDOW,)
    fusions = SPLITTABLE
    extra_cost = {"forward": 0, "backward": 0}

    def __init__(self, seed: int = 0, **hparams: Any) -> None:
        super().__init__(seed, **hparams)
        self.alpha = float(self.h["alpha"])
        # the GE noise: one seed a step from this generator (identical on every rank), then drawn on the device
        self.generator = torch.Generator().manual_seed(20_011 + seed)
        self._device_generators: dict[str, torch.Generator] = {}
        self._k_sum = torch.zeros(0, dtype=torch.float64)  # sum of k_m over this epoch's modulated steps
        self.steps = 0  # modulated steps this epoch
        self._weights: tuple[int, list[list[nn.Parameter]]] | None = None

    def check(self, model: MultiModalNet) -> None:
        check_splittable(self.name, model)
        super().check(model)
        for k in range(model.n_modalities):
            if not encoder_weights(model, k):
                raise ValueError(
                    f"method {self.name!r} modulates the Conv and Linear weights of each encoder, and encoder {k} "
                    f"({model.modalities[k]!r}) has none; use a backbone with convolutional or linear layers"
                )

    def _groups(self, model: MultiModalNet) -> list[list[nn.Parameter]]:
        if self._weights is None or self._weights[0] != id(model):
            self._weights = (id(model), [encoder_weights(model, k) for k in range(model.n_modalities)])
        return self._weights[1]

    def _noise_generator(self, device: torch.device) -> torch.Generator:
        seed = int(torch.randint(0, 2**62, (1,), generator=self.generator))  # CPU: no device sync
        key = str(device)
        if key not in self._device_generators:
            self._device_generators[key] = torch.Generator(device=device)
        return self._device_generators[key].manual_seed(seed)

    def in_window(self, epoch: int) -> bool:
        return self.h["modulation_starts"] <= epoch <= self.h["modulation_ends"]

    @torch.no_grad()
    def coefficients(self, ctx: StepContext) -> Tensor:
        """k_m from this step's forward (scores summed over the global batch); (M,) float64 on the device."""
        logits = fusion_head_logits(ctx.model, ctx.out)
        y = ctx.y.view(-1, 1)
        scores = torch.stack([F.softmax(o.float(), dim=1).gather(1, y).sum(dtype=torch.float64) for o in logits])
        all_reduce_(scores)  # every rank: the scores of the global batch
        # a score of exactly 0 (every probability underflowed) would give 0/0; the smallest double keeps it finite
        return ogm_coefficients(scores.clamp_min(torch.finfo(torch.float64).tiny), self.alpha)

    def on_after_backward(self, ctx: StepContext) -> None:
        if not self.in_window(ctx.epoch):
            return
        k = self.coefficients(ctx)
        gen = self._noise_generator(ctx.y.device) if self.h["ge"] else None
        with torch.no_grad():
            for m, params in enumerate(self._groups(ctx.model)):
                modulate_([p.grad for p in params if p.grad is not None], k[m], self.h["ge"], gen)
            if self._k_sum.shape != k.shape:
                self._k_sum = torch.zeros_like(k)
            self._k_sum = self._k_sum.to(k.device) + k
        self.steps += 1

    def on_epoch_start(self, info: EpochInfo) -> None:
        self._k_sum = torch.zeros(0, dtype=torch.float64)
        self.steps = 0

    def epoch_log(self) -> dict[str, Any]:
        """Mean k_m over the epoch's modulated steps (1 = not slowed down), and how many steps were modulated."""
        means = (self._k_sum / max(self.steps, 1)).tolist()
        return {**{f"k_m{m}": v for m, v in enumerate(means)}, "modulated_steps": self.steps}

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "generator": self.generator.get_state(),
            "k_sum": self._k_sum.tolist(),
            "steps": self.steps,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.generator.set_state(state["generator"])
        self._k_sum = torch.tensor(state["k_sum"], dtype=torch.float64)
        self.steps = state["steps"]
