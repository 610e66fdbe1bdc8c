"""A run in memory: the model, optimizer, scheduler, method, speed tracker and position, built from a config.

``build_run`` loads the data (and checks its labels), builds the model of the configured family on the configured
modalities, lets the method refuse what it cannot train, wraps the model for DDP under torchrun, and sets up
precision and memory layout. The optimizer and the learning-rate schedule come from two tables (``OPTIMIZERS``,
``SCHEDULES``: name -> factory). ``Run.state_dict`` is exactly what a checkpoint saves.

``evaluate_checkpoint`` evaluates a finished run from its folder without building a training run: the data and
the model from the saved config, the weights from a checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import platform
import warnings
from collections.abc import Callable, Iterable, Mapping
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
    data_given: bool = False  # the data came from the caller (fit(..., data=...)), not from the config
    model_given: bool = False  # the model came from the caller (fit(..., model=...)), not from the config

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

    def load_state_dict(self, s: dict[str, Any], where: str = "the checkpoint") -> None:
        """Continue from a checkpoint's state (``where`` names it in errors). Tensors the loop keeps adding to go
        to this run's device: a checkpoint loads to the CPU, whichever device wrote it."""
        if missing := [k for k in RUN_STATE if k not in s]:
            raise RunError(
                f"{where} lacks {', '.join(missing)}: it is not a checkpoint of `greedymm train` (a Lightning or own "
                "loop checkpoint holds less); resume from the last.pt a run of greedymm train wrote, or start again"
            )
        saved_method = (s.get("config") or {}).get("method", self.cfg.method)
        if saved_method != self.cfg.method:
            raise RunError(
                f"{where} was written by a {saved_method!r} run; this run's config.json says {self.cfg.method!r}. "
                "The checkpoint belongs to another run folder: restore this run's own checkpoint, or start again"
            )
        load_model_state(self.model, s["model"], where)
        self.optimizer.load_state_dict(s["optimizer"])
        if self.scheduler and s["scheduler"]:
            self.scheduler.load_state_dict(s["scheduler"])
        self.balancer.load_state_dict({k: s[k] for k in ("method", "speed", "step", "epoch")})
        for k in ("batch", "best_val", "best_epoch", "perfect_epochs", "epoch_stats"):
            setattr(self, k, s[k])
        if isinstance(self.epoch_stats, torch.Tensor):
            self.epoch_stats = self.epoch_stats.to(self.device)
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


# what a checkpoint of `greedymm train` must hold for a run to continue from it (Run.state_dict)
RUN_STATE = (
    "model", "optimizer", "scheduler", "method", "speed", "step", "epoch", "batch", "best_val", "best_epoch",
    "perfect_epochs", "epoch_stats", "torch_rng",
)  # fmt: skip


def build_run(cfg: TrainConfig, data: MultiModalData | None = None, model: MultiModalNet | None = None) -> Run:
    """``model``: your own greedymm network (greedymm.api.intermediate_fusion / late_fusion) instead of the one
    the config names; its modalities must be the data's."""
    method_hparams = method_class(cfg.method).hparams
    method = create_method(cfg.method, seed=cfg.seed, **{k: v for k, v in cfg.hparams.items() if k in method_hparams})
    if extra := sorted(set(cfg.hparams) - set(method_hparams)):
        raise ValueError(f"method {cfg.method!r} has no hyper-parameters {extra}; it takes {sorted(method_hparams)}")
    data_given, model_given = data is not None, model is not None
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
    run = Run(cfg, data, model, opt, sched, balancer, device, net, ctx, scaler)
    run.data_given, run.model_given = data_given, model_given
    return run


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


def load_model_state(model: torch.nn.Module, state: Mapping[str, Any], where: str) -> None:
    """``model.load_state_dict(state)``, or a short refusal naming the first missing, unexpected and misshapen
    tensors and the likely causes (instead of torch's list of every tensor)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} ({list(state[k].shape)} saved, {list(own[k].shape)} here)"
        for k in own
        if k in state and isinstance(state[k], torch.Tensor) and state[k].shape != own[k].shape
    ]
    if missing or unexpected or shapes:

        def few(label: str, names: list[str]) -> str:
            more = f" (+{len(names) - 3} more)" if len(names) > 3 else ""
            return f"{label} {', '.join(names[:3])}{more}"

        parts = [few(label, names) for label, names in (
            ("missing", missing), ("unexpected", unexpected), ("shapes differ for", shapes)
        ) if names]  # fmt: skip
        raise RunError(
            f"the weights in {where} do not fit the network built for this run ({type(model).__name__}): "
            f"{'; '.join(parts)}. Likely cause: they were written for another network: another --set data.arch=..., "
            "--fusion, --modalities or --width, another data set's classes or channels, or your own model (pass it "
            "again: fit(..., model=...), evaluate_checkpoint(folder, model=...))"
        )
    model.load_state_dict(state)


# -- what a run was trained on: config.json's "trained_on", checked by `eval` and `train --resume` -----------------

SAMPLE_RTOL = 1e-3  # sample statistics recomputed on another machine may differ in their last bits


def _digest(t: torch.Tensor) -> str:
    return hashlib.sha1(t.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]


def data_fingerprint(data: MultiModalData, given: bool = False) -> dict[str, Any]:
    """What data a run is trained on, cheap to recompute: modalities, class count and name, and per split the item
    count, a digest of its labels (all of them where the split keeps ``labels``, and always those of the three items
    below, so that a wrapper without ``labels`` still compares), each modality's item shape, and the mean and
    standard deviation of three fixed items (first, middle, last) per modality.
    ``given``: the data came from the caller (``fit(..., data=...)``), not from the config. Where the data lives
    is not part of it: a moved data folder gives the same fingerprint."""
    splits = {}
    with torch.random.fork_rng(devices=[]):  # reading items must not move a run's random stream
        for name in ("train", "val", "test"):
            split = getattr(data, name)
            n = len(split)
            if n == 0:
                splits[name] = {"items": 0}
                continue
            x, y = split.batch(torch.tensor(sorted({0, n // 2, n - 1})), train=False)
            labels = getattr(split, "labels", None)
            x = {m: v for m, v in x.items() if isinstance(v, torch.Tensor)}
            splits[name] = {
                "items": n,
                "sample_labels": _digest(torch.as_tensor(y).long()),
                **({} if labels is None else {"labels": _digest(torch.as_tensor(list(labels)).long())}),
                "shapes": {m: list(v.shape[1:]) for m, v in x.items()},
                "sample": {m: [float(v.double().mean()), float(v.double().std(correction=0))] for m, v in x.items()},
            }
    return {
        "name": data.name,
        "given": given,
        "modalities": list(data.modalities),
        "num_classes": int(data.num_classes),
        "splits": splits,
    }


def model_fingerprint(model: torch.nn.Module, given: bool = False) -> dict[str, Any]:
    """The network a run trains: its class and a digest of its tensors' names and shapes (what its checkpoints
    hold). ``given``: your own model (``fit(..., model=...)``), which a run folder cannot rebuild from its config."""
    names = [f"{k}:{list(v.shape)}" for k, v in model.state_dict().items()]
    digest = hashlib.sha1("\n".join(names).encode()).hexdigest()[:16]
    return {"given": given, "class": type(model).__name__, "tensors": len(names), "state": digest}


def trained_on(run: Run) -> dict[str, Any]:
    """config.json's record of what ``run`` trains on: {"data": data_fingerprint, "model": model_fingerprint}."""
    return {
        "data": data_fingerprint(run.data, run.data_given),
        "model": model_fingerprint(run.model, run.model_given),
    }


def saved_trained_on(folder: str | Path) -> dict[str, Any] | None:
    """The record in a run folder's config.json; None for a folder written before it was kept (or without one)."""
    path = RunDir(folder).config_file
    if not path.is_file():
        return None
    try:
        saved = json.loads(path.read_text())
    except ValueError as e:
        raise RunError(f"{path} is not valid JSON ({e}); restore it from a copy, or train the run again") from None
    record = saved.get("trained_on") if isinstance(saved, dict) else None
    if record is None:
        return None
    data, model = (record.get(k, {}) if isinstance(record, dict) else None for k in ("data", "model"))
    splits = data.get("splits", {}) if isinstance(data, dict) else None
    if not (isinstance(model, dict) and isinstance(splits, dict) and all(isinstance(v, dict) for v in splits.values())):
        raise RunError(
            f'{path}: its "trained_on" record is damaged (not the object greedymm writes); restore config.json '
            "from a copy, or delete that key to evaluate or resume without the check"
        )
    return record


_HOW = {
    "evaluate": "evaluate it in Python with what it was trained on: greedymm.run.evaluate_checkpoint(folder, "
    "data=your_data, model=your_model) (leave out what came from the config)",
    "resume": "resume it in Python with what it was trained on: fit(cfg, out, resume=True, data=your_data, "
    "model=your_model) (leave out what came from the config)",
}


def check_given(folder: str | Path, cfg: TrainConfig, data: Any, model: Any, action: str) -> None:
    """Before any data is read: a run trained on your own model, or on data passed in Python under a name no loader
    is registered under, cannot be rebuilt from its config; refuse, naming how to pass them (``action``: "evaluate"
    or "resume")."""
    from .data.base import dataset_options

    record = saved_trained_on(folder)
    if record is None:
        return
    saved_model, saved_data = record.get("model") or {}, record.get("data") or {}
    if saved_model.get("given") and model is None:
        raise RunError(
            f"{folder} was trained with your own model ({saved_model.get('class')}), which a run folder cannot "
            f"rebuild from its config; {_HOW[action]}"
        )
    if saved_data.get("given") and data is None and dataset_options(cfg.dataset) is None:
        raise RunError(
            f"{folder} was trained on data passed in Python ({saved_data.get('name')!r}), not on a registered data "
            f"set; {_HOW[action]}"
        )


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return abs(a - b) <= SAMPLE_RTOL * max(1.0, abs(a), abs(b))
    return a == b


def _data_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    found = []
    for key, what in (("modalities", "modalities"), ("num_classes", "classes")):
        if key in old and old[key] != new[key]:
            found.append(f"{what}: {old[key]} when trained, {new[key]} now")
    for split, was in (old.get("splits") or {}).items():
        now = new["splits"].get(split, {})
        if was.get("items") != now.get("items"):
            found.append(f"{split} split: {was.get('items')} items when trained, {now.get('items')} now")
            continue
        # every label where both splits keep them (a wrapper of a split may not), else the three sampled items'
        both = [k for k in ("labels", "sample_labels") if k in was and k in now]
        if both and was[both[0]] != now[both[0]]:
            found.append(f"the labels of the {split} split differ")
        if was.get("shapes") != now.get("shapes"):
            found.append(f"{split} items: shapes {was.get('shapes')} when trained, {now.get('shapes')} now")
        elif not _close(was.get("sample"), now.get("sample")):
            found.append(f"the items of the {split} split differ (first, middle and last item)")
    return found


def check_trained_on(
    folder: str | Path, data: MultiModalData, model: torch.nn.Module, data_given: bool, model_given: bool, action: str
) -> None:
    """Refuse to evaluate or resume (``action``) a run on other data or another model than it was trained on,
    naming what differs and how to pass the run's own. A folder without the record (written before it was kept)
    is not checked."""
    record = saved_trained_on(folder)
    if record is None:
        return
    if "data" in record and (found := _data_differences(record["data"], data_fingerprint(data))):
        saved = record["data"]
        now = "the data given now" if data_given else f"the config's data set {data.name} as it loads here"
        hint = (
            f"; {_HOW[action]}"
            if saved.get("given") or data_given
            else ". Its files changed since it was trained: check --data-dir and the data options"
        )
        raise RunError(
            f"{folder} was trained on other data ({saved.get('name')!r}) than {now}: {'; '.join(found[:4])}{hint}"
        )
    saved_model = record.get("model") or {}
    if saved_model and (saved_model.get("given") or model_given):
        now = model_fingerprint(model)
        if (now["class"], now["state"]) != (saved_model.get("class"), saved_model.get("state")):
            raise RunError(
                f"{folder} was trained with {'your own model' if saved_model.get('given') else 'the config model'} "
                f"({saved_model.get('class')}, {saved_model.get('tensors')} tensors); the model given now "
                f"({now['class']}, {now['tensors']} tensors) is another: its parameters differ (names or shapes); "
                f"{_HOW[action]}"
            )


def evaluate_checkpoint(
    folder: str | Path,
    checkpoint: str = "best",
    squeeze_means: str = "saved",
    data: MultiModalData | None = None,
    *,
    model: MultiModalNet | None = None,
    device: str | None = None,
    data_dir: str | None = None,
) -> dict[str, Any]:
    """Every metric of a run recomputed from one of its checkpoints (regular mode, utilization included) and
    saved beside it (``RunDir.eval_file``); returns {"checkpoint", "epoch", "squeeze_means", "val", "test",
    "config", "saved_to"} (``saved_to``: the file, or None when the folder could not take it; a warning says
    why). Builds the data and the model from the saved config and loads the weights: no optimizer, method
    or DDP wrapper. ``squeeze_means``: "saved" (the train-split means in the checkpoint) or "exact" (recomputed
    by an eval-mode pass over the training split). ``data`` / ``model``: what the run was trained on when it was
    not the config's (``fit(..., data=..., model=...)``); the run folder's record of it is checked either way.
    ``device`` / ``data_dir``: where to evaluate and where the data lives now, instead of the saved ones."""
    from .checkpoint import load_checkpoint
    from .evaluate import evaluate, record_train_squeeze_means

    if squeeze_means not in ("saved", "exact"):
        raise ValueError(f"squeeze_means must be 'saved' or 'exact', got {squeeze_means!r}")
    run = RunDir(folder)
    path = run.checkpoint(checkpoint)
    state = load_checkpoint(path, require=("config", "model", "epoch"))
    cfg = TrainConfig.from_dict(state["config"])
    cfg = cfg.replace(**{k: v for k, v in (("device", device), ("data_dir", data_dir)) if v is not None})
    check_given(folder, cfg, data, model, "evaluate")
    device_ = setup(cfg.device).device  # under torchrun every rank evaluates its shard
    data_given, model_given = data is not None, model is not None
    data = select_modalities(data, cfg.modalities) if data is not None else load_data(cfg)
    if model is None:
        model = model_from_config(cfg, data)
    elif not isinstance(model, MultiModalNet):
        raise TypeError(f"model must be a greedymm network (the one the run trained), got {type(model).__name__}")
    check_trained_on(folder, data, model, data_given, model_given, "evaluate")
    load_model_state(model, state["model"], str(path))
    model = model.to(device_)
    if cfg.channels_last:
        to_channels_last(model)
    if squeeze_means == "exact":
        record_train_squeeze_means(model, data.train, subset=cfg.exact_subset, seed=cfg.data_seed, device=device_)
    opts = {"pairwise": cfg.pairwise_utilization, "precision": cfg.precision, "channels_last": cfg.channels_last}
    result = {
        "checkpoint": checkpoint,
        "epoch": state["epoch"] - 1,
        "squeeze_means": squeeze_means,
        **{s: evaluate(model, getattr(data, s), device=device_, name=s, **opts) for s in ("val", "test")},
    }
    saved = run.write_eval(checkpoint, result)  # None (with a warning naming the file) when it cannot be written
    return {**result, "config": cfg.to_dict(), "saved_to": str(saved) if saved else None}
