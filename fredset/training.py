"""Training a network from scratch on a fixed set of images: the one loop behind the evaluation protocol, the
expert trajectories of TM and DC's inner loop (docs/ALGORITHM.md, Evaluation protocol and Expert trajectories).

Each epoch draws a fresh permutation from the explicit ``generator``, walks it in batches, augments each
batch with DSA drawn independently per sample (when given) and takes one optimiser step per batch. The
batch's gradient is accumulated micro-batch by micro-batch (:func:`~fredset.models.backward_in_micro_batches`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .augment import DSA
from .models import backward_in_micro_batches, build_model, init_parameters, micro_batch_size

__all__ = ["EpochStats", "fresh_network", "test_accuracy", "train_epochs"]


@dataclass(frozen=True)
class EpochStats:
    """What one epoch of :func:`train_epochs` did: ``epoch`` counts from 1; ``lr`` is the first parameter
    group's learning rate during the epoch; loss and accuracy are means over the epoch's (augmented) batches."""

    epoch: int
    lr: float
    loss: float
    accuracy: float
    seconds: float


def fresh_network(model: str, channels: int, num_classes: int, image_size: Sequence[int],
                  generator: torch.Generator, device: torch.device | str = "cpu") -> nn.Module:
    """A new ``model`` with its initial parameters drawn from ``generator``, on ``device``, in train mode."""
    net = init_parameters(build_model(model, channels, num_classes, tuple(image_size)), generator)
    return net.to(device).train()


def train_epochs(net: nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor, labels: torch.Tensor, *,
                 epochs: int, generator: torch.Generator, batch_size: int = 256, augment: DSA | None = None,
                 decay_at: int | None = None, on_epoch: Callable[[EpochStats], None] | None = None) -> None:
    """Train ``net`` in place for ``epochs`` epochs on ``images`` (on the network's device) and ``labels``.

    ``decay_at``: at the start of that epoch (counting from 0) every learning rate is multiplied by 0.1.
    ``on_epoch`` receives each epoch's :class:`EpochStats` (it may raise to stop training).
    """
    device = images.device
    labels = labels.to(device)
    micro_batch = micro_batch_size(images.shape[-2:])
    count = len(images)
    for epoch in range(epochs):
        if decay_at is not None and epoch == decay_at:
            for group in optimizer.param_groups:
                group["lr"] = group["lr"] * 0.1
        started = time.perf_counter()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.int64)
        order = torch.randperm(count, generator=generator).to(device)
        for start in range(0, count, batch_size):
            index = order[start:start + batch_size]
            batch = images[index]
            if augment is not None:
                batch = augment(batch, generator=generator, siamese=False)
            target = labels[index]
            optimizer.zero_grad(set_to_none=True)
            loss, output = backward_in_micro_batches(net, batch, target, micro_batch)
            optimizer.step()
            if on_epoch is not None:
                loss_sum += loss * len(index)
                correct += (output.argmax(dim=1) == target).sum()
        if on_epoch is not None:
            on_epoch(EpochStats(epoch=epoch + 1, lr=float(optimizer.param_groups[0]["lr"]),
                                loss=float(loss_sum) / count, accuracy=int(correct) / count,
                                seconds=time.perf_counter() - started))


@torch.no_grad()
def test_accuracy(net: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000) -> float:
    """Top-1 accuracy (a fraction) of ``net`` on the whole of ``images``."""
    device = next(net.parameters()).device
    correct = 0
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size].to(device)
        correct += int((net(batch).argmax(dim=1).cpu() == labels[start:start + batch_size]).sum())
    return correct / len(images)
