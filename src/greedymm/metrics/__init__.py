"""Pure metrics: conditional utilization rate and conditional learning speed."""

from .speed import SpeedTracker, group_speed, log_speed
from .utilization import Utilization, utilization_rate

__all__ = ["SpeedTracker", "Utilization", "group_speed", "log_speed", "utilization_rate"]
