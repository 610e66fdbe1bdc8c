"""greedymm in your own code: build a model from your encoders, and measure or balance it in your own loop.

Models from your encoders (each modality: a list of stages, ``nn.Module`` s that map (B, C, ...) to (B, C', ...)):

    model = greedymm.intermediate_fusion({"audio": [a1, a2, a3], "image": [i1, i2, i3]}, num_classes=10,
                                         example=batch_inputs)            # family (a): MMTM after stages 2 and 3
    model = greedymm.late_fusion({"audio": [...], "image": [...]}, num_classes=10, example=batch_inputs,
                                 fusion="concat")                         # family (b)

Your loop, with a ``Balancer`` at the points of docs/DESIGN.md section 4 (the same calls greedymm's own loop makes):

    bal = greedymm.Balancer(model, "guided", warmup_steps=len(loader))
    for epoch in range(epochs):
        bal.epoch_start()
        for x, y in loader:                      # x: {modality: tensor}
            out = bal.forward(x)                 # in the method's mode for this step
            loss = bal.loss(out, y)              # the method's loss
            opt.zero_grad()
            bal.backward(loss, opt)              # the method's gradients; the learning speed (regular steps)
            log = bal.end_step(loss)             # d_speed, speeds; the method picks the next step's mode
            if log.finite:
                opt.step()
        bal.epoch_end()
        metrics = bal.evaluate(val_loader)       # accuracy, per-head accuracy, u(.), d_util

Numbers are named as in greedymm's logs (steps.csv, results.jsonl); docs/OWN_CODE.md explains each.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from .choices import LATE_FUSIONS
from .data.base import Split, epoch_order, eval_order
from .distributed import all_reduce_, rank, world_size
from .evaluate import evaluate, evaluate_batches
from .methods import EpochInfo, Method, StepContext, StepInfo, create_method, optimizer_warning
from .metrics import SpeedTracker, d_speed
from .models import REGULAR, Branch, LateFusionNet, MMTMNet, Mode, MultiModalNet, Output

__all__ = ["Balancer", "Batches", "StepLog", "intermediate_fusion", "late_fusion"]

Optimizers = torch.optim.Optimizer | Sequence[torch.optim.Optimizer]


# -- models from the user's encoders ----------------------------------------------------------------------------
def _stage_channels(name: str, stages: Sequence[nn.Module], x: Tensor) -> list[int]:
    """Output channels of each stage, read off a forward pass of two items of ``x`` (eval mode, no gradients)."""
    chans = []
    modes = [m.training for m in stages]
    try:
        with torch.no_grad():
            for i, stage in enumerate(stages):
                stage.eval()
                x = stage(x)
                if not isinstance(x, Tensor) or x.dim() < 2:
                    raise ValueError(
                        f"stage {i} of modality {name!r} must return a tensor (B, C, ...), got "
                        f"{type(x).__name__}{'' if not isinstance(x, Tensor) else tuple(x.shape)}"
                    )
                chans.append(int(x.shape[1]))
    finally:
        for m, t in zip(stages, modes, strict=True):
            m.train(t)
    return chans


def _branches(
    encoders: Mapping[str, Sequence[nn.Module]],
    num_classes: int | None,
    channels: Mapping[str, Sequence[int]] | None,
    example: Mapping[str, Tensor] | None,
) -> tuple[list[Branch], list[str]]:
    if not isinstance(encoders, Mapping) or not encoders:
        raise ValueError("encoders: give a dict {modality name: [stage, stage, ...]} with at least one modality")
    names = list(encoders)
    branches = []
    for name in names:
        stages = list(encoders[name]) if not isinstance(encoders[name], nn.Module) else [encoders[name]]
        if not stages or not all(isinstance(s, nn.Module) for s in stages):
            raise ValueError(f"encoders[{name!r}] must be a list of nn.Module stages, got {encoders[name]!r}")
        if channels is not None and name in channels:
            chans = list(channels[name])
        elif example is not None and name in example:
            chans = _stage_channels(name, stages, example[name][:2])
        else:
            raise ValueError(
                f"the output channels of modality {name!r} are unknown: pass example={{{name!r}: a batch}} "
                f"(greedymm reads them off a forward pass) or channels={{{name!r}: [C_1, ..., C_S]}}"
            )
        if len(chans) != len(stages):
            raise ValueError(f"channels[{name!r}] has {len(chans)} entries for {len(stages)} stages; give one each")
        branches.append(Branch(stages, chans, num_classes))
    return branches, names


def intermediate_fusion(
    encoders: Mapping[str, Sequence[nn.Module]],
    num_classes: int,
    *,
    fuse_after: Sequence[int] | None = None,
    channels: Mapping[str, Sequence[int]] | None = None,
    example: Mapping[str, Tensor] | None = None,
    ratio: float = 4.0,
    gate: str = "sigmoid",
) -> MMTMNet:
    """Family (a): one branch per modality (your stages, pooling, a linear head), joined by N-way MMTM after the
    stages in ``fuse_after`` (0-based; default: every stage but the first). Every modality needs the same number
    of stages. Channels come from ``channels`` or a forward pass of ``example`` (a batch, {modality: tensor})."""
    branches, names = _branches(encoders, num_classes, channels, example)
    n_stages = len(branches[0].stages)
    if fuse_after is None:
        fuse_after = tuple(range(1, n_stages)) if n_stages > 1 else (0,)
    return MMTMNet(branches, tuple(fuse_after), names, ratio=ratio, gate=gate)


def late_fusion(
    encoders: Mapping[str, Sequence[nn.Module]],
    num_classes: int,
    *,
    fusion: str = "concat",
    channels: Mapping[str, Sequence[int]] | None = None,
    example: Mapping[str, Tensor] | None = None,
    unimodal_heads: bool = False,
) -> LateFusionNet:
    """Family (b): your encoders (stages, then pooling), fused by ``fusion`` (concat, sum; film and gated for two
    modalities) into one head; ``unimodal_heads`` adds a linear head per modality (methods that train them ask).
    One modality gives a uni-modal model."""
    if fusion not in LATE_FUSIONS:
        raise ValueError(f"unknown late fusion {fusion!r}; choose one of {LATE_FUSIONS} (MMTM: intermediate_fusion)")
    branches, names = _branches(encoders, None, channels, example)
    return LateFusionNet(branches, names, num_classes, fusion=fusion, unimodal_heads=unimodal_heads)


# -- batches in greedymm's order ---------------------------------------------------------------------------------
class Batches:
    """The batches ``greedymm train`` feeds, as an iterable for your loop (or a Lightning ``train_dataloader``).

    Training (``shuffle=True``): each full pass is one epoch, a permutation fixed by (``seed``, epoch), the ragged
    last batch dropped; under DDP each rank takes its slice of every global batch. Evaluation (``shuffle=False``):
    the split in order, each rank its contiguous shard. Yields ``(inputs by modality, labels)``.
    """

    def __init__(self, split: Split, batch_size: int, seed: int = 0, shuffle: bool = True, epoch: int = 0) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.split, self.batch_size, self.seed, self.shuffle, self.epoch = split, batch_size, seed, shuffle, epoch

    def _order(self) -> list[Tensor]:
        if self.shuffle:
            return epoch_order(len(self.split), self.batch_size, self.seed, self.epoch)
        return eval_order(len(self.split), self.batch_size, rank(), world_size())

    def __len__(self) -> int:
        return len(self._order())

    def __iter__(self):
        order = self._order()
        if self.shuffle:
            self.epoch += 1  # the next pass is the next epoch
        for idx in order:
            if self.shuffle:
                idx = idx.tensor_split(world_size())[rank()]
            yield self.split.batch(idx, train=self.shuffle)


# -- the step and epoch calls --------------------------------------------------------------------------------
@dataclass(frozen=True)
class StepLog:
    """What one training step measured (the row greedymm writes to steps.csv)."""

    step: int  # global step, 0-based
    mode: Mode  # the mode this step ran in (``str(mode)``: its name, as steps.csv writes it)
    loss: float  # the method's loss, averaged over ranks
    speeds: dict[str, float] = field(default_factory=dict)  # s_... (MMTM) or this step's mu_m<k> (late)
    d_speed: float = math.nan  # max - min conditional learning speed (MMTM; NaN for late fusion)

    @property
    def finite(self) -> bool:
        """False when the loss is NaN or infinite: skip the optimizer step (the method did not move on)."""
        return math.isfinite(self.loss)

    def values(self) -> list[float]:
        return [self.loss, *self.speeds.values(), self.d_speed]


class Balancer:
    """A greedymm method and the greedy-learning measurements, driven from any training loop.

    ``model``: a greedymm network (``intermediate_fusion``, ``late_fusion``, ``greedymm.models.build_model``).
    ``method``: a name from ``greedymm list`` (or a ``Method`` instance); ``hparams`` its hyper-parameters.
    ``warmup_steps``: regular steps before re-balancing may start (guided, random; the paper: one epoch).
    ``net``: what the forward pass calls, e.g. the model's DistributedDataParallel wrapper (default: the model).
    ``scaler``: an fp16 ``torch.amp.GradScaler`` if you use one (the speeds and methods then see true gradients).
    """

    def __init__(
        self,
        model: MultiModalNet,
        method: str | Method = "vanilla",
        *,
        warmup_steps: int = 0,
        seed: int = 0,
        net: nn.Module | None = None,
        scaler: Any = None,
        hparams: Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(model, MultiModalNet):
            raise TypeError(
                f"Balancer needs a greedymm network, got {type(model).__name__}; build one from your encoders with "
                "greedymm.intermediate_fusion or greedymm.late_fusion"
            )
        if isinstance(method, Method):
            if hparams:
                raise ValueError("hparams go to the method's constructor when you pass a Method instance")
            self.method = method
        else:
            self.method = create_method(method, seed=seed, **dict(hparams or {}))
        self.method.check(model)
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
        self.model, self.net, self.scaler = model, net if net is not None else model, scaler
        self.warmup_steps = int(warmup_steps)
        self.groups = model.speed_groups()
        self.speed_layout = model.speed_layout()
        dev = next(model.parameters()).device
        self.speed = SpeedTracker(len(self.groups), with_psi=self.speed_layout.conditional).to(dev)
        self.speed_names = self.speed_layout.step_names
        # the run's counters, kept here only: end_step counts steps, epoch_end counts epochs (greedymm's loop
        # reads them, a checkpoint saves them)
        self.step = 0  # global step, 0-based: the next step's number
        self.epoch = 0  # the current epoch, 0-based
        self._ctx: StepContext | None = None
        self._loss: Tensor | None = None
        self._backward_done = False  # after_backward ran in this step
        self._optimizer_checked = False  # the first optimizer given was checked against the method
        # the running statistics as the step found them (BatchNorm, MMTM gate and squeeze sums, feature sums,
        # the speed sums), copied into tensors kept from step to step; put back when the step is not taken
        self._stats: list[Tensor] = []
        self._saved: list[Tensor] = []
        # and the method's state, for a method whose step hooks change it (agm's running scores, ogm-ge's sums)
        hooks = ("loss", "backward", "on_after_backward")
        self._method_steps = any(getattr(type(self.method), h) is not getattr(Method, h) for h in hooks)
        self._saved_method: dict[str, Any] | None = None

    @property
    def mode(self) -> Mode:
        """The mode the next step runs in (REGULAR, or rebalance(k) under guided / random)."""
        return self.method.mode

    # -- per step, in this order ----------------------------------------------------------------------------
    def forward(self, x: Mapping[str, Tensor]) -> Output:
        """The forward pass of this step, in the method's mode. The step's first forward keeps a copy of every
        running statistic (the model's buffers: BatchNorm's, the MMTM gate and squeeze sums, the late-fusion
        feature sums; the speed sums; the state of a method whose loss or gradient hooks change it): ``end_step``
        puts them back when the loss is not finite, and ``skip_step`` does when you drop the step, so a step that
        is not taken leaves no trace in them."""
        if self._ctx is None:
            self._save_statistics()
        out = self.net(dict(x), self.method.mode)
        self._ctx = StepContext(dict(x), None, out, self.model, self.net, self.method.mode, self.step, self.epoch)
        return out

    def loss(self, out: Output, y: Tensor) -> Tensor:
        """The method's training loss for ``out`` (from ``forward``) and labels ``y``: float32 (also under bf16 or
        fp16 autocast), float64 for a float64 model."""
        ctx = self._context("loss")
        if out is not ctx.out:
            ctx = StepContext(ctx.x, y, out, ctx.model, ctx.net, ctx.mode, ctx.step, ctx.epoch)
        ctx.y = y
        self._ctx = ctx
        loss = self.method.loss(ctx)
        # float32 under autocast (bf16/fp16 losses), float64 for a float64 model
        self._loss = loss if loss.dtype == torch.float64 else loss.float()
        return self._loss

    def backward(self, loss: Tensor, optimizer: Optimizers | None = None) -> None:
        """The method's backward pass (plain ``loss.backward()`` for most), then ``after_backward``. The
        ``optimizer`` (or a list of them) is needed only with a GradScaler, to unscale the gradients: every
        parameter with a gradient must be in one of them. Given, it is also checked once: a method that balances by
        scaling gradients warns under Adam and kin, which divide a lasting factor out (``optimizer_warning``)."""
        ctx = self._context("backward")
        self._once("backward")
        self.method.backward(self.scaler.scale(loss) if self.scaler else loss, ctx)
        self.after_backward(optimizer)

    def after_backward(self, optimizer: Optimizers | None = None, *, grad_scale: float | None = None) -> None:
        """After gradients exist, before the optimizer step: the method's gradient changes, then the conditional
        learning speed on regular steps. Call it yourself only when something else ran backward (Lightning),
        once per step. ``grad_scale``: the loss scale the gradients are still multiplied by, when something else
        unscales them later (Lightning's 16-mixed does, after this hook); the speeds divide its square out."""
        ctx = self._context("after_backward")
        self._once("after_backward")
        if optimizer is not None and not self._optimizer_checked:
            self._optimizer_checked = True
            if warning := optimizer_warning(self.method, optimizer):
                warnings.warn(warning, stacklevel=3)
        if self.scaler is not None:
            for opt in self._scaled_optimizers(optimizer):
                self.scaler.unscale_(opt)
        self._backward_done = True
        self.method.on_after_backward(ctx)
        if ctx.mode == REGULAR:
            if grad_scale is None or grad_scale == 1.0:
                self.speed.update(self.groups)
            else:  # mu grows with the square of the gradients' scale
                before = self.speed.sums.clone()
                self.speed.update(self.groups)
                self.speed.last.div_(float(grad_scale) ** 2)
                torch.add(before, self.speed.last, out=self.speed.sums)

    def _once(self, call: str) -> None:
        if self._backward_done:
            raise RuntimeError(
                f"Balancer.{call}() a second time in step {self.step}: the gradient changes and the learning speed "
                "were already taken for this step (backward() calls after_backward() itself). Call backward() once "
                "per step (sum the losses first), or after_backward() once when something else ran backward"
            )

    def _scaled_optimizers(self, optimizer: Optimizers | None) -> list[torch.optim.Optimizer]:
        """The optimizers to unscale; refuses when a parameter with a gradient is in none of them (its gradient
        would stay multiplied by the loss scale, and the speeds and gradient changes with it)."""
        if optimizer is None:
            raise ValueError(
                "with a GradScaler, backward / after_backward need the optimizer (or a list of every optimizer) to "
                "unscale the gradients: bal.backward(loss, opt)"
            )
        opts = [optimizer] if isinstance(optimizer, torch.optim.Optimizer) else list(optimizer)
        held = {id(p) for opt in opts for group in opt.param_groups for p in group["params"]}
        missing = [n for n, p in self.model.named_parameters() if p.grad is not None and id(p) not in held]
        if missing:
            names = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
            raise ValueError(
                f"with a GradScaler, every gradient must be unscaled, but {len(missing)} parameters with gradients "
                f"are in no optimizer given ({names}); their gradients would stay multiplied by the loss scale and "
                "the learning speeds with them. Pass every optimizer: bal.backward(loss, [opt_a, opt_b])"
            )
        return opts

    def end_step(self, loss: Tensor | None = None) -> StepLog:
        """Finish the step: one host sync for the loss and the speeds, the method's decision on the next mode.
        Call after ``backward`` and before ``optimizer.step()``; skip that step when the log is not ``finite``: the
        running statistics are then back as the step found them and the method has not moved on. ``loss``:
        default, the one ``loss()`` returned."""
        ctx = self._context("end_step")
        if not self._backward_done:
            raise RuntimeError(
                f"Balancer.end_step() without backward in step {self.step}: no gradients, so no learning speed. "
                "Call bal.backward(loss) (or bal.after_backward() when something else ran backward) before "
                "end_step(); to drop a step after forward, call bal.skip_step()"
            )
        loss = self._loss if loss is None else loss
        logged = all_reduce_(loss.detach().double().view(1).clone(), "mean")  # the global batch's loss
        vals = torch.cat([logged, self.speed.sums, self.speed.last]).tolist()
        if not math.isfinite(vals[0]):  # the step will not be taken: its statistics are put back
            self._restore_statistics()
            vals = [vals[0], *torch.cat([self.speed.sums, self.speed.last]).tolist()]
        g = len(self.groups)
        if self.speed.with_psi:
            speeds = self.speed.speeds_from(vals[1 : 1 + g])
            d = d_speed(speeds)
        else:  # late fusion: this step's mu(theta_k), for diagnosis only
            speeds, d = vals[1 + g :], math.nan
        log = StepLog(ctx.step, ctx.mode, vals[0], dict(zip(self.speed_names, speeds, strict=True)), d)
        if log.finite:
            n = self.model.n_modalities
            self.method.observe(StepInfo(ctx.step, ctx.mode, d, self.warmup_steps, tuple(speeds), n))
        self.step += 1
        self._ctx, self._loss, self._backward_done = None, None, False
        return log

    def skip_step(self) -> None:
        """Drop the step begun by ``forward`` without counting it: the running statistics are put back as the
        step found them, and the next ``forward`` starts the same step number again. Do not step the optimizer."""
        if self._ctx is not None:
            self._restore_statistics()
        self._ctx, self._loss, self._backward_done = None, None, False

    def _statistic_buffers(self) -> list[Tensor]:
        return [*self.model.buffers(), self.speed.sums]  # speed.last is this step's own mu, not a running sum

    @torch.no_grad()
    def _save_statistics(self) -> None:
        stats = self._statistic_buffers()
        same = len(stats) == len(self._stats) and all(a is b for a, b in zip(stats, self._stats, strict=True))
        if same:
            torch._foreach_copy_(self._saved, stats)
        else:  # first step, or the model was moved or cast: new copies
            self._stats, self._saved = stats, [b.clone() for b in stats]
        if self._method_steps:
            self._saved_method = copy.deepcopy(self.method.state_dict())

    @torch.no_grad()
    def _restore_statistics(self) -> None:
        if self._stats:
            torch._foreach_copy_(self._stats, self._saved)
        if self._saved_method is not None:
            self.method.load_state_dict(self._saved_method)

    def _context(self, call: str) -> StepContext:
        if self._ctx is None:
            raise RuntimeError(f"Balancer.{call}() before Balancer.forward(): each step starts with forward(x)")
        return self._ctx

    # -- per epoch ------------------------------------------------------------------------------------------
    def epoch_start(self, train: Split | None = None, val: Split | None = None, batch_size: int = 64) -> None:
        """Before an epoch's first step: clears the squeeze (feature) sums; the method's epoch work. ``train`` and
        ``val`` (greedymm splits) are needed only by methods with epoch work on data (pmr, gblending)."""
        self.model.reset_means()
        self.method.on_epoch_start(self._epoch_info(train, val, batch_size))

    def epoch_end(self, train: Split | None = None, val: Split | None = None, batch_size: int = 64) -> None:
        """After an epoch's last step: the method's epoch work, then the train-split means the utilization passes
        replace a modality with (the mean over this epoch's training forwards)."""
        self.method.on_epoch_end(self._epoch_info(train, val, batch_size))
        self.model.commit_means()
        self.epoch += 1

    def _epoch_info(self, train: Split | None, val: Split | None, batch_size: int) -> EpochInfo:
        dev = next(self.model.parameters()).device
        return EpochInfo(self.epoch, self.model, train, val, dev, batch_size, self.method.seed)

    def speeds(self) -> dict[str, float]:
        """The cumulative conditional learning speeds so far (MMTM), or each encoder's mu (late fusion), and
        d_speed: what results.jsonl records each epoch."""
        speeds, d = self.speed.speeds()
        return {**dict(zip(self.speed_layout.total_names, speeds, strict=True)), "d_speed": d}

    # -- evaluation -----------------------------------------------------------------------------------------
    def evaluate(
        self,
        data: Split | Iterable[tuple[Mapping[str, Tensor], Tensor]],
        pairwise: bool = False,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Accuracy, per-head accuracy, loss and the conditional utilization rates (d_util for two modalities)
        on a greedymm split or any iterable of ``(inputs, labels)`` batches (a DataLoader). The rates need the
        train-split means ``epoch_end()`` commits: refused before the first one (``utilization=False`` gives
        accuracy alone). Non-finite logits are refused, naming ``name=`` (the split) and the item count."""
        if hasattr(data, "batch") and hasattr(data, "__len__"):
            return evaluate(self.model, data, pairwise=pairwise, **kwargs)
        return evaluate_batches(self.model, data, pairwise=pairwise, **kwargs)

    # -- state ----------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"method": self.method.state_dict(), "speed": self.speed.state_dict(), "step": self.step,
                "epoch": self.epoch}  # fmt: skip

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.method.load_state_dict(state["method"])
        self.speed.load_state_dict(state["speed"])
        self.step, self.epoch = int(state["step"]), int(state["epoch"])
