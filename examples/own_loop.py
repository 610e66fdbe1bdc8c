"""Your loop, your model: greedymm's guided balancing and its measurements inside a plain PyTorch training loop.

The model is built here from two small CNN encoders (written below, three stages each), joined by MMTM after
their second and third stages (greedymm.intermediate_fusion). The data: greedymm's synthetic two-modality set
(generated, not a real data set): m0 carries the clearer class pattern plus a weak shortcut that is gone at test
time, m1 a fainter pattern, so a network leans on m0 (d_util < 0). The loop is ordinary
PyTorch (a DataLoader, Adam); greedymm is called at four points per step and two per epoch. Each epoch prints
the validation accuracy, d_util (the conditional utilization gap) and d_speed (the conditional learning-speed gap).

    python examples/own_loop.py            # 8 epochs, guided
    python examples/own_loop.py --quick    # 2 epochs on a smaller set (under a minute on a CPU)
    python examples/own_loop.py --method vanilla
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

import greedymm
from greedymm.data import load_dataset


def conv_stage(c_in: int, c_out: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(), nn.MaxPool2d(2))


def my_encoder(c_in: int = 1) -> list[nn.Module]:
    """The user's encoder, as a list of stages (MMTM can sit after any of them)."""
    return [conv_stage(c_in, 16), conv_stage(16, 32), conv_stage(32, 64)]


class AsDicts(Dataset):
    """A greedymm split as a map-style Dataset of ({modality: tensor}, label) items, for a DataLoader."""

    def __init__(self, split) -> None:
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int):
        x, y = self.split.batch(torch.tensor([i]))
        return {k: v[0] for k, v in x.items()}, y[0]


def train(
    model: greedymm.MultiModalNet,
    epoch_batches: Callable[[int], Iterable],
    val_batches: Iterable,
    epochs: int,
    method: str = "guided",
    lr: float = 1e-3,
    warmup_steps: int = 0,
    seed: int = 0,
    report: Callable[[str], None] = print,
) -> tuple[list[greedymm.StepLog], list[dict]]:
    """The user's training loop. Returns every step's log (d_speed, speeds, mode) and every epoch's evaluation."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    bal = greedymm.Balancer(model, method, warmup_steps=warmup_steps, seed=seed)
    steps, evals = [], []
    for epoch in range(epochs):
        model.train()
        bal.epoch_start()  # clears the squeeze sums; the method's epoch work (none for guided)
        first = len(steps)
        for x, y in epoch_batches(epoch):
            out = bal.forward(x)  # the forward pass in the mode guided chose for this step
            loss = bal.loss(out, y)  # the method's loss (MMTM: the sum of the heads' cross-entropies)
            opt.zero_grad()
            bal.backward(loss, opt)  # gradients; the conditional learning speed on regular steps
            log = bal.end_step(loss)  # d_speed; guided picks the next step's mode
            if log.finite:
                opt.step()
            steps.append(log)
        bal.epoch_end()  # the train-split means the utilization passes use
        metrics = bal.evaluate(val_batches)  # accuracy, heads, u(m1|m0), u(m0|m1), d_util
        evals.append(metrics)
        rebal = sum(s.mode != "regular" for s in steps[first:])
        report(
            f"epoch {epoch}: val acc {metrics['acc']:.3f}  d_util {metrics['d_util']:+.3f}  "
            f"d_speed {steps[-1].d_speed:+.3f}  re-balancing steps {rebal}"
        )
    return steps, evals


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="2 epochs on a smaller data set")
    p.add_argument("--method", default="guided", help="a greedymm method for MMTM models (guided, random, vanilla)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    size = 2000 if args.quick else 6000
    epochs = args.epochs or (2 if args.quick else 8)
    data = load_dataset("synthetic", modalities=2, size=size, test_size=400, shortcut=0, shortcut_strength=0.2)
    torch.manual_seed(args.seed)
    example, _ = data.train.batch(torch.arange(2))
    model = greedymm.intermediate_fusion({m: my_encoder() for m in data.modalities}, data.num_classes, example=example)
    g = torch.Generator().manual_seed(args.seed)
    loader = DataLoader(AsDicts(data.train), batch_size=64, shuffle=True, drop_last=True, generator=g)
    val = DataLoader(AsDicts(data.val), batch_size=256)
    print(f"{args.method}: {greedymm.count_parameters(model):,} parameters, {len(data.train)} training items")
    train(model, lambda epoch: loader, val, epochs, args.method, warmup_steps=len(loader), seed=args.seed)
    test = greedymm.evaluate_batches(model, DataLoader(AsDicts(data.test), batch_size=256))  # reported, never used
    heads = f"{test['acc_head0']:.3f} / {test['acc_head1']:.3f}"
    print(f"test acc {test['acc']:.3f} (no shortcut there), heads m0 / m1 {heads}")


if __name__ == "__main__":
    main()
