"""Run by the DDP harness (``ddp.train`` in tests/conftest.py) under torchrun, and alone as the reference: train the
tiny fixture, dump per-rank decisions."""

import argparse
import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from conftest import tiny_colored_data, tiny_three_data  # noqa: E402
from greedymm.config import TrainConfig  # noqa: E402
from greedymm.methods import Method  # noqa: E402
from greedymm.train import fit  # noqa: E402


def config(method: str, epochs: int, fusion: str = "mmtm") -> TrainConfig:
    return TrainConfig(
        dataset="tiny",
        method=method,
        fusion=fusion,
        epochs=epochs,
        batch_size=16,
        optimizer="adam",
        lr=3e-3,
        width=0.25,
        warmup_epochs=0.5,
        hparams={"guided": {"alpha": 0.0, "Q": 2}, "gblending": {"super_epoch": 1}}.get(method, {}),
        device="cpu",
    )


class NoisySplit:
    """Training-time augmentation drawn from torch's global RNG (as the ModelNet flips are)."""

    def __init__(self, split):
        self.split = split

    def __len__(self):
        return len(self.split)

    def batch(self, idx, train=False):
        x, y = self.split.batch(idx, train)
        if train:
            x = {k: v + 0.05 * torch.rand(v.shape) for k, v in x.items()}
        return x, y


def record_modes() -> list[str]:
    """Record the mode of every step this process runs (the method's decisions, per rank)."""
    modes: list[str] = []
    observe = Method.observe

    def recording(self, info):
        modes.append(str(info.mode))  # the mode's name, as steps.csv writes it
        observe(self, info)

    Method.observe = recording
    return modes


if __name__ == "__main__":
    import dataclasses
    import faulthandler

    faulthandler.enable(all_threads=True)  # an abort (SIGABRT) prints every thread's Python stack to stderr

    modes = record_modes()

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("method")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--augment", action="store_true", help="training-time noise drawn from each rank's RNG")
    parser.add_argument("--modalities", type=int, choices=(2, 3), default=2)
    parser.add_argument("--fusion", default="mmtm")
    args = parser.parse_args()
    out = args.out
    torch.set_num_threads(1)
    cfg = config(args.method, args.epochs, args.fusion)
    data = tiny_three_data() if args.modalities == 3 else tiny_colored_data()
    if args.augment:
        data = dataclasses.replace(data, train=NoisySplit(data.train))
    fit(cfg, out, resume=args.resume, progress=False, data=data)
    # fit ends the process group it started, so the rank comes from torchrun's environment
    r = os.environ.get("RANK", "0")
    (out / f"modes_rank{r}.json").write_text(json.dumps(modes))
    # whether the process group is still up after fit (it must not be: fit ends what it started)
    (out / f"group_alive_rank{r}.json").write_text(json.dumps(torch.distributed.is_initialized()))
