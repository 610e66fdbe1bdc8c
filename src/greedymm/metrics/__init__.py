"""Pure metrics: conditional utilization rate and conditional learning speed, for any number of modalities."""

from .speed import SpeedTracker, d_speed, group_speed, log_speed, mu_names, speed_names, sum_sq
from .utilization import (
    others_util_names,
    own_util_names,
    pairwise_utilization,
    util_names,
    utilization_rate,
    utilization_summary,
)

__all__ = [
    "SpeedTracker",
    "d_speed",
    "group_speed",
    "log_speed",
    "mu_names",
    "others_util_names",
    "own_util_names",
    "pairwise_utilization",
    "speed_names",
    "sum_sq",
    "util_names",
    "utilization_rate",
    "utilization_summary",
]
