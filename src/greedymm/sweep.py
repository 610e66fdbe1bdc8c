"""Sweeps: one run folder per (data set, method, seed, settings), resumable without a database (DomainBed-style).

A run folder is named readably plus a short hash of its resolved training config, e.g.
``cg-mnist_guided_s0_3fa2c1d9``, so the same command finds the same folders again; by the folder's state
(``greedymm.rundir``) finished runs are skipped, crashed runs (a checkpoint, not done) resumed with
``greedymm train --resume``, and broken folders (files of a run, no checkpoint) cleaned and restarted. Each job
is one ``greedymm train`` process; a ``Launcher`` runs them (``LocalLauncher``: a pool of local worker processes;
``RecordingLauncher``: records the commands, for tests and dry runs).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import rundir
from .config import NOT_IDENTITY, PROTOCOLS, TrainConfig, check_protocol, format_sets, resolve_config
from .rundir import RunDir

# what a sweep does with a run folder: skip it (done), resume it, clean and restart it (broken), start it (new)
DONE, RESUME, RESTART, NEW = rundir.DONE, "resume", "restart", rundir.NEW
BLOCKED = "blocked"  # broken, but holding epoch records, checkpoints or evaluations a restart would lose: left alone
_ACTION = {rundir.DONE: DONE, rundir.RESUMABLE: RESUME, rundir.BROKEN: RESTART, rundir.NEW: NEW}


def _split_set(item: str) -> tuple[str, str]:
    if "=" not in item:
        raise ValueError(f"--set expects key=value, got {item!r}")
    key, raw = item.split("=", 1)
    return key, raw


def sets_for_method(sets: Sequence[str], method: str) -> tuple[str, ...]:
    """The ``--set`` items that apply to ``method``, one per key (the last wins), sorted by key.

    A sweep over several methods shares one ``--set`` list: a hyper-parameter of another method (``alpha`` for
    a vanilla run) is dropped rather than rejected, so vanilla runs do not depend on the guided settings."""
    from .methods import list_methods, method_class

    own = method_class(method).hparams
    others = {k for m in list_methods() for k in method_class(m).hparams} - set(own)
    chosen: dict[str, str] = {}
    for item in sets:
        key, raw = _split_set(item)
        if key not in others:
            chosen[key] = raw
    return tuple(f"{k}={chosen[k]}" for k in sorted(chosen))


def job_config(
    dataset: str, method: str, seed: int, sets: Sequence[str], epochs: int | None, protocol_name: str | None = None
) -> TrainConfig:
    """The config `greedymm train` builds for one job's arguments (``config.resolve_config``)."""
    given = {"method": method, "seed": seed, **({"epochs": epochs} if epochs else {})}
    return resolve_config(dataset, protocol_name, sets=sets, **given)


# The settings a run's hash always covers: the config's fields when run folders were first named by a hash. Any
# field added since counts only when it differs from its default, so a new field needs no entry here and every
# earlier folder keeps its name. This set is history: never add to it or remove from it.
HASHED_ALWAYS = frozenset(
    {
        "dataset",
        "method",
        "epochs",
        "seed",
        "batch_size",
        "optimizer",
        "lr",
        "momentum",
        "weight_decay",
        "schedule",
        "warmup_epochs",
        "hparams",
        "width",
        "gate",
        "ratio",
        "val_fraction",
        "data_seed",
        "squeeze_means",
        "exact_subset",
        "stop_after_perfect",
        "data_options",
    }
)


def _field_defaults() -> dict[str, object]:
    out: dict[str, object] = {}
    for f in dataclasses.fields(TrainConfig):
        out[f.name] = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    return out


def run_hash(cfg: TrainConfig) -> str:
    """8 hex digits identifying what a run computes: its config without where it runs (``NOT_IDENTITY``); a field
    outside ``HASHED_ALWAYS`` only when it differs from its default."""
    defaults = _field_defaults()
    ident = {
        k: v for k, v in cfg.to_dict().items() if k not in NOT_IDENTITY and (k in HASHED_ALWAYS or v != defaults[k])
    }
    return hashlib.sha1(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:8]


@dataclass(frozen=True)
class Job:
    """One run of a sweep: the `greedymm train` arguments and the folder they train into."""

    dataset: str
    method: str
    seed: int
    sets: tuple[str, ...]
    epochs: int | None
    folder: Path
    data_dir: str | None = None
    logs: tuple[str, ...] = ()  # extra log destinations (`train --log`), e.g. ("tensorboard",)
    protocol: str | None = None  # a named protocol (`train --protocol`), e.g. "pmr-protocol"

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def log(self) -> Path:
        """The output of the job's process (``RunDir.sweep_log``: next to the run folder)."""
        return RunDir(self.folder).sweep_log

    def state(self) -> str:
        """done (finished), resume (crashed after a checkpoint), restart (broken: files of a run, no checkpoint to
        resume from, nothing a restart would lose; cleaned first), blocked (broken, but epoch records, a checkpoint
        or an evaluation would be lost: left alone, ``RunDir.kept_work`` says why), or new: the run folder's state
        (``RunDir.state``) as the sweep acts on it."""
        rd = RunDir(self.folder)
        state = _ACTION[rd.state()]
        if state != RESTART:
            return state
        try:
            return RESTART if rd.disposable() else BLOCKED
        except (OSError, ValueError, RuntimeError):  # a damaged log may hold finished epochs: never deleted
            return BLOCKED

    def command(self, state: str | None = None, python: str = sys.executable) -> list[str]:
        state = state or self.state()
        cmd = [python, "-m", "greedymm", "train"]
        if state == RESUME:  # the saved config holds everything else; only --epochs may differ on resume
            cmd += ["--resume", str(self.folder)]
        else:
            cmd += ["--dataset", self.dataset, "--method", self.method, "--seed", str(self.seed)]
            if self.protocol:
                cmd += ["--protocol", self.protocol]
            for item in self.sets:
                cmd += ["--set", item]
            cmd += ["--out", str(self.folder)]
        if self.epochs:
            cmd += ["--epochs", str(self.epochs)]
        if self.data_dir:
            cmd += ["--data-dir", str(self.data_dir)]
        if self.logs:  # not part of a run's identity: also passed again on resume
            cmd += ["--log", *self.logs]
        return [*cmd, "--no-progress"]


def plan_sweep(
    datasets: Sequence[str],
    methods: Sequence[str],
    seeds: Sequence[int],
    out: str | Path,
    sets: Sequence[str] = (),
    epochs: int | None = None,
    data_dir: str | None = None,
    logs: Sequence[str] = (),
    protocol_name: str | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> list[Job]:
    """The jobs of a sweep, in (data set, method, seed) order; every setting is checked before anything runs.

    ``protocol_name`` (``--protocol``) starts every run from that protocol on top of the data set's defaults; with no
    ``datasets`` the protocol's own data set is used. ``overrides``: structured settings for every run (e.g.
    ``{"width": 0.25, "data_options": {"frames": 8}}``), passed to each run as ``--set`` items after ``sets``."""
    from .data import list_datasets
    from .data.base import dataset_base, dataset_label
    from .tblog import check_logs

    logs = check_logs(logs)
    sets = (*sets, *format_sets(overrides or {}))
    if protocol_name is not None:
        check_protocol(protocol_name)
    if protocol_name and not datasets:
        datasets = [PROTOCOLS[protocol_name]["dataset"]]
    base_fusion = PROTOCOLS[protocol_name].get("fusion", "mmtm") if protocol_name else "mmtm"

    if not datasets:
        raise ValueError("a sweep needs --datasets (e.g. cg-mnist) or a --protocol that names its data set")
    if not methods or not seeds:
        raise ValueError("a sweep needs at least one data set, one method and one seed")
    if epochs is not None and epochs < 1:
        raise ValueError(f"--epochs must be >= 1, got {epochs} (leave it out for the reproduction config)")
    known = list_datasets()
    for d in datasets:
        if dataset_base(d) not in known:
            import difflib

            close = difflib.get_close_matches(d, list(known), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"unknown data set {d!r}; choose one of {sorted(known)}.{hint}")
    specs = [split_method(m) for m in methods]  # "ogm-ge@concat": a method on a chosen fusion
    for name, fusion in specs:
        _check_fusion(name, fusion or _set_value(sets, "fusion") or base_fusion)
    used = {item.split("=", 1)[0] for name, _ in specs for item in sets_for_method(sets, name)}
    if stray := sorted({_split_set(item)[0] for item in sets} - used):
        raise ValueError(f"--set {', '.join(stray)}: a hyper-parameter of none of the methods {list(methods)}")
    jobs: dict[Path, Job] = {}
    for d in datasets:
        for (m, fusion), spec in zip(specs, methods, strict=True):
            own = sets_for_method(sets, m)
            if fusion:
                own = tuple(sorted([*(i for i in own if not i.startswith("fusion=")), f"fusion={fusion}"]))
            for s in seeds:
                # raises on a bad --set, before any launch
                cfg = job_config(d, m, int(s), own, epochs, protocol_name)
                _check_modalities(m, cfg.modalities)
                lead = f"{dataset_label(d)}-{protocol_name}" if protocol_name else dataset_label(d)
                folder = Path(out) / f"{lead}_{spec.replace('@', '-')}_s{s}_{run_hash(cfg)}"
                jobs.setdefault(folder, Job(d, m, int(s), own, epochs, folder, data_dir, logs, protocol_name))
    return list(jobs.values())


def split_method(spec: str) -> tuple[str, str | None]:
    """ "guided" -> ("guided", None); "ogm-ge@concat" -> ("ogm-ge", "concat"); the method must exist."""
    from .methods import method_class

    name, _, fusion = spec.partition("@")
    method_class(name)  # raises with a suggestion
    if "@" in spec:
        from .choices import FUSIONS

        if fusion not in FUSIONS:
            raise ValueError(f"{spec!r}: unknown fusion {fusion!r}; write method@fusion with one of {FUSIONS}")
    return name, fusion or None


def _set_value(sets: Sequence[str], key: str) -> str | None:
    values = [raw for k, raw in map(_split_set, sets) if k == key]
    return values[-1] if values else None


def _check_fusion(method: str, fusion: str) -> None:
    from .methods import method_class

    supported = method_class(method).fusions
    if supported is not None and fusion not in supported:
        raise ValueError(
            f"method {method!r} is defined for fusion {' / '.join(supported)}, not {fusion!r}; "
            f"write {method}@{supported[0]} in --methods to run it on its own fusion"
        )


def _check_modalities(method: str, modalities: Sequence[str] | None) -> None:
    """Refuse, before any run starts, a method on a number of modalities it is not defined for (where the sweep's
    settings name the modalities; otherwise the run's own check refuses it when it starts)."""
    from .methods import method_class

    if modalities and (why := method_class(method).unsupported_modalities(len(modalities))):
        raise ValueError(
            f"{why} ({','.join(modalities)}); leave it out of --methods for this sweep, or sweep it separately with "
            "--set modalities= naming a number it takes"
        )


def clean_run_folder(folder: Path) -> None:
    """Remove what a run that stopped before its first checkpoint wrote (and the temp files of its atomic writes),
    holding the folder's lock while it does (``RunDir.clean``); leave anything else alone. Raises
    ``RunFolderBusy`` when a process trains there (nothing is touched) and ``RunFolderError`` for planted files or a
    folder that turned out resumable or finished."""
    RunDir(folder).clean()


Progress = Callable[[Job, int, float], None]


class Launcher:
    """Runs jobs; returns each job's exit code. ``progress(job, code, seconds)`` is called as each one ends."""

    def run(self, jobs: Sequence[Job], workers: int, progress: Progress) -> dict[Job, int]:
        raise NotImplementedError

    def in_flight(self, jobs: Sequence[Job]) -> dict[Job, str]:
        """Jobs this launcher already runs or holds queued (job -> what it is doing), to be left alone by a sweep
        started again; a local pool keeps nothing between sweeps (greedymm.slurm: the Slurm queue)."""
        return {}


@dataclass
class RecordingLauncher(Launcher):
    """Records the commands instead of running them. ``complete`` makes each job look finished afterwards
    (an empty checkpoint, config and done marker), so a second sweep sees it as done; jobs named in
    ``fail`` exit 1."""

    complete: bool = True
    fail: set[str] = field(default_factory=set)
    commands: list[list[str]] = field(default_factory=list)

    def run(self, jobs: Sequence[Job], workers: int, progress: Progress) -> dict[Job, int]:
        codes = {}
        for job in jobs:
            self.commands.append(job.command())
            codes[job] = 1 if job.name in self.fail else 0
            if self.complete and not codes[job]:
                job.folder.mkdir(parents=True, exist_ok=True)
                rd = RunDir(job.folder)
                rd.checkpoint("last").write_bytes(b"")
                rd.config_file.write_text("{}\n")
                rd.done_file.write_text("{}\n")
            progress(job, codes[job], 0.0)
        return codes


class LocalLauncher(Launcher):
    """A pool of ``workers`` local processes; each job's stdout and stderr are appended to its log (``Job.log``)."""

    def __init__(self, python: str = sys.executable) -> None:
        self.python = python

    def _env(self, workers: int) -> dict[str, str]:
        env = dict(os.environ, PYTHONUNBUFFERED="1")  # the log shows progress as it happens
        env["GREEDYMM_PARENT_PID"] = str(os.getpid())  # each run ends itself if the sweep dies (cli.main)
        # torch takes every core per process by default; N such processes on the same cores thrash
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        threads = str(max(1, cores // max(workers, 1)))
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env.setdefault(var, threads)
        return env

    def run(self, jobs: Sequence[Job], workers: int, progress: Progress) -> dict[Job, int]:
        env = self._env(workers)
        live: set[subprocess.Popen] = set()
        lock = threading.Lock()
        stop = threading.Event()

        def work(job: Job) -> tuple[Job, int | None, float]:
            if stop.is_set():
                return job, None, 0.0
            job.log.parent.mkdir(parents=True, exist_ok=True)
            if job.state() == DONE:  # another sweep over the same folder finished it since this one was planned
                with open(job.log, "a") as log:
                    log.write(
                        f"# {time.strftime('%Y-%m-%d %H:%M:%S')} finished by another process; not started again\n"
                    )
                return job, 0, 0.0
            cmd = job.command(python=self.python)
            t0 = time.time()
            with open(job.log, "a") as log:
                log.write(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(cmd)}\n")
                log.flush()
                proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
                with lock:
                    live.add(proc)
                try:
                    code = proc.wait()
                finally:
                    with lock:
                        live.discard(proc)
            return job, code, time.time() - t0

        codes: dict[Job, int] = {}
        with ThreadPoolExecutor(max_workers=max(workers, 1)) as pool:
            futures = [pool.submit(work, job) for job in jobs]
            try:
                for fut in as_completed(futures):
                    job, code, seconds = fut.result()
                    if code is not None:
                        codes[job] = code
                        progress(job, code, seconds)
            except KeyboardInterrupt:
                stop.set()  # launch nothing more
                for fut in futures:
                    fut.cancel()
                with lock:
                    procs = list(live)
                _end(procs)
                raise
        return codes


def _end(procs: Sequence[subprocess.Popen], grace: float = 5.0) -> None:
    """End interrupted trainings. A terminal's Ctrl-C reaches them too (same process group), so they get a few
    seconds to stop by themselves; the rest are terminated. Checkpoints are written atomically, so a run ended
    anywhere resumes from its last checkpoint when the sweep is run again."""
    deadline = time.time() + grace
    for proc in procs:
        try:
            proc.wait(timeout=max(0.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            pass
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass(frozen=True)
class SweepResult:
    jobs: tuple[Job, ...]
    skipped: tuple[Job, ...]  # finished earlier
    launched: tuple[Job, ...]
    failed: tuple[tuple[Job, int], ...]  # (job, exit code)
    in_flight: tuple[Job, ...] = ()  # queued or running from an earlier sweep (Launcher.in_flight): left alone
    blocked: tuple[Job, ...] = ()  # broken folders whose finished work a restart would lose: left alone

    @property
    def ok(self) -> bool:
        return not self.failed and not self.blocked

    def failure_text(self) -> str:
        lines = []
        if self.failed:
            lines += [f"{len(self.failed)} of {len(self.launched)} launched runs failed:"]
            lines += [f"  {job.name} (exit {code}); log: {job.log}" for job, code in self.failed]
        if self.blocked:
            lines += [f"{len(self.blocked)} runs left alone, not started again (their work would be lost):"]
            lines += [f"  {RunDir(job.folder).kept_work()}" for job in self.blocked]
        return "\n".join(lines)


def run_sweep(
    jobs: Sequence[Job],
    launcher: Launcher | None = None,
    workers: int = 1,
    dry_run: bool = False,
    echo: Callable[[str], None] = print,
) -> SweepResult:
    """Skip finished runs, resume crashed ones, restart broken ones, launch the rest; one line per finished job."""
    launcher = launcher or LocalLauncher()
    states = {job: job.state() for job in jobs}
    skipped = tuple(j for j in jobs if states[j] == DONE)
    todo = [j for j in jobs if states[j] != DONE]
    queued = {} if dry_run else launcher.in_flight(todo)  # e.g. still in the Slurm queue from an earlier sweep
    for job, what in queued.items():
        echo(f"{job.name}: {what}; left alone")
    blocked = tuple(j for j in todo if j not in queued and states[j] == BLOCKED)
    for job in blocked:
        echo(f"{job.name}: left alone: {RunDir(job.folder).kept_work()}")
    todo = [j for j in todo if j not in queued and j not in blocked]
    echo(
        f"sweep: {len(jobs)} runs; {len(skipped)} finished earlier, "
        f"{sum(states[j] == RESUME for j in todo)} to resume, "
        f"{sum(states[j] in (NEW, RESTART) for j in todo)} to start"
        + (f", {len(blocked)} left alone (above)" if blocked else "")
    )
    if todo and not dry_run:
        echo(f"each run writes a line per epoch to its log beside its folder ({todo[0].log.name}, ...)")
    if dry_run:
        for job in todo:
            echo(f"# {states[job]}: {job.name}\n{shlex.join(job.command(states[job]))}")
        return SweepResult(tuple(jobs), skipped, (), (), blocked=blocked)
    from .lock import RunFolderBusy

    for job in todo:
        if states[job] == RESTART:
            try:
                clean_run_folder(job.folder)  # under the folder's lock: a run training there is never touched
            except RunFolderBusy as e:  # left as it is; its train process is refused by the same lock
                echo(f"{job.name}: not cleaned: {e}")
    finished = 0

    def progress(job: Job, code: int, seconds: float) -> None:
        nonlocal finished
        finished += 1
        status = "ok" if code == 0 else f"FAILED (exit {code}; log: {job.log})"
        echo(f"[{finished}/{len(todo)}] {job.name}: {status}, {seconds:.0f} s")

    codes = launcher.run(todo, workers, progress) if todo else {}
    failed = tuple((j, codes[j]) for j in todo if codes.get(j, 0) != 0)
    return SweepResult(tuple(jobs), skipped, tuple(todo), failed, tuple(queued), blocked)
