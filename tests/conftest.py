"""Shared fixtures: tiny data and models, a run killed mid-epoch, the two test tiers and the DDP harness.

Tiers: a test that starts a process (a DDP rank, a subprocess, a CLI or example run) carries
``@pytest.mark.process`` (tests that use the ``ddp`` fixture get it automatically); plain ``pytest`` leaves those
and ``slow`` tests out (``addopts`` in pyproject.toml) and ``pytest -m ""`` runs everything. A test that starts a
process without the marker fails, saying so, so the fast tier stays single-process.
"""

import datetime
import importlib.util
import json
import multiprocessing.process
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from greedymm.data.colored import make_colored_data
from greedymm.data.idx import MNIST_FILES, write_idx
from greedymm.models import build_model


def load_script(name: str) -> Any:
    """The module of ``scripts/<name>.py`` (the scripts are not a package): its functions, to test them."""
    path = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def same_state(a: Any, b: Any) -> bool:
    """Exact equality of nested checkpoint state: tensors by ``torch.equal`` (every element, unlike ``str()``, which
    rounds and elides), dicts, lists and tuples element by element, NaN equal to NaN."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same_state(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(map(same_state, a, b))
    if isinstance(a, float) and isinstance(b, float) and a != a and b != b:
        return True
    return bool(a == b)


def tiny_colored_data(n_train: int = 96, n_test: int = 32, size: int = 12, seed: int = 0):
    """A tiny CG data set: class c is a bright square at a class-specific place (learnable from gray)."""
    g = torch.Generator().manual_seed(seed)

    def make(n):
        labels = torch.arange(n) % 4
        images = (torch.rand(n, size, size, generator=g) * 60).to(torch.uint8)
        for i, c in enumerate(labels.tolist()):
            r, col = (c // 2) * (size // 2), (c % 2) * (size // 2)
            images[i, r : r + size // 2, col : col + size // 2] = 230
        return images, labels

    tx, ty = make(n_train)
    sx, sy = make(n_test)
    source = {"real_data": False, "source": "test fixture", "note": "generated in tests"}
    return make_colored_data("tiny", tx, ty, sx, sy, source, val_fraction=0.25, data_seed=seed)


def tiny_three_data(seed: int = 0):
    """A tiny three-modality data set (the synthetic generator), 72 training items of 4 classes, 12 px."""
    from greedymm.data import load_dataset

    return load_dataset(
        "synthetic", modalities=3, size=96, test_size=32, classes=4, image_size=12, val_fraction=0.25,
        signal=[1.0, 0.6, 0.3], data_seed=seed,
    )  # fmt: skip


@pytest.fixture
def one_torch_thread():
    """One torch thread for the test (then the number before): on a shared CPU, tiny tensors lose more to thread
    start-up and contention than they gain. A test module opts in with
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny_data():
    return tiny_colored_data()


@pytest.fixture
def tiny_model():
    torch.manual_seed(0)
    return build_model("small-cnn", ("colored", "gray"), (3, 1), num_classes=4, width=0.25)


def tiny_inputs(batch: int = 4, size: int = 12, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "colored": torch.rand(batch, 3, size, size, generator=g),
        "gray": torch.rand(batch, 1, size, size, generator=g),
    }


def write_mnist_dir(folder, n_train=6, n_test=4, gz=True, seed=0):
    """Tiny MNIST-layout folder; returns the arrays written."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, n_train, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for key, fname in MNIST_FILES.items():
        write_idx(folder / (fname if gz else fname.removesuffix(".gz")), arrays[key])
    return arrays


class Killed(Exception):
    """Raised by ``fit_killed``: the run died mid-epoch."""


def fit_killed(monkeypatch, cfg, out, data, steps: int) -> None:
    """Train with a checkpoint after every step and die after ``steps`` optimizer steps (a run killed mid-epoch).
    Epoch hooks that read the training split are not counted, unlike a crash inside the split."""
    import greedymm.train as train
    from greedymm.train import fit

    step, calls = train.train_step, [0]

    def dying(*args, **kwargs):
        calls[0] += 1
        if calls[0] > steps:
            raise Killed
        return step(*args, **kwargs)

    monkeypatch.setattr(train, "train_step", dying)
    with pytest.raises(Killed):
        fit(cfg, out, progress=False, data=data, checkpoint_every=1)
    monkeypatch.setattr(train, "train_step", step)


# -- the two tiers ------------------------------------------------------------------------------------------------
@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(config, items):
    for item in items:
        if "ddp" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.process)


@pytest.fixture(autouse=True)
def _only_marked_tests_start_processes(request, monkeypatch):
    """Fail a test that starts a process without ``@pytest.mark.process`` (it would slow the fast tier)."""
    if request.node.get_closest_marker("process") is not None:
        yield
        return
    test = request.node.nodeid

    def refuse(*args: Any, **kwargs: Any) -> None:
        pytest.fail(
            f"{test} starts a process but is not marked: add @pytest.mark.process to it (plain pytest is the "
            "single-process tier; pytest -m '' runs the marked tests too)",
            pytrace=False,
        )

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)
    monkeypatch.setattr(multiprocessing.process.BaseProcess, "start", refuse)
    for name in ("fork", "system", "posix_spawn", "posix_spawnp"):
        if hasattr(os, name):
            monkeypatch.setattr(os, name, refuse)
    yield


# -- the DDP harness ----------------------------------------------------------------------------------------------
DDP_DEADLINE_S = 600.0  # one test's distributed runs together; pytest's own timeout (900 s) is the last resort
WORKER = Path(__file__).parent / "ddp_worker.py"
# torchrun's own start-up failures (rendezvous, ports): not greedymm's; retried once, then reported as such
LAUNCHER_FAILURES = ("RendezvousError", "RendezvousConnectionError", "Address already in use", "EADDRINUSE")


def _rank_main(rank: int, fn: Callable[..., None], world: int, init: str, args: tuple) -> None:
    """One spawned rank: a gloo process group over a file, one thread, ``fn(rank, world, *args)``, the group ended."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{init}", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=300)
    )
    try:
        fn(rank, world, *args)
        # every rank done before any tears its group down: a rank that left while the other still sent made gloo
        # abort the process at exit ("terminate called without an active exception") now and then
        dist.barrier()
    finally:
        dist.destroy_process_group()


def read_records(out: Path) -> list[dict]:
    """The records of a run folder's results.jsonl, in order."""
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


class DDP:
    """Distributed runs for one test, under one deadline: past it the processes are killed and that test fails
    naming the run that hung; the suite goes on."""

    def __init__(self, tmp_path: Path, deadline_s: float = DDP_DEADLINE_S) -> None:
        self.tmp_path = tmp_path
        self.deadline_s = deadline_s
        self.deadline = time.monotonic() + deadline_s
        self.calls = 0

    def _left(self, what: str) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            pytest.fail(f"{what}: this test's distributed runs used up their {self.deadline_s:.0f} s", pytrace=False)
        return left

    def ranks(self, fn: Callable[..., None], *args: Any, world: int = 2) -> None:
        """Run ``fn(rank, world, *args)`` in ``world`` spawned processes (a forked child of a process whose thread
        pools run can deadlock), each with a gloo process group already up and one thread; a rank's exception
        fails the test with its traceback."""
        import torch.multiprocessing as mp

        self.calls += 1
        init = self.tmp_path / f".ddp-init-{self.calls}"  # file rendezvous: no port to race for
        what = f"{world} ranks of {fn.__name__}"
        threads = os.environ.get("OMP_NUM_THREADS")
        os.environ["OMP_NUM_THREADS"] = "1"  # read by each child at start
        try:
            ctx = mp.start_processes(
                _rank_main, args=(fn, world, str(init), args), nprocs=world, start_method="spawn", join=False
            )
        finally:
            if threads is None:
                os.environ.pop("OMP_NUM_THREADS")
            else:
                os.environ["OMP_NUM_THREADS"] = threads
        try:
            while not ctx.join(timeout=min(5.0, max(0.1, self.deadline - time.monotonic()))):
                if time.monotonic() >= self.deadline:
                    pytest.fail(f"{what} did not finish within the test's {self.deadline_s:.0f} s (killed)")
        finally:
            for p in ctx.processes:
                if p.is_alive():
                    p.kill()
                    p.join()

    def train(
        self,
        out: Path,
        method: str,
        *,
        processes: int = 2,
        epochs: int = 2,
        resume: bool = False,
        augment: bool = False,
        modalities: int = 2,
        fusion: str = "mmtm",
    ) -> list[dict]:
        """Train tests/ddp_worker.py's tiny run into ``out`` under torchrun with ``processes`` ranks (1: a plain
        process, the reference), one thread each; return its records. A non-zero exit or a rank that aborts at
        exit fails with the log's tail; torchrun's own start-up failure is retried once."""
        worker = [str(WORKER), str(out), method, "--epochs", str(epochs), "--modalities", str(modalities)]
        worker += ["--fusion", fusion, *(["--resume"] if resume else []), *(["--augment"] if augment else [])]
        torchrun = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes)]
        cmd = [sys.executable, *(torchrun if processes > 1 else []), *worker]
        what = f"{method} on {processes} process(es) into {out.name}"
        for attempt in (1, 2):
            code, log = self._run(cmd, what)
            launcher_failed = any(m in log for m in LAUNCHER_FAILURES) and not (out / "results.jsonl").exists()
            if code == 0 or not launcher_failed or processes == 1:
                break
            if attempt == 2:
                pytest.fail(f"torchrun itself failed to start twice (outside greedymm: rendezvous or port):\n{log}")
        # a rank that trained fine but aborts at exit (gloo threads torn down by interpreter shutdown) fails here
        assert "terminate called" not in log, log
        assert code == 0, log
        return read_records(out)

    def _run(self, cmd: list[str], what: str) -> tuple[int, str]:
        """Run ``cmd`` in its own session (so torchrun's ranks die with it); (exit code, the log's tail)."""
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)  # fmt: skip
        try:
            stdout, stderr = p.communicate(timeout=self._left(what))
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            stdout, stderr = p.communicate()
            pytest.fail(f"{what} did not finish within the test's {self.deadline_s:.0f} s (killed):\n{stderr[-4000:]}")
        return p.returncode, stdout[-2000:] + stderr[-12000:]


@pytest.fixture
def ddp(tmp_path) -> DDP:
    """The DDP harness (marks its test ``process``): ``ddp.ranks(fn, *args)`` runs a function on spawned ranks,
    ``ddp.train(out, method, processes=2, ...)`` trains the tiny fixture under torchrun."""
    return DDP(tmp_path)
