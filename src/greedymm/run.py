"""A run in memory: the model, optimizer, scheduler, method, speed tracker and position, built from a config.

``build_run`` loads the data (and checks its labels), builds the model of the configured family on the configured
modalities, lets the method refuse what it cannot train, wraps the model for DDP under torchrun, and sets up
precision and memory layout. The optimizer and the learning-rate schedule come from two tables (``OPTIMIZERS``,
``SCHEDULES``: name -> factory). ``Run.state_dict`` is exactly what a checkpoint saves.

``evaluate_checkpoint`` evaluates a finished run from its folder without building a training run: the data and
the model from the saved config, the weights from a checkpoint.
"""

from __future__ import annotations

import platform
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from .api import Balancer
from .config import TrainConfig
from .data import MultiModalData, load_dataset, select_modalities
from .data.base import check_labels
from .distributed import DistContext, ddp_buffer_kwargs, setup, sync_batchnorm
from .methods import Method, create_method, method_class
from .metrics import SpeedTracker
from .models import MultiModalNet, build_model
from .precision import grad_scaler, to_channels_last
from .rundir import RunDir
from .version import __version__


class RunError(RuntimeError):
    """A run cannot start or continue; the message says why and what to do."""


def versions() -> dict[str, str]:
    return {
        "greedymm": __version__,
        "torch": str(torch.__version__),  # a plain str: checkpoints hold plain data only
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


# name -> factory(parameters, config); the names are choices.OPTIMIZERS
OPTIMIZERS: dict[str, Callable[[Iterable[torch.nn.Parameter], TrainConfig], torch.optim.Optimizer]] = {
    "sgd": lambda params, cfg: torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay),
    "adam": lambda params, cfg: torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay),
}
# name -> factory(optimizer, config), None for a constant learning rate; the names are choices.SCHEDULES. Each
# scheduler steps once per epoch; "plateau" on the epoch's training loss (see ``step_schedule``)
SCHEDULES: dict[str, Callable[[torch.optim.Optimizer, TrainConfig], Any] | None] = {
    "none": None,
    "cosine": lambda opt, cfg: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs),
    "step": lambda opt, cfg: torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.step_size, gamma=cfg.gamma),
    "plateau": lambda opt, cfg: torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.3, patience=10),
}


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> tuple[torch.optim.Optimizer, Any]:
    """(optimizer, scheduler or None) from the tables."""
    for field, table in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES)):
        if getattr(cfg, field) not in table:
            raise ValueError(f"unknown {field} {getattr(cfg, field)!r}; choose one of {tuple(table)}")
    opt = OPTIMIZERS[cfg.optimizer](model.parameters(), cfg)
    make_schedule = SCHEDULES[cfg.schedule]
    return opt, make_schedule(opt, cfg) if make_schedule else None


def step_schedule(scheduler: Any, train_loss: float) -> None:
    """One epoch's scheduler step: on the training loss for ReduceLROnPlateau, plain for the others."""
    if scheduler is None:
        return
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        scheduler.step(train_loss)
    else:
        scheduler.step()


@dataclass
class Run:
    """Everything a run holds in memory; ``state_dict`` is what a checkpoint saves."""

    cfg: TrainConfig
    data: MultiModalData
    model: MultiModalNet
    optimizer: torch.optim.Optimizer
    scheduler: Any
    balancer: Balancer  # the method and the speed tracker, called as a user's own loop would (greedymm.api)
    device: torch.device
    net: torch.nn.Module  # what the forward pass calls: the model, or its DistributedDataParallel wrapper
    dist: DistContext
    scaler: Any = None  # fp16 loss scaler (precision.grad_scaler), None otherwise
    batch: int = 0  # batches of the current epoch already done
    best_val: float = -1.0
    best_epoch: int = -1
    perfect_epochs: int = 0  # consecutive epochs at 100% training accuracy
    epoch_stats: torch.Tensor | None = None  # (loss sum, correct, seen, rebalance steps) of this epoch
    elapsed: float = 0.0  # training wall time in seconds, carried across resumes

    @property
    def method(self) -> Method:
        return self.balancer.method

    @property
    def step(self) -> int:
        """The global step (0-based): the next step's number. The Balancer counts it (``Balancer.end_step``)."""
        return self.balancer.step

    @property
    def epoch(self) -> int:
        """The current epoch (0-based). The Balancer counts it (``Balancer.epoch_end``)."""
        return self.balancer.epoch

    @property
    def speed(self) -> SpeedTracker:
        return self.balancer.speed

    def state_dict(self, rng_states: list[torch.Tensor] | None = None) -> dict[str, Any]:
        """``rng_states``: every rank's torch RNG state (from ``gather_rng_states``), so each rank resumes its own
        random draws (augmentation); defaults to this process's state."""
        return {
            "config": self.cfg.to_dict(),
            "versions": versions(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler else None,
            "method": self.method.state_dict(),
            "speed": self.speed.state_dict(),
            "epoch": self.epoch,
            "batch": self.batch,
            "step": self.step,
            "best_val": self.best_val,
            "best_epoch": self.best_epoch,
            "perfect_epochs": self.perfect_epochs,
            "epoch_stats": self.epoch_stats,
            "elapsed": self.elapsed,
            "torch_rng": rng_states if rng_states is not None else [torch.get_rng_state()],
            "scaler": self.scaler.state_dict() if self.scaler else None,
        }

    def load_state_dict(self, s: dict[str, Any]) -> None:
        self.model.load_state_dict(s["model"])
        self.optimizer.load_state_dict(s["optimizer"])
        if self.scheduler and s["scheduler"]:
            self.scheduler.load_state_dict(s["scheduler"])
        self.balancer.load_state_dict({k: s[k] for k in ("method", "speed", "step", "epoch")})
        for k in ("batch", "best_val", "best_epoch", "perfect_epochs", "epoch_stats"):
            setattr(self, k, s[k])
        self.elapsed = s.get("elapsed", 0.0)
        if self.scaler and s.get("scaler"):
            self.scaler.load_state_dict(s["scaler"])
        rng = s["torch_rng"]
        rng = rng if isinstance(rng, list) else [rng]
        if len(rng) != self.dist.world:
            raise RunError(
                f"the checkpoint was written by {len(rng)} process(es) and this run has {self.dist.world}; resume with "
                f"--nproc-per-node {len(rng)} (the random draws of each process are part of the state)"
            )
        torch.set_rng_state(rng[self.dist.rank])


def build_run(cfg: TrainConfig, data: MultiModalData | None = None, model: MultiModalNet | None = None) -> Run:
    """``model``: your own greedymm network (greedymm.api.intermediate_fusion / late_fusion) instead of the one
    the config names; its modalities must be the data's."""
    method_hparams = method_class(cfg.method).hparams
    method = create_method(cfg.method, seed=cfg.seed, **{k: v for k, v in cfg.hparams.items() if k in method_hparams})
    if extra := sorted(set(cfg.hparams) - set(method_hparams)):
        raise ValueError(f"method {cfg.method!r} has no hyper-parameters {extra}; it takes {sorted(method_hparams)}")
    data = select_modalities(data, cfg.modalities) if data is not None else load_data(cfg)
    for warning in check_labels(data):
        warnings.warn(warning, stacklevel=2)
    ctx = setup(cfg.device)
    if cfg.batch_size % ctx.world:
        raise ValueError(
            f"batch_size {cfg.batch_size} is the global batch; it must split evenly over {ctx.world} ranks"
        )
    torch.manual_seed(cfg.seed)
    device = ctx.device
    if model is None:
        model = model_from_config(cfg, data)
    elif not isinstance(model, MultiModalNet):
        raise TypeError(
            f"model must be a greedymm network, got {type(model).__name__}; build it from your encoders with "
            "greedymm.intermediate_fusion or greedymm.late_fusion"
        )
    elif tuple(model.modalities) != tuple(data.modalities):
        raise ValueError(
            f"the model reads modalities {list(model.modalities)} but the data has {list(data.modalities)}; build "
            "the model with the data's modality names, in the same order (or pick them with TrainConfig.modalities)"
        )
    model = model.to(device)
    method.check(model)
    if cfg.precision == "fp16" and type(method).backward is not Method.backward:
        raise ValueError(
            f"method {cfg.method!r} forms its own gradients, which fp16 loss scaling would distort; use --precision "
            "bf16 (no scaling needed) or fp32"
        )
    if cfg.channels_last:
        to_channels_last(model)
    net: torch.nn.Module = model
    if ctx.world > 1:
        # random augmentation must differ between ranks (each sees other items); weights stay equal because DDP
        # copies rank 0's at construction
        torch.manual_seed(cfg.seed + 7919 * ctx.rank)
        sync_batchnorm(model, device)
        # buffers (running gate means, squeeze sums, BN statistics) are kept equal by all-reduces, not broadcasts;
        # a re-balancing step leaves a gate layer unused, which DDP must be told about
        net = DistributedDataParallel(
            model,
            **ddp_buffer_kwargs(),
            find_unused_parameters=method.leaves_unused_parameters,
            device_ids=[device.index] if device.type == "cuda" else None,
        )
    opt, sched = build_optimizer(model, cfg)
    scaler = grad_scaler(cfg.precision, device)
    balancer = Balancer(model, method, net=net, scaler=scaler)  # warm-up steps: set by the loop (steps per epoch)
    return Run(cfg, data, model, opt, sched, balancer, device, net, ctx, scaler)


def load_data(cfg: TrainConfig) -> MultiModalData:
    """The config's data set, on the config's modalities."""
    data = load_dataset(
        cfg.dataset, data_dir=cfg.data_dir, val_fraction=cfg.val_fraction, data_seed=cfg.data_seed, **cfg.data_options
    )
    return select_modalities(data, cfg.modalities)


def model_from_config(cfg: TrainConfig, data: MultiModalData) -> MultiModalNet:
    """The network the config names, for the data's modalities (with the per-modality heads its method asks for);
    fresh weights from the current torch seed."""
    return build_model(
        data.arch,
        data.modalities,
        data.in_channels,
        data.num_classes,
        width=cfg.width,
        gate=cfg.gate,
        ratio=cfg.ratio,
        fusion=cfg.fusion,
        unimodal_heads=method_class(cfg.method).needs_unimodal_heads,
    )


def evaluate_checkpoint(
    folder: str | Path, checkpoint: str = "best", squeeze_means: str = "saved", data: MultiModalData | None = None
) -> dict[str, Any]:
    """Every metric of a run recomputed from one of its checkpoints (regular mode, utilization included) and
    saved beside it (``RunDir.eval_file``); returns {"checkpoint", "epoch", "squeeze_means", "val", "test",
    "config", "saved_to"} (``saved_to``: the file, or None when the folder could not take it; a warning says
    why). Builds the data and the model from the saved config and loads the weights: no optimizer, method
    or DDP wrapper. ``squeeze_means``: "saved" (the train-split means in the checkpoint) or "exact" (recomputed
    by an eval-mode pass over the training split). ``data``: the MultiModalData the run was trained on when it
    was not the config's data set (``fit(..., data=...)``)."""
    from .checkpoint import load_checkpoint
    from .evaluate import evaluate, record_train_squeeze_means

    if squeeze_means not in ("saved", "exact"):
        raise ValueError(f"squeeze_means must be 'saved' or 'exact', got {squeeze_means!r}")
    run = RunDir(folder)
    state = load_checkpoint(run.checkpoint(checkpoint), require=("config", "model", "epoch"))
    cfg = TrainConfig.from_dict(state["config"])
    data = select_modalities(data, cfg.modalities) if data is not None else load_data(cfg)
    device = setup(cfg.device).device  # under torchrun every rank evaluates its shard
    model = model_from_config(cfg, data)
    model.load_state_dict(state["model"])
    model = model.to(device)
    if cfg.channels_last:
        to_channels_last(model)
    if squeeze_means == "exact":
        record_train_squeeze_means(model, data.train, subset=cfg.exact_subset, seed=cfg.data_seed, device=device)
    opts = {"pairwise": cfg.pairwise_utilization, "precision": cfg.precision, "channels_last": cfg.channels_last}
    result = {
        "checkpoint": checkpoint,
        "epoch": state["epoch"] - 1,
        "squeeze_means": squeeze_means,
        **{s: evaluate(model, getattr(data, s), device=device, name=s, **opts) for s in ("val", "test")},
    }
    saved = run.write_eval(checkpoint, result)  # None (with a warning naming the file) when it cannot be written
    return {**result, "config": cfg.to_dict(), "saved_to": str(saved) if saved else None}
