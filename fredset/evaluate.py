"""The evaluation protocol (docs/ALGORITHM.md, Evaluation protocol): train fresh networks on distilled data, test them.

A fresh network per run, SGD (momentum 0.9, weight decay 5e-4), batch 256, learning rate x0.1
halfway, DSA on every batch (independent per sample), test accuracy on the full test set after
the LAST epoch (no selection on the test set), mean and std over runs, for each model asked for.

With ``corrupted`` (e.g. :class:`fredset.corruptions.CorruptedTests`) the same trained networks are also tested
on each corrupted copy of the test set, which is made once and tested by every network before the next.
"""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch

from .augment import DSA, STRATEGY
from .distributed import Context, gather_objects
from .errors import FredsetError
from .training import EpochStats, fresh_network, test_accuracy, train_epochs

__all__ = ["DEFAULT_LR", "corruption_table", "evaluate", "train_network"]

DEFAULT_LR = 0.01
MOMENTUM = 0.9
WEIGHT_DECAY = 5e-4


def train_network(images: torch.Tensor, labels: torch.Tensor, *, model: str, num_classes: int, epochs: int,
                  lr: float, generator: torch.Generator, batch_size: int = 256, dsa: DSA | None = None,
                  on_epoch: Callable[[EpochStats], None] | None = None) -> torch.nn.Module:
    """A fresh ``model`` trained from scratch on ``images`` (on their device) with the protocol's optimiser:
    SGD (momentum 0.9, weight decay 5e-4), learning rate x0.1 at ``epochs // 2``."""
    net = fresh_network(model, images.shape[1], num_classes, images.shape[-2:], generator, images.device)
    optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    train_epochs(net, optimizer, images, labels, epochs=epochs, generator=generator, batch_size=batch_size,
                 augment=dsa, decay_at=epochs // 2 if epochs > 1 else None, on_epoch=on_epoch)
    return net.eval()


Corrupted = Iterable[tuple[str, int, torch.Tensor, torch.Tensor]]
"""(family, severity, normalised test images, labels) for each corrupted copy of a test set."""


def _summary(accuracies: Sequence[float]) -> dict[str, Any]:
    return {"accuracies": [round(a, 2) for a in accuracies], "mean": round(statistics.mean(accuracies), 2),
            "std": round(statistics.pstdev(accuracies), 2)}


def evaluate(images: torch.Tensor, labels: torch.Tensor, test: Any, *, models: Sequence[str] = ("convnet",),
             runs: int = 5, epochs: int = 1000, lr: float = DEFAULT_LR, seed: int = 0, batch_size: int = 256,
             dsa: str = STRATEGY, on_run: Callable[[str, int, float], None] | None = None,
             on_epoch: Callable[[str, int, EpochStats], None] | None = None, corrupted: Corrupted | None = None,
             on_corrupted: Callable[[str, int, dict[str, list[float]]], None] | None = None,
             context: Context | None = None) -> dict[str, Any]:
    """Train ``runs`` fresh networks of each of ``models`` on (images, labels); test each on ``test``.

    Returns {"protocol": {...}, "results": {model: {"accuracies", "mean", "std"}}} (accuracies in %), and with
    ``corrupted`` also "corruptions" (:func:`corruption_table`); ``on_corrupted(family, severity, {model:
    accuracies})`` hears each corrupted copy's results, ``on_epoch(model, run, stats)`` each training epoch. The networks are kept until then (runs x models of them).

    ``context`` (a :class:`fredset.distributed.Context` of several ranks, every rank calling this with the same
    arguments): run r is trained on rank r % world size, with the same seed as in one process, and every rank
    returns the same report as one process would (timings aside); ``on_run`` and ``on_epoch`` hear this rank's
    runs, ``on_corrupted`` every run's results.
    """
    if runs < 1 or epochs < 1:
        raise FredsetError(f"--runs and --epochs must be at least 1 (got {runs}, {epochs})")
    num_classes = int(test.num_classes)
    if int(labels.max()) >= num_classes or images.shape[1:] != test.images.shape[1:]:
        raise FredsetError(f"the data ({tuple(images.shape[1:])}, {int(labels.max()) + 1} classes) does not match "
                           f"the test set {test.name} ({tuple(test.images.shape[1:])}, {num_classes} classes)")
    augment = DSA(dsa) if dsa and dsa != "none" else None
    distributed = context is not None and context.distributed
    my_runs = range(context.rank, runs, context.world_size) if distributed else range(runs)
    results: dict[str, Any] = {}
    networks: dict[str, list[tuple[int, torch.nn.Module]]] = {}
    trained: dict[str, dict[int, float]] = {}  # distributed: this rank's accuracies, by run
    started = time.perf_counter()
    for model in models:
        accuracies = []
        for run in my_runs:
            generator = torch.Generator().manual_seed(seed * 1000 + run)
            hear_epoch = None if on_epoch is None else functools.partial(on_epoch, model, run)
            net = train_network(images, labels, model=model, num_classes=num_classes, epochs=epochs, lr=lr,
                                generator=generator, batch_size=batch_size, dsa=augment, on_epoch=hear_epoch)
            accuracy = 100.0 * test_accuracy(net, test.images, test.labels)
            accuracies.append(round(accuracy, 2))
            trained.setdefault(model, {})[run] = round(accuracy, 2)
            if on_run is not None:
                on_run(model, run, accuracy)
            if corrupted is not None:
                networks.setdefault(model, []).append((run, net))
        results[model] = _summary(accuracies) if not distributed else None
    if distributed:  # every rank's accuracies, in run order
        for share in gather_objects(trained, context, unequal_work=True):
            for model, by_run in share.items():
                trained.setdefault(model, {}).update(by_run)
        results = {model: _summary([trained[model][run] for run in range(runs)]) for model in results}
    protocol = {"runs": runs, "epochs": epochs, "lr": lr, "lr_schedule": "x0.1 at epochs//2", "batch_size": batch_size,
                "optimizer": "SGD momentum 0.9 weight decay 5e-4", "dsa": dsa, "seed": seed,
                "test_set": test.name, "test_images": len(test.images), "selection": "final epoch",
                "seconds": round(time.perf_counter() - started, 1)}
    report = {"protocol": protocol, "results": results}
    if corrupted is not None:
        started = time.perf_counter()
        measured: dict[tuple[str, int], dict[str, list[float]]] = {}
        for family, severity, corrupted_images, corrupted_labels in corrupted:
            if corrupted_images.shape[1:] != test.images.shape[1:] or len(corrupted_labels) != len(corrupted_images):
                raise FredsetError(f"corrupted test set {family} (severity {severity}) has images "
                                   f"{list(corrupted_images.shape)} and {len(corrupted_labels)} labels; the test set "
                                   f"{test.name} has images {list(test.images.shape)}")
            if not distributed:
                measured[family, severity] = {
                    model: [100.0 * test_accuracy(net, corrupted_images, corrupted_labels) for _, net in nets]
                    for model, nets in networks.items()}
            else:
                tested = {model: {run: 100.0 * test_accuracy(net, corrupted_images, corrupted_labels)
                                  for run, net in nets} for model, nets in networks.items()}
                for share in gather_objects(tested, context, unequal_work=True):
                    for model, by_run in share.items():
                        tested.setdefault(model, {}).update(by_run)
                measured[family, severity] = {model: [by_run[run] for run in sorted(by_run)]
                                              for model, by_run in tested.items()}
            if on_corrupted is not None:
                on_corrupted(family, severity, measured[family, severity])
        report["corruptions"] = corruption_table(measured, results)
        report["corruptions"]["seconds"] = round(time.perf_counter() - started, 1)
    return report


def corruption_table(measured: dict[tuple[str, int], dict[str, list[float]]],
                     clean: dict[str, Any]) -> dict[str, Any]:
    """The paper's table from per-run accuracies ``measured[family, severity][model]``: per model its clean
    accuracy, per family the accuracy of each run (the mean over the severities when there are several) with
    mean and std over runs (and per severity when several), and the mean over families (per run, then over runs).
    """
    families = list(dict.fromkeys(family for family, _ in measured))
    severities = sorted({severity for _, severity in measured})
    table: dict[str, Any] = {}
    for model in clean:
        runs = len(clean[model]["accuracies"])
        per_family: dict[str, Any] = {}
        per_run: dict[str, list[float]] = {}
        for family in families:
            by_severity = {severity: measured[family, severity][model] for severity in severities
                           if (family, severity) in measured}
            per_run[family] = [statistics.mean(values[run] for values in by_severity.values()) for run in range(runs)]
            per_family[family] = _summary(per_run[family])
            if len(by_severity) > 1:
                per_family[family]["severities"] = {str(s): _summary(values) for s, values in by_severity.items()}
        table[model] = {"clean": {key: clean[model][key] for key in ("mean", "std")}, "families": per_family}
        if families:
            table[model]["mean"] = _summary([statistics.mean(per_run[f][run] for f in families) for run in range(runs)])
    return {"families": families, "severities": severities, "results": table}
