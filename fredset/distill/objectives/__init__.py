"""Distillation objectives side by side behind one interface (:class:`Objective`)."""

from __future__ import annotations

from .base import Objective
from .dc import GradientMatching
from .dm import DistributionMatching
from .tm import TrajectoryMatching

OBJECTIVES = {"dc": GradientMatching, "dm": DistributionMatching, "tm": TrajectoryMatching}

__all__ = ["OBJECTIVES", "Objective", "DistributionMatching", "GradientMatching", "TrajectoryMatching"]
