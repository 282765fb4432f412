"""The one interface every objective (DC, DM, TM) implements."""

from __future__ import annotations

from typing import Any

import torch

from ..synset import SynSet


class Objective:
    """One distillation iteration: compute the objective's loss and step the synthetic set.

    An objective owns its inner machinery (fresh networks, experts, a learned learning rate), so
    DC's outer/inner loops and TM's second optimiser fit the same call. Randomness comes only
    from ``generator``. ``state_dict``/``load_state_dict`` carry any internal state a checkpoint
    must keep (none for DM).
    """

    name = "objective"
    default_dsa = True  # whether the reference uses DSA with this objective

    @classmethod
    def from_config(cls, config: Any, real: Any, dsa: Any, device: torch.device) -> "Objective":
        """The objective a DistillConfig asks for."""
        raise NotImplementedError

    def iteration(self, synset: SynSet, optimizer: torch.optim.Optimizer, generator: torch.Generator) -> float:
        raise NotImplementedError

    def hyperparameters(self) -> dict[str, Any]:
        """What the artifact's provenance records about this objective."""
        return {}

    def recommended_lr(self) -> float | None:
        """The learning rate to train networks on the result with, when the objective learns one (TM)."""
        return None

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        pass
