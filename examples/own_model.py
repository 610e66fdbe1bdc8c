"""Your own encoders, greedymm's training: a 1-D "audio" encoder and an image encoder trained by greedymm.fit.

The data is greedymm's synthetic two-modality set (generated, not a real data set). Modality m0 stays an image
(1 x 16 x 16); m1 is handed to the model as a spectrogram-like 1-D signal (16 frequency channels x 16 time
steps), through a small wrapper around the split, which is how you would plug in data of your own. Each
modality gets its own encoder, written below as a list of stages; greedymm joins them with MMTM
(greedymm.intermediate_fusion, which works across 1-D and 2-D feature maps) and ``greedymm.fit`` trains the
model exactly as ``greedymm train`` would: the method, logs (steps.csv, results.jsonl, optional TensorBoard),
atomic checkpoints and ``--resume``.

    python examples/own_model.py --out runs/own-model            # 6 epochs, guided
    python examples/own_model.py --out runs/own-model --quick    # 2 epochs on a smaller set (well under 2 min)
    python examples/own_model.py --out runs/own-model --resume   # continue the run exactly
    greedymm report runs/own-model                                # the usual table of a run folder
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch
from torch import Tensor, nn

import greedymm
from greedymm.data import MultiModalData, load_dataset


def audio_encoder(freq_bins: int = 16) -> list[nn.Module]:
    """1-D convolutions over time, the frequency bins as channels: (B, F, T) -> (B, 64, T / 8)."""

    def stage(c_in: int, c_out: int) -> nn.Module:
        return nn.Sequential(nn.Conv1d(c_in, c_out, 5, padding=2), nn.BatchNorm1d(c_out), nn.ReLU(), nn.MaxPool1d(2))

    return [stage(freq_bins, 32), stage(32, 48), stage(48, 64)]


def image_encoder() -> list[nn.Module]:
    """2-D convolutions: (B, 1, H, W) -> (B, 64, H / 8, W / 8)."""

    def stage(c_in: int, c_out: int) -> nn.Module:
        return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(), nn.MaxPool2d(2))

    return [stage(1, 16), stage(16, 32), stage(32, 64)]


@dataclasses.dataclass(frozen=True)
class AudioView:
    """A split whose modality ``name`` is given as (B, F, T): the image rows become frequency channels."""

    split: object
    name: str = "m1"

    def __len__(self) -> int:
        return len(self.split)

    def batch(self, idx: Tensor, train: bool = False) -> tuple[dict[str, Tensor], Tensor]:
        x, y = self.split.batch(idx, train=train)
        return {**x, self.name: x[self.name].flatten(1, 2)}, y  # (B, 1, H, W) -> (B, H, W)

    @property
    def labels(self) -> Tensor:  # lets greedymm check the labels before training
        return self.split.labels


def make_data(quick: bool) -> MultiModalData:
    data = load_dataset("synthetic", modalities=2, size=2000 if quick else 6000, test_size=400, shortcut=0,
                        shortcut_strength=0.2)  # fmt: skip
    return dataclasses.replace(data, train=AudioView(data.train), val=AudioView(data.val), test=AudioView(data.test))


def make_model(data: MultiModalData, seed: int) -> greedymm.MultiModalNet:
    """The same weights for the same seed: build it again the same way to resume."""
    torch.manual_seed(seed)
    example, _ = data.train.batch(torch.arange(2))
    encoders = {"m0": image_encoder(), "m1": audio_encoder()}
    return greedymm.intermediate_fusion(encoders, data.num_classes, example=example)  # MMTM after stages 2 and 3


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/own-model", help="run folder")
    p.add_argument("--quick", action="store_true", help="2 epochs on a smaller data set")
    p.add_argument("--method", default="guided", help="any method defined for MMTM (`greedymm list`)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--log", nargs="*", default=[], help="extra logs, e.g. tensorboard")
    args = p.parse_args(argv)
    data = make_data(args.quick)
    cfg = greedymm.TrainConfig(
        dataset="synthetic",
        method=args.method,
        epochs=args.epochs or (2 if args.quick else 6),
        batch_size=64,
        optimizer="adam",
        lr=1e-3,
        seed=args.seed,
    )
    model = make_model(data, args.seed)
    out = greedymm.fit(cfg, args.out, resume=args.resume, data=data, model=model, log=args.log, progress=False)
    for line in (Path(out) / "results.jsonl").read_text().splitlines():
        r = json.loads(line)
        print(
            f"epoch {r['epoch']}: val acc {r['val']['acc']:.3f}  d_util {r['val']['d_util']:+.3f}  "
            f"d_speed {r['speed']['d_speed']:+.3f}  re-balancing steps {r['train']['rebalance_steps']}"
        )
    print(f"test acc at the last epoch {r['test']['acc']:.3f} (reported only); run folder: {out}")


if __name__ == "__main__":
    main()
