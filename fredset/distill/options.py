"""One declaration per option: a dataclass field whose metadata carries its help text and constraints.

The run configuration (:class:`~fredset.distill.config.DistillConfig`) and each objective's own options are
dataclasses built from :func:`option` fields. The library checks values against the declarations
(:func:`check`); the command line builds its options from the same fields, so an option is written once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from ..errors import FredsetError

__all__ = ["check", "declared", "flag_name", "option"]


def option(default: Any, help: str, *, type: type = str, choices: Sequence[str] | None = None,
           minimum: float | None = None, flag: bool = False, metavar: str | None = None,
           show_default: bool = True, cli: bool = True) -> Any:
    """A dataclass field declaring one option: ``type`` (int, float, str or bool), the ``choices`` it may take,
    its ``minimum``, whether it is a ``flag``; ``cli=False`` keeps it out of the command line."""
    return dataclasses.field(default=default, metadata={
        "help": help, "type": type, "choices": tuple(choices) if choices else None, "minimum": minimum,
        "flag": flag, "metavar": metavar, "show_default": show_default, "cli": cli})


def declared(cls: type) -> list[dataclasses.Field]:
    """The fields of ``cls`` declared with :func:`option` for the command line."""
    return [field for field in dataclasses.fields(cls) if field.metadata.get("cli")]


def flag_name(name: str) -> str:
    """``syn_steps`` -> ``--syn-steps``: how messages and the command line name an option."""
    return "--" + name.replace("_", "-")


def check(instance: Any) -> None:
    """FredsetError, naming the option, for a value outside its declared type, choices or minimum
    (``None`` means "the default" and always passes)."""
    for field in dataclasses.fields(instance):
        meta = field.metadata
        if "help" not in meta:
            continue
        value = getattr(instance, field.name)
        if value is None:
            continue
        name = flag_name(field.name)
        kind = meta["type"]
        if kind is bool:
            valid = isinstance(value, bool)
        elif kind is int:
            valid = isinstance(value, int) and not isinstance(value, bool)
        elif kind is float:
            valid = isinstance(value, (int, float)) and not isinstance(value, bool)
        else:
            valid = isinstance(value, kind)
        if not valid:
            raise FredsetError(f"{name} must be {kind.__name__}, got {value!r}")
        if meta["choices"] and value not in meta["choices"]:
            raise FredsetError(f"{name} must be one of {', '.join(meta['choices'])}, got {value!r}")
        if meta["minimum"] is not None and value < meta["minimum"]:
            raise FredsetError(f"{name} must be >= {meta['minimum']:g}, got {value!r}")
