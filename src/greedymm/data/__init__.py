"""Data sets behind one registry; an item is (dict[modality, Tensor], label)."""

from . import cg, modelnet, nvgesture  # noqa: F401  (registers the data sets)
from .base import MultiModalData, epoch_order, eval_order, list_datasets, load_dataset, register_dataset

__all__ = ["MultiModalData", "epoch_order", "eval_order", "list_datasets", "load_dataset", "register_dataset"]
