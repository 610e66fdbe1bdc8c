"""Sweeps on a Slurm cluster: one Slurm job per run, through submitit (``pip install 'greedymm[slurm]'``).

``SlurmLauncher`` is the sweep's launcher for ``greedymm sweep --launcher slurm``: it submits the runs a sweep
has to do as one job array (``--max-parallel`` of them at a time), writes each run's job id into its folder
(``slurm.json``) and, unless told not to wait, follows the queue until every job has ended. In its job a run is
one ``greedymm train`` process (``torchrun`` when it asks for several GPUs) whose output is appended to the run's
log (``<run folder>.log``, as with the local launcher); the command is chosen when the job starts, from the
folder's state, so a job that starts again trains on from the last checkpoint.

Time limits and preemption: Slurm warns a job ``signal_delay_s`` seconds before its time limit (USR2, sent up to
60 s earlier than asked); submitit then calls ``TrainInJob.checkpoint``, which stops the training process and
hands back a fresh copy of the job, and requeues the job. The training process is stopped, not asked to save:
every finished epoch is already in ``last.pt`` (written atomically), so the requeued job resumes from the end of
the last finished epoch, drops the log rows written after it, and trains the interrupted epoch again; the result
is bitwise the result of an uninterrupted run (``greedymm train --resume``). With ``checkpoint_every`` the runs
also checkpoint every N steps inside an epoch, and a requeued job loses at most N steps. A job that Slurm requeues
itself (preemption with PreemptMode=REQUEUE, ``scontrol requeue``) is started again and resumes the same way.

``sweep_status(out)`` (``greedymm sweep --status DIR``) tells per run folder: finished, running, queued,
failed (with its log's last lines) or not started; it reads the folders, the job ids in them and ``squeue``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .rundir import DONE as FINISHED_STATE
from .rundir import JOB_RECORD, RunDir
from .sweep import BLOCKED, DONE, RESTART, Job, Launcher, Progress, clean_run_folder

SUBMITIT_DIR = ".slurm"  # in the sweep folder: submitit's job files and the wrapper's own logs, one folder a job
ENDED = (
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "NODE_FAIL",
    "PREEMPTED",
    "BOOT_FAIL",
    "DEADLINE",
    "OUT_OF_MEMORY",
)


def job_record_file(folder: str | os.PathLike) -> Path:
    return Path(folder) / JOB_RECORD


def read_job_record(folder: str | os.PathLike) -> dict[str, Any] | None:
    """What the sweep wrote into the folder when it submitted the run, or None (never submitted to Slurm)."""
    path = job_record_file(folder)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


# -- options --------------------------------------------------------------------------------------------------
def parse_time(value: str | int) -> int:
    """A Slurm time limit in whole minutes (seconds round up): ``90``, ``1:30:00``, ``2-00:00:00``, ``1-12``."""
    text = str(value).strip()
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text)
    if not m or (m.group(1) is None and m.group(3) is not None and m.group(4) is None):
        raise ValueError(
            f"--time {text!r}: give minutes (90), hours:minutes:seconds (1:30:00) or days-hours[:minutes[:seconds]] "
            "(2-00:00:00), as sbatch --time takes it"
        )
    days, first, second, third = (int(g) if g else 0 for g in m.groups())
    if m.group(1) is not None:  # days-hours[:minutes[:seconds]]
        seconds = days * 86400 + first * 3600 + second * 60 + third
    elif m.group(4) is not None:  # hours:minutes:seconds
        seconds = first * 3600 + second * 60 + third
    else:  # minutes
        seconds = first * 60
    if seconds <= 0:
        raise ValueError(f"--time {text!r}: a time limit must be at least one minute")
    return -(-seconds // 60)


def parse_sbatch_args(items: Sequence[str]) -> dict[str, Any]:
    """``--sbatch-arg qos=high account=lab exclusive`` -> {"qos": "high", "account": "lab", "exclusive": True}."""
    out: dict[str, Any] = {}
    for item in items:
        key, eq, value = item.lstrip("-").partition("=")
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", key) or (eq and not value):
            raise ValueError(
                f"--sbatch-arg {item!r}: write an sbatch option without its dashes, as NAME=VALUE or NAME, "
                "e.g. qos=high account=mylab exclusive"
            )
        out[key.replace("_", "-")] = value if eq else True
    return out


MEM = re.compile(r"\d+(\.\d+)?[KMGT]?B?", re.IGNORECASE)


@dataclass(frozen=True)
class SlurmOptions:
    """What each run's job asks Slurm for. ``time`` in minutes (``parse_time``); ``mem`` as sbatch takes it
    ("16G"); ``max_parallel``: runs at a time (None: as many as the cluster gives); ``sbatch``: further sbatch
    options (``parse_sbatch_args``); ``max_requeues``: how often a run may be requeued at its time limit."""

    partition: str | None = None
    time: int = 60
    gpus: int = 0
    cpus: int = 1
    mem: str | None = None
    max_parallel: int | None = None
    sbatch: Mapping[str, Any] = field(default_factory=dict)
    signal_delay_s: int = 120
    max_requeues: int = 20
    checkpoint_every: int = 0  # also checkpoint every N steps inside an epoch (`train --checkpoint-every`)
    job_name: str = "greedymm"

    def __post_init__(self) -> None:
        if self.time < 1:
            raise ValueError(f"--time must be at least 1 minute, got {self.time}")
        if self.gpus < 0 or self.cpus < 1:
            raise ValueError(f"--gpus-per-run must be >= 0 and --cpus-per-run >= 1, got {self.gpus} and {self.cpus}")
        if self.max_parallel is not None and self.max_parallel < 1:
            raise ValueError(f"--max-parallel must be >= 1, got {self.max_parallel}")
        if self.mem is not None and not MEM.fullmatch(self.mem):
            raise ValueError(f"--mem-per-run {self.mem!r}: give memory as sbatch takes it, e.g. 16G or 4000M")
        if self.signal_delay_s < 0 or self.max_requeues < 0:
            raise ValueError("the warning time and the number of requeues cannot be negative")
        if self.checkpoint_every < 0:
            raise ValueError(f"--checkpoint-every must be >= 0 (0: at epoch ends only), got {self.checkpoint_every}")

    def executor_parameters(self) -> dict[str, Any]:
        """``submitit.SlurmExecutor.update_parameters`` keywords."""
        params: dict[str, Any] = {
            "job_name": self.job_name,
            "time": self.time,
            "cpus_per_task": self.cpus,
            "signal_delay_s": self.signal_delay_s,
            "stderr_to_stdout": True,
        }
        if self.partition:
            params["partition"] = self.partition
        if self.gpus:
            params["gpus_per_node"] = self.gpus
        if self.mem:
            params["mem"] = self.mem
        if self.max_parallel:
            params["array_parallelism"] = self.max_parallel
        if self.sbatch:
            params["additional_parameters"] = dict(self.sbatch)
        return params


def require_submitit() -> Any:
    try:
        import submitit
    except ImportError as err:
        from .data.optional import MissingExtra

        raise MissingExtra(
            "--launcher slurm needs submitit, which is not installed; install it with pip install 'greedymm[slurm]' "
            "(or pip install submitit)"
        ) from err
    return submitit


def require_slurm() -> None:
    missing = [c for c in ("sbatch", "squeue", "scontrol") if shutil.which(c) is None]
    if missing:
        raise RuntimeError(
            f"--launcher slurm needs Slurm's commands, and {', '.join(missing)} is not on PATH; run the sweep on a "
            "machine of the cluster (a login node), or bring up a one-node cluster here with `make slurm-up`"
        )


# -- the queue ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class QueueEntry:
    job_id: str
    state: str  # PENDING, RUNNING, COMPLETING, REQUEUED, ...
    reason: str
    nodes: str
    name: str = ""


def squeue() -> dict[str, QueueEntry] | None:
    """The jobs Slurm still holds (one line per array task), by job id; None when squeue cannot be asked."""
    if shutil.which("squeue") is None:
        return None
    try:
        out = subprocess.run(
            ["squeue", "--noheader", "--array", "--format=%i|%T|%r|%N|%j"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
    except (subprocess.SubprocessError, OSError):
        return None
    entries = {}
    for line in out.splitlines():
        parts = line.strip().split("|", 4)
        if len(parts) == 5:
            entries[parts[0]] = QueueEntry(*parts)
    return entries


def in_queue(entry: QueueEntry | None) -> bool:
    return entry is not None and entry.state not in ENDED


def queue_entry(queue: Mapping[str, QueueEntry] | None, record: Mapping[str, Any] | None) -> QueueEntry | None:
    """The queue's entry for a run's job record: same job id and, where recorded, same job name (a cluster whose
    job ids started again cannot pass another job off as the run's)."""
    if queue is None or not record or "job_id" not in record:
        return None
    entry = queue.get(str(record["job_id"]))
    if entry is not None and record.get("job_name") and entry.name != record["job_name"]:
        return None
    return entry


def lock_holder(folder: Path) -> str | None:
    """Who holds the run folder's lock (``greedymm.lock``), or None; reads and creates nothing."""
    import fcntl

    path = RunDir(folder).lock_file
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        except (OSError, ValueError):
            info = {}
        return f"pid {info.get('pid', '?')} on {info.get('host', '?')}"
    finally:
        os.close(fd)
    return None


# -- the job --------------------------------------------------------------------------------------------------
_live: subprocess.Popen | None = None  # the training process of this job (one per job)


def _ignore_warning_signal() -> None:
    # Slurm signals every process of the job; the training process leaves the warning to the job's wrapper
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)


class TrainInJob:
    """One run inside its Slurm job: a submitit checkpointable callable (``__call__`` and ``checkpoint``)."""

    def __init__(self, job: Job, gpus: int = 0, cpus: int = 1, checkpoint_every: int = 0) -> None:
        self.job = job
        self.gpus = gpus
        self.cpus = cpus
        self.checkpoint_every = checkpoint_every

    def command(self, state: str) -> list[str]:
        cmd = self.job.command(state, python=sys.executable)
        every = getattr(self, "checkpoint_every", 0)  # a job stopped at its warning loses at most this many steps
        if every:
            cmd += ["--checkpoint-every", str(every)]
        if self.gpus > 1:  # one process per GPU: [python, -m, greedymm, train, ...] under torchrun
            cmd = [cmd[0], "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={self.gpus}", *cmd[1:]]
        return cmd

    def env(self) -> dict[str, str]:
        env = dict(os.environ, PYTHONUNBUFFERED="1", GREEDYMM_PARENT_PID=str(os.getpid()))
        threads = str(max(1, self.cpus // max(self.gpus, 1)))
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = threads
        return env

    def __call__(self) -> int:
        global _live
        folder = self.job.folder
        state = self.job.state()
        job_id = os.environ.get("SLURM_ARRAY_JOB_ID")
        job_id = f"{job_id}_{os.environ.get('SLURM_ARRAY_TASK_ID')}" if job_id else os.environ.get("SLURM_JOB_ID")
        header = (
            f"# {time.strftime('%Y-%m-%d %H:%M:%S')} slurm job {job_id} on {socket.gethostname()} "
            f"(restart {os.environ.get('SLURM_RESTART_COUNT', '0')}): "
        )
        self.job.log.parent.mkdir(parents=True, exist_ok=True)
        if state == DONE:
            with open(self.job.log, "a") as log:
                log.write(header + "already finished, nothing to do\n")
            return 0
        if state == BLOCKED:  # broken, with work a restart would lose: left alone, the log says why
            with open(self.job.log, "a") as log:
                log.write(header + f"left alone: {RunDir(folder).kept_work()}\n")
            return 2
        if state == RESTART:  # stopped before its first checkpoint: nothing to resume from
            clean_run_folder(folder)
        cmd = self.command(state)
        with open(self.job.log, "a") as log:
            log.write(header + " ".join(cmd) + "\n")
            log.flush()
            _live = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env(),
                preexec_fn=_ignore_warning_signal,
                start_new_session=True,  # its own process group: stop_training ends torchrun's ranks too
            )
            while True:  # wait with a timeout: the warning's handler may then wait for the process itself
                try:
                    code = _live.wait(timeout=1.0)
                    break
                except subprocess.TimeoutExpired:
                    continue
        _live = None
        if code != 0:
            raise RuntimeError(f"greedymm train exited with {code}; its output is in {self.job.log}")
        return code

    def checkpoint(self) -> Any:
        """At the time-limit warning (or preemption): stop the training process and hand submitit a fresh copy of
        this job to requeue; the copy resumes from the last checkpoint."""
        from submitit.helpers import DelayedSubmission

        stop_training()
        return DelayedSubmission(TrainInJob(self.job, self.gpus, self.cpus, self.checkpoint_every))


def stop_training(grace: float = 30.0) -> None:
    """End this job's training process (its whole process group): SIGTERM, then SIGKILL after ``grace`` s."""
    proc = _live
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        os.killpg(proc.pid, signal.SIGCONT)  # a suspended process acts on the SIGTERM only once it runs
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


# -- the launcher ---------------------------------------------------------------------------------------------
class SlurmLauncher(Launcher):
    """Submits a sweep's runs to Slurm through submitit, one job each, as one job array.

    ``wait``: follow the queue until every submitted job has ended (``poll_s`` between looks) and report each
    run as it ends; otherwise return right after submitting (``greedymm sweep --status`` follows them)."""

    def __init__(
        self,
        options: SlurmOptions | None = None,
        wait: bool = True,
        poll_s: float = 10.0,
        echo: Callable[[str], None] = print,
    ) -> None:
        self.options = options or SlurmOptions()
        self.wait = wait
        self.poll_s = poll_s
        self.echo = echo
        self.submitted: dict[Job, str] = {}  # job -> Slurm job id, of the last run()

    def in_flight(self, jobs: Sequence[Job]) -> dict[Job, str]:
        """Runs queued or running in Slurm (by the job id in their folder): a sweep started again leaves them
        alone (a folder being written is refused by its lock in any case)."""
        queue = squeue()
        busy = {}
        for job in jobs:
            entry = queue_entry(queue, read_job_record(job.folder))
            if in_queue(entry):
                busy[job] = f"{entry.state.lower()} as Slurm job {entry.job_id}"
        return busy

    def run(self, jobs: Sequence[Job], workers: int, progress: Progress) -> dict[Job, int]:
        if not jobs:
            return {}
        submitit = require_submitit()
        require_slurm()
        sweep_dir = jobs[0].folder.parent
        executor = submitit.SlurmExecutor(
            folder=sweep_dir / SUBMITIT_DIR / "%j", max_num_timeout=self.options.max_requeues
        )
        executor.update_parameters(**self.options.executor_parameters())
        opts = self.options
        calls = [TrainInJob(job, opts.gpus, opts.cpus, opts.checkpoint_every) for job in jobs]
        started = time.time()
        try:
            handles = executor.submit_array(calls)
        except (RuntimeError, OSError) as err:  # sbatch refused: its own words, then where to look
            said = [line for line in str(err).splitlines() if line.strip()]
            raise RuntimeError(
                f"Slurm did not take the jobs ({said[-1] if said else err}); check --partition, --time, the "
                "per-run resources and --sbatch-arg against the cluster (sinfo lists its partitions and limits)"
            ) from err
        self.submitted = {}
        for job, handle in zip(jobs, handles, strict=True):
            self.submitted[job] = handle.job_id
            job.folder.mkdir(parents=True, exist_ok=True)
            record = {
                "job_id": handle.job_id,
                "job_name": self.options.job_name,
                "submitted": time.strftime("%Y-%m-%d %H:%M:%S"),
                "submitit_log": str(handle.paths.stdout),
            }
            from .atomic import atomic_path

            with atomic_path(job_record_file(job.folder)) as tmp:
                tmp.write_text(json.dumps(record) + "\n")
        first = handles[0].job_id.split("_")[0]
        self.echo(
            f"submitted {len(jobs)} run{'s' * (len(jobs) > 1)} as Slurm job {first}; each run's output: <run>.log"
        )
        if not self.wait:
            return {}
        return self._follow(started, progress)

    def _follow(self, started: float, progress: Progress) -> dict[Job, int]:
        codes: dict[Job, int] = {}
        pending = dict(self.submitted)
        try:
            while pending:
                time.sleep(self.poll_s)
                queue = squeue()
                if queue is None:
                    continue  # the controller does not answer now; ask again
                for job, job_id in list(pending.items()):
                    if not in_queue(queue.get(job_id)):
                        del pending[job]
                        codes[job] = 0 if RunDir(job.folder).state() == FINISHED_STATE else 1
                        progress(job, codes[job], time.time() - started)
        except KeyboardInterrupt:
            self.echo(
                f"stopped following; {len(pending)} Slurm jobs stay queued or running "
                f"(`greedymm sweep --status {next(iter(pending)).folder.parent}` shows them, scancel cancels them)"
                if pending
                else "stopped following"
            )
            raise
        return codes


# -- status ---------------------------------------------------------------------------------------------------
FINISHED, RUNNING, QUEUED, FAILED, NOT_STARTED = "finished", "running", "queued", "failed", "not started"


@dataclass(frozen=True)
class RunStatus:
    name: str
    status: str  # FINISHED, RUNNING, QUEUED, FAILED, NOT_STARTED
    detail: str = ""
    tail: tuple[str, ...] = ()  # the log's last lines, for failed runs


def _tail(path: Path, lines: int) -> tuple[str, ...]:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, 2) - 16384))
            text = f.read().decode(errors="replace")
    except OSError:
        return ()
    return tuple(text.splitlines()[-lines:])


def _epochs_done(rd: RunDir) -> str:
    """How far a running run is, as "; K of N epochs done" once it has written its config, else "" (a run still
    reading its data, or a folder that cannot be read: the status says the rest)."""
    try:
        done, total = len(rd.records()) if rd.has_records() else 0, rd.saved_config()["epochs"]
    except (OSError, ValueError, KeyError, RuntimeError):
        return ""
    return f"; {done} of {total} epochs done"


def run_status(folder: Path, queue: Mapping[str, QueueEntry] | None, tail_lines: int = 5) -> RunStatus:
    rd = RunDir(folder)
    record = read_job_record(folder)
    job_id = str(record["job_id"]) if record and "job_id" in record else None
    entry = queue_entry(queue, record)
    if rd.state() == FINISHED_STATE:
        return RunStatus(folder.name, FINISHED, f"job {job_id}" if job_id else "")
    if in_queue(entry):
        if entry.state in ("RUNNING", "COMPLETING"):
            return RunStatus(folder.name, RUNNING, f"job {job_id} on {entry.nodes}{_epochs_done(rd)}")
        return RunStatus(folder.name, QUEUED, f"job {job_id}, {entry.state.lower()}: {entry.reason}")
    if holder := lock_holder(folder):
        return RunStatus(folder.name, RUNNING, f"{holder}{_epochs_done(rd)}")
    if rd.state() == "new" and not rd.sweep_log.exists():
        if job_id and queue is None:
            return RunStatus(folder.name, QUEUED, f"job {job_id}? squeue does not answer")
        if job_id:  # the job ended before it started the training: the wrapper's log says why
            log = Path(str(record.get("submitit_log", "")))
            return RunStatus(
                folder.name, FAILED, f"job {job_id} ended before training; log {log}", _tail(log, tail_lines)
            )
        return RunStatus(folder.name, NOT_STARTED)
    where = f"job {job_id}; " if job_id else ""
    if rd.state() == "broken" and not rd.disposable():
        return RunStatus(folder.name, FAILED, f"{where}left alone by the sweep: {rd.kept_work()}")
    what = "resumes from its last checkpoint" if rd.state() == "resumable" else "restarts"
    detail = f"{where}log {rd.sweep_log}; running the sweep again {what}"
    if job_id and queue is None:
        detail = f"job {job_id} (squeue does not answer: it may still be queued); " + detail
    return RunStatus(folder.name, FAILED, detail, _tail(rd.sweep_log, tail_lines))


def sweep_status(out: str | os.PathLike, tail_lines: int = 5) -> list[RunStatus]:
    """The status of every run folder in a sweep folder (a folder holding a run's files or a job record)."""
    out = Path(out)
    if not out.is_dir():
        raise FileNotFoundError(f"{out} is not a sweep folder (no such folder); pass the --out of a sweep")
    folders = [
        p
        for p in sorted(out.iterdir())
        if p.is_dir()
        and (job_record_file(p).exists() or RunDir(p).leftovers() or RunDir(p).sweep_log.exists() or _locked(p))
    ]
    queue = squeue() if any(job_record_file(p).exists() for p in folders) else {}
    return [_status_or_problem(p, queue, tail_lines) for p in folders]


def _status_or_problem(folder: Path, queue: Mapping[str, QueueEntry] | None, tail_lines: int) -> RunStatus:
    try:
        return run_status(folder, queue, tail_lines)
    except (RuntimeError, OSError, ValueError) as err:  # a damaged folder: say what is wrong, go on with the rest
        return RunStatus(folder.name, FAILED, f"the folder cannot be read: {err}")


def _locked(folder: Path) -> bool:
    return lock_holder(folder) is not None


def format_status(rows: Sequence[RunStatus]) -> str:
    if not rows:
        return "no runs in this folder yet"
    width = max(len(r.name) for r in rows)
    lines = []
    for r in rows:
        lines.append(f"{r.name:<{width}}  {r.status}{f' ({r.detail})' if r.detail else ''}")
        lines += [f"    | {line}" for line in r.tail]
    counts = {s: sum(r.status == s for r in rows) for s in (FINISHED, RUNNING, QUEUED, FAILED, NOT_STARTED)}
    lines.append(", ".join(f"{n} {s}" for s, n in counts.items() if n) + f" (of {len(rows)})")
    return "\n".join(lines)
