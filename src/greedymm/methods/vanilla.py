"""Vanilla multi-modal training: regular steps only (speeds and utilization are still logged)."""

from .base import Method, register_method


@register_method("vanilla")
class Vanilla(Method):
    """Every step is a regular step; the imbalance shows in the logged d_speed and d_util."""
