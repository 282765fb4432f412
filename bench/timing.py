"""Seconds per distillation iteration of several configurations, measured alternately in one process so that
all see the same conditions (shared by the objective benchmarks)."""

from __future__ import annotations

import time
from typing import Any


def alternate_iterations(setups: dict[str, tuple[Any, Any, Any, Any]], iterations: int) -> dict[str, list[float]]:
    """``setups`` maps a name to (synset, optimizer, objective, generator). Each gets one warm-up iteration,
    then ``iterations`` timed ones, round-robin; returns the seconds of each."""
    for synset, optimizer, objective, generator in setups.values():
        objective.iteration(synset, optimizer, generator)
    times: dict[str, list[float]] = {name: [] for name in setups}
    for _ in range(iterations):
        for name, (synset, optimizer, objective, generator) in setups.items():
            start = time.perf_counter()
            objective.iteration(synset, optimizer, generator)
            times[name].append(time.perf_counter() - start)
    return times
