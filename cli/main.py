"""`fredset` command: a click group; each command parses options, calls the library, prints."""

from __future__ import annotations

import functools
import json
import sys
from typing import Any, Callable

import click

from fredset import FredsetError, __version__


def reports_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn FredsetError into one line on stderr and exit status 2 (no traceback)."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except FredsetError as error:
            click.echo(f"error: {error}", err=True)
            sys.exit(2)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fredset")
def cli() -> None:
    """Distil image datasets into small .fredset files (FreD) and look inside them."""


@cli.command()
@click.argument("file", metavar="FILE")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
@click.option("--grid", type=click.Path(dir_okay=False), metavar="PNG",
              help="Write decoded images (pixel space) to PNG, one row per class.")
@click.option("--masks", type=click.Path(dir_okay=False), metavar="PNG",
              help="Write each class's frequency mask to PNG (white = kept, DC at top left).")
@click.option("--per-class", default=10, show_default=True, type=click.IntRange(1, 1000),
              help="Images per class in --grid.")
@click.option("--scale", default=2, show_default=True, type=click.IntRange(1, 32),
              help="Pixel magnification in --grid (masks use twice this).")
@reports_errors
def inspect(file: str, as_json: bool, grid: str | None, masks: str | None, per_class: int, scale: int) -> None:
    """Show what a .fredset FILE holds: format, dataset, shapes, sizes, provenance.

    The file is fully validated first (header, SHA-256, structure, metadata), so a
    clean report also means the file is intact.

    \b
    Examples:
      fredset inspect data.fredset
      fredset inspect data.fredset --json
      fredset inspect data.fredset --grid images.png --masks masks.png
    """
    from fredset import read_file
    from fredset.pictures import class_grid, mask_grid, write_png

    from .report import file_report, format_report

    artifact, info = read_file(file)
    report = file_report(artifact, info)
    if grid:
        write_png(grid, class_grid(artifact, per_class=per_class, scale=scale))
        report["grid_png"] = grid
    if masks:
        write_png(masks, mask_grid(artifact, scale=2 * scale))
        report["masks_png"] = masks
    click.echo(json.dumps(report, indent=2) if as_json else format_report(report))


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
