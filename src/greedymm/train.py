"""The one training loop: method-agnostic, resumable, logging every evaluation and every step.

Per step (the method's hooks, DESIGN.md section 4; the loop never asks which method runs): forward in the
method's mode, the method's loss (MMTM by default: the sum of the heads' cross-entropies; late fusion: the fused
head's), the method's backward and gradient changes, the conditional learning speed on regular steps (before the
optimizer step, SPEC.md section 4), the method picks the next mode, optimizer step. Per epoch: the method's epoch
hooks, squeeze (or feature) means committed, validation and test evaluated in regular mode with utilization, one
JSON line appended to results.jsonl, checkpoints written atomically (last.pt always, best.pt on a new best
validation accuracy). Test is never used for selection.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from .checkpoint import atomic_write_text, load_checkpoint, save_checkpoint, write_json
from .config import TrainConfig
from .data import MultiModalData, epoch_order
from .distributed import (
    all_reduce_,
    barrier,
    gather_rng_states,
    teardown,
)
from .evaluate import evaluate, record_train_squeeze_means
from .lock import RunLock
from .logs import whole_lines
from .methods import REGULAR
from .metrics import mu_names, speed_names
from .models import INTERMEDIATE, MultiModalNet
from .precision import autocast, inputs_channels_last
from .run import Run, RunError, build_run, versions  # noqa: F401  (RunError, build_run: public here too)
from .tblog import TensorBoardLog, check_logs


def step_columns(model: MultiModalNet) -> tuple[str, ...]:
    """steps.csv columns: the speeds s_k of an MMTM model (the paper's names for N = 2), mu(theta_k) otherwise."""
    n = model.n_modalities
    speeds = speed_names(n) if model.family == INTERMEDIATE else mu_names(n)
    return ("step", "epoch", "mode", "loss", *speeds, "d_speed")


def _check_out_dir(out: Path, cfg: TrainConfig, resume: bool) -> None:
    cfg_path = out / "config.json"
    if resume:
        if not (out / "last.pt").is_file():
            raise RunError(f"nothing to resume in {out}: no last.pt (start it without --resume)")
        saved = json.loads(cfg_path.read_text())["config"]
        defaults = TrainConfig().to_dict()  # a setting newer than the saved run had its default there
        diff = {
            k: (saved.get(k, defaults[k]), v)
            for k, v in cfg.to_dict().items()
            if k != "epochs" and saved.get(k, defaults[k]) != v
        }
        if diff:
            raise RunError(
                f"{out} holds a run with a different config {diff} (saved, given); resume with the "
                "same settings, or choose another --out"
            )
        if (out / "done").exists():
            done_epochs = json.loads((out / "done").read_text() or "{}").get("epochs")
            if done_epochs is not None and done_epochs >= cfg.epochs:
                raise RunError(f"{out} is already finished ({done_epochs} epochs); raise --epochs to train longer")
    elif cfg_path.exists() or (out / "last.pt").exists():
        raise RunError(f"{out} already holds a run; pass --resume to continue it, or choose another --out")


def _truncate_logs(out: Path, step: int, epoch: int) -> None:
    """Drop log lines written after the checkpoint being resumed (and a torn last line), so the logs continue
    exactly."""
    steps = out / "steps.csv"
    if steps.exists():
        header, _, body = steps.read_text().partition("\n")
        width = len(header.split(","))

        def row(ln: str) -> int:
            cells = ln.rstrip("\n").split(",")
            if len(cells) != width:
                raise ValueError(f"{len(cells)} cells, the header has {width}")
            return int(cells[0])

        kept = [ln for ln, s in whole_lines(body, str(steps), row, first=2) if s < step]
        atomic_write_text(steps, header + "\n" + "".join(kept))
    results = out / "results.jsonl"
    if results.exists():
        kept = [ln for ln, rec in whole_lines(results.read_text(), str(results), json.loads) if rec["epoch"] < epoch]
        atomic_write_text(results, "".join(kept))


def _append(path: Path, lines: list[str]) -> None:
    with open(path, "a") as f:
        f.writelines(lines)
        f.flush()


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
        return _fit(cfg, Path(out), resume, progress, checkpoint_every, data, model, log)
    finally:
        teardown()  # also after an error or an interrupt: no gloo/nccl thread outlives the run


def _fit(
    cfg: TrainConfig,
    out: Path,
    resume: bool,
    progress: bool,
    checkpoint_every: int,
    data: MultiModalData | None,
    model: MultiModalNet | None,
    log: tuple[str, ...],
) -> Path:
    if out.exists() and not out.is_dir():
        raise RunError(f"--out {out} is a file, not a run folder; choose a folder path")
    if out.is_dir() and os.environ.get("RANK", "0") == "0":  # rank 0 is the writer (torchrun sets RANK)
        RunLock(out).acquire().release()  # a folder being trained in: name its writer before anything else
    _check_out_dir(out, cfg, resume)
    run = build_run(cfg, data, model)
    barrier()  # every rank has checked the folder before rank 0 writes to it
    main = run.dist.is_main
    lock = RunLock(out).acquire() if main else None  # one writer per run folder, for the whole run
    try:
        return _fit_locked(run, cfg, out, resume, progress, checkpoint_every, log)
    finally:
        if lock is not None:
            lock.release()


def _fit_locked(
    run: Run, cfg: TrainConfig, out: Path, resume: bool, progress: bool, checkpoint_every: int, log: tuple[str, ...]
) -> Path:
    main = run.dist.is_main
    if main:
        _check_out_dir(out, cfg, resume)  # again, now that no other process can write here
        (out / "done").unlink(missing_ok=True)
    if resume:
        run.load_state_dict(load_checkpoint(out / "last.pt"))
        if main:
            _truncate_logs(out, run.step, run.epoch)
    elif main:
        atomic_write_text(out / "steps.csv", ",".join(step_columns(run.model)) + "\n")
    if main:
        write_json(out / "config.json", {"config": cfg.to_dict(), "versions": versions(), "source": run.data.source})
    tb = TensorBoardLog(out, purge_step=run.step if resume else None) if main and "tensorboard" in log else None
    try:
        _train(run, out, progress and main, checkpoint_every, tb)
    finally:
        if tb is not None:
            tb.close()
    if main:
        write_json(out / "done", {"epochs": cfg.epochs, "step": run.step, "best_epoch": run.best_epoch})
    barrier()
    return out


def train_step(run: Run, x: dict[str, torch.Tensor], y: torch.Tensor) -> tuple[list[float], str]:
    """One optimizer step in the method's mode, through the public step calls (greedymm.api.Balancer); returns
    ([loss, speeds (s_k or mu_k)..., d_speed], mode)."""
    opt, dev, bal = run.optimizer, run.device, run.balancer
    x = {k: v.to(dev, non_blocking=True) for k, v in x.items()}
    if run.cfg.channels_last:
        x = inputs_channels_last(x)
    y = y.to(dev, non_blocking=True)
    bal.step, bal.epoch = run.step, run.epoch
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
    return log.values(), mode


def _train(run: Run, out: Path, progress: bool, checkpoint_every: int, tb: TensorBoardLog | None = None) -> None:
    from tqdm.auto import tqdm

    cfg, model, dev = run.cfg, run.model, run.device
    train = run.data.train
    steps_per_epoch = len(epoch_order(len(train), cfg.batch_size, cfg.seed, 0))
    run.balancer.warmup_steps = round(cfg.warmup_epochs * steps_per_epoch)
    bar = tqdm(
        total=cfg.epochs * steps_per_epoch,
        initial=run.step,
        disable=not progress,
        desc=f"{cfg.method} {cfg.dataset}",
        unit="step",
        dynamic_ncols=True,
    )
    step_lines: list[str] = []
    columns = step_columns(model)[3:]  # loss, speeds, d_speed
    t_start = time.time() - run.elapsed
    while run.epoch < cfg.epochs:
        model.train()
        if run.batch == 0:
            run.epoch_stats = torch.zeros(4, dtype=torch.float64, device=dev)
            _epoch_call(run, "epoch_start")  # squeeze sums cleared; the method's epoch work
        order = epoch_order(len(train), cfg.batch_size, cfg.seed, run.epoch)
        for idx in order[run.batch :]:
            x, y = train.batch(idx.tensor_split(run.dist.world)[run.dist.rank], train=True)  # this rank's slice
            vals, mode = train_step(run, x, y)
            if not math.isfinite(vals[0]):
                last = out / "last.pt"
                raise FloatingPointError(
                    f"loss is {vals[0]} at step {run.step} (epoch {run.epoch}); the last good checkpoint is "
                    f"{last if last.exists() else 'none'}. Lower --lr or check the inputs, then --resume."
                )
            step_lines.append(f"{run.step},{run.epoch},{mode}," + ",".join(f"{v:.6g}" for v in vals) + "\n")
            if tb is not None:
                tb.step(run.step, columns, vals, mode)
            run.step += 1
            run.batch += 1
            bar.update(1)
            if run.step % 10 == 0:
                bar.set_postfix(loss=f"{vals[0]:.3f}", d_speed=f"{vals[-1]:+.3f}", refresh=False)
            if checkpoint_every and run.step % checkpoint_every == 0 and run.batch < len(order):
                run.elapsed = time.time() - t_start
                step_lines = _flush(run, out, step_lines, checkpoint=True)
        step_lines = _flush(run, out, step_lines, checkpoint=False)
        _end_epoch(run, out, steps_per_epoch, time.time() - t_start, tb)
        if cfg.stop_after_perfect and run.perfect_epochs >= cfg.stop_after_perfect:
            break
    bar.close()


def _flush(run: Run, out: Path, step_lines: list[str], checkpoint: bool) -> list[str]:
    """Rank 0 appends the buffered step rows (and checkpoints); the rows always reach disk before the checkpoint."""
    rng = gather_rng_states() if checkpoint else None  # a collective: every rank takes part
    if run.dist.is_main:
        _append(out / "steps.csv", step_lines)
        if checkpoint:
            save_checkpoint(out / "last.pt", run.state_dict(rng))
    return []


def _epoch_call(run: Run, call: str) -> None:
    bal = run.balancer
    bal.epoch = run.epoch
    getattr(bal, call)(run.data.train, run.data.val, run.cfg.batch_size)


def _end_epoch(run: Run, out: Path, steps_per_epoch: int, elapsed: float, tb: TensorBoardLog | None) -> None:
    run.elapsed = elapsed
    cfg, model = run.cfg, run.model
    loss_sum, correct, seen, rebal = all_reduce_(run.epoch_stats.clone()).tolist()
    rebal /= run.dist.world  # every rank counted the same re-balancing steps
    train_loss, train_acc = loss_sum / max(seen, 1), correct / max(seen, 1)
    _epoch_call(run, "epoch_end")  # the method's epoch work; squeeze means of this epoch's training forwards
    if cfg.squeeze_means == "exact":  # or the authors' extra pass over the training split
        record_train_squeeze_means(
            model, run.data.train, subset=cfg.exact_subset, seed=cfg.data_seed, device=run.device
        )
    opts = {"pairwise": cfg.pairwise_utilization, "precision": cfg.precision, "channels_last": cfg.channels_last}
    val = evaluate(model, run.data.val, device=run.device, **opts)
    test = evaluate(model, run.data.test, device=run.device, **opts)
    speed = run.balancer.speeds()  # cumulative s_k (MMTM) or mu(theta_k) of each encoder (late fusion)
    if run.scheduler is not None:
        if isinstance(run.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            run.scheduler.step(train_loss)
        else:
            run.scheduler.step()
    run.perfect_epochs = run.perfect_epochs + 1 if train_acc >= 1.0 else 0
    record = {
        "epoch": run.epoch,
        "step": run.step,
        "elapsed_s": round(elapsed, 3),
        "train": {
            "loss": train_loss,
            "acc": train_acc,
            "rebalance_steps": int(rebal),
            "rebalance_share": rebal / max(steps_per_epoch, 1),
        },
        "val": val,
        "test": test,
        "speed": speed,
        "lr": run.optimizer.param_groups[0]["lr"],
        "dataset": cfg.dataset,
        "method": cfg.method,
        "fusion": model.fusion,
        "family": model.family,
        "seed": cfg.seed,
        "modalities": list(run.data.modalities),
        "source": run.data.source,
        "squeeze_means": cfg.squeeze_means,
        "config": cfg.to_dict(),
        "hparams": run.method.h,
        "method_log": run.method.epoch_log(),
        "versions": versions(),
    }
    run.epoch += 1
    run.batch = 0
    is_best = val["acc"] > run.best_val
    if is_best:
        run.best_val, run.best_epoch = val["acc"], record["epoch"]
    record["best_epoch"] = run.best_epoch
    rng = gather_rng_states()
    if run.dist.is_main:
        # the record first: if the checkpoint then fails, resume drops the record and redoes the epoch
        _append(out / "results.jsonl", [json.dumps(record) + "\n"])
        if tb is not None:
            tb.epoch(record)
        state = run.state_dict(rng)
        if is_best:
            save_checkpoint(out / "best.pt", state)
        save_checkpoint(out / "last.pt", state)
