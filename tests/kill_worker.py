"""Run by tests/test_kill_resume.py in a subprocess: train the tiny fixture, checkpointing every step."""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from conftest import tiny_colored_data  # noqa: E402
from greedymm.config import TrainConfig  # noqa: E402
from greedymm.train import fit  # noqa: E402


def config(method: str) -> TrainConfig:
    return TrainConfig(
        dataset="tiny",
        method=method,
        epochs=2,
        batch_size=8,
        optimizer="adam",
        lr=3e-3,
        width=0.25,
        warmup_epochs=0.25,
        hparams={"alpha": 0.0, "Q": 3} if method == "guided" else {},
        device="cpu",
    )


def data():
    return tiny_colored_data(n_train=192, n_test=16)  # 144 training items, batch 8: 18 steps an epoch


if __name__ == "__main__":
    out, method, resume = Path(sys.argv[1]), sys.argv[2], sys.argv[3] == "resume"
    torch.set_num_threads(1)
    fit(config(method), out, resume=resume, progress=False, data=data(), checkpoint_every=1)
