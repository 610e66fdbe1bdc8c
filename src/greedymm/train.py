"""The one training loop: method-agnostic, resumable, logging every evaluation and every step.

Per step (the method's hooks, docs/DESIGN.md section 4; the loop never asks which method runs): forward in the
method's mode, the method's loss (MMTM by default: the sum of the heads' cross-entropies; late fusion: the fused
head's), the method's backward and gradient changes, the conditional learning speed on regular steps (before the
optimizer step, docs/PAPER.md section 4), the method picks the next mode, optimizer step. Per epoch: the method's epoch
hooks, squeeze (or feature) means committed, validation and test evaluated in regular mode with utilization, the
epoch's record (``epoch_record``, a pure function of the epoch's numbers) appended to the run folder, checkpoints
written atomically (the last always, the best on a new best validation accuracy). Test is never used for
selection. The Balancer counts steps and epochs; the loop reads its counters (``Run.step``, ``Run.epoch``).
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from .api import StepLog
from .checkpoint import load_checkpoint
from .config import RESUME_MAY_CHANGE, TrainConfig
from .data import MultiModalData, epoch_order
from .distributed import all_reduce_, barrier, gather_rng_states, teardown
from .evaluate import evaluate, record_train_squeeze_means
from .lock import RunLock
from .models import REGULAR, MultiModalNet
from .precision import autocast, inputs_channels_last
from .run import (  # noqa: F401  (RunError, build_run: public here too)
    Run,
    RunError,
    build_run,
    check_given,
    check_trained_on,
    step_schedule,
    trained_on,
    versions,
)
from .rundir import BROKEN, DONE, NEW, RunDir, step_row
from .tblog import TensorBoardLog, check_logs


def step_columns(model: MultiModalNet) -> tuple[str, ...]:
    """steps.csv columns: the speed columns the model declares (MMTM: s_k, the paper's names for N = 2; late
    fusion: this step's mu(theta_k))."""
    return ("step", "epoch", "mode", "loss", *model.speed_layout().step_names, "d_speed")


def fit(
    cfg: TrainConfig,
    out: str | Path,
    resume: bool = False,
    progress: bool = True,
    checkpoint_every: int = 0,
    data: MultiModalData | None = None,
    model: MultiModalNet | None = None,
    log: Sequence[str] = (),
) -> Path:
    """Train (or resume) one run in ``out``; returns ``out``. ``checkpoint_every`` adds mid-epoch checkpoints.
    ``data``: your own MultiModalData instead of the config's data set; ``model``: your own greedymm network
    (built the same way again to resume). ``log``: extra destinations besides the jsonl/csv logs ("tensorboard")."""
    log = check_logs(log)
    try:
        return _fit(cfg, RunDir(out), resume, progress, checkpoint_every, data, model, log)
    finally:
        teardown()  # also after an error or an interrupt: no gloo/nccl thread outlives the run


def _fit(
    cfg: TrainConfig,
    rd: RunDir,
    resume: bool,
    progress: bool,
    checkpoint_every: int,
    data: MultiModalData | None,
    model: MultiModalNet | None,
    log: tuple[str, ...],
) -> Path:
    out = rd.path
    if out.exists() and not out.is_dir():
        raise RunError(f"--out {out} is a file, not a run folder; choose a folder path")
    if out.is_dir() and os.environ.get("RANK", "0") == "0":  # rank 0 is the writer (torchrun sets RANK)
        RunLock(out).acquire().release()  # a folder being trained in: name its writer before anything else
    restart = _check_out_dir(rd, cfg, resume)  # True: --resume of a run that stopped before its first checkpoint
    if resume:  # own data or an own model must be passed again: say so before any data is read
        check_given(out, cfg, data, model, "resume")
    run = build_run(cfg, data, model)
    barrier()  # every rank has checked the folder before rank 0 writes to it
    main = run.dist.is_main
    lock = RunLock(out).acquire() if main else None  # one writer per run folder, for the whole run
    try:
        if main and restart and _check_out_dir(rd, cfg, resume):
            rd.clean(lock_held=True)  # under the lock: the run starts again from its saved config
        _fit_locked(run, rd, resume and not restart, progress, checkpoint_every, log)
    finally:
        if lock is not None:
            lock.release()
    return out


def _check_out_dir(rd: RunDir, cfg: TrainConfig, resume: bool) -> bool:
    """Resume only a run that can be resumed, with the same settings (``epochs`` may grow); start only in a
    folder without a run. Returns True when ``resume`` meets a run that stopped before its first checkpoint
    (``RunDir.restartable``): it starts again. Planted or damaged run files are refused first."""
    rd.check_files()
    state = rd.state()
    names = ", ".join(p.name for p in rd.leftovers())
    last = rd.checkpoint("last")
    if state == BROKEN and last.is_file():  # a checkpoint without its config.json: never advise removing it
        raise RunError(f"{rd.kept_work()}; or choose another --out")
    if resume:
        restart = state == BROKEN and rd.restartable()
        if state == BROKEN and not restart:
            raise RunError(
                f"nothing to resume in {rd}: no {last.name}, and it holds {names}, which starting again would lose; "
                f"restore {last.name}, or move those files out of the folder and start it without --resume"
            )
        if not restart and (state == NEW or not last.is_file()):
            raise RunError(f"nothing to resume in {rd}: no {last.name} (start it without --resume)")
        saved = rd.saved_config()
        defaults = TrainConfig().to_dict()  # a setting newer than the saved run had its default there
        diff = {
            k: (saved.get(k, defaults[k]), v)
            for k, v in cfg.to_dict().items()
            if k not in RESUME_MAY_CHANGE and saved.get(k, defaults[k]) != v
        }
        if diff:
            raise RunError(
                f"{rd} holds a run with a different config {diff} (saved, given); resume with the "
                "same settings, or choose another --out"
            )
        done_epochs = (rd.done_info() or {}).get("epochs") if state == DONE else None
        if done_epochs is not None and done_epochs >= cfg.epochs:
            raise RunError(f"{rd} is already finished ({done_epochs} epochs); raise --epochs to train longer")
        return restart
    elif state == BROKEN and rd.restartable():
        raise RunError(
            f"{rd} holds a run that stopped before its first checkpoint (found {names}); `greedymm train --resume "
            f"{rd}` starts it again from its saved config, or choose another --out"
        )
    elif state == BROKEN and not rd.disposable():
        raise RunError(f"{rd.kept_work()}; or choose another --out")
    elif state == BROKEN:
        raise RunError(
            f"{rd} already holds a run that cannot be resumed (no checkpoint with its config; found {names}); "
            "remove those files (a sweep does this itself), or choose another --out"
        )
    elif state != NEW:
        raise RunError(f"{rd} already holds a run ({state}); pass --resume to continue it, or choose another --out")
    return False


def _fit_locked(
    run: Run, rd: RunDir, resume: bool, progress: bool, checkpoint_every: int, log: tuple[str, ...]
) -> None:
    cfg, main = run.cfg, run.dist.is_main
    if main:
        _check_out_dir(rd, cfg, resume)  # again, now that no other process can write here
    if resume:
        if main:  # the same data and model as the run was trained on (config.json "trained_on")
            check_trained_on(rd.path, run.data, run.model, run.data_given, run.model_given, "resume")
        run.load_state_dict(load_checkpoint(rd.checkpoint("last")), where=str(rd.checkpoint("last")))
        if main:  # the logs continue from the checkpoint; a log that lost lines the checkpoint holds is refused
            rd.truncate_logs(run.step, run.epoch, step_columns(run.model))
    if main:
        saved = {
            "config": cfg.to_dict(),
            "versions": versions(),
            "source": run.data.source,
            "trained_on": trained_on(run),
        }
        rd.start(saved, step_columns=None if resume else step_columns(run.model))
    tb = None
    if main and "tensorboard" in log:
        tb = TensorBoardLog(rd.tensorboard, purge_step=run.step if resume else None)
    try:
        _train(run, rd, progress and main, checkpoint_every, tb, console="console" in log and main)
    finally:
        if tb is not None:
            tb.close()
    if main:
        rd.mark_done(cfg.epochs, run.step, run.best_epoch)
    barrier()


def train_step(run: Run, x: dict[str, torch.Tensor], y: torch.Tensor) -> StepLog:
    """One optimizer step in the method's mode, through the public step calls (greedymm.api.Balancer, which
    counts the step); returns what the step measured (its number, mode, loss, speeds, d_speed)."""
    opt, dev, bal = run.optimizer, run.device, run.balancer
    x = {k: v.to(dev, non_blocking=True) for k, v in x.items()}
    if run.cfg.channels_last:
        x = inputs_channels_last(x)
    y = y.to(dev, non_blocking=True)
    mode = bal.mode
    with autocast(run.cfg.precision, dev):
        out = bal.forward(x)
        loss = bal.loss(out, y)
    opt.zero_grad(set_to_none=True)
    bal.backward(loss, opt)  # the method's gradients; the speed on regular steps, before the optimizer step
    log = bal.end_step(loss)  # one host sync; the method picks the next mode
    if log.finite:
        if run.scaler:
            run.scaler.step(opt)  # skipped when fp16 gradients overflowed; the scale then shrinks
            run.scaler.update()
        else:
            opt.step()
        with torch.no_grad():
            hit = (out.logits.argmax(1) == y).sum()
            extra = torch.tensor([float(len(y)), float(mode != REGULAR)], dtype=torch.float64, device=dev)
            run.epoch_stats += torch.cat([(loss.detach().double() * len(y)).view(1), hit.double().view(1), extra])
    return log


def _train(
    run: Run, rd: RunDir, progress: bool, checkpoint_every: int, tb: TensorBoardLog | None, console: bool = False
) -> None:
    """The loop: epochs of steps; step rows buffered and flushed at checkpoints and epoch ends. ``console``: one
    line per epoch on stdout (above the progress bar when there is one)."""
    cfg, train = run.cfg, run.data.train
    steps_per_epoch = len(epoch_order(len(train), cfg.batch_size, cfg.seed, 0))
    run.balancer.warmup_steps = round(cfg.warmup_epochs * steps_per_epoch)
    bar = _progress_bar(run, steps_per_epoch, progress)
    columns = step_columns(run.model)[3:]  # loss, speeds, d_speed
    rows: list[str] = []
    t_start = time.time() - run.elapsed
    while run.epoch < cfg.epochs:
        run.model.train()
        if run.batch == 0:
            run.epoch_stats = torch.zeros(4, dtype=torch.float64, device=run.device)
            _epoch_call(run, "epoch_start")  # squeeze sums cleared; the method's epoch work
        order = epoch_order(len(train), cfg.batch_size, cfg.seed, run.epoch)
        for idx in order[run.batch :]:
            x, y = train.batch(idx.tensor_split(run.dist.world)[run.dist.rank], train=True)  # this rank's slice
            log = train_step(run, x, y)
            if not log.finite:
                _non_finite(rd, log, run.epoch)
            rows.append(step_row(log.step, run.epoch, log.mode, log.values()))
            if tb is not None:
                tb.step(log.step, columns, log.values(), log.mode)
            run.batch += 1
            bar.update(1)
            if run.step % 10 == 0:
                bar.set_postfix(loss=f"{log.loss:.3f}", d_speed=f"{log.d_speed:+.3f}", refresh=False)
            if checkpoint_every and run.step % checkpoint_every == 0 and run.batch < len(order):
                run.elapsed = time.time() - t_start
                rows = _flush(run, rd, rows, checkpoint=True)
        rows = _flush(run, rd, rows, checkpoint=False)
        run.elapsed = time.time() - t_start
        record, is_best = _end_epoch(run, steps_per_epoch)
        _write_epoch(run, rd, record, is_best, tb)
        if console:
            bar.write(epoch_line(record, cfg.epochs, is_best), file=sys.stdout)
            sys.stdout.flush()
        if cfg.stop_after_perfect and run.perfect_epochs >= cfg.stop_after_perfect:
            break
    bar.close()


def _progress_bar(run: Run, steps_per_epoch: int, progress: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(
        total=run.cfg.epochs * steps_per_epoch,
        initial=run.step,
        disable=not progress,
        desc=f"{run.cfg.method} {run.cfg.dataset}",
        unit="step",
        dynamic_ncols=True,
    )


def _non_finite(rd: RunDir, log: StepLog, epoch: int) -> None:
    last = rd.checkpoint("last")
    raise FloatingPointError(
        f"loss is {log.loss} at step {log.step} (epoch {epoch}); the last good checkpoint is "
        f"{last if last.exists() else 'none'}. Lower --lr or check the inputs, then --resume."
    )


def _flush(run: Run, rd: RunDir, rows: list[str], checkpoint: bool) -> list[str]:
    """Rank 0 appends the buffered step rows (and checkpoints); the rows always reach disk before the checkpoint."""
    rng = gather_rng_states() if checkpoint else None  # a collective: every rank takes part
    if run.dist.is_main:
        rd.append_steps(rows)
        if checkpoint:
            rd.save_checkpoint(run.state_dict(rng))
    return []


def _epoch_call(run: Run, call: str) -> None:
    getattr(run.balancer, call)(run.data.train, run.data.val, run.cfg.batch_size)


def _end_epoch(run: Run, steps_per_epoch: int) -> tuple[dict[str, Any], bool]:
    """Close the epoch: the method's epoch work, the evaluations, the schedule and the run's best; returns (the
    epoch's record, whether it is a new best). Every rank takes part (all-reduces); nothing is written."""
    cfg, model = run.cfg, run.model
    epoch = run.epoch  # the epoch that ends; Balancer.epoch_end moves the counter on
    sums = all_reduce_(run.epoch_stats.clone()).tolist()
    train = train_numbers(*sums, world=run.dist.world, steps_per_epoch=steps_per_epoch)
    _epoch_call(run, "epoch_end")  # the method's epoch work; squeeze means of this epoch's training forwards
    if cfg.squeeze_means == "exact":  # or the authors' extra pass over the training split
        record_train_squeeze_means(
            model, run.data.train, subset=cfg.exact_subset, seed=cfg.data_seed, device=run.device
        )
    opts = {"pairwise": cfg.pairwise_utilization, "precision": cfg.precision, "channels_last": cfg.channels_last}
    val = evaluate(model, run.data.val, device=run.device, name="val", **opts)
    test = evaluate(model, run.data.test, device=run.device, name="test", **opts)
    speed = run.balancer.speeds()  # cumulative s_k (MMTM) or mu(theta_k) of each encoder (late fusion)
    step_schedule(run.scheduler, train["loss"])
    run.perfect_epochs = run.perfect_epochs + 1 if train["acc"] >= 1.0 else 0
    run.batch = 0
    is_best = val["acc"] > run.best_val
    if is_best:
        run.best_val, run.best_epoch = val["acc"], epoch
    record = epoch_record(
        epoch=epoch,
        step=run.step,
        elapsed=run.elapsed,
        train=train,
        val=val,
        test=test,
        speed=speed,
        lr=run.optimizer.param_groups[0]["lr"],
        cfg=cfg,
        fusion=model.fusion,
        family=model.family,
        modalities=run.data.modalities,
        source=run.data.source,
        hparams=run.method.h,
        method_log=run.method.epoch_log(),
        versions=versions(),
        best_epoch=run.best_epoch,
    )
    return record, is_best


def train_numbers(
    loss_sum: float, correct: float, seen: float, rebalance: float, *, world: int, steps_per_epoch: int
) -> dict[str, float | int]:
    """The epoch's training numbers from its sums over every rank (loss x items, correct, items, re-balancing
    steps counted on each rank)."""
    rebalance /= world  # every rank counted the same re-balancing steps
    return {
        "loss": loss_sum / max(seen, 1),
        "acc": correct / max(seen, 1),
        "rebalance_steps": int(rebalance),
        "rebalance_share": rebalance / max(steps_per_epoch, 1),
    }


def epoch_record(
    *,
    epoch: int,
    step: int,
    elapsed: float,
    train: Mapping[str, Any],
    val: Mapping[str, Any],
    test: Mapping[str, Any],
    speed: Mapping[str, float],
    lr: float,
    cfg: TrainConfig,
    fusion: str,
    family: str,
    modalities: Sequence[str],
    source: Mapping[str, Any],
    hparams: Mapping[str, Any],
    method_log: Mapping[str, Any],
    versions: Mapping[str, str],
    best_epoch: int,
) -> dict[str, Any]:
    """One epoch's record, as the run folder keeps it (one JSON line per epoch); a pure function of its inputs.
    ``step``: the steps trained so far; ``elapsed``: training seconds so far (evaluations included)."""
    return {
        "epoch": epoch,
        "step": step,
        "elapsed_s": round(elapsed, 3),
        "train": dict(train),
        "val": val,
        "test": test,
        "speed": speed,
        "lr": lr,
        "dataset": cfg.dataset,
        "method": cfg.method,
        "fusion": fusion,
        "family": family,
        "seed": cfg.seed,
        "modalities": list(modalities),
        "source": source,
        "squeeze_means": cfg.squeeze_means,
        "config": cfg.to_dict(),
        "hparams": hparams,
        "method_log": method_log,
        "versions": versions,
        "best_epoch": best_epoch,
    }


def epoch_line(record: Mapping[str, Any], epochs: int, is_best: bool) -> str:
    """One epoch in one line, epochs counted from 1: training loss and accuracy, validation accuracy (marked when it
    is the best so far: the checkpoint selection), test accuracy, d_util on validation where the model has it, the
    share of re-balancing steps where the method re-balances, and the run's time so far."""
    train, val, test = record["train"], record["val"], record["test"]
    parts = [
        f"epoch {record['epoch'] + 1}/{epochs}: train loss {train['loss']:.4f} acc {train['acc']:.4f}",
        f"val acc {val['acc']:.4f}{' (best)' if is_best else ''}",
        f"test acc {test['acc']:.4f}",
    ]
    if isinstance(val.get("d_util"), float) and math.isfinite(val["d_util"]):
        parts.append(f"d_util val {val['d_util']:+.3f}")
    if train.get("rebalance_steps"):
        parts.append(f"re-balancing {train['rebalance_share']:.0%} of steps")
    parts.append(f"{record['elapsed_s']:.0f} s")
    return "; ".join(parts)


def _write_epoch(run: Run, rd: RunDir, record: Mapping[str, Any], is_best: bool, tb: TensorBoardLog | None) -> None:
    """Rank 0 appends the record, then checkpoints (the best too on a new best). The record first: if the
    checkpoint then fails, resume drops the record and redoes the epoch."""
    rng = gather_rng_states()  # a collective: every rank takes part
    if run.dist.is_main:
        rd.append_record(record)
        if tb is not None:
            tb.epoch(record)
        rd.save_checkpoint(run.state_dict(rng), best=is_best)
