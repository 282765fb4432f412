"""DM, distribution matching (docs/ALGORITHM.md, Distribution matching): match mean embeddings of a random network."""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from ...models import build_model, init_parameters, micro_batch_size
from ...augment import DSA
from ...distributed import Context, all_reduce_sum, owned_classes
from ..synset import SynSet
from .base import Objective


class DistributionMatching(Objective):
    """Every iteration a fresh randomly initialised, frozen network; for each class, ``batch_real``
    real images and the class's synthetic images get the same (siamese) DSA transformation; the
    loss sums, over classes, the squared distance between their mean embeddings; one step.

    ``autocast`` runs the real-image embedding (no gradient, the dominant cost) in bfloat16 on
    CPU; the synthetic pass stays float32.

    Over several processes (:meth:`distribute`) each rank replays every draw and does the work of its own
    classes only (fredset.distributed explains why this equals the single-process run up to rounding).
    """

    name = "dm"
    summary = "distribution matching"
    default_lr = {"freq": 1e6, "pixel": 1.0}
    budget_lr = 1e5  # docs/RESULTS.md, Byte budgets: choosing k and bits (1e6 gains nothing at 24-39 instances)
    distributed = True

    def __init__(self, real: Any, *, model: str = "convnet", batch_real: int = 256, dsa: DSA | None = None,
                 autocast: bool = False, device: torch.device | str = "cpu") -> None:
        self.real = real
        self.model = model
        self.batch_real = batch_real
        self.dsa = dsa
        self.autocast = autocast
        self.device = torch.device(device)
        self.context: Context | None = None
        self.owned: list[int] | None = None  # this rank's classes when distributed

    def distribute(self, context: Context) -> None:
        self.context = context
        self.owned = owned_classes(self.real.num_classes, context)

    @classmethod
    def build(cls, config: Any, prepared: Any, real: Any, dsa: DSA | None,
              device: torch.device) -> DistributionMatching:
        return cls(real, model=config.model, batch_real=config.batch_real, dsa=dsa,
                   autocast=config.precision == "bf16", device=device)

    def hyperparameters(self) -> dict[str, Any]:
        return {"model": self.model, "batch_real": self.batch_real,
                "dsa": self.dsa.strategy if self.dsa is not None else None,
                "real_embedding_dtype": "bfloat16" if self.autocast else "float32"}

    def iteration(self, synset: SynSet, optimizer: torch.optim.Optimizer, generator: torch.Generator) -> float:
        optimizer.zero_grad(set_to_none=True)
        if self.owned is not None:
            value = self._backward_owned_classes(synset, generator)
        elif sum(synset.counts) <= micro_batch_size(self.real.image_size):
            loss = self.loss(synset, generator)
            loss.backward()
            value = float(loss.detach())
        else:
            value = self._backward_per_class(synset, generator)
        optimizer.step()
        return value

    def _draw(self, synset: SynSet, generator: torch.Generator,
              owned: set[int] | None = None) -> tuple[torch.nn.Module, list, list]:
        """This iteration's frozen network, real batches and DSA parameters, drawn in one fixed order.

        With ``owned``, the other classes' draws are made all the same (the generator ends where it would),
        but their images are neither gathered nor augmented: their real batch is None."""
        net = build_model(self.model, self.real.channels, self.real.num_classes, self.real.image_size)
        init_parameters(net, generator)
        net = net.to(self.device).train()
        for parameter in net.parameters():
            parameter.requires_grad_(False)
        real_batches, augmentations = [], []
        for label in range(self.real.num_classes):
            if owned is None or label in owned:
                real = self.real.sample(label, self.batch_real, generator=generator).to(self.device)
            else:
                self.real.sample_indices(label, self.batch_real, generator=generator)
                real = None
            params = None
            if self.dsa is not None:
                params = self.dsa.sample(1, self.real.image_size, generator=generator, siamese=True,
                                         device=self.device)
                if real is not None:
                    real = self.dsa.apply(real, params)
            real_batches.append(real)
            augmentations.append(params)
        return net, real_batches, augmentations

    def loss(self, synset: SynSet, generator: torch.Generator) -> torch.Tensor:
        """The DM loss under one fresh network, real sample and augmentation drawn from ``generator``."""
        net, real_batches, augmentations = self._draw(synset, generator)
        synthetic = synset.decode()
        synthetic_batches = []
        for block, params in zip(torch.split(synthetic, synset.counts), augmentations):
            synthetic_batches.append(self.dsa.apply(block, params) if params is not None else block)
        # Instance norm and convolutions act per image, so batching across classes equals per-class
        # passes; the real side needs no graph.
        real_features = self._embed_real(net, torch.cat(real_batches))
        synthetic_features = net.embed(torch.cat(synthetic_batches))
        real_means = real_features.view(self.real.num_classes, self.batch_real, -1).mean(dim=1)
        synthetic_means = torch.stack([block.mean(dim=0) for block in
                                       torch.split(synthetic_features, synset.counts)])
        return (real_means - synthetic_means).square().sum()

    def _backward_per_class(self, synset: SynSet, generator: torch.Generator) -> float:
        """The same loss and gradient for a synthetic set larger than a micro-batch: the loss is a sum over
        classes and class c's term depends on class c's coefficients only, so each term is decoded,
        embedded and back-propagated on its own and its graph freed (one class's activations at a time
        instead of the whole set's). Equal to :meth:`loss` up to float rounding; same draws."""
        net, real_batches, augmentations = self._draw(synset, generator)
        real_means = self._embed_real(net, torch.cat(real_batches)).view(
            self.real.num_classes, self.batch_real, -1).mean(dim=1)
        total = 0.0
        for label, params in enumerate(augmentations):
            mine = synset.decode_class(label)
            if params is not None:
                mine = self.dsa.apply(mine, params)
            term = (real_means[label] - net.embed(mine).mean(dim=0)).square().sum()
            term.backward()
            total += float(term.detach())
        return total

    def _backward_owned_classes(self, synset: SynSet, generator: torch.Generator) -> float:
        """:meth:`_backward_per_class` for this rank's classes, after the same draws for all of them. The loss is
        computed as the single-process run computes it: when that run takes :meth:`loss` (the set fits a
        micro-batch), from every class's difference of means gathered into one matrix; else as the sum, in
        class order, of every rank's terms. Both gathers add zeros to each rank's own entries: exact."""
        owned = self.owned or []
        net, real_batches, augmentations = self._draw(synset, generator, owned=set(owned))
        batched = sum(synset.counts) <= micro_batch_size(self.real.image_size)
        terms = torch.zeros(self.real.num_classes, dtype=torch.float64, device=self.device)
        differences = None
        if owned:
            real_means = self._embed_real(net, torch.cat([real_batches[label] for label in owned])).view(
                len(owned), self.batch_real, -1).mean(dim=1)
            for row, label in enumerate(owned):
                mine = synset.decode_class(label)
                if augmentations[label] is not None:
                    mine = self.dsa.apply(mine, augmentations[label])
                difference = real_means[row] - net.embed(mine).mean(dim=0)
                term = difference.square().sum()
                term.backward()
                terms[label] = term.detach().double()
                if batched:
                    if differences is None:
                        differences = torch.zeros(self.real.num_classes, difference.numel(), device=self.device)
                    differences[label] = difference.detach()
        if batched:
            if differences is None:  # a rank without classes (more ranks than classes) still takes part
                with torch.no_grad():
                    width = net.embed(torch.zeros(1, self.real.channels, *self.real.image_size,
                                                  device=self.device)).shape[-1]
                differences = torch.zeros(self.real.num_classes, width, device=self.device)
            return float(all_reduce_sum(differences, self.context).square().sum())
        total = 0.0
        for value in all_reduce_sum(terms, self.context).tolist():
            total += value
        return total

    @torch.no_grad()
    def _embed_real(self, net: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
        """Embed in micro-batches whose first activation is ~16 MB: one batch of 2,560 has gigabyte
        activations that miss every cache and are page-faulted afresh each time (docs/RESULTS.md). Exact."""
        chunk = micro_batch_size(images.shape[-2:])
        with self._real_precision():
            return torch.cat([net.embed(images[start:start + chunk]).float()
                              for start in range(0, len(images), chunk)])

    def _real_precision(self):
        if self.autocast:
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()
