"""easy-VQA (``easy-vqa``): questions about 64x64 RGB images of one colored shape; 13 answers.

Two modalities: ``image`` (3, S, S) floats in [0, 1] for the ``small-cnn`` backbone, and ``question``, the words
of the question for the ``text`` encoder (models/text.py): (V + 1, L) one-hot tokens with the mask last, V the
vocabulary size and L the longest question of the data set in words (shorter ones are padded, none is cut). An
item is one question with the image it is about, labeled by its answer (a shape, a color, yes or no); an image
is asked several questions, so it is in several items, always of one split.

Splits: the official test split is the test split. The validation split is ``val_fraction`` of the training
*images* (drawn with ``data_seed``) with every question about them, so no image is in two splits. The
vocabulary is built from the training split's questions only (lower case, words of letters and digits, in
alphabetical order after entry 0, the unknown word, which every other word of the validation or test questions
becomes). The same question text is asked of images in every split; only the images are held out.

``image_size`` (default 64, the images' own size) averages blocks of pixels down to 32 or 16 for cheaper runs.
The question alone narrows the answer down (the answer most often given to a question text is right on about two
thirds of the test items); the image is needed for the rest. ``greedymm data fetch easy-vqa`` makes the
cache this loader reads (data/wheels.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..models.text import one_hot_tokens
from .base import MultiModalData, register_dataset
from .wheels import VQA_SIZE, WHEELS, load_cache

UNKNOWN = "<unk>"
_WORD = re.compile(r"[a-z0-9]+")
OPTIONS = ("image_size",)


def tokenize(question: str) -> list[str]:
    """Lower-case words of letters and digits: "What color is the shape?" -> [what, color, is, the, shape]."""
    return _WORD.findall(question.lower())


def build_vocabulary(questions: list[str]) -> list[str]:
    """The unknown word first, then every word of ``questions`` in alphabetical order."""
    return [UNKNOWN, *sorted({w for q in questions for w in tokenize(q)})]


def encode(questions: list[str], vocabulary: list[str], length: int) -> Tensor:
    """(n, length) token ids, -1 after each question's last word; a word outside the vocabulary is 0 (unknown)."""
    index = {w: i for i, w in enumerate(vocabulary)}
    ids = torch.full((len(questions), length), -1, dtype=torch.long)
    for i, q in enumerate(questions):
        words = tokenize(q)
        ids[i, : len(words)] = torch.as_tensor([index.get(w, 0) for w in words], dtype=torch.long)
    return ids


@dataclass(frozen=True)
class VQASplit:
    """Items in memory: the split's own images (uint8, once each) and per question the row of its image."""

    images: Tensor  # (n_images, 3, S, S) uint8
    image_ids: Tensor  # (n_images,) each image's id in its official split
    image_rows: Tensor  # (n,) each item's row in ``images``
    tokens: Tensor  # (n, L) token ids, -1 = padding
    labels: Tensor  # (n,) answer indices
    vocab_size: int

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, idx: Tensor, train: bool = False) -> tuple[dict[str, Tensor], Tensor]:
        image = self.images[self.image_rows[idx]].float() / 255.0
        return {"image": image, "question": one_hot_tokens(self.tokens[idx], self.vocab_size)}, self.labels[idx]


def _resize(images: np.ndarray, size: int) -> np.ndarray:
    """(n, 64, 64, 3) uint8 -> (n, 3, size, size) uint8, the mean of each block of pixels (rounded)."""
    f = VQA_SIZE // size
    x = images.reshape(len(images), size, f, size, f, 3).astype(np.float32).mean(axis=(2, 4)) if f > 1 else images
    return np.ascontiguousarray(np.rint(x).astype(np.uint8).transpose(0, 3, 1, 2))


@register_dataset("easy-vqa", "easy-VQA: real image + question pairs (colored shapes), 13 answers (fetch first)")
def load_easy_vqa(
    data_dir: Any = None,
    val_fraction: float = 0.2,
    data_seed: int = 0,
    image_size: int = VQA_SIZE,
    **unknown: Any,
) -> MultiModalData:
    if unknown:
        raise ValueError(f"easy-vqa has no options {sorted(unknown)}; valid: image_size (and val_fraction, data_seed)")
    if image_size not in (64, 32, 16):
        raise ValueError(f"easy-vqa: image_size must be 64 (the images' size), 32 or 16, got {image_size}")
    if not 0 < val_fraction < 1:
        raise ValueError(f"easy-vqa: val_fraction (the share of training images held out) must be in (0, 1), got "
                         f"{val_fraction}")  # fmt: skip
    arrays, info = load_cache("easy-vqa", data_dir)
    answers = [str(a) for a in arrays["answers"]]
    n_train_images = len(arrays["train_images"])
    order = torch.randperm(n_train_images, generator=torch.Generator().manual_seed(data_seed))
    n_val = int(round(val_fraction * n_train_images))
    if not 0 < n_val < n_train_images:
        raise ValueError(f"easy-vqa: val_fraction {val_fraction} of {n_train_images} images leaves a split empty")
    val_images = np.zeros(n_train_images, dtype=bool)
    val_images[order[:n_val].numpy()] = True

    def pick(split: str, keep: np.ndarray | None) -> dict[str, Any]:
        image_ids = arrays[f"{split}_image_ids"]
        rows = np.flatnonzero(keep[image_ids]) if keep is not None else np.arange(len(image_ids))
        return {
            "questions": [str(q) for q in arrays[f"{split}_questions"][rows]],
            "labels": arrays[f"{split}_answers"][rows],
            "image_ids": image_ids[rows],
            "keep": np.flatnonzero(keep) if keep is not None else np.arange(len(arrays[f"{split}_images"])),
            "source": split,
        }

    parts = {"train": pick("train", ~val_images), "val": pick("train", val_images), "test": pick("test", None)}
    vocabulary = build_vocabulary(parts["train"]["questions"])
    length = max(len(tokenize(q)) for p in parts.values() for q in p["questions"])

    def split(p: dict[str, Any]) -> VQASplit:
        ids = p["keep"]  # the split's images, by id in their official split
        row_of = np.full(len(arrays[f"{p['source']}_images"]), -1, dtype=np.int64)
        row_of[ids] = np.arange(len(ids))
        return VQASplit(
            images=torch.from_numpy(_resize(arrays[f"{p['source']}_images"][ids], image_size)),
            image_ids=torch.as_tensor(ids, dtype=torch.long),
            image_rows=torch.as_tensor(row_of[p["image_ids"]], dtype=torch.long),
            tokens=encode(p["questions"], vocabulary, length),
            labels=torch.as_tensor(p["labels"], dtype=torch.long),
            vocab_size=len(vocabulary),
        )

    splits = {name: split(p) for name, p in parts.items()}
    sizes = ", ".join(f"{n} {len(s):,} questions / {len(s.images):,} images" for n, s in splits.items())
    return MultiModalData(
        name="easy-vqa",
        modalities=("image", "question"),
        in_channels=(3, len(vocabulary) + 1),
        num_classes=len(answers),
        arch=("small-cnn", "text"),
        **splits,
        source={
            "real_data": True,
            "source": info.get("detail", WHEELS["easy-vqa"].package),
            "note": f"{WHEELS['easy-vqa'].note}; official test split; validation: {val_fraction} of the training "
            f"images (data_seed {data_seed}) with their questions; {sizes}; vocabulary of {len(vocabulary)} words "
            f"from the training questions, questions of up to {length} words; images {image_size}x{image_size}",
            "answers": answers,
            "vocabulary": vocabulary,
        },
    )
