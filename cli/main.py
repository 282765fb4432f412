"""`fredset` command: a click group of commands, each in its own module; each parses options, calls the
library, prints."""

from __future__ import annotations

import click

from fredset import __version__

from .buffer_command import buffer
from .distill_command import distill
from .evaluate_command import evaluate
from .file_commands import convert_command, export_command, inspect


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fredset")
def cli() -> None:
    """Distil image datasets into small .fredset files (FreD) and look inside them."""


for command in (inspect, distill, evaluate, buffer, export_command, convert_command):
    cli.add_command(command)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
