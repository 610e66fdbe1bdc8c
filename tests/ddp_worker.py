"""Run by tests/test_distributed.py under torchrun (and alone): train the tiny fixture, dump per-rank decisions."""

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from conftest import tiny_colored_data  # noqa: E402
from greedymm.config import TrainConfig  # noqa: E402
from greedymm.distributed import rank  # noqa: E402
from greedymm.methods import Method  # noqa: E402
from greedymm.train import fit  # noqa: E402

modes: list[str] = []
_observe = Method.observe


def observe(self, info):
    modes.append(info.mode)
    _observe(self, info)


Method.observe = observe

if __name__ == "__main__":
    out, method = Path(sys.argv[1]), sys.argv[2]
    torch.set_num_threads(1)
    cfg = TrainConfig(
        dataset="tiny",
        method=method,
        epochs=2,
        batch_size=16,
        optimizer="adam",
        lr=3e-3,
        width=0.25,
        warmup_epochs=0.5,
        hparams={"alpha": 0.0, "Q": 2} if method == "guided" else {},
        device="cpu",
    )
    fit(cfg, out, progress=False, data=tiny_colored_data())
    (out / f"modes_rank{rank()}.json").write_text(json.dumps(modes))
