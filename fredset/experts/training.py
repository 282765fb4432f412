"""Training expert trajectories into a buffer directory: ``fredset buffer`` and :func:`train_experts`.

An *expert* is a network trained from scratch on the real training set with the TM reference's recipe
(docs/ALGORITHM.md, Expert trajectories): SGD at a constant learning rate (0.01), no momentum, no weight
decay, batch 256 reshuffled every epoch, DSA on every batch, drawn independently per sample, with
``align_corners=True``, no ZCA. Its parameters are saved at initialisation (snapshot 0) and after every epoch
(snapshot ``e`` after ``e`` epochs).

Expert ``i`` depends only on ``(seed, i)``: its generator is ``torch.Generator().manual_seed(seed * 100003
+ i)``, which draws the initial parameters, then every epoch's shuffle and every batch's augmentation. Any
process trains the same expert ``i`` (up to floating-point differences between devices), so several processes,
on one machine or several sharing the directory, can fill one buffer together: each claims an expert with an
exclusive lock file (:mod:`fredset.experts.locks`), finished experts are skipped, and an interrupted run
resumes where it stopped.

``keep_epochs=K`` keeps snapshots ``0..K`` only (TM reads snapshots up to ``max_start_epoch + expert_epochs - 1``).
Training still runs all ``epochs`` epochs, so the recorded final loss and test accuracy describe the expert the
options name; only the snapshots written are fewer.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import time
from collections.abc import Callable
from typing import Any

import torch

from ..augment import DSA, STRATEGY, parse_strategy
from ..distributed import Context
from ..errors import FredsetError
from ..files import create_exclusively, resolve_device, summarised_source, write_atomically
from ..models import build_model
from ..training import EpochStats, fresh_network, test_accuracy, train_epochs
from ..version import __version__
from .locks import claim, mutex
from .store import BUFFER_FORMAT, BUFFER_VERSION, MANIFEST, expert_path, lock_path, read_json, write_expert

__all__ = ["SEED_STRIDE", "train_experts"]

SEED_STRIDE = 100003
OPTIMIZER = "SGD, constant lr, momentum 0, weight decay 0"
# manifest fields that only describe the buffer: they may differ between calls on the same directory
_INFORMATIONAL = ("experts", "fredset_version", "torch_version")
# the source fields a manifest records (buffers are compared by them)
_SOURCE_FIELDS = ("dataset", "split", "format", "files")


def _check_int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise FredsetError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


def train_experts(real: Any, directory: str | os.PathLike, *, experts: int, epochs: int,
                  keep_epochs: int | None = None, model: str = "convnet", lr: float = 0.01, batch_size: int = 256,
                  dsa: str = STRATEGY, seed: int = 0, device: torch.device | str = "cpu",
                  test: Any | None = None,
                  on_epoch: Callable[[int, int, float], None] | None = None,
                  context: Context | None = None) -> list[int]:
    """Train the experts 0..experts-1 of ``directory`` that are neither finished nor being trained by another
    process; return the indices this call finished. ``on_epoch(expert, epoch, train_loss)`` after each epoch.

    ``context`` (one rank of a torchrun job, :mod:`fredset.distributed`): this rank tries experts rank,
    rank + world_size, ... first and then the others, so the ranks start on different experts and one that
    finishes early takes what is still unclaimed; the locks make sure each expert is trained once. An expert's
    seed depends on its index alone, so the buffer does not depend on which process trained what.

    ``real`` is the training set (:class:`~fredset.data.RealData`); ``test``, if given, is tested after the last
    epoch and its accuracy recorded. Snapshots ``0..keep_epochs`` (default: all ``epochs``) are written; training
    always runs ``epochs`` epochs. ``dsa`` is a strategy or ``"none"``. ``device`` follows
    :func:`fredset.files.resolve_device`. The directory is created if needed.
    """
    experts = _check_int("experts", experts, 1)
    epochs = _check_int("epochs", epochs, 1)
    keep = epochs if keep_epochs is None else _check_int("keep_epochs", keep_epochs, 0)
    if keep > epochs:
        raise FredsetError(f"keep_epochs ({keep}) cannot exceed epochs ({epochs})")
    batch_size = _check_int("batch_size", batch_size, 1)
    seed = _check_int("seed", seed, 0)
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0 or lr == float("inf"):
        raise FredsetError(f"lr must be a positive number, got {lr!r}")
    if len(real) == 0:
        raise FredsetError(f"dataset {real.name!r} has no images to train experts on")
    families = parse_strategy(dsa)
    augment = DSA(dsa, align_corners=True) if families else None
    device = resolve_device(device)
    model_name = model.strip().lower() if isinstance(model, str) else model
    size = tuple(real.image_size)
    template = build_model(model_name, real.channels, real.num_classes, size)  # FredsetError if unknown/too small
    names = [name for name, _ in template.named_parameters()]
    shapes = [list(parameter.shape) for _, parameter in template.named_parameters()]
    if test is not None and (test.channels, tuple(test.image_size)) != (real.channels, size):
        raise FredsetError(f"the test set {test.name} ({test.channels}x{test.image_size[0]}x{test.image_size[1]}) "
                           f"does not fit the training set ({real.channels}x{size[0]}x{size[1]})")
    if test is not None and len(test) and int(test.labels.max()) >= real.num_classes:
        raise FredsetError(f"the test set {test.name} has labels beyond the {real.num_classes} training classes")

    directory = pathlib.Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise FredsetError(f"cannot create the buffer directory ({error.strerror or error})", directory) from None
    if not directory.is_dir() or not os.access(directory, os.W_OK | os.X_OK):
        raise FredsetError("the buffer directory is not a writable directory", directory)

    source = {key: real.source[key] for key in _SOURCE_FIELDS if key in real.source}
    manifest = {
        "format": BUFFER_FORMAT, "version": BUFFER_VERSION,
        "dataset": real.name, "split": real.split, "num_images": len(real), "classes": list(real.classes),
        "mean": list(real.mean), "std": list(real.std), "source": summarised_source({"files": {}, **source}),
        "model": model_name, "channels": real.channels, "num_classes": real.num_classes, "image_size": list(size),
        "parameter_names": names, "parameter_shapes": shapes,
        "experts": experts, "epochs": epochs, "keep_epochs": keep,
        "lr": float(lr), "batch_size": batch_size, "optimizer": OPTIMIZER,
        "dsa": "_".join(families) if families else "none", "dsa_align_corners": True, "dsa_per_sample": True,
        "seed": seed, "expert_seed": f"torch.Generator().manual_seed(seed * {SEED_STRIDE} + expert)",
        "fredset_version": __version__, "torch_version": torch.__version__,
    }
    _prepare_manifest(directory, manifest)

    images = real.images.to(device=device, dtype=torch.float32)
    labels = real.labels.to(device=device, dtype=torch.int64)
    finished: list[int] = []
    for index in claim_order(experts, context):
        done = expert_path(directory, index)
        if done.exists():
            continue
        lock = claim(lock_path(directory, index), done)
        if lock is None:
            continue
        try:
            snapshots, meta = _train_one(index, images, labels, real, model=model_name, epochs=epochs, keep=keep,
                                         lr=float(lr), batch_size=batch_size, augment=augment, seed=seed, test=test,
                                         on_epoch=on_epoch)
            write_expert(directory, index, snapshots, names, meta)
        finally:
            lock.release()  # after the rename (or on any error, KeyboardInterrupt included)
        finished.append(index)
    return finished


def claim_order(experts: int, context: Context | None) -> list[int]:
    """The order in which a rank tries the experts: its own share first (round-robin), then the rest."""
    if context is None or not context.distributed:
        return list(range(experts))
    mine = list(range(context.rank, experts, context.world_size))
    return mine + [index for index in range(experts) if index % context.world_size != context.rank]


def _train_one(index: int, images: torch.Tensor, labels: torch.Tensor, real: Any, *, model: str, epochs: int,
               keep: int, lr: float, batch_size: int, augment: DSA | None, seed: int, test: Any | None,
               on_epoch: Callable[[int, int, float], None] | None) -> tuple[dict[int, list[torch.Tensor]], dict]:
    """Expert ``index`` trained from its own generator: its snapshots by epoch and its metadata."""
    started = time.perf_counter()
    generator = torch.Generator().manual_seed(seed * SEED_STRIDE + index)
    net = fresh_network(model, real.channels, real.num_classes, real.image_size, generator, images.device)
    optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.0, weight_decay=0.0)

    def snapshot() -> list[torch.Tensor]:
        return [parameter.detach().to("cpu", torch.float32, copy=True) for parameter in net.parameters()]

    snapshots = {0: snapshot()}
    losses, accuracies, seconds = [], [], []

    def record(stats: EpochStats) -> None:
        if not math.isfinite(stats.loss):
            raise FredsetError(f"expert {index} diverged at epoch {stats.epoch} (train loss {stats.loss}); "
                               "try a smaller lr")
        losses.append(round(stats.loss, 6))
        accuracies.append(round(stats.accuracy, 6))
        seconds.append(round(stats.seconds, 3))
        if stats.epoch <= keep:
            snapshots[stats.epoch] = snapshot()
        if on_epoch is not None:
            on_epoch(index, stats.epoch, stats.loss)

    train_epochs(net, optimizer, images, labels, epochs=epochs, generator=generator, batch_size=batch_size,
                 augment=augment, on_epoch=record)
    meta: dict[str, Any] = {"train_loss": losses, "train_accuracy": accuracies, "epoch_seconds": seconds,
                            "epochs_trained": epochs, "device": str(images.device),
                            "torch_version": torch.__version__, "seed": seed * SEED_STRIDE + index}
    if test is not None and len(test):
        meta["test_accuracy"] = round(test_accuracy(net.eval(), test.images, test.labels), 6)
        meta["test_dataset"] = {"name": test.name, "split": test.split, "images": len(test)}
    meta["seconds"] = round(time.perf_counter() - started, 3)
    return snapshots, meta


def _differing_options(saved: dict, mine: dict) -> list[str]:
    keys = (set(saved) | set(mine)) - set(_INFORMATIONAL)
    return sorted(key for key in keys if saved.get(key) != mine.get(key))


def _prepare_manifest(directory: pathlib.Path, manifest: dict) -> dict:
    """Write the manifest if the directory has none; check it against ours if it has one; record a larger
    number of experts asked for. Returns the manifest on disk."""
    path = directory / MANIFEST
    with mutex(directory):
        if create_exclusively(path, json.dumps(manifest, indent=2, sort_keys=True).encode() + b"\n"):
            return manifest
        saved = read_json(path)
        if not isinstance(saved, dict):
            raise FredsetError("not a buffer manifest (expected a JSON object)", path)
        if saved.get("format") != BUFFER_FORMAT or saved.get("version") != BUFFER_VERSION:
            raise FredsetError(f"buffer {directory} has format {saved.get('format')!r} version "
                               f"{saved.get('version')!r}; this fredset reads {BUFFER_FORMAT} version "
                               f"{BUFFER_VERSION}")
        differing = _differing_options(saved, manifest)
        if differing:
            raise FredsetError(f"buffer {directory} was made with different options ({', '.join(differing)}); "
                               "use the same options or another directory")
        if int(saved.get("experts", 0)) < manifest["experts"]:
            saved = {**saved, "experts": manifest["experts"]}
            write_atomically(path, json.dumps(saved, indent=2, sort_keys=True).encode() + b"\n")
        return saved
