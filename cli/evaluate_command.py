"""`fredset evaluate`: train fresh networks on a file (and on baselines at the same bytes), report accuracy."""

from __future__ import annotations

import contextlib
import functools
import json

import click

from fredset import FredDataset, FredsetError
from fredset.augment import STRATEGY
from fredset.baselines import DEFAULT_MIN_QUALITY, KINDS as BASELINE_KINDS, MAX_QUALITY, build_baseline
from fredset.corruptions import CorruptedTests, parse_families, parse_severities
from fredset.data import load_dataset
from fredset.distributed import init_from_environment, main_first
from fredset.evaluate import DEFAULT_LR as DEFAULT_EVAL_LR
from fredset.evaluate import evaluate as run_evaluation
from fredset.training import EpochStats
from fredset.files import resolve_device
from fredset.progress import Progress
from fredset.remote import is_url

from .options import data_options, device_option, sha256_option
from .report import format_corruptions
from .running import across_ranks, fetch_with_progress, reports_errors


@click.command()
@click.argument("file", metavar="FILE")
@click.option("--dataset", metavar="NAME|PATH",
              help="Test data, and train data for --baseline (default: the dataset named in FILE).")
@data_options
@click.option("--model", "models", multiple=True, default=["convnet"], show_default=True,
              help="Network to train (repeat for cross-architecture: convnet, alexnet, vgg11, resnet18).")
@click.option("--runs", default=5, show_default=True, type=click.IntRange(1), help="Fresh networks per model.")
@click.option("--epochs", default=1000, show_default=True, type=click.IntRange(1))
@click.option("--lr", type=float,
              help=f"Learning rate (default: the file's recommended lr, else {DEFAULT_EVAL_LR:g}). Baselines train "
              f"with --lr when it is given, else {DEFAULT_EVAL_LR:g}: a file's learned lr belongs to its own images.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--dsa", default=STRATEGY, show_default=True, help="DSA strategy during training ('none' to disable).")
@click.option("--baseline", "baselines", multiple=True, type=click.Choice(BASELINE_KINDS),
              help="Also train on random real train images of each class stored in the file's bytes per class "
              "(file bytes // classes) with this codec, and report the file's gain over them (repeatable).")
@click.option("--baseline-quality", default=DEFAULT_MIN_QUALITY, show_default=True,
              type=click.IntRange(1, MAX_QUALITY), metavar="Q",
              help="Lowest jpeg/webp quality a baseline may use to fit the most images (then the best that fits).")
@click.option("--corruptions", metavar="NAMES|all",
              help="Also test the networks on corrupted copies of the test set: 'all' (the 15 families of "
              "CIFAR-10-C) or comma-separated names (gaussian_noise, shot_noise, impulse_noise, defocus_blur, "
              "glass_blur, motion_blur, zoom_blur, snow, frost, fog, brightness, contrast, elastic_transform, "
              "pixelate, jpeg_compression), generated with --seed.")
@click.option("--severity", metavar="1..5|all",
              help="Corruption severity [default: 5, as FreD's robustness script]; 'all' averages 1..5 per family.")
@click.option("--corrupted-test", type=click.Path(file_okay=False), metavar="DIR",
              help="Read the corrupted copies from published CIFAR-10-C arrays (DIR/<family>.npy, DIR/labels.npy) "
              "instead of generating them (implies --corruptions all unless given).")
@device_option
@sha256_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@reports_errors
@across_ranks
def evaluate(file: str, dataset: str | None, data_root: str | None, download: bool, models: tuple[str, ...],
             runs: int, epochs: int, lr: float | None, seed: int, dsa: str, baselines: tuple[str, ...],
             baseline_quality: int, corruptions: str | None, severity: str | None, corrupted_test: str | None,
             device: str, sha256: str | None, as_json: bool) -> None:
    """Train fresh networks on FILE's images and report test accuracy (mean +- std over runs).

    The standard protocol: SGD momentum 0.9, weight decay 5e-4, batch 256, lr x0.1 halfway, DSA;
    accuracy after the last epoch (no selection on the test set).

    --baseline jpeg|webp|raw trains the same models with the same protocol, runs, epochs,
    seed and DSA on random real training images compressed into as many bytes per class as
    FILE spends (its whole size // classes; a baseline counts only the codec's output), and
    reports the file's improvement over each in points.

    \b
    Examples:
      fredset evaluate data.fredset --runs 3 --epochs 300
      fredset evaluate data.fredset --baseline jpeg --baseline raw --json
      fredset evaluate data.fredset --corruptions all --severity 5
      fredset evaluate cifar10.fredset --corrupted-test CIFAR-10-C/
      torchrun --nproc-per-node 4 -m fredset_cli evaluate data.fredset --runs 8

    Under torchrun, run r trains on rank r % processes with the seed it has in one process; rank 0 reports.
    """
    if severity is not None and corruptions is None and corrupted_test is None:
        raise FredsetError("--severity needs --corruptions or --corrupted-test")
    families = (parse_families(corruptions if corruptions is not None else "all")
                if corruptions is not None or corrupted_test else None)
    severities = parse_severities(severity if severity is not None else 5)
    context = init_from_environment(resolve_device(device))  # one process: no process group
    with main_first(context) if download or is_url(file) else contextlib.nullcontext():  # rank 0 downloads
        fetch_with_progress(file, sha256)
        data = FredDataset(file, device=context.device, sha256=sha256)
        name = dataset or data.artifact.dataset
        test = load_dataset(name, split="test", root=data_root, download=download)
    baseline_lr = lr or DEFAULT_EVAL_LR
    lr = lr or data.recommended_lr or DEFAULT_EVAL_LR
    classes = data.artifact.num_classes
    bytes_per_class = data.info.file_bytes // classes
    built = []
    if baselines:  # built before any training, so a budget too small for one image fails at once
        with main_first(context) if download else contextlib.nullcontext():
            train = load_dataset(name, split="train", root=data_root, download=download)
        if train.num_classes != classes:
            raise FredsetError(f"{file} has {classes} classes but the train data {train.name} has "
                               f"{train.num_classes}: no baseline to compare with", file)
        built = [build_baseline(train, kind, bytes_per_class, seed=seed, min_quality=baseline_quality)
                 for kind in dict.fromkeys(baselines)]
    corrupted = (CorruptedTests(test, families, severities, seed=seed, directory=corrupted_test)
                 if families else None)  # a wrong --corrupted-test directory fails before any training

    training: list[Progress] = []  # the run being trained

    def on_epoch(model: str, run: int, stats: EpochStats, what: str = "") -> None:
        if as_json:
            return
        if stats.epoch == 1:
            training[:] = [Progress(epochs, unit="epochs", label=f"  {what}{model} run {run + 1}/{runs}")]
        training[0].update(note=f"loss {stats.loss:.4f}")
        if stats.epoch == epochs:  # before the test pass, which is not training speed
            training[0].close()

    def on_run(model: str, run: int, accuracy: float, what: str = "") -> None:
        if not as_json:
            click.echo(f"  {what}{model} run {run + 1}/{runs}: {accuracy:.2f}%", err=True)

    def on_corrupted(family: str, severity: int, accuracies: dict[str, list[float]]) -> None:
        if not as_json:
            shown = ", ".join(f"{model} {', '.join(f'{a:.2f}' for a in values)}%"
                              for model, values in accuracies.items())
            click.echo(f"  {family} (severity {severity}): {shown}", err=True)

    report = run_evaluation(data.images, data.targets, test, models=models, runs=runs, epochs=epochs, lr=lr,
                            seed=seed, dsa=dsa, on_run=on_run, on_epoch=on_epoch, corrupted=corrupted,
                            on_corrupted=on_corrupted, context=context)
    if corrupted is not None:
        report["corruptions"].update(corrupted.describe())
    report["file"] = file
    if built:
        report["baselines"] = {}
    for baseline in built:
        result = run_evaluation(baseline.images.to(data.images.device), baseline.labels.to(data.images.device),
                                test, models=models, runs=runs, epochs=epochs, lr=baseline_lr, seed=seed, dsa=dsa,
                                on_run=functools.partial(on_run, what=f"{baseline.kind} baseline "),
                                on_epoch=functools.partial(on_epoch, what=f"{baseline.kind} baseline "),
                                context=context)
        entry = baseline.summary()
        entry.update(file_bytes=data.info.file_bytes, protocol=result["protocol"], results=result["results"],
                     improvement={model: round(report["results"][model]["mean"] - result["results"][model]["mean"], 2)
                                  for model in result["results"]})
        report["baselines"][baseline.kind] = entry
    if not context.is_main:  # rank 0 reports
        return
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    click.echo(f"{file}: {len(data)} images, trained {runs} x {epochs} epochs (lr {lr:g}), tested on "
               f"{report['protocol']['test_images']} {test.name} test images")
    for model, result in report["results"].items():
        click.echo(f"  {model:<10} {result['mean']:.2f} +- {result['std']:.2f} %   "
                   f"({', '.join(f'{a:.2f}' for a in result['accuracies'])})")
    if built:
        click.echo(f"baselines: random {train.name} train images in {bytes_per_class:,} bytes "
                   f"per class ({data.info.file_bytes:,}-byte file / {classes} classes), lr {baseline_lr:g}")
    for baseline in built:
        entry = report["baselines"][baseline.kind]
        counts, quality = entry["images_per_class"], entry["quality"]
        shown_counts = f"{counts['min']}" if counts["min"] == counts["max"] else f"{counts['min']}-{counts['max']}"
        shown_quality = ("" if quality is None else f", quality {quality['min']}" if quality["min"] == quality["max"]
                         else f", quality {quality['min']}-{quality['max']}")
        click.echo(f"  {baseline.kind}: {shown_counts} images per class ({baseline.total_images} in all)"
                   f"{shown_quality}, {baseline.total_bytes / classes:,.0f} bytes per class on average "
                   f"(max {max(r['bytes'] for r in baseline.per_class):,})")
        for model, result in entry["results"].items():
            click.echo(f"    {model:<10} {result['mean']:.2f} +- {result['std']:.2f} %   "
                       f"({', '.join(f'{a:.2f}' for a in result['accuracies'])})   "
                       f"file {entry['improvement'][model]:+.2f} points")
    if corrupted is not None:
        click.echo(format_corruptions(report["corruptions"], test.name, len(test)))
