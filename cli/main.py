"""`fredset` command: a click group; each command parses options, calls the library, prints."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import sys
import time
import warnings
from typing import Any, Callable, Iterator

import click

from fredset import FredDataset, FredsetError, __version__, read_file, save_bytes
from fredset.augment import STRATEGY
from fredset.baselines import DEFAULT_MIN_QUALITY, KINDS as BASELINE_KINDS, MAX_QUALITY, build_baseline
from fredset.convert import convert as run_conversion
from fredset.corruptions import CorruptedTests, parse_families, parse_severities
from fredset.data import load_dataset
from fredset.distill.budget import fit_within
from fredset.distill.config import DistillConfig
from fredset.distill.loop import distill as run_distillation
from fredset.distill.objectives import OBJECTIVES
from fredset.distributed import Context, gather_objects, init_from_environment, main_first, shutdown
from fredset.evaluate import DEFAULT_LR as DEFAULT_EVAL_LR
from fredset.evaluate import evaluate as run_evaluation
from fredset.training import EpochStats
from fredset.experts import SEED_STRIDE, ExpertBuffer, expert_path, index_ranges, train_experts
from fredset.export import export as export_data
from fredset.files import resolve_device, write_atomically
from fredset.format import DEFAULT_MAX_FILE_BYTES
from fredset.format.layout import file_layout
from fredset.format.writer import ENCODINGS
from fredset.pictures import class_grid, mask_grid, write_png
from fredset.progress import Progress
from fredset.remote import fetch, is_url

from .options import (OBJECTIVE_FIELDS, RUN_FIELDS, data_options, dataset_option, device_option, distill_options,
                      sha256_option)
from .report import file_report, format_buffer_summary, format_corruptions, format_report


def reports_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn FredsetError into one line on stderr and exit status 2 (no traceback).

    The message is one line already (FredsetError escapes line breaks and control characters);
    it is written so that a terminal that cannot encode a character gets an escape, not a crash.
    """

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except FredsetError as error:
            echo(f"error: {error}", err=True)
            sys.exit(2)

    return wrapper


def across_ranks(command: Callable[..., Any]) -> Callable[..., Any]:
    """A command that may run as one of several processes (torchrun, WORLD_SIZE > 1): ranks other than 0 are
    quiet (their stdout and stderr, C++ libraries' included, go to the null device); an error on any rank is one
    line on that rank's stderr (``error (rank R): ...`` on ranks other than 0, which prints as usual) and a
    non-zero exit, after which torchrun stops the other ranks (or their collectives time out). The process
    group is left at the end. With one process the command runs exactly as it is.

    Goes inside :func:`reports_errors`, which prints rank 0's FredsetError.
    """

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        context = Context.from_environment()
        if not context.distributed:
            return command(*args, **kwargs)
        stderr = 2
        if not context.is_main:
            sys.stdout.flush()
            sys.stderr.flush()
            saved = os.dup(1), os.dup(2)
            stderr = saved[1]
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 1)
            os.dup2(null, 2)
            os.close(null)
        try:
            result = command(*args, **kwargs)
        except FredsetError as error:
            if context.is_main:
                raise
            _say(stderr, f"error (rank {context.rank}): {error}")
            sys.exit(2)
        except Exception as error:  # a collective that timed out, a peer gone, a crash: one line, no traceback
            message = re.sub(r"^\[[^\]]+:\d+\] ", "", " ".join(str(error).split()))  # gloo's [file.cc:line]
            _say(stderr, f"error (rank {context.rank}): {type(error).__name__}: {message}")
            sys.exit(1)
        finally:
            if not context.is_main:
                sys.stdout.flush()
                sys.stderr.flush()
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
                os.close(saved[0])
                os.close(saved[1])
        shutdown()
        return result

    return wrapper


def _say(descriptor: int, text: str) -> None:
    """One line straight to a file descriptor (a quiet rank's real stderr), escaping what it cannot encode."""
    sys.stderr.flush()
    encoding = getattr(sys.stderr, "encoding", None) or "utf-8"
    try:
        data = (text + "\n").encode(encoding, "backslashreplace")
    except LookupError:
        data = (text + "\n").encode("utf-8", "backslashreplace")
    os.write(descriptor, data)


def echo(text: str, err: bool = False) -> None:
    """click.echo, with characters the stream cannot encode (e.g. on an ASCII terminal) backslash-escaped."""
    encoding = getattr(sys.stderr if err else sys.stdout, "encoding", None) or "utf-8"
    try:
        text.encode(encoding)
    except UnicodeEncodeError:
        text = text.encode(encoding, "backslashreplace").decode(encoding)
    except LookupError:
        pass
    click.echo(text, err=err)


@contextlib.contextmanager
def warnings_unless_refused() -> Iterator[None]:
    """Hold back warnings (numpy's overflow warnings on absurd values, say) until the block ends.

    If it ends with a FredsetError they are dropped: the reader checks what it computed (a value
    that overflowed to infinity is refused), so the one-line error already says what is wrong and
    the warnings would only add lines to stderr. Otherwise they are shown as usual, so nothing is
    hidden for a file that is read (or for a crash).
    """
    held: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            try:
                yield
            finally:
                held = list(caught)
    except FredsetError:
        raise
    except BaseException:
        _show_warnings(held)
        raise
    _show_warnings(held)


def _show_warnings(held: list[warnings.WarningMessage]) -> None:
    for warning in held:
        warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno,
                             warning.file, warning.line)


def fetch_with_progress(file: str, sha256: str | None) -> None:
    """Download a URL into the cache now, reporting progress on a terminal or as plain lines in a log (the
    library alone reports only on a terminal); the reader then opens the cached copy without a connection."""
    if is_url(file):
        fetch(file, sha256=sha256, max_file_bytes=DEFAULT_MAX_FILE_BYTES, progress=True)


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


@cli.command()
@dataset_option
@data_options
@distill_options
@device_option
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="The .fredset file to write.")
@click.option("--encoding", type=click.Choice(ENCODINGS),
              help="How coefficients are stored (default: q<bits> with --bits or a byte budget, else float32).")
@click.option("--checkpoint", type=click.Path(dir_okay=False), help="Checkpoint file (default OUT.ckpt).")
@click.option("--checkpoint-every", default=100, show_default=True, type=click.IntRange(0),
              help="Save a checkpoint every N iterations (0: only at the end).")
@click.option("--resume", is_flag=True, help="Continue from the checkpoint if there is one.")
@click.option("--eval-every", default=0, show_default=True, type=click.IntRange(0),
              help="Evaluate every N iterations (recorded in the file; never used to select).")
@click.option("--eval-epochs", default=300, show_default=True, type=click.IntRange(1))
@click.option("--eval-runs", default=1, show_default=True, type=click.IntRange(1))
@reports_errors
@across_ranks
def distill(dataset: str, data_root: str | None, download: bool, device: str, out: str, encoding: str | None,
            checkpoint: str | None, checkpoint_every: int, resume: bool, eval_every: int, eval_epochs: int,
            eval_runs: int, **options: Any) -> None:
    """Distil a dataset into a .fredset file.

    \b
    Examples:
      fredset distill --dataset fashion-mnist --ipc 1 --out fmnist-dm-ipc1.fredset
      fredset distill --dataset fashion-mnist --ipc 1 --iterations 20000 --out full.fredset --resume
      fredset distill --dataset fashion-mnist --bytes-per-class 3136 --out small.fredset
      fredset buffer --dataset fashion-mnist --experts 10 --epochs 8 --out experts/
      fredset distill --dataset fashion-mnist --objective tm --buffer experts/ --out fmnist-tm-ipc1.fredset
      torchrun --nproc-per-node 4 -m fredset_cli distill --dataset cifar10 --ipc 10 --out c10.fredset

    Under torchrun each process optimises its share of the classes (DM, DC) or takes its share of every
    unrolled step's batch (TM); rank 0 writes the file.
    """
    device = resolve_device(device)
    if options["objective"] in OBJECTIVES:  # before joining the others: an objective may not be sharded
        OBJECTIVES[options["objective"]].check_distributed(Context.from_environment())
    context = init_from_environment(device)  # one process: no process group, the device unchanged
    device = context.device
    checkpoint = checkpoint or f"{out}.ckpt"
    for option, path in (("--out", out), ("--checkpoint", checkpoint)):  # fail now, not after hours of work
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
            raise FredsetError(f"{option} {path}: folder {folder} does not exist or is not writable")
    with main_first(context) if download else contextlib.nullcontext():  # rank 0 downloads, alone
        real = load_dataset(dataset, split="train", root=data_root, download=download)
    objective_options = {name: options[name] for name in OBJECTIVE_FIELDS if options[name] is not None}
    config = DistillConfig(dataset=real.name, **{name: options[name] for name in RUN_FIELDS},
                           options=objective_options)
    run = config.resolve(real, device)  # every option checked, once, before anything starts
    with main_first(context) if download and eval_every else contextlib.nullcontext():
        test = load_dataset(dataset, split="test", root=data_root, download=download) if eval_every else None

    def evaluate_synset(synset: Any, iteration: int, lr: float | None = None) -> dict[str, Any]:
        return run_evaluation(synset.decode().detach(), synset.labels, test, runs=eval_runs, epochs=eval_epochs,
                              seed=run.config.seed, lr=lr or DEFAULT_EVAL_LR, context=context)

    with Progress(run.config.iterations, unit="it", label="distilling") as progress:
        def on_iteration(iteration: int, loss: float) -> None:
            if progress.done == 0 and iteration > 1:  # resumed from a checkpoint
                progress.resume_at(iteration - 1)
            progress.update(iteration - progress.done, note=f"loss {loss:.4g}")

        try:
            artifact = run_distillation(run, real, device=device, checkpoint=checkpoint,
                                        checkpoint_every=checkpoint_every, resume=resume, on_iteration=on_iteration,
                                        evaluate_every=eval_every, evaluate=evaluate_synset if eval_every else None,
                                        context=context)
        except KeyboardInterrupt:
            click.echo(f"\ninterrupted; the last checkpoint is {checkpoint}: run the same command with --resume "
                       "to continue", err=True)
            sys.exit(130)
    if not context.is_main:  # rank 0 writes the file
        return
    budget = run.config.byte_budget(real.num_classes)
    if encoding is not None and run.config.bits is not None and encoding != f"q{run.config.bits}":
        raise FredsetError(f"--encoding {encoding} would re-quantise {run.config.bits}-bit codes; "
                           f"use q{run.config.bits} or leave --encoding out")
    if budget is None:
        data = save_bytes(artifact, encoding=encoding)
    else:  # the loop fitted the artifact already; this settles a byte the write time may add to the metadata
        artifact, data = fit_within(artifact, budget, encoding=encoding)
    write_atomically(out, data)
    grid = f", {run.config.bits}-bit codes" if run.config.bits is not None else ""
    within = f" (budget {budget:,})" if budget is not None else ""
    click.echo(f"wrote {out}: {artifact.num_instances} images ({artifact.counts[0]} per class, k {artifact.k}"
               f"{grid}), {len(data):,} bytes{within}; checkpoint {checkpoint}")


@cli.command()
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


@cli.command()
@dataset_option
@click.option("--experts", required=True, type=click.IntRange(1), help="Experts 0..E-1 the buffer should hold.")
@click.option("--epochs", required=True, type=click.IntRange(1), help="Epochs each expert trains.")
@click.option("--out", required=True, type=click.Path(file_okay=False), metavar="DIR",
              help="The buffer directory (created if needed; shared by every process filling it).")
@click.option("--keep-epochs", type=click.IntRange(0), metavar="K",
              help="Keep snapshots 0..K only (default: all epochs); TM needs K >= max-start-epoch + "
              "expert-epochs - 1 (6 for its Fashion-MNIST ipc 1 defaults).")
@click.option("--model", default="convnet", show_default=True, help="Network of the experts.")
@click.option("--lr", default=0.01, show_default=True, type=float, help="Constant SGD learning rate.")
@click.option("--batch-size", default=256, show_default=True, type=click.IntRange(1))
@click.option("--dsa", default=STRATEGY, show_default=True,
              help="DSA strategy (per sample, align_corners=True), or 'none'.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0),
              help=f"Expert i is seeded with seed * {SEED_STRIDE} + i.")
@device_option
@data_options
@click.option("--no-test", is_flag=True, help="Do not load the test split (no test accuracy is recorded).")
@reports_errors
@across_ranks
def buffer(dataset: str, experts: int, epochs: int, out: str, keep_epochs: int | None, model: str, lr: float,
           batch_size: int, dsa: str, seed: int, device: str, data_root: str | None, download: bool,
           no_test: bool) -> None:
    """Train expert trajectories for trajectory matching (--objective tm) into DIR.

    Each expert is a network trained from scratch on the real training set (SGD,
    constant lr, no momentum, no weight decay, DSA per sample); its parameters are
    saved at initialisation and after every kept epoch, one file per expert. The
    test accuracy after the last epoch is recorded unless --no-test.

    Finished experts are kept: run the same command again to resume, or run it in
    several processes (or machines sharing DIR) at once to train experts in
    parallel; each expert is claimed by a lock file and trained once. Under
    torchrun, rank r starts with experts r, r+N, ... (one device per process)
    and rank 0 reports for all.

    \b
    Examples:
      fredset buffer --dataset fashion-mnist --experts 100 --epochs 50 --out experts/fmnist
      fredset buffer --dataset fashion-mnist --experts 20 --epochs 20 --keep-epochs 7 --out experts/fmnist-ipc1
      torchrun --nproc-per-node 8 -m fredset_cli buffer --dataset cifar10 --experts 100 --epochs 50 --out c10/
      fredset inspect experts/fmnist
    """
    if keep_epochs is not None and keep_epochs > epochs:
        raise FredsetError(f"--keep-epochs {keep_epochs} cannot exceed --epochs {epochs}")
    context = init_from_environment(resolve_device(device))  # one process: no process group, the device unchanged
    device = context.device
    with main_first(context) if download else contextlib.nullcontext():  # rank 0 downloads, alone
        real = load_dataset(dataset, split="train", root=data_root, download=download)
        test = None
        if not no_test:
            try:
                test = load_dataset(dataset, split="test", root=data_root, download=download)
            except FredsetError as error:
                raise FredsetError(f"{error} (pass --no-test to train without a test set)") from None
    already = [index for index in range(experts) if expert_path(out, index).exists()]
    started = time.perf_counter()
    progress: list[Progress] = []  # the expert being trained

    def on_epoch(expert: int, epoch: int, loss: float) -> None:
        if not progress:  # the options were accepted and training started
            click.echo(f"buffer {out}: {experts} experts x {epochs} epochs of {model} on {real.name} "
                       f"({len(real)} images), {device}; {len(already)} already finished", err=True)
        if epoch == 1:
            progress[:] = [Progress(epochs, unit="epochs", label=f"  expert {expert}")]
        progress[0].update(note=f"loss {loss:.4f}")
        if epoch == epochs:
            progress[0].close()

    try:
        trained = train_experts(real, out, experts=experts, epochs=epochs, keep_epochs=keep_epochs, model=model,
                                lr=lr, batch_size=batch_size, dsa=dsa, seed=seed, device=device, test=test,
                                on_epoch=on_epoch, context=context)
    except KeyboardInterrupt:
        click.echo(f"\ninterrupted; finished experts are kept in {out}: run the same command to continue", err=True)
        sys.exit(130)
    trained = sorted(index for mine in gather_objects(trained, context, unequal_work=True) for index in mine)
    if not context.is_main:  # rank 0 reports for every rank
        return
    finished = set(ExpertBuffer(out).experts)
    elsewhere = [index for index in range(experts) if index not in finished]
    click.echo(f"buffer {out}: trained {len(trained)} expert(s) in {time.perf_counter() - started:.1f} s"
               f"{' (' + index_ranges(trained) + ')' if trained else ''}; {len(already)} already there; "
               f"{len(finished & set(range(experts)))}/{experts} finished"
               + (f"; {len(elsewhere)} still being trained by another process" if elsewhere else ""))


@cli.command("export")
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


@cli.command("convert")
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


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
