"""Every named choice of a setting, defined once and free of torch: the config, the CLI, the models and the
precision module read their choices from here, so a new fusion, precision, optimizer or schedule is added in one
place. Each tuple lists its default first."""

from __future__ import annotations

# model fusion: "mmtm" is family (a), the paper's intermediate fusion; the rest are family (b), late fusion
INTERMEDIATE_FUSIONS = ("mmtm",)
LATE_FUSIONS = ("concat", "sum", "film", "gated")
TWO_MODALITY_FUSIONS = ("film", "gated")  # late fusions where the first modality conditions the second
FUSIONS = (*INTERMEDIATE_FUSIONS, *LATE_FUSIONS)

# MMTM gate function: sigmoid (the authors' code) or 2 * sigmoid (the MMTM paper)
GATES = ("sigmoid", "2sigmoid")

# autocast precision of forwards and losses; fp32 runs exactly, fp16 also scales the loss
PRECISIONS = ("fp32", "bf16", "fp16")

OPTIMIZERS = ("sgd", "adam")

# learning-rate schedule: none, cosine (per epoch), plateau (on the training loss, factor 0.3, patience 10),
# step (multiply by gamma every step_size epochs)
SCHEDULES = ("none", "cosine", "plateau", "step")

# where the train-split squeeze means for utilization come from: the training epoch's own forwards (free) or an
# extra eval-mode pass over the training split
SQUEEZE_SOURCES = ("epoch", "exact")

CHOICES = {
    "fusion": FUSIONS,
    "gate": GATES,
    "precision": PRECISIONS,
    "optimizer": OPTIMIZERS,
    "schedule": SCHEDULES,
    "squeeze_means": SQUEEZE_SOURCES,
}
"""The config fields whose value is one of a fixed set, with that set."""
