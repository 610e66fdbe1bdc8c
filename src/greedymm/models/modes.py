"""Forward modes as values: what a network does differently in one forward pass.

A ``Mode`` is a kind and, for the kinds that name a modality, its index:

    REGULAR        the network as it is
    rebalance(k)   MMTM: branch k's gates replaced by their running means (a re-balancing training step)
    CUT            MMTM: every branch k's gate computed with the other modalities at their train-split means
    remove(j)      MMTM: modality j's squeeze input at its train-split mean for every gate (pairwise utilization)
    drop(j)        late fusion: modality j's pooled feature at its train-split mean

``str(mode)`` is the name written to steps.csv and checkpoints ("regular", "rebalance0", "cut", "remove1",
"drop0"); ``Mode.parse`` reads such a name back. A mode also equals (and hashes as) its name, so code written when
modes were strings (``log.mode != "regular"``, ``outputs["cut"]``) keeps working. Which modes a network runs is
the network's to declare (``MultiModalNet.training_modes`` and its evaluation passes); nothing here knows a family.
"""

from __future__ import annotations

from dataclasses import dataclass

# kind -> whether it names a modality index
KINDS: dict[str, bool] = {"regular": False, "cut": False, "rebalance": True, "remove": True, "drop": True}


@dataclass(frozen=True, eq=False)
class Mode:
    """One forward mode: ``kind`` from ``KINDS`` and ``index`` (a modality, 0-based; -1 for kinds without one)."""

    kind: str
    index: int = -1

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown mode kind {self.kind!r}; choose one of {sorted(KINDS)}")
        if isinstance(self.index, bool) or not isinstance(self.index, int):
            raise ValueError(f"a mode's index is an int, got {self.index!r}")
        if KINDS[self.kind] and self.index < 0:
            raise ValueError(f"mode {self.kind!r} names a modality: give its index >= 0, e.g. {self.kind}(0)")
        if not KINDS[self.kind] and self.index != -1:
            raise ValueError(f"mode {self.kind!r} names no modality, got index {self.index}")

    def __str__(self) -> str:
        return f"{self.kind}{self.index}" if KINDS[self.kind] else self.kind

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mode):
            return (self.kind, self.index) == (other.kind, other.index)
        if isinstance(other, str):
            return str(self) == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(str(self))  # equal to its name, so hashed as its name

    @classmethod
    def parse(cls, name: str | Mode) -> Mode:
        """The mode named ``name`` ("regular", "cut", "rebalance<k>", "remove<j>", "drop<j>"); a Mode as is."""
        if isinstance(name, Mode):
            return name
        if not isinstance(name, str):
            raise ValueError(f"a mode is a Mode or its name, got {name!r}")
        if name in KINDS and not KINDS[name]:
            return cls(name)
        for kind, indexed in KINDS.items():
            rest = name[len(kind) :]
            if indexed and name.startswith(kind) and rest.isdigit() and rest.isascii():
                return cls(kind, int(rest))
        raise ValueError(
            f"unknown mode {name!r}; a mode is regular, cut, or rebalance / remove / drop followed by a modality "
            "index (e.g. rebalance0)"
        )


REGULAR = Mode("regular")
CUT = Mode("cut")


def rebalance(k: int) -> Mode:
    """The mode of a re-balancing step for branch k."""
    return Mode("rebalance", k)


def remove(j: int) -> Mode:
    """The pairwise utilization pass without modality j."""
    return Mode("remove", j)


def drop(j: int) -> Mode:
    """The late-fusion utilization pass with modality j's feature at its mean."""
    return Mode("drop", j)
