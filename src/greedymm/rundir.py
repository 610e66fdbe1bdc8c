"""The run folder: the one place that names its files, reads and appends its logs, and tells its state.

A run folder, as ``greedymm train`` writes it::

    config.json      the resolved config, the versions and the data source (written at the start)
    steps.csv        one row per training step (appended; a torn last row is what a crash leaves)
    results.jsonl    one JSON record per finished epoch (appended)
    last.pt          the latest checkpoint (atomic); best.pt: the one of the best validation accuracy
    done             written when the run has trained all its epochs ({"epochs", "step", "best_epoch"})
    .lock            held by the process writing the folder (greedymm.lock)
    tensorboard/     with ``--log tensorboard``
    eval_best.json   written by ``greedymm eval`` (eval_last.json for the last checkpoint)

and, next to the folder, ``<folder>.log`` when a sweep ran it. Its state (``RunDir.state``): ``done`` (trained
all its epochs), ``resumable`` (a checkpoint and its config, not done), ``broken`` (a run started here but left
nothing to resume from) or ``new`` (nothing of a run); a run that is not done but has records is *unfinished*.

Selection and statistics, for every report: a run's numbers are read at its best-validation record (the highest
validation accuracy, the first such epoch on ties; test is never used to select), and a row of runs is
summarized by the mean and the sample standard deviation (n - 1) over its seeds.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .logs import torn, whole_lines

CONFIG = "config.json"
RESULTS = "results.jsonl"
STEPS = "steps.csv"
LAST = "last.pt"
BEST = "best.pt"
DONE_MARKER = "done"
LOCK = ".lock"
TENSORBOARD = "tensorboard"
CHECKPOINTS = ("best", "last")  # greedymm eval --checkpoint

# the states of a run folder
DONE, RESUMABLE, BROKEN, NEW = "done", "resumable", "broken", "new"


def eval_name(checkpoint: str) -> str:
    """The file ``greedymm eval`` writes for a checkpoint: eval_best.json, eval_last.json."""
    return f"eval_{checkpoint}.json"


# what `greedymm train` and `greedymm eval` write into a run folder; a clean restart removes these and nothing else
RUN_FILES = (CONFIG, RESULTS, STEPS, LAST, BEST, DONE_MARKER, *(eval_name(c) for c in CHECKPOINTS))
LOGS = (RESULTS, STEPS)  # the append-only logs


class RunDir:
    """One run folder: its file paths, what it holds, and the reads and writes of the training loop."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __str__(self) -> str:
        return str(self.path)

    # -- names ---------------------------------------------------------------------------------------------
    @property
    def config_file(self) -> Path:
        return self.path / CONFIG

    @property
    def results_file(self) -> Path:
        return self.path / RESULTS

    @property
    def steps_file(self) -> Path:
        return self.path / STEPS

    @property
    def done_file(self) -> Path:
        return self.path / DONE_MARKER

    @property
    def lock_file(self) -> Path:
        return self.path / LOCK

    @property
    def tensorboard(self) -> Path:
        return self.path / TENSORBOARD

    @property
    def sweep_log(self) -> Path:
        """Where a sweep writes the output of the run's process: ``<folder>.log``, next to the folder."""
        return self.path.with_name(self.path.name + ".log")

    def checkpoint(self, which: str = "last") -> Path:
        """``last`` (the latest) or ``best`` (the highest validation accuracy)."""
        if which not in CHECKPOINTS:
            raise ValueError(f"checkpoint must be one of {CHECKPOINTS}, got {which!r}")
        return self.path / (LAST if which == "last" else BEST)

    def eval_file(self, checkpoint: str) -> Path:
        return self.path / eval_name(checkpoint)

    # -- state ---------------------------------------------------------------------------------------------
    def state(self) -> str:
        """``done``, ``resumable`` (``last.pt`` and ``config.json``: `train --resume` needs both), ``broken`` (some
        files of a run, nothing to resume from) or ``new`` (no folder, or nothing of a run in it)."""
        if self.done_file.exists():
            return DONE
        if self.checkpoint("last").is_file() and self.config_file.is_file():
            return RESUMABLE
        return BROKEN if self.leftovers() else NEW

    def leftovers(self) -> list[Path]:
        """The files a run wrote here (temporary files of its atomic writes included)."""
        if not self.path.is_dir():
            return []
        found = [self.path / name for name in RUN_FILES if (self.path / name).exists()]
        return found + sorted(p for name in RUN_FILES for p in self.path.glob(f".{name}.*.tmp"))

    @property
    def unfinished(self) -> bool:
        """Not done: still training, stopped by a crash, or stopped early (its records are from those epochs)."""
        return self.state() != DONE

    def done_info(self) -> dict[str, Any] | None:
        """What the ``done`` marker says ({"epochs", "step", "best_epoch"}), or None when the run is not done."""
        if not self.done_file.exists():
            return None
        return json.loads(self.done_file.read_text() or "{}")

    def clean(self) -> None:
        """Remove what a run wrote (and the temporary files of its atomic writes); leave anything else alone."""
        for p in self.leftovers():
            p.unlink(missing_ok=True)

    # -- reading -------------------------------------------------------------------------------------------
    def saved_config(self) -> dict[str, Any]:
        """The config the run was started with (as ``TrainConfig.to_dict``)."""
        if not self.config_file.is_file():
            raise FileNotFoundError(f"no {CONFIG} in {self.path}: is it a run folder (made by `greedymm train`)?")
        return json.loads(self.config_file.read_text())["config"]

    def has_records(self) -> bool:
        return self.results_file.is_file()

    def records(self) -> list[dict[str, Any]]:
        """Every epoch's record, in order; a torn last line (a crash while it was written) is left out."""
        path = self.results_file
        if not path.is_file():
            raise FileNotFoundError(f"no {RESULTS} in {self.path}: is it a run folder (made by `greedymm train`)?")
        return [rec for _, rec in whole_lines(path.read_text(), str(path), json.loads)]

    def has_steps(self) -> bool:
        return self.steps_file.is_file()

    def steps(self) -> dict[str, list]:
        """The step log as columns: step and epoch (int), mode (str), the rest (float); a torn last row is left
        out."""
        path = self.steps_file
        header, _, body = path.read_text().partition("\n")
        names = next(csv.reader([header]))

        def row(line: str) -> list:
            cells = next(csv.reader([line]))
            if len(cells) != len(names):
                raise ValueError(f"{len(cells)} cells, the header has {len(names)}")
            typed = zip(names, cells, strict=True)
            return [v if k == "mode" else (int(v) if k in ("step", "epoch") else float(v)) for k, v in typed]

        cols: dict[str, list] = {k: [] for k in names}
        for _, values in whole_lines(body, str(path), row, first=2):
            for k, v in zip(names, values, strict=True):
                cols[k].append(v)
        return cols

    def torn_logs(self) -> list[str]:
        """The logs whose last line is torn (a crash while it was written)."""
        return [name for name in LOGS if (self.path / name).is_file() and torn(self.path / name)]

    # -- writing (the training loop, on the process that writes the folder) --------------------------------
    def start(self, config: Mapping[str, Any], step_columns: Sequence[str] | None) -> None:
        """A run starts (or resumes): the done marker goes, the step log gets its header (``step_columns``; None
        on resume, which keeps the log), the config is saved."""
        from .atomic import atomic_write_text
        from .checkpoint import write_json

        self.done_file.unlink(missing_ok=True)
        if step_columns is not None:
            atomic_write_text(self.steps_file, ",".join(step_columns) + "\n")
        write_json(self.config_file, dict(config))

    def truncate_logs(self, step: int, epoch: int) -> None:
        """Drop log lines written after the checkpoint being resumed (steps from ``step`` on, records from
        ``epoch`` on, and a torn last line), so the logs continue exactly."""
        from .atomic import atomic_write_text

        steps = self.steps_file
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
        results = self.results_file
        if results.exists():
            parsed = whole_lines(results.read_text(), str(results), json.loads)
            atomic_write_text(results, "".join(ln for ln, rec in parsed if rec["epoch"] < epoch))

    def append_steps(self, rows: Iterable[str]) -> None:
        """Append step rows (from ``step_row``)."""
        _append(self.steps_file, rows)

    def append_record(self, record: Mapping[str, Any]) -> None:
        """Append one epoch's record."""
        _append(self.results_file, [json.dumps(record) + "\n"])

    def save_checkpoint(self, state: dict[str, Any], best: bool = False) -> None:
        """``last.pt`` always; ``best.pt`` too when ``best`` (a new best validation accuracy)."""
        from .checkpoint import save_checkpoint

        if best:
            save_checkpoint(self.checkpoint("best"), state)
        save_checkpoint(self.checkpoint("last"), state)

    def mark_done(self, epochs: int, step: int, best_epoch: int) -> None:
        from .checkpoint import write_json

        write_json(self.done_file, {"epochs": epochs, "step": step, "best_epoch": best_epoch})

    def write_eval(self, checkpoint: str, result: Mapping[str, Any]) -> Path:
        from .checkpoint import write_json

        path = self.eval_file(checkpoint)
        write_json(path, dict(result))
        return path


def step_row(step: int, epoch: int, mode: object, values: Sequence[float]) -> str:
    """One row of the step log: step, epoch, the mode's name (``str(mode)``: "regular", "rebalance0"), then the
    numbers (loss, speeds, d_speed) to 6 significant digits."""
    return f"{step},{epoch},{str(mode)}," + ",".join(f"{v:.6g}" for v in values) + "\n"


def _append(path: Path, lines: Iterable[str]) -> None:
    with open(path, "a") as f:
        f.writelines(lines)
        f.flush()


def find_runs(path: str | os.PathLike) -> list[RunDir]:
    """Every run folder (one holding epoch records) under ``path``, ``path`` itself included, sorted."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; pass a sweep folder (e.g. runs/sweep1) or a run folder")
    return [RunDir(p.parent) for p in sorted(path.rglob(RESULTS))]


# -- selection and statistics ---------------------------------------------------------------------------------
def best_record(records: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
    """The record with the highest validation accuracy; the first such epoch on ties."""
    if not records:
        raise ValueError("no records: the run has not finished an epoch yet")
    return max(records, key=lambda r: (r["val"]["acc"], -r["epoch"]))


def mean(values: Sequence[float]) -> float:
    """The mean (NaN for no values)."""
    return math.fsum(values) / len(values) if len(values) else math.nan


def std(values: Sequence[float]) -> float:
    """The sample standard deviation (n - 1; NaN for fewer than two values)."""
    if len(values) < 2:
        return math.nan
    m = mean(values)
    return math.sqrt(math.fsum((v - m) ** 2 for v in values) / (len(values) - 1))


@dataclass(frozen=True)
class Stat:
    """One number over the seeds of a row: its values (one per run, in the row's seed order), mean and std."""

    values: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return mean(self.values)

    @property
    def std(self) -> float:
        return std(self.values)
