import time

import numpy as np
import pytest
import torch

from greedymm.data.colored import make_colored_data
from greedymm.data.idx import MNIST_FILES, write_idx
from greedymm.models import build_model


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


def run_ranks(fn, *args, nprocs: int = 2, timeout: float = 300) -> None:
    """Run ``fn(rank, *args)`` in ``nprocs`` fresh processes (spawned: a forked child of a process whose
    thread pools are running can deadlock), and fail with a clear message, not a hung suite, past ``timeout``."""
    import torch.multiprocessing as mp

    ctx = mp.start_processes(fn, args=args, nprocs=nprocs, start_method="spawn", join=False)
    deadline = time.monotonic() + timeout
    while not ctx.join(timeout=max(0.1, deadline - time.monotonic())):
        if time.monotonic() >= deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail(f"{nprocs} ranks of {fn.__name__} did not finish within {timeout:.0f} s (killed)")
