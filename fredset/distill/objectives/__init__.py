"""Distillation objectives side by side behind one interface (:class:`Objective`), by their ``--objective`` name."""

from __future__ import annotations

from .base import Objective
from .dc import GradientMatching
from .dm import DistributionMatching
from .tm import TMOptions, TrajectoryMatching

OBJECTIVES: dict[str, type[Objective]] = {cls.name: cls for cls in (DistributionMatching, GradientMatching,
                                                                   TrajectoryMatching)}

__all__ = ["OBJECTIVES", "Objective", "DistributionMatching", "GradientMatching", "TMOptions", "TrajectoryMatching"]
