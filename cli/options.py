"""Click options built from the library's declarations (fredset.distill.options), and the options several
commands share, each written once."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

import click

from fredset.distill.config import DistillConfig
from fredset.distill.objectives import OBJECTIVES
from fredset.distill.options import declared, flag_name

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def _click_option(field: dataclasses.Field) -> Decorator:
    meta = field.metadata
    kwargs: dict[str, Any] = {"help": meta["help"], "default": field.default}
    if meta["flag"]:
        kwargs.update(is_flag=True, default=None)  # None: not given, the objective decides
    elif meta["choices"]:
        kwargs["type"] = click.Choice(meta["choices"])
    elif meta["minimum"] is not None:
        kind = click.IntRange if meta["type"] is int else click.FloatRange
        kwargs["type"] = kind(meta["minimum"])
    else:
        kwargs["type"] = meta["type"]
    if meta["metavar"]:
        kwargs["metavar"] = meta["metavar"]
    kwargs["show_default"] = bool(meta["show_default"] and field.default is not None and not meta["flag"])
    return click.option(flag_name(field.name), field.name, **kwargs)


def _apply(decorators: Iterable[Decorator]) -> Decorator:
    """Apply ``decorators`` so that the options appear in --help in the order given."""
    def apply(command: Callable[..., Any]) -> Callable[..., Any]:
        for decorator in reversed(list(decorators)):
            command = decorator(command)
        return command
    return apply


RUN_FIELDS = [field.name for field in declared(DistillConfig)]


def _objective_fields() -> list[dataclasses.Field]:
    fields: dict[str, dataclasses.Field] = {}
    for cls in OBJECTIVES.values():
        for field in declared(cls.Options):
            fields.setdefault(field.name, field)  # two objectives sharing a name share the option
    return list(fields.values())


OBJECTIVE_FIELDS = [field.name for field in _objective_fields()]

distill_options = _apply([_click_option(field) for field in declared(DistillConfig) + _objective_fields()])
"""Every option of DistillConfig and of each objective's Options."""

dataset_option = click.option(
    "--dataset", required=True, metavar="NAME|PATH",
    help="fashion-mnist, mnist, svhn, cifar10, cifar100, tiny-imagenet, an ImageFolder directory or an .npz.")
data_options = _apply([
    click.option("--data-root", type=click.Path(file_okay=False), metavar="DIR",
                 help="Where the data lies (else $FREDSET_DATA, /usr/share/datasets, ../shared/data)."),
    click.option("--download", is_flag=True, help="Download through torchvision when it is installed."),
])
device_option = click.option("--device", default="auto", show_default=True,
                             help="cpu, cuda, cuda:N or auto (CUDA when available).")
sha256_option = click.option(
    "--sha256", metavar="HEX",
    help="Refuse FILE unless its SHA-256 (of the whole file, as sha256sum prints it) is HEX; a URL is then "
    "cached by this hash.")
