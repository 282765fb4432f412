"""The one interface every objective (DC, DM, TM) implements, and the defaults each one owns."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from ...augment import DSA
from ...errors import FredsetError
from ..options import check, flag_name
from ..synset import SynSet, default_k


@dataclasses.dataclass(frozen=True)
class NoOptions:
    """An objective without options of its own."""


def bfloat16_is_fast(device: torch.device | str = "cpu") -> bool:
    """bfloat16 has hardware support: a CUDA device of compute capability 8+, or a CPU with
    AVX-512 BF16 / AMX (where the DM real-image pass runs about twice as fast, docs/RESULTS.md)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


class Objective:
    """One distillation iteration: compute the objective's loss and step the synthetic set.

    An objective owns its inner machinery (fresh networks, experts, a learned learning rate), so
    DC's outer/inner loops and TM's second optimiser fit the same call, and it owns its defaults and
    options: ``name`` (what ``--objective`` says), ``Options`` (a dataclass of :func:`~fredset.distill.options.option`
    fields, its own command-line options), ``default_lr`` per parameterisation, ``default_dsa``,
    :meth:`default_k` and :meth:`default_autocast`. Randomness comes only from ``generator``.
    ``state_dict``/``load_state_dict`` carry any internal state a checkpoint must keep (none for DM).
    ``distributed``: whether :meth:`distribute` can shard it over the ranks of a torchrun job (DM, DC and TM).
    """

    name = "objective"
    summary = ""
    Options: type = NoOptions
    default_lr: dict[str, float] = {}  # per parameterization, "freq" on the reference DCT scale
    budget_lr: float | None = None  # freq lr of the byte-budget path where one was tuned (else default_lr)
    default_dsa = True  # whether the reference uses DSA with this objective
    distributed = False  # whether it runs sharded over several processes (fredset.distributed)

    @classmethod
    def default_k(cls, height: int, width: int) -> int:
        """Frequencies kept per class when --k is not given."""
        return default_k(height, width)

    @classmethod
    def default_autocast(cls, device: torch.device) -> bool:
        """Whether ``--precision auto`` means bfloat16 on ``device``."""
        return bfloat16_is_fast(device)

    @classmethod
    def make_options(cls, given: Any) -> Any:
        """``given`` (an ``Options`` instance, a mapping of its fields or None) as an ``Options`` instance."""
        if isinstance(given, cls.Options):
            options = given
        elif given is None or isinstance(given, dict):
            names = {field.name for field in dataclasses.fields(cls.Options)}
            unknown = sorted(set(given or {}) - names)
            if unknown:
                raise FredsetError(f"{flag_name(unknown[0])} does not apply to --objective {cls.name}")
            options = cls.Options(**(given or {}))
        else:
            raise FredsetError(f"options for --objective {cls.name} must be a dict or {cls.Options.__name__}, "
                               f"got {type(given).__name__}")
        check(options)
        return options

    @classmethod
    def resolve(cls, options: Any, config: Any, real: Any) -> tuple[Any, Any]:
        """(``options`` with every default filled in, what the run needs prepared once, e.g. an opened
        expert buffer, or None); checks the options against the data."""
        return options, None

    @classmethod
    def build(cls, config: Any, prepared: Any, real: Any, dsa: DSA | None, device: torch.device) -> Objective:
        """The objective a resolved DistillConfig asks for."""
        raise NotImplementedError

    @classmethod
    def check_distributed(cls, context: Any) -> None:
        """Refuse a run over several processes (``context``: a :class:`fredset.distributed.Context`) unless the
        objective can be sharded."""
        if context is not None and context.distributed and not cls.distributed:
            raise FredsetError(f"--objective {cls.name} is not distributed yet: run it in one process, without "
                               f"torchrun (this job has {context.world_size} processes)")

    def distribute(self, context: Any) -> None:
        """From now on, do this rank's share of every iteration (``context``: a distributed Context with
        several ranks); the loop shares the results (:func:`fredset.distill.loop.share_synset`)."""
        self.check_distributed(context)
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
