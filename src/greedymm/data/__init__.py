"""Data sets behind one registry; an item is (dict[modality, Tensor], label)."""

from . import (  # noqa: F401  (registers the data sets)
    cg,
    easy_vqa,
    fsdd_mnist,
    mfeat,
    modelnet,
    npz,
    nvgesture,
    smartwatch,
    synthetic,
)
from .base import (
    MultiModalData,
    epoch_order,
    eval_order,
    list_datasets,
    load_dataset,
    register_dataset,
    select_modalities,
)

__all__ = [
    "MultiModalData",
    "epoch_order",
    "eval_order",
    "list_datasets",
    "load_dataset",
    "register_dataset",
    "select_modalities",
]
