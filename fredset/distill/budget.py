"""Byte budgets (docs/ALGORITHM.md, Byte budgets): how many instances per class a file of at most B bytes
holds at a given k and number of bits, and making sure the final file, everything included, fits.

The planner measures: it writes trial files whose coefficients are what the run starts from (the quantised
DCT of random real images at their EVR mask), so the header, HDF5, metadata, masks, steps and the zstd
frames are all counted as the writer will count them. Distillation changes the coefficients and so what
zstd makes of them; :func:`fit_within` therefore checks the final bytes and, if they exceed the budget,
drops instances (the last of the class with the most) until they fit.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from ..artifact import Artifact
from ..dct import dct2
from ..errors import FredsetError
from ..format.writer import to_bytes
from ..quantize import Quantization
from .synset import evr_mask

__all__ = ["DEFAULT_BUDGET_BITS", "DEFAULT_BUDGET_K_DIVISOR", "PLAN_MARGIN", "budget_k", "fit_within",
           "plan_instances"]

DEFAULT_BUDGET_BITS = 3  # chosen on a validation split (docs/RESULTS.md, Byte budgets: choosing k and bits)
DEFAULT_BUDGET_K_DIVISOR = 4.0  # k = H*W / this on the byte-budget path (idem)
PLAN_MARGIN = 0.0  # fraction of the budget the plan leaves for the distilled codes compressing worse
_PLAN_SEED_OFFSET = 7919  # the plan draws its own images: the run's generator stream stays as without a budget


def budget_k(height: int, width: int) -> int:
    """The byte-budget path's default k."""
    return max(1, round(height * width / DEFAULT_BUDGET_K_DIVISOR))


def _trial_artifact(real: Any, count: int, k: int, bits: int, seed: int, provenance: dict[str, Any],
                    citation: str | None) -> Artifact:
    generator = torch.Generator().manual_seed(seed + _PLAN_SEED_OFFSET)
    coefficients, masks = [], []
    for label in range(real.num_classes):
        spectrum = dct2(real.sample(label, count, generator=generator).double())
        mask = evr_mask(spectrum, k)
        masks.append(mask)
        coefficients.append(spectrum.flatten(-2)[..., mask].float())
    grid = Quantization.of(coefficients, bits)
    return Artifact(coefficients=grid.apply(coefficients), masks=torch.stack(masks), classes=list(real.classes),
                    image_size=real.image_size, mean=real.mean, std=real.std, dataset=real.name,
                    provenance=provenance, citation=citation, dataset_license=real.license, quantization=grid)


def plan_instances(real: Any, max_bytes: int, k: int, bits: int, seed: int, *, provenance: dict[str, Any],
                   citation: str | None = None) -> int:
    """The most instances per class whose trial file is at most ``max_bytes * (1 - PLAN_MARGIN)`` bytes.

    ``provenance`` and ``citation`` stand in for what the distilled file will record (the run's options and
    source are about its size); :func:`fit_within` settles the difference.

    FredsetError when not even 2 per class fit (naming the smallest budget that would).
    """
    smallest = min(len(index) for index in real.class_indices())
    target = int(max_bytes * (1 - PLAN_MARGIN))

    def size(count: int) -> int:
        return len(to_bytes(_trial_artifact(real, count, k, bits, seed, provenance, citation)))

    low_size = size(2)
    if low_size > target:
        raise FredsetError(f"a byte budget of {max_bytes:,} bytes does not hold 2 instances per class at k {k} and "
                           f"{bits} bits (that needs about {low_size:,} bytes): raise the budget or lower --k")
    low, high = 2, 4
    while high <= smallest and size(high) <= target:  # doubling, then bisection
        low, high = high, high * 2
    high = min(high, smallest + 1)
    while high - low > 1:
        middle = (low + high) // 2
        if size(middle) <= target:
            low = middle
        else:
            high = middle
    return low


def fit_within(artifact: Artifact, max_bytes: int, *, encoding: str | None = None) -> tuple[Artifact, bytes]:
    """``artifact`` with as few instances dropped as needed for its file to be at most ``max_bytes``, and the
    file's bytes. Instances are dropped one at a time from the end of the class with the most (the
    highest label among equals); the quantisation grid is kept, so the others stay exact."""
    while True:
        data = to_bytes(artifact, encoding=encoding)
        if len(data) <= max_bytes:
            return artifact, data
        counts = artifact.counts
        if max(counts) <= 1:
            raise FredsetError(f"the file needs {len(data):,} bytes with one instance per class, more than the "
                               f"{max_bytes:,}-byte budget")
        label = max(range(len(counts)), key=lambda index: (counts[index], index))
        blocks = list(artifact.coefficients)
        blocks[label] = blocks[label][:-1].contiguous()
        budget = dict(artifact.provenance.get("budget") or {})
        budget["dropped_to_fit"] = int(budget.get("dropped_to_fit", 0)) + 1
        artifact = dataclasses.replace(artifact, coefficients=blocks,
                                       provenance={**artifact.provenance, "budget": budget})
