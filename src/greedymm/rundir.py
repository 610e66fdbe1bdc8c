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

Nothing in a run folder is trusted (docs/DESIGN.md section 8 has one rule per file): a run file that is a link, a
directory, another kind of special file, read-only, or (for the files written in place: the logs and the lock) a
file with a second hard link is refused (``check_files``, ``RunFolderError``) naming the path and the fix; appends
never follow a link; atomic writes replace a path instead of writing through it. So greedymm never writes outside
the folder. The logs are fsynced before every checkpoint (``save_checkpoint``), so resume can tell a torn line of
work after the checkpoint (dropped and redone) from a line the checkpoint covers (refused: ``truncate_logs``).

Selection and statistics, for every report: a run's numbers are read at its best-validation record (the highest
validation accuracy, the first such epoch on ties; test is never used to select), and a row of runs is
summarized by the mean and the sample standard deviation (n - 1) over its seeds.
"""

from __future__ import annotations

import csv
import errno
import json
import math
import os
import stat
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .logs import LogError, torn, whole_lines

CONFIG = "config.json"
RESULTS = "results.jsonl"
STEPS = "steps.csv"
LAST = "last.pt"
BEST = "best.pt"
DONE_MARKER = "done"
LOCK = ".lock"
TENSORBOARD = "tensorboard"
JOB_RECORD = "slurm.json"  # a run's Slurm job ({"job_id", "job_name", "submitted", "submitit_log"}); slurm.py
CHECKPOINTS = ("best", "last")  # greedymm eval --checkpoint

# the states of a run folder
DONE, RESUMABLE, BROKEN, NEW = "done", "resumable", "broken", "new"


def eval_name(checkpoint: str) -> str:
    """The file ``greedymm eval`` writes for a checkpoint: eval_best.json, eval_last.json."""
    return f"eval_{checkpoint}.json"


# what `greedymm train` and `greedymm eval` write into a run folder; a clean restart removes these and nothing else
RUN_FILES = (CONFIG, RESULTS, STEPS, LAST, BEST, DONE_MARKER, *(eval_name(c) for c in CHECKPOINTS))
LOGS = (RESULTS, STEPS)  # the append-only logs
IN_PLACE = (*LOGS, LOCK)  # written in place (appended, or rewritten through one descriptor), not replaced


class RunFolderError(RuntimeError):
    """Something in a run folder that greedymm did not write, or cannot use as it is; the message names the path and
    the fix. Nothing was changed in the folder."""


def file_problem(path: Path, in_place: bool = False, directory: bool = False, writing: bool = False) -> str | None:
    """Why ``path`` (a run file, or with ``directory`` a run sub-folder) cannot be used as greedymm's own, or None
    when it is absent or a plain file (folder) of its own. ``in_place``: written in place, so a second hard link
    (another name for the same data, possibly outside the folder) is refused too. ``writing``: it is about to be
    changed, so a file made read-only (no write bit: someone meant to keep it as it is) is refused too."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(st.st_mode):
        return (
            f"{path} is a symbolic link (to {os.readlink(path)}); greedymm never writes through a link in a run "
            "folder. Replace the link by the file itself, or remove it, then run again"
        )
    if directory:
        if stat.S_ISDIR(st.st_mode):
            return None
        return f"{path} is not a directory, where greedymm keeps one; move it out of the run folder and run again"
    if stat.S_ISDIR(st.st_mode):
        return f"{path} is a directory, where greedymm keeps a file; move it out of the run folder and run again"
    if not stat.S_ISREG(st.st_mode):
        return f"{path} is not a regular file (a device, pipe or socket); remove it from the run folder and run again"
    if in_place and st.st_nlink > 1:
        return (
            f"{path} has {st.st_nlink} hard links, so writing it would change the other names too; make it a file "
            f"of its own (cp {path} {path}.own && mv {path}.own {path}), then run again"
        )
    if writing and not st.st_mode & 0o222:
        return (
            f"{path} is read-only (mode {stat.S_IMODE(st.st_mode):o}), and going on would change it; if this run "
            f"should go on, make it writable (chmod u+w {path}), otherwise leave it and choose another --out"
        )
    return None


def read_json(path: Path, fix: str, empty: Any = None) -> Any:
    """A JSON file of a run folder (config.json, done, eval_*.json): a damaged one is refused naming the file and
    ``fix``. ``empty``: what an empty file means (None: it is refused too)."""
    if problem := file_problem(path):
        raise RunFolderError(problem)
    try:
        text = path.read_text()
    except UnicodeDecodeError as e:
        raise RunFolderError(
            f"{path} is not text ({e.reason} at byte {e.start}): it is damaged or was not written by greedymm. {fix}"
        ) from None
    if empty is not None and not text.strip():
        return empty
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise RunFolderError(
            f"{path} is not valid JSON ({e.msg} at line {e.lineno} column {e.colno}): it is damaged or was not "
            f"written by greedymm. {fix}"
        ) from None


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
        if self.done_file.is_file():
            return DONE
        if self.checkpoint("last").is_file() and self.config_file.is_file():
            return RESUMABLE
        return BROKEN if self.leftovers() else NEW

    def leftovers(self) -> list[Path]:
        """The files a run wrote here (temporary files of its atomic writes included)."""
        if not self.path.is_dir():
            return []
        found = [self.path / name for name in RUN_FILES if os.path.lexists(self.path / name)]  # links included
        return found + sorted(p for name in RUN_FILES for p in self.path.glob(f".{name}.*.tmp"))

    def check_files(self) -> None:
        """Refuse (``RunFolderError``, naming the path and the fix) a run file that greedymm cannot take as its own:
        a link, a directory, a special file, a read-only file, or a log or lock file with a second hard link. Called
        before a run starts, resumes or is cleaned, so nothing is changed when something is wrong."""
        problems = [file_problem(self.path / n, in_place=n in IN_PLACE, writing=True) for n in (*RUN_FILES, LOCK)]
        problems.append(file_problem(self.tensorboard, directory=True))
        problems += [file_problem(p) for name in RUN_FILES for p in self.path.glob(f".{name}.*.tmp") if p.is_dir()]
        if found := [p for p in problems if p]:
            raise RunFolderError("; ".join(found))

    def disposable(self) -> bool:
        """Broken, and nothing here that starting again would lose: no epoch record, no checkpoint, no evaluation;
        at most its config, the step rows of an unfinished first epoch and temporary files of atomic writes."""
        if self.state() != BROKEN:
            return False
        if self.results_file.is_file() and self.records():
            return False
        kept = {CONFIG, STEPS, RESULTS}
        return all(p.name in kept or p.name.endswith(".tmp") for p in self.leftovers())

    def restartable(self) -> bool:
        """A run that stopped before its first checkpoint: its saved config, and nothing that a restart would lose
        (``disposable``)."""
        return self.config_file.is_file() and self.disposable()

    def kept_work(self) -> str:
        """What a broken folder that is not ``disposable`` holds, and the fix, for a refusal's message."""
        names = ", ".join(p.name for p in self.leftovers())
        last = self.checkpoint("last")
        if last.is_file():  # a checkpoint without its config.json: never advise removing it
            return (
                f"{self} holds {last.name} but no {CONFIG}: restore {CONFIG} from a copy of the folder (the "
                'checkpoint holds the same settings under "config"), then resume'
            )
        return (
            f"{self} holds {names} but no {last.name} to resume from, and starting again would lose them: restore "
            f"{last.name}, or move those files out of the folder"
        )

    @property
    def unfinished(self) -> bool:
        """Not done: still training, stopped by a crash, or stopped early (its records are from those epochs)."""
        return self.state() != DONE

    def done_info(self) -> dict[str, Any] | None:
        """What the ``done`` marker says ({"epochs", "step", "best_epoch"}), or None when the run is not done."""
        if not os.path.lexists(self.done_file):
            return None
        fix = (
            f"Delete it and run `greedymm train --resume {self.path}`, which writes it again (the run goes on from "
            "last.pt)"
        )
        info = read_json(self.done_file, fix, empty={})
        if not isinstance(info, dict):
            raise RunFolderError(f"{self.done_file} holds a JSON {type(info).__name__}, not a done marker. {fix}")
        if bad := [k for k in ("epochs", "step", "best_epoch") if k in info and type(info[k]) is not int]:
            raise RunFolderError(f"{self.done_file} holds {bad[0]} = {info[bad[0]]!r}, not a whole number. {fix}")
        return info

    def clean(self, lock_held: bool = False) -> None:
        """Remove what a run that stopped before its first checkpoint wrote (and the temporary files of atomic
        writes); leave anything else alone. Holds the folder's lock while it does (``lock_held``: the caller holds
        it already), so a run being trained is never touched (``RunFolderBusy``); refuses planted files, a folder
        that holds a run that can be resumed or is finished, and one whose epoch records, checkpoints or
        evaluations a restart would lose (``RunFolderError``)."""
        if not self.path.is_dir():
            return
        if lock_held:
            self._clean()
            return
        from .lock import RunLock

        with RunLock(self.path):
            self._clean()

    def _clean(self) -> None:
        self.check_files()
        if (state := self.state()) in (DONE, RESUMABLE):
            raise RunFolderError(
                f"{self.path} holds a run that is {'finished' if state == DONE else 'resumable'} (it was until now "
                "taken for one that cannot be resumed); it is left as it is: run the same command again"
            )
        if state == BROKEN and not self.disposable():
            raise RunFolderError(f"{self.kept_work()}; it is left as it is")
        for p in self.leftovers():
            p.unlink(missing_ok=True)

    # -- reading -------------------------------------------------------------------------------------------
    def saved_config(self) -> dict[str, Any]:
        """The config the run was started with (as ``TrainConfig.to_dict``)."""
        if not os.path.lexists(self.config_file):
            raise FileNotFoundError(f"no {CONFIG} in {self.path}: is it a run folder (made by `greedymm train`)?")
        fix = (
            'Restore it from a copy (the checkpoints hold the same config under "config"), or train again in a new '
            "folder"
        )
        saved = read_json(self.config_file, fix)
        if not isinstance(saved, dict) or not isinstance(saved.get("config"), dict):
            raise RunFolderError(
                f'{self.config_file} has no "config" object, which greedymm always writes there: it was not written '
                f"by greedymm or was changed. {fix}"
            )
        return saved["config"]

    def has_records(self) -> bool:
        return self.results_file.is_file()

    def records(self) -> list[dict[str, Any]]:
        """Every epoch's record, in order; a torn last line (a crash while it was written) is left out."""
        path = self.results_file
        if not path.is_file():
            raise FileNotFoundError(f"no {RESULTS} in {self.path}: is it a run folder (made by `greedymm train`)?")
        return [rec for _, rec in whole_lines(self._log_text(path), str(path), _record)]

    def has_steps(self) -> bool:
        return self.steps_file.is_file()

    def steps(self) -> dict[str, list]:
        """The step log as columns: step and epoch (int), mode (str), the rest (float); a torn last row is left
        out."""
        path = self.steps_file
        header, _, body = self._log_text(path).partition("\n")
        names = _header(path, header)

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

    def _log_text(self, path: Path) -> str:
        if problem := file_problem(path):
            raise RunFolderError(problem)
        try:
            return path.read_text()
        except UnicodeDecodeError as e:
            raise LogError(
                f"{path} is not text ({e.reason} at byte {e.start}): the log was changed outside greedymm. Restore "
                "it, or train the run again in a new folder"
            ) from None

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

    def truncate_logs(self, step: int, epoch: int, columns: Sequence[str] | None = None) -> None:
        """Make the logs continue exactly from the checkpoint being resumed (at ``step``, after ``epoch`` epochs):
        drop what was written after it (steps from ``step`` on, records from ``epoch`` on, a torn last line: that
        work is redone). Every line before a checkpoint reached the disk before the checkpoint did, so the logs
        must hold steps 0..step-1 and epochs 0..epoch-1; when they do not (a log missing, a line torn or lost: a
        change outside greedymm), nothing is changed and ``RunFolderError`` names the file, what is missing and
        the fix. ``columns``: the step log's header the run writes (another model's log is refused)."""
        from .atomic import atomic_write_text

        fix = "Restore it from a copy, or train the run again in a new folder (--out)"
        steps, results = self.steps_file, self.results_file
        for path in (steps, results):
            if problem := file_problem(path, in_place=True, writing=True):
                raise RunFolderError(problem)
        if not steps.exists():
            raise RunFolderError(
                f"{steps} is missing, and the checkpoint {self.checkpoint('last')} is at step {step}: the step log "
                f"of steps 0..{step - 1} cannot be rebuilt from it. {fix}"
            )
        header, _, body = self._log_text(steps).partition("\n")
        names = _header(steps, header)
        if columns is not None and tuple(names) != tuple(columns):
            raise RunFolderError(
                f"{steps} has the columns {names}, but this run writes {list(columns)}: it is another model's step "
                f"log. {fix}"
            )

        def row(ln: str) -> int:
            cells = ln.rstrip("\n").split(",")
            if len(cells) != len(names):
                raise ValueError(f"{len(cells)} cells, the header has {len(names)}")
            return int(cells[0])

        kept_steps = [(ln, s) for ln, s in whole_lines(body, str(steps), row, first=2) if s < step]
        _contiguous(steps, [s for _, s in kept_steps], step, "step", self.checkpoint("last"), fix)
        kept_records: list[tuple[str, Any]] = []
        if results.exists():
            kept_records = [(ln, r) for ln, r in whole_lines(self._log_text(results), str(results), _record)]
            kept_records = [(ln, r) for ln, r in kept_records if r["epoch"] < epoch]
        elif epoch > 0:
            raise RunFolderError(
                f"{results} is missing, and the checkpoint {self.checkpoint('last')} is after epoch {epoch - 1}: the "
                f"records of epochs 0..{epoch - 1} cannot be rebuilt from it. {fix}"
            )
        _contiguous(results, [r["epoch"] for _, r in kept_records], epoch, "epoch", self.checkpoint("last"), fix)
        atomic_write_text(steps, header + "\n" + "".join(ln for ln, _ in kept_steps))
        if results.exists():
            atomic_write_text(results, "".join(ln for ln, _ in kept_records))

    def append_steps(self, rows: Iterable[str]) -> None:
        """Append step rows (from ``step_row``)."""
        _append(self.steps_file, rows)

    def append_record(self, record: Mapping[str, Any]) -> None:
        """Append one epoch's record."""
        _append(self.results_file, [json.dumps(record) + "\n"])

    def sync_logs(self) -> None:
        """Make what was appended to the logs durable (fsync): done before each checkpoint, so a checkpoint on disk
        always follows the log lines of the work it holds."""
        for path in (self.steps_file, self.results_file):
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
            except FileNotFoundError:
                continue
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def save_checkpoint(self, state: dict[str, Any], best: bool = False) -> None:
        """``last.pt`` always; ``best.pt`` too when ``best`` (a new best validation accuracy). The logs are made
        durable first (``sync_logs``)."""
        from .checkpoint import save_checkpoint

        try:
            self.sync_logs()
        except OSError as e:
            last = self.checkpoint("last")
            kept = f"the previous {last.name} is intact" if last.exists() else "no earlier checkpoint exists"
            raise RuntimeError(
                f"could not write checkpoint {last}: its logs could not be made durable ({e.strerror or e}: "
                f"{e.filename}); {kept}. Free space or fix the folder, then resume."
            ) from e
        if best:
            save_checkpoint(self.checkpoint("best"), state)
        save_checkpoint(self.checkpoint("last"), state)

    def mark_done(self, epochs: int, step: int, best_epoch: int) -> None:
        from .checkpoint import write_json

        write_json(self.done_file, {"epochs": epochs, "step": step, "best_epoch": best_epoch})

    def write_eval(self, checkpoint: str, result: Mapping[str, Any]) -> Path | None:
        """Save an evaluation (``greedymm eval``); the file's path, or None when the folder cannot take it (read-only,
        full, a planted file there): then a warning names the file and the reason, and the numbers stay the
        caller's to print or keep."""
        from .checkpoint import write_json

        path = self.eval_file(checkpoint)
        try:
            if problem := file_problem(path):
                raise RunFolderError(problem)
            write_json(path, dict(result))
        except (OSError, RunFolderError) as e:
            reason = f"{e.strerror}: {e.filename}" if isinstance(e, OSError) and e.strerror else str(e)
            warnings.warn(
                f"could not write {path} ({reason}); the evaluation is returned (and printed by `greedymm eval`) but "
                "not saved: free space or make the folder writable, then evaluate again to keep it",
                stacklevel=3,
            )
            return None
        return path


def step_row(step: int, epoch: int, mode: object, values: Sequence[float]) -> str:
    """One row of the step log: step, epoch, the mode's name (``str(mode)``: "regular", "rebalance0"), then the
    numbers (loss, speeds, d_speed) to 6 significant digits."""
    return f"{step},{epoch},{str(mode)}," + ",".join(f"{v:.6g}" for v in values) + "\n"


def _append(path: Path, lines: Iterable[str]) -> None:
    """Append to a log, never through a link (O_NOFOLLOW) and never to a file with another name (a hard link)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise RunFolderError(file_problem(path) or f"{path} is a symbolic link; remove it and run again") from None
        raise
    with os.fdopen(fd, "a") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink > 1:
            raise RunFolderError(file_problem(path, in_place=True) or f"{path} is not a file of its own")
        f.writelines(lines)
        f.flush()


def _header(path: Path, header: str) -> list[str]:
    """The step log's column names, from its first line; a log without the header greedymm writes is refused."""
    names = next(csv.reader([header])) if header else []
    if names[:3] != ["step", "epoch", "mode"]:
        raise LogError(
            f"{path} does not start with the header greedymm writes (step,epoch,mode,...; found {header[:80]!r}): "
            "the log was changed outside greedymm. Restore it, or train the run again in a new folder"
        )
    return names


def _record(line: str) -> dict[str, Any]:
    """One line of results.jsonl: a JSON object with its epoch (int)."""
    rec = json.loads(line)
    if not isinstance(rec, dict) or not isinstance(rec.get("epoch"), int):
        raise ValueError("not an epoch record (a JSON object with an integer epoch)")
    for split in ("val", "test"):  # what every reader of a record takes for granted (the best epoch, the tables)
        numbers = rec.get(split)
        if not isinstance(numbers, dict) or not isinstance(numbers.get("acc"), int | float):
            raise ValueError(f"epoch {rec['epoch']}'s record has no {split} accuracy ({split}.acc)")
    return rec


def _contiguous(path: Path, found: list[int], n: int, what: str, checkpoint: Path, fix: str) -> None:
    """The numbers a log holds before a checkpoint must be 0..n-1; otherwise name what is missing."""
    if found == list(range(n)):
        return
    missing = sorted(set(range(n)) - set(found))
    if not missing:  # every number is there, but out of order or twice
        raise RunFolderError(
            f"{path} holds the {what}s before the checkpoint {checkpoint} out of order or more than once: the log was "
            f"changed outside greedymm. {fix}"
        )
    lost = f"{what} {missing[0]}" + (f"..{missing[-1]}" if len(missing) > 1 else "")
    raise RunFolderError(
        f"{path} does not hold every {what} before the checkpoint {checkpoint} (at {what} {n}): {lost} "
        f"{'is' if len(missing) == 1 else 'are'} lost or torn (the log was changed outside greedymm, or the disk lost "
        f"a write). Resume cannot redo work from before its checkpoint. {fix}"
    )


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
