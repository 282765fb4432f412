"""Distillation objectives side by side behind one interface (:class:`Objective`)."""

from __future__ import annotations

from .base import Objective
from .dc import GradientMatching
from .dm import DistributionMatching

OBJECTIVES = {"dc": GradientMatching, "dm": DistributionMatching}

__all__ = ["OBJECTIVES", "Objective", "DistributionMatching", "GradientMatching"]
