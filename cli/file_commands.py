"""Commands that read or write one file: `inspect`, `export`, `convert`."""

from __future__ import annotations

import json
import os

import click

from fredset import FredsetError, read_file, save_bytes
from fredset.convert import convert as run_conversion
from fredset.experts import ExpertBuffer
from fredset.export import export as export_data
from fredset.files import write_atomically
from fredset.format.layout import file_layout
from fredset.pictures import class_grid, mask_grid, write_png

from .options import dataset_option, sha256_option
from .report import file_report, format_buffer_summary, format_report
from .running import echo, fetch_with_progress, reports_errors, warnings_unless_refused


@click.command()
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
@sha256_option
@reports_errors
def inspect(file: str, as_json: bool, grid: str | None, masks: str | None, per_class: int, scale: int,
            sha256: str | None) -> None:
    """Show what a .fredset FILE holds: format, dataset, shapes, sizes, provenance.

    The file is fully validated first (header, SHA-256, structure, metadata), so a
    clean report also means the file is intact. FILE may also be an expert buffer
    directory (from fredset buffer): its options, experts and fingerprint are shown,
    or an http(s) URL (downloaded once into $FREDSET_CACHE or the user cache folder).

    \b
    Examples:
      fredset inspect data.fredset
      fredset inspect https://example.org/data.fredset --sha256 HEX
      fredset inspect data.fredset --json
      fredset inspect data.fredset --grid images.png --masks masks.png
      fredset inspect experts/ --json
    """
    if os.path.isdir(file):
        if grid or masks or sha256:
            raise FredsetError("--grid, --masks and --sha256 are for .fredset files, not expert buffers", file)
        summary = ExpertBuffer(file).summary()
        echo(json.dumps(summary, indent=2) if as_json else format_buffer_summary(summary))
        return
    with warnings_unless_refused():
        fetch_with_progress(file, sha256)
        artifact, info = read_file(file, sha256=sha256)
        report = file_report(artifact, info, file_layout(file, info, sha256=sha256))
        if grid:
            write_png(grid, class_grid(artifact, per_class=per_class, scale=scale))
            report["grid_png"] = grid
        if masks:
            write_png(masks, mask_grid(artifact, scale=2 * scale))
            report["masks_png"] = masks
    # strict JSON (the reader refuses non-finite numbers) and ASCII (json escapes every other character)
    echo(json.dumps(report, indent=2, allow_nan=False) if as_json else format_report(report))


@click.command("export")
@click.argument("file", metavar="FILE")
@click.option("--to", "destination", required=True, metavar="DIR|X.npz|X.safetensors",
              help="An ImageFolder directory of PNGs (new or empty), an .npz or a .safetensors file.")
@sha256_option
@reports_errors
def export_command(file: str, destination: str, sha256: str | None) -> None:
    """Write FILE's images for use where fredset is not installed.

    \b
    DIR            8-bit PNGs in pixel space, DIR/<label>-<class>/<index>.png (sorted
                   folders = label order); values are clipped to [0, 1] and rounded
                   to 1/255, so this loses information (the share clipped is printed)
    X.npz          images float32 [N, C, H, W] in the normalised space the network
                   trains on, labels int64, classes, mean/std, recommended lr, source
                   (numpy.load(..., allow_pickle=False) reads it)
    X.safetensors  images and labels, the same facts in its metadata (safetensors:
                   the safe tensor format, no pickle; pip install safetensors)

    Nothing is half-written: files are renamed into place, a directory is filled
    beside it and renamed at the end.

    \b
    Examples:
      fredset export data.fredset --to images/
      fredset export data.fredset --to data.npz
      fredset export data.fredset --to data.safetensors
    """
    with warnings_unless_refused():
        fetch_with_progress(file, sha256)
        result = export_data(file, destination, sha256=sha256)
    n, channels, height, width = result.shape
    if result.kind == "imagefolder":
        echo(f"wrote {destination}: {n} PNGs ({'grayscale' if channels == 1 else 'RGB'} {height}x{width}) in "
             f"{result.num_classes} class folders, {result.bytes_written:,} bytes; pixel space, 8-bit: values clipped "
             f"to [0, 1] and rounded to 1/255 ({100 * result.clipped_fraction:.2f}% of values were outside [0, 1])")
        return
    lr = f"recommended lr {result.recommended_lr:g}" if result.recommended_lr is not None else "no recommended lr"
    echo(f"wrote {destination}: images float32 [{n}, {channels}, {height}, {width}] in the normalised space "
         f"((pixel - mean) / std), labels int64, {result.num_classes} classes, mean/std, {lr}; "
         f"{result.bytes_written:,} bytes")


@click.command("convert")
@click.argument("images", metavar="IMAGES")
@click.option("--mask", required=True, metavar="FILE",
              help="The reference's mask.pt: dense 0/1, one plane per image (or per class, or one for all).")
@dataset_option
@click.option("--labels", metavar="FILE",
              help="Labels [N] (default: those saved with the images, labels_X.pt beside images_X.pt, else "
              "class-sorted equal blocks, the reference's order).")
@click.option("--experiment", type=click.IntRange(0), metavar="N",
              help="The experiment to take from a DC/DM res_*.pt file that holds several.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True),
              help="Training lr to store as the file's recommended lr (TM: Synthetic_LR in the run's log.txt).")
@click.option("--objective", type=click.Choice(["dc", "dm", "tm"]), help="The reference script that made IMAGES.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="The .fredset file to write.")
@reports_errors
def convert_command(images: str, mask: str, dataset: str, labels: str | None, experiment: int | None,
                    lr: float | None, objective: str | None, out: str) -> None:
    """Convert the FreD reference implementation's output into a .fredset file.

    IMAGES is its images_best.pt (TM; labels_best.pt beside it is used) or a DC/DM
    res_*.pt; --mask its mask.pt. Files are read with torch.load(weights_only=True):
    anything but tensors and plain containers is refused, never unpickled.
    The coefficients are the images' orthonormal DCT at each class's mask, so the
    file decodes to the same images up to float32 rounding; the round-trip error
    and the energy outside the mask are printed. --dataset gives the class names
    and mean/std (a named dataset's are known: nothing is loaded or downloaded).

    \b
    Examples:
      fredset convert images_best.pt --mask mask.pt --dataset cifar10 --out ref.fredset
      fredset convert res_DM_CIFAR10_ConvNet_1ipc.pt --mask mask.pt --dataset cifar10 --out dm.fredset
    """
    with warnings_unless_refused():
        result = run_conversion(images, mask, dataset, labels_path=labels, experiment=experiment, lr=lr,
                                objective=objective)
        data = save_bytes(result.artifact, encoding="float32")
        write_atomically(out, data)
    artifact = result.artifact
    counts = artifact.counts
    per_class = f"{counts[0]} per class" if len(set(counts)) == 1 else f"{min(counts)}-{max(counts)} per class"
    echo(f"wrote {out}: {artifact.num_instances} images ({per_class}, k {artifact.k}), {len(data):,} bytes; "
         f"labels {result.labels_from}" + ("; images put in class order" if result.reordered else ""))
    echo(f"round trip: max |difference| {result.max_abs_error:.3g} (values up to {result.image_scale:.3g}); "
         f"DCT energy outside the mask at most {result.energy_outside_mask:.3g} of an image's")
    if result.mask_mismatch:
        echo(f"warning: up to {100 * result.energy_outside_mask:.3g}% of an image's DCT energy lies outside its "
             "class's mask: these images were not made with this mask, and the file keeps only their masked part",
             err=True)
