"""Logistic regression per modality on the real data sets, on the very splits ``greedymm train`` uses.

A reader comparing the neural uni-modal rows with these sees whether the encoders are sound: a linear model on
simple fixed features of one modality, trained on the training split, its inverse regularization C chosen on the
validation split, scored once on the test split. Features, per modality kind:

- tabular views (mfeat): the standardized features as the loader gives them;
- masked sequences (smartwatch's axes, FSDD's MFCCs): per channel the mean, standard deviation, minimum and
  maximum over the real samples (the mask channel says which);
- images (easy-vqa, fsdd-mnist): the pixels, flattened (easy-vqa at 16 x 16, the loader's ``image_size``);
- text (easy-vqa's question): the bag of words, counts of each vocabulary entry.

A last row per data set joins every modality's features. Each feature is standardized with training-split
statistics. Usage::

    python scripts/classical_baselines.py --data-dir /work/data [--datasets mfeat smartwatch easy-vqa fsdd-mnist]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from greedymm.config import resolve_config
from greedymm.run import load_data

DATASETS = ("mfeat", "smartwatch", "easy-vqa", "fsdd-mnist")
CS = (0.01, 0.1, 1.0, 10.0)
SEQUENCES = {"acc", "gyro", "audio"}  # masked (C + 1, T) inputs


def features(name: str, modality: str, x: torch.Tensor) -> np.ndarray:
    """Fixed features of a batch of one modality's inputs (module docstring)."""
    x = x.double()
    if modality in SEQUENCES:
        mask, signal = x[:, -1:], x[:, :-1]
        n = mask.sum(-1).clamp(min=1)
        mean = (signal * mask).sum(-1) / n
        std = (((signal - mean[..., None]) ** 2 * mask).sum(-1) / n).sqrt()
        big = torch.finfo(x.dtype).max
        low = torch.where(mask.bool(), signal, big).amin(-1)
        high = torch.where(mask.bool(), signal, -big).amax(-1)
        return torch.cat([mean, std, low, high], dim=1).numpy()
    if modality == "question":  # one-hot tokens with the mask last: word counts
        return x[:, :-1].sum(-1).numpy()
    return x.flatten(1).numpy()


def split_arrays(split, modalities: tuple[str, ...], name: str, chunk: int = 4096) -> tuple[dict, np.ndarray]:
    feats: dict[str, list[np.ndarray]] = {m: [] for m in modalities}
    labels = []
    for idx in torch.arange(len(split)).split(chunk):
        x, y = split.batch(idx)
        for m in modalities:
            feats[m].append(features(name, m, x[m]))
        labels.append(y.numpy())
    return {m: np.concatenate(v) for m, v in feats.items()}, np.concatenate(labels)


def fit(train: tuple, val: tuple, test: tuple, max_iter: int) -> dict[str, float]:
    """The best C on validation; that model's validation and test accuracy."""
    scaler = StandardScaler().fit(train[0])
    xs = [scaler.transform(a[0]) for a in (train, val, test)]
    best = None
    for c in CS:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model = LogisticRegression(C=c, max_iter=max_iter).fit(xs[0], train[1])
        acc = model.score(xs[1], val[1])
        if best is None or acc > best[0]:
            best = (acc, c, model)
    acc, c, model = best
    return {"C": c, "val": acc, "test": model.score(xs[2], test[1])}


def run(name: str, data_dir: str | None, max_iter: int) -> list[tuple[str, dict[str, float]]]:
    options = {"image_size": 16} if name == "easy-vqa" else {}
    cfg = resolve_config(name, data_dir=data_dir, data_options=options)
    data = load_data(cfg)
    arrays = {s: split_arrays(getattr(data, s), data.modalities, name) for s in ("train", "val", "test")}
    rows = []
    for m in (*data.modalities, "all"):
        names = data.modalities if m == "all" else (m,)
        parts = [(np.concatenate([arrays[s][0][k] for k in names], axis=1), arrays[s][1]) for s in arrays]
        t = time.time()
        result = fit(*parts, max_iter=max_iter)
        rows.append((m, {**result, "features": parts[0][0].shape[1], "seconds": time.time() - t}))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    ap.add_argument("--data-dir", default=None, help="where `greedymm data fetch` put the data")
    ap.add_argument("--max-iter", type=int, default=1000, help="L-BFGS iterations per fit")
    args = ap.parse_args()
    print("| data set | modality | features | C (val) | val acc | test acc | fit s |")
    print("|---|---|---|---|---|---|---|")
    for name in args.datasets:
        for m, r in run(name, args.data_dir, args.max_iter):
            print(
                f"| {name} | {m} | {r['features']} | {r['C']:g} | {r['val']:.3f} | {r['test']:.3f} | "
                f"{r['seconds']:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
