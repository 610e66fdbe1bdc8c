"""MSLR: modality-specific learning rates (an official baseline of the AGM repository, Li et al., ICCV 2023).

docs/BASELINES.md section 6, from lihong2303/AGM_ICCV2023 ``run/CREMAD_main.py`` (train, lines 194-209; epoch loop,
lines 671-684). The loss is the plain CE of the fused logits; after backward the gradients of modality m's
encoder and of its uni-modal head are multiplied by

    c_m = c0_m * ratio_m,    ratio_m = acc_m / mean(acc_m of the previous ``memory`` = 5 epochs)

ratio_m starts at 1 and is updated at each epoch end once ``memory`` accuracies are stored (so the first update
follows the 6th epoch); the oldest accuracy then leaves the memory and the new one enters.
acc_m is the accuracy of modality m's uni-modal logits on the VALIDATION split (``EpochInfo.val``), counted on
every rank and all-reduced, so every rank computes the same c_m. The official code reads the test loader, and
its acc_a counts the visual hits (a copy-paste bug): neither is copied.

The uni-modal head of modality m [our reading]: the part of the fusion head that reads z_m, as in the official
code, whose late-fusion model is the sum fusion ``out = audio_cls(a) + visual_cls(v)`` and whose "uni-modal
heads" are those two Linear layers. They are trained by the fused CE itself, so no extra head, loss or pass:
    sum     head m = fc_m: acc_m is that of fc_m(z_m); fc_m's weight and bias gradients are scaled by c_m
    concat  acc_m is that of W[:, columns of z_m] z_m + b / M (as OGM-GE reads it); the columns of z_m in W's
            gradient are scaled by c_m, the shared bias is not
    mmtm    head m = branch m's own head (trained by its own CE); all of branch m is scaled (stages and head),
            the MMTM modules are not
    FiLM and gated heads do not split per modality: refused (separately trained uni-modal heads would measure
    a probe, not what the model uses).
"Encoder m" is every parameter of ``model.encoder(m)`` (BatchNorm and biases included, as the official code
scales every parameter under ``audio_net``). Scaling gradients is not exactly scaling the learning rate: momentum
carries the scaled gradients and weight decay added by the optimizer is unscaled (as in the official code).

c0 [our choice of default]: ``[]`` means 1.0 for every modality, so only the accuracy ratios act; a list of length
M sets it per modality, e.g. the official values ``c0=[0.9, 1.1]`` (audio, visual: CREMA-D) and
``[0.9, 1.4, 0.7]`` (audio, visual, text: UR-Funny).
The window: as in the official code (run/CREMAD_main.py:194, run/URFunny_main.py:146), the gradients are scaled
only in epochs [modulation_starts, modulation_ends], counted from 1 as the code counts (our epoch e is its e + 1),
defaults 0 and 20 (utils/config.py:74-75): epochs 0..19 here; later epochs train with plain gradients. The
accuracy memory and the ratios are updated at every epoch end, inside the window or not, as in the code.
A mean of 0 over the memory (no hit in 5 epochs) would divide by zero: the ratio is then 1 [our reading].

Extra cost: no extra pass per step; one pass over the validation split per epoch (forward only).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..data import eval_order
from ..distributed import all_reduce_, rank, world_size
from ..models.network import MultiModalNet
from .base import MODULATION_WINDOW, EpochInfo, HParam, Method, StepContext, register_method
from .ogm_ge import SPLITTABLE, check_splittable, fusion_head_logits


@torch.no_grad()
def unimodal_accuracy(model: MultiModalNet, split: Any, batch_size: int, device: torch.device) -> list[float]:
    """Accuracy of each modality's uni-modal logits on ``split`` (all ranks' items, all-reduced)."""
    was_training = model.training
    model.eval()
    n_mod = model.n_modalities
    counts = torch.zeros(n_mod + 1, dtype=torch.float64, device=device)  # hits per modality, items
    for idx in eval_order(len(split), batch_size, rank(), world_size()):
        x, y = split.batch(idx)
        x = {k: v.to(device, non_blocking=True) for k, v in x.items()}
        y = y.to(device, non_blocking=True)
        logits = fusion_head_logits(model, model(x))
        hits = torch.stack([(o.argmax(1) == y).sum() for o in logits]).double()
        counts += torch.cat([hits, torch.tensor([float(len(y))], dtype=torch.float64, device=device)])
    model.train(was_training)
    all_reduce_(counts)
    return (counts[:n_mod] / counts[n_mod].clamp_min(1)).tolist()


def scaled_parameters(model: MultiModalNet, m: int) -> list[tuple[nn.Parameter, Any]]:
    """(parameter, index) parts whose gradient c_m multiplies: encoder m whole (MMTM: branch m with its head), then
    the parts of the fusion head that read z_m only (``model.modality_slices``: fc_m of a sum head; a concat
    head's columns of z_m)."""
    parts: list[tuple[nn.Parameter, Any]] = [(p, ...) for p in model.encoder(m).parameters()]
    return parts + [(s.param, s.index) for s in model.modality_slices(m)]


@register_method("mslr")
class MSLR(Method):
    scales_gradients = True
    hparams = {
        "c0": HParam(
            [], "initial multiplier per modality ([] = 1.0 each; official CREMA-D [0.9, 1.1])", items=float, low=0
        ),
        "memory": HParam(5, "epochs of accuracy the ratio compares with (official 5)", low=1),
        "modulation_starts": HParam(0, "first epoch (epochs count from 1, inclusive) with scaled gradients", low=0),
        "modulation_ends": HParam(
            20, "last epoch (epochs count from 1, inclusive) with scaled gradients (official 20)", low=0
        ),
    }
    hparam_rules = (MODULATION_WINDOW,)
    fusions = SPLITTABLE
    extra_cost = {"forward": 0, "backward": 0}  # plus one forward pass over the validation split per epoch

    def __init__(self, seed: int = 0, **hparams: Any) -> None:
        super().__init__(seed, **hparams)
        self.c0 = [float(c) for c in self.h["c0"]]
        self.memory: list[list[float]] = []  # per modality: the last ``memory`` validation accuracies
        self.ratio: list[float] = []  # per modality ([] until known: 1.0 each)
        self.last: dict[str, list[float]] = {}  # what the last epoch end measured and used, for epoch_log

    def check(self, model: MultiModalNet) -> None:
        check_splittable(self.name, model)
        super().check(model)
        if self.c0 and len(self.c0) != model.n_modalities:
            raise ValueError(
                f"c0 has {len(self.c0)} values for {model.n_modalities} modalities {list(model.modalities)}; give "
                f"one per modality (--set c0=[{', '.join(['1.0'] * model.n_modalities)}]) or [] for 1.0 each"
            )

    def coefficients(self, n: int) -> list[float]:
        """c_m = c0_m * ratio_m for n modalities."""
        c0 = self.c0 or [1.0] * n
        ratio = self.ratio or [1.0] * n
        return [c * r for c, r in zip(c0, ratio, strict=True)]

    def in_window(self, epoch: int) -> bool:
        # the code counts epochs from 1: our 0-based epoch e is its e + 1
        return self.h["modulation_starts"] <= epoch + 1 <= self.h["modulation_ends"]

    def on_after_backward(self, ctx: StepContext) -> None:
        model = ctx.model
        c = self.coefficients(model.n_modalities)
        if not self.in_window(ctx.epoch) or all(v == 1.0 for v in c):
            return
        with torch.no_grad():
            for m, cm in enumerate(c):
                for p, index in scaled_parameters(model, m):
                    if p.grad is not None:
                        p.grad[index].mul_(cm)

    def on_epoch_start(self, info: EpochInfo) -> None:
        if info.val is None or len(info.val) == 0:
            raise ValueError(
                f"method {self.name!r} measures each modality's accuracy on the validation split, and this run has "
                "none; set val_fraction > 0 (--set val_fraction=0.1)"
            )

    def on_epoch_end(self, info: EpochInfo) -> None:
        model = info.model
        n = model.n_modalities
        acc = unimodal_accuracy(model, info.val, info.batch_size, info.device)
        used = self.coefficients(n) if self.in_window(info.epoch) else [1.0] * n
        if not self.memory:
            self.memory = [[] for _ in range(n)]
        if len(self.memory[0]) >= self.h["memory"]:
            means = [sum(h) / len(h) for h in self.memory]
            self.ratio = [a / mu if mu > 0 else 1.0 for a, mu in zip(acc, means, strict=True)]
            self.memory = [h[1:] for h in self.memory]
        self.memory = [[*h, a] for h, a in zip(self.memory, acc, strict=True)]
        self.last = {"val_acc": acc, "c": used, "next_c": self.coefficients(n)}

    def epoch_log(self) -> dict[str, Any]:
        """Per modality: the validation accuracy measured at this epoch's end, the multiplier c_m used during the
        epoch (1.0 outside the window), and c0_m * ratio_m for the next epoch (applied there if it lies in the
        window)."""
        return {f"{key}_m{m}": v for key, vals in self.last.items() for m, v in enumerate(vals)}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "memory": self.memory, "ratio": self.ratio, "last": self.last}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.memory = [list(h) for h in state["memory"]]
        self.ratio = list(state["ratio"])
        self.last = {k: list(v) for k, v in state["last"].items()}
