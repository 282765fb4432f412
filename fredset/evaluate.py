"""The evaluation protocol (fact sheet section 7): train fresh networks on distilled data, test them.

A fresh network per run, SGD (momentum 0.9, weight decay 5e-4), batch 256, learning rate x0.1
halfway, DSA on every batch (independent per sample), test accuracy on the full test set after
the LAST epoch (no selection on the test set), mean and std over runs, for each model asked for.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from .distill.augment import DSA, STRATEGY
from .errors import FredsetError
from .models import backward_in_micro_batches, build_model, init_parameters, micro_batch_size

DEFAULT_LR = 0.01


def train_network(images: torch.Tensor, labels: torch.Tensor, *, model: str, num_classes: int, epochs: int,
                  lr: float, generator: torch.Generator, batch_size: int = 256, dsa: DSA | None = None,
                  momentum: float = 0.9, weight_decay: float = 5e-4) -> torch.nn.Module:
    """A fresh ``model`` trained from scratch on ``images`` (on their device) with hard ``labels``."""
    device = images.device
    net = init_parameters(build_model(model, images.shape[1], num_classes, tuple(images.shape[-2:])), generator)
    net = net.to(device).train()
    optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    labels = labels.to(device)
    micro_batch = micro_batch_size(images.shape[-2:])
    for epoch in range(epochs):
        if epoch == epochs // 2 and epochs > 1:
            for group in optimizer.param_groups:
                group["lr"] = lr * 0.1
        order = torch.randperm(len(images), generator=generator).to(device)
        for start in range(0, len(images), batch_size):
            index = order[start:start + batch_size]
            batch = images[index]
            if dsa is not None:
                batch = dsa(batch, generator=generator, siamese=False)
            optimizer.zero_grad(set_to_none=True)
            backward_in_micro_batches(net, batch, labels[index], micro_batch)
            optimizer.step()
    return net.eval()


@torch.no_grad()
def test_accuracy(net: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000) -> float:
    """Top-1 accuracy of ``net`` on the whole test set."""
    device = next(net.parameters()).device
    correct = 0
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size].to(device)
        correct += int((net(batch).argmax(dim=1).cpu() == labels[start:start + batch_size]).sum())
    return correct / len(images)


def evaluate(images: torch.Tensor, labels: torch.Tensor, test: Any, *, models: Sequence[str] = ("convnet",),
             runs: int = 5, epochs: int = 1000, lr: float = DEFAULT_LR, seed: int = 0, batch_size: int = 256,
             dsa: str = STRATEGY, on_run: Callable[[str, int, float], None] | None = None) -> dict[str, Any]:
    """Train ``runs`` fresh networks of each of ``models`` on (images, labels); test each on ``test``.

    Returns {"protocol": {...}, "results": {model: {"accuracies", "mean", "std"}}} (accuracies in %).
    """
    if runs < 1 or epochs < 1:
        raise FredsetError(f"--runs and --epochs must be at least 1 (got {runs}, {epochs})")
    num_classes = int(test.num_classes)
    if int(labels.max()) >= num_classes or images.shape[1:] != test.images.shape[1:]:
        raise FredsetError(f"the data ({tuple(images.shape[1:])}, {int(labels.max()) + 1} classes) does not match "
                           f"the test set {test.name} ({tuple(test.images.shape[1:])}, {num_classes} classes)")
    augment = DSA(dsa) if dsa and dsa != "none" else None
    results: dict[str, Any] = {}
    started = time.perf_counter()
    for model in models:
        accuracies = []
        for run in range(runs):
            generator = torch.Generator().manual_seed(seed * 1000 + run)
            net = train_network(images, labels, model=model, num_classes=num_classes, epochs=epochs, lr=lr,
                                generator=generator, batch_size=batch_size, dsa=augment)
            accuracy = 100.0 * test_accuracy(net, test.images, test.labels)
            accuracies.append(round(accuracy, 2))
            if on_run is not None:
                on_run(model, run, accuracy)
        results[model] = {"accuracies": accuracies, "mean": round(statistics.mean(accuracies), 2),
                          "std": round(statistics.pstdev(accuracies), 2)}
    protocol = {"runs": runs, "epochs": epochs, "lr": lr, "lr_schedule": "x0.1 at epochs//2", "batch_size": batch_size,
                "optimizer": "SGD momentum 0.9 weight decay 5e-4", "dsa": dsa, "seed": seed,
                "test_set": test.name, "test_images": len(test.images), "selection": "final epoch",
                "seconds": round(time.perf_counter() - started, 1)}
    return {"protocol": protocol, "results": results}
