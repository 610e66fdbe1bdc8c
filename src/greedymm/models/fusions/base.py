"""What a late fusion declares, and the registry that ``LateFusionNet`` builds its head from.

A fusion maps the pooled features z_0..z_{N-1} (B, d_k) to the logits (B, C). Besides ``forward`` it declares:
    n_modalities      the modality counts it is defined for (None: any)
    splits            whether its logits split into one part per modality without new parameters; if so,
                      ``modality_logits`` gives o_m and ``modality_slices`` the parameter parts that read z_m
                      (OGM-GE, MSLR act on these)
    output_weights    the weight(s) of its output layer (AGM's gradient-range check)
A new late fusion is one file in this folder that subclasses ``Fusion`` and registers itself; its name must also
be in ``greedymm.choices.LATE_FUSIONS`` (read without torch by the configuration), which a test checks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import ClassVar, NamedTuple

from torch import Tensor, nn


class ParamSlice(NamedTuple):
    """A part of a parameter: ``param[index]`` (``index`` is ``...`` for the whole tensor)."""

    param: nn.Parameter
    index: tuple[slice, ...] | type(Ellipsis)  # type: ignore[valid-type]


class Fusion(nn.Module):
    """Base of the late fusions: built from the feature sizes ``dims`` and the number of classes."""

    name: ClassVar[str] = ""
    n_modalities: ClassVar[tuple[int, ...] | None] = None  # modality counts it is defined for (None: any)
    splits: ClassVar[bool] = False  # whether modality_logits / modality_slices exist

    def __init__(self, dims: Sequence[int], num_classes: int) -> None:
        super().__init__()
        self.dims = tuple(dims)

    def forward(self, zs: Sequence[Tensor]) -> Tensor:
        raise NotImplementedError

    def modality_logits(self, zs: Sequence[Tensor]) -> list[Tensor]:
        """o_m for every modality m, read off this head with no extra parameters: (B, C) each."""
        raise NotImplementedError(f"a {self.name!r} fusion does not split into per-modality logits")

    def modality_slices(self, k: int) -> list[ParamSlice]:
        """The parts of this head's parameters that read modality k only."""
        raise NotImplementedError(f"a {self.name!r} fusion has no parameters that read one modality only")

    def output_weights(self) -> list[Tensor]:
        """The weight(s) of the layer that outputs the logits."""
        raise NotImplementedError


FUSION_HEADS: dict[str, type[Fusion]] = {}


def register_fusion(name: str) -> Callable[[type[Fusion]], type[Fusion]]:
    """Class decorator: make a ``Fusion`` buildable as ``fusion=name``."""

    def wrap(cls: type[Fusion]) -> type[Fusion]:
        if name in FUSION_HEADS:
            raise ValueError(f"fusion {name!r} is already registered")
        cls.name = name
        FUSION_HEADS[name] = cls
        return cls

    return wrap
