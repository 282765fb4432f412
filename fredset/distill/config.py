"""The run configuration: every option of ``fredset distill`` that determines the result, declared once.

Options every objective shares are fields of :class:`DistillConfig`; an objective's own options are the
fields of its ``Options`` dataclass, given as ``DistillConfig(options=...)``. :meth:`DistillConfig.resolve`
fills in each objective's defaults and prepares what the run needs (TM's expert buffer) exactly once.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from ..augment import STRATEGY
from ..errors import FredsetError
from ..files import summarised_source
from ..quantize import BITS
from .budget import DEFAULT_BUDGET_BITS, DEFAULT_BUDGET_K_DIVISOR, budget_k, plan_instances
from .objectives import OBJECTIVES, Objective
from .options import check, flag_name, option
from .synset import instances_per_class

__all__ = ["CITATION", "DistillConfig", "ResolvedRun"]

CITATION = ("@inproceedings{shin2023fred, title={Frequency Domain-based Dataset Distillation}, "
            "author={Shin, Donghyeok and Shin, Seungjae and Moon, Il-Chul}, "
            "booktitle={Advances in Neural Information Processing Systems}, year={2023}}")


def _lr_help() -> str:
    per_objective = "; ".join(f"{name.upper()} " + ", ".join(f"{kind} {lr:g}" for kind, lr in cls.default_lr.items())
                              for name, cls in OBJECTIVES.items())
    budget = "; ".join(f"{name.upper()} {cls.budget_lr:g}" for name, cls in OBJECTIVES.items() if cls.budget_lr)
    return f"Learning rate of the synthetic set (default: the published one, freq on the reference's DCT scale: " \
           f"{per_objective}; with a byte budget, tuned on a validation split: {budget})."


def _dsa_help() -> str:
    auto = ", ".join(f"{name.upper()} {'on' if cls.default_dsa else 'none'}" for name, cls in OBJECTIVES.items())
    return f"DSA strategy ({STRATEGY} when on), 'none', or auto (the reference's choice: {auto})."


@dataclass
class DistillConfig:
    """Everything that determines a run (recorded in the artifact's provenance and the checkpoint)."""

    dataset: str
    objective: str = option("dm", "; ".join(f"{name}: {cls.summary}" for name, cls in OBJECTIVES.items()) + ".",
                            choices=tuple(OBJECTIVES))
    parameterization: str = option("freq", "freq: FreD (masked DCT coefficients); pixel: ipc images per class, "
                                   "the baseline.", choices=("freq", "pixel"))
    ipc: float | None = option(None, "Storage budget in FreD's unit: floats per class / (C*H*W) (default 1; with a "
                               "byte budget, the equivalent is recorded).", type=float, show_default=False)
    bytes_per_class: int | None = option(None, "Byte budget instead of --ipc: the whole file is at most this times "
                                         "the number of classes; instances per class follow from it, --k and "
                                         "--bits.", type=int, minimum=1, metavar="BYTES")
    max_bytes: int | None = option(None, "Byte budget instead of --ipc: the whole file, everything included, is at "
                                   "most this many bytes.", type=int, minimum=1, metavar="BYTES")
    bits: int | None = option(None, f"Store {min(BITS)}..{max(BITS)}-bit coefficient codes and distil through "
                              f"their quantiser (default: float coefficients; with a byte budget "
                              f"{DEFAULT_BUDGET_BITS}).", type=int, minimum=min(BITS))
    k: int | None = option(None, "Frequencies kept per class (default H*W/16: 49 at 28x28, 64 at 32x32; TM: 64 "
                           f"where an image has >= 256 pixels; with a byte budget H*W/{DEFAULT_BUDGET_K_DIVISOR:g}).",
                           type=int, minimum=1)
    instances: int | None = option(None, "Instances per class (default: what --ipc or the byte budget buys).",
                                   type=int, minimum=2)
    iterations: int = option(1000, "Distillation iterations.", type=int, minimum=0)
    lr: float | None = option(None, _lr_help(), type=float)
    momentum: float = option(0.5, "Momentum of the synthetic set's SGD.", type=float, minimum=0)
    seed: int = option(0, "Seed of the run's one generator (init, real samples, DSA, networks).", type=int)
    mask_source: str = option("init", "Rank frequencies on the sampled init images (reference) or the whole class.",
                              choices=("init", "class"))
    model: str = option("convnet", "Network the objective uses.")
    batch_real: int = option(256, "Real images per class per iteration (DM, DC).", type=int, minimum=1)
    dsa: str = option("auto", _dsa_help())
    precision: str = option("auto", "DM: real-image embedding in bf16 (auto: where the hardware supports it); "
                            "TM: unrolled steps (auto: fp32).", choices=("auto", "bf16", "fp32"))
    options: Any = None  # the objective's own options: its Options dataclass or a dict of its fields

    def resolve(self, real: Any, device: torch.device | str = "cpu") -> ResolvedRun:
        """The run this configuration asks for on ``real``, with every default filled in and every option
        checked against the data; a TM run opens and validates its expert buffer here, once."""
        check(self)
        if self.objective not in OBJECTIVES:  # the declared choices are checked above; this names the objective
            raise FredsetError(f"--objective {self.objective!r} is not available; choose from {', '.join(OBJECTIVES)}")
        objective = OBJECTIVES[self.objective]
        _refuse_foreign_options(objective, self.options)
        options = objective.make_options(self.options)
        height, width = real.image_size
        values = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        given = [name for name in ("ipc", "bytes_per_class", "max_bytes") if getattr(self, name) is not None]
        if len(given) > 1:
            raise FredsetError(f"give one budget: {' and '.join(flag_name(name) for name in given)} were both given")
        if self.instances is not None and given:
            raise FredsetError(f"--instances and {flag_name(given[0])} both set the instances per class; give one")
        budget = self.byte_budget(real.num_classes)
        if self.bits is not None and self.bits not in BITS:
            raise FredsetError(f"--bits must be one of {', '.join(map(str, BITS))}, got {self.bits}")
        if self.parameterization == "freq":
            smallest = min(len(index) for index in real.class_indices())
            if budget is not None:
                values["bits"] = self.bits or DEFAULT_BUDGET_BITS
                values["k"] = self.k or budget_k(height, width)
                record = {**self.record(), "bits": values["bits"], "k": values["k"]}
                values["instances"] = plan_instances(real, budget, values["k"], values["bits"], self.seed,
                                                     provenance={"options": record,
                                                                 "source": summarised_source(real.source)},
                                                     citation=CITATION)
            else:
                values["ipc"] = 1.0 if self.ipc is None else self.ipc
                values["k"] = self.k or objective.default_k(height, width)
                if self.instances is None:  # refuses n < 2 early
                    values["instances"] = instances_per_class(values["ipc"], height, width, values["k"])
            if values["instances"] > smallest:
                raise FredsetError(f"{values['instances']} instances per class, but a class has only "
                                   f"{smallest} images")
            if self.ipc is None and (budget is not None or self.instances is not None):  # FreD's float unit
                values["ipc"] = values["instances"] * values["k"] / (height * width)
        else:
            if budget is not None or self.bits is not None or self.instances is not None:
                raise FredsetError("--bytes-per-class, --max-bytes, --bits and --instances apply to the freq "
                                   "parameterization only")
            values["ipc"] = 1.0 if self.ipc is None else self.ipc
            if values["ipc"] != int(values["ipc"]) or values["ipc"] < 1:
                raise FredsetError(f"--ipc must be a whole number >= 1 for the pixel parameterization, "
                                   f"got {values['ipc']:g}")
            values["k"] = None
        if values["lr"] is None:
            values["lr"] = objective.budget_lr if budget is not None and objective.budget_lr \
                else objective.default_lr[self.parameterization]
        if values["dsa"] == "auto":
            values["dsa"] = STRATEGY if objective.default_dsa else "none"
        if values["precision"] == "auto":
            values["precision"] = "bf16" if objective.default_autocast(torch.device(device)) else "fp32"
        partial = DistillConfig(**{**values, "options": options})
        options, prepared = objective.resolve(options, partial, real)
        return ResolvedRun(DistillConfig(**{**values, "options": options}), objective, prepared)

    def byte_budget(self, num_classes: int) -> int | None:
        """The whole file's byte budget, from --max-bytes or --bytes-per-class (None: the float budget --ipc)."""
        if self.max_bytes is not None:
            return self.max_bytes
        return None if self.bytes_per_class is None else self.bytes_per_class * num_classes

    def record(self) -> dict[str, Any]:
        """The configuration as JSON-able values (the objective's options as a dict)."""
        values = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        options = values["options"]
        values["options"] = dataclasses.asdict(options) if dataclasses.is_dataclass(options) else dict(options or {})
        return values


@dataclass(frozen=True)
class ResolvedRun:
    """A resolved configuration, the objective class it names and what that objective prepared (TM: the
    opened :class:`~fredset.experts.ExpertBuffer`; others: None)."""

    config: DistillConfig
    objective: type[Objective]
    prepared: Any = None


def _refuse_foreign_options(objective: type[Objective], given: Any) -> None:
    """A one-line error for an option of another objective (``--syn-steps`` given to DM)."""
    if not isinstance(given, dict):
        return
    mine = {field.name for field in dataclasses.fields(objective.Options)}
    for name in given:
        if name in mine:
            continue
        owners = [other for other, cls in OBJECTIVES.items()
                  if name in {field.name for field in dataclasses.fields(cls.Options)}]
        if owners:
            raise FredsetError(f"{flag_name(name)} only applies to --objective {' or '.join(owners)}")
