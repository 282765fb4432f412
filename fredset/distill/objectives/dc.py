"""DC, gradient matching (docs/ALGORITHM.md, Gradient matching): make the synthetic data's gradients point
like the real data's."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from ...training import fresh_network, train_epochs
from ...augment import DSA
from ...distributed import Context, all_reduce_sum, broadcast_from, owned_classes, owner
from ..synset import SynSet
from .base import Objective

# (outer loop, inner loop) per ipc, from the reference; other budgets use the largest ipc below them, and
# budgets below ipc 1 (small byte budgets) the ipc 1 row.
LOOPS = {1: (1, 1), 10: (10, 50), 20: (20, 25), 30: (30, 20), 40: (40, 15), 50: (50, 10)}


def loops_for(ipc: float) -> tuple[int, int]:
    """The reference's (outer, inner) loop counts for a budget."""
    keys = [key for key in sorted(LOOPS) if key <= ipc] or [min(LOOPS)]
    return LOOPS[keys[-1]]


def gradient_distance(real: Sequence[torch.Tensor], synthetic: Sequence[torch.Tensor]) -> torch.Tensor:
    """Sum over parameter tensors of sum over rows of (1 - cosine), as the reference computes it.

    Conv weights [out, in, h, w] become rows [out, in*h*w]; 1-D tensors (biases, norm affine)
    contribute 0. The denominator carries the reference's +1e-6.
    """
    total = synthetic[0].new_zeros(())
    for grad_real, grad_synthetic in zip(real, synthetic):
        if grad_real.dim() == 1:
            continue
        rows_real = grad_real.reshape(grad_real.shape[0], -1)
        rows_synthetic = grad_synthetic.reshape(grad_synthetic.shape[0], -1)
        cosine = (rows_real * rows_synthetic).sum(dim=-1) / (
            rows_real.norm(dim=-1) * rows_synthetic.norm(dim=-1) + 1e-6)
        total = total + (1 - cosine).sum()
    return total


class GradientMatching(Objective):
    """Every iteration a fresh network with its own SGD (lr_net); ``outer`` times: for each class,
    the distance between the gradient of the loss on ``batch_real`` real images (detached) and on
    the class's synthetic images (through the graph), summed over classes, one step on the
    synthetic set; between outer steps the network trains ``inner`` epochs on the synthetic set.
    DSA, when given, is siamese per class in matching and per sample in the inner training.

    Over several processes (:meth:`distribute`) every rank trains the same network, replays every class's draws
    and matches the gradients of its own classes only (class c's term depends on class c's images alone); before
    each inner training the ranks gather the decoded images from their owners (fredset.distributed).
    """

    name = "dc"
    summary = "gradient matching"
    default_lr = {"freq": 1e3, "pixel": 0.1}
    default_dsa = False  # the reference DC script never enables DSA
    distributed = True

    @classmethod
    def build(cls, config: Any, prepared: Any, real: Any, dsa: DSA | None, device: torch.device) -> GradientMatching:
        outer, inner = loops_for(config.ipc)
        return cls(real, outer=outer, inner=inner, model=config.model, batch_real=config.batch_real, dsa=dsa,
                   device=device)

    def __init__(self, real: Any, *, outer: int, inner: int, model: str = "convnet", batch_real: int = 256,
                 batch_train: int = 256, lr_net: float = 0.01, dsa: DSA | None = None,
                 device: torch.device | str = "cpu") -> None:
        self.real = real
        self.outer, self.inner = outer, inner
        self.model = model
        self.batch_real, self.batch_train = batch_real, batch_train
        self.lr_net = lr_net
        self.dsa = dsa
        self.device = torch.device(device)
        self.context: Context | None = None
        self.owned: list[int] | None = None  # this rank's classes when distributed

    def distribute(self, context: Context) -> None:
        self.context = context
        self.owned = owned_classes(self.real.num_classes, context)

    def hyperparameters(self) -> dict[str, Any]:
        return {"model": self.model, "batch_real": self.batch_real, "batch_train": self.batch_train,
                "outer_loop": self.outer, "inner_loop": self.inner, "lr_net": self.lr_net,
                "dsa": self.dsa.strategy if self.dsa is not None else None}

    def iteration(self, synset: SynSet, optimizer: torch.optim.Optimizer, generator: torch.Generator) -> float:
        net = fresh_network(self.model, self.real.channels, self.real.num_classes, self.real.image_size, generator,
                            self.device)
        net_optimizer = torch.optim.SGD(net.parameters(), lr=self.lr_net)
        losses = []
        for outer in range(self.outer):
            optimizer.zero_grad(set_to_none=True)
            if self.owned is None:
                loss = self.loss(synset, net, generator)
                loss.backward()
                losses.append(float(loss.detach()))
            else:
                losses.append(self._backward_owned_classes(synset, net, generator))
            optimizer.step()
            if outer < self.outer - 1:
                self._train_network(net, net_optimizer, synset, generator)
        return sum(losses) / len(losses)

    def loss(self, synset: SynSet, net: torch.nn.Module, generator: torch.Generator) -> torch.Tensor:
        """The summed gradient-matching distance of all classes under ``net``."""
        terms = self._terms(synset, net, generator, owned=None)
        total = terms[0].new_zeros(())
        for term in terms:
            total = total + term
        return total

    def _terms(self, synset: SynSet, net: torch.nn.Module, generator: torch.Generator,
               owned: set[int] | None) -> list[torch.Tensor | None]:
        """Per class, its gradient-matching distance under ``net``, after the draws for every class in one fixed
        order. With ``owned``, the other classes' draws are made all the same (the generator ends where it
        would), but their terms are not computed: None."""
        parameters = [p for p in net.parameters() if p.requires_grad]
        synthetic = synset.decode()
        terms: list[torch.Tensor | None] = []
        start = 0
        for label, count in enumerate(synset.counts):
            mine = synthetic[start:start + count]
            start += count
            if owned is not None and label not in owned:
                self.real.sample_indices(label, self.batch_real, generator=generator)
                if self.dsa is not None:
                    self.dsa.sample(1, self.real.image_size, generator=generator, siamese=True, device=self.device)
                terms.append(None)
                continue
            real = self.real.sample(label, self.batch_real, generator=generator).to(self.device)
            if self.dsa is not None:
                params = self.dsa.sample(1, self.real.image_size, generator=generator, siamese=True,
                                         device=self.device)
                real, mine = self.dsa.apply(real, params), self.dsa.apply(mine, params)
            target_real = torch.full((len(real),), label, device=self.device)
            target_mine = torch.full((len(mine),), label, device=self.device)
            grad_real = torch.autograd.grad(F.cross_entropy(net(real), target_real), parameters)
            grad_real = [g.detach() for g in grad_real]
            grad_mine = torch.autograd.grad(F.cross_entropy(net(mine), target_mine), parameters, create_graph=True)
            terms.append(gradient_distance(grad_real, grad_mine))
        return terms

    def _backward_owned_classes(self, synset: SynSet, net: torch.nn.Module, generator: torch.Generator) -> float:
        """Back-propagate this rank's classes' terms; the loss of all classes, summed in class order in float32
        as :meth:`loss` sums it, from every rank's terms (each rank adds zeros to the others' entries: exact)."""
        terms = self._terms(synset, net, generator, owned=set(self.owned or []))
        mine = [term for term in terms if term is not None]
        if mine:
            sum(mine).backward()
        values = torch.zeros(len(terms), device=self.device)
        for label, term in enumerate(terms):
            if term is not None:
                values[label] = term.detach()
        total = values.new_zeros(())
        for value in all_reduce_sum(values, self.context):
            total = total + value
        return float(total)

    def _train_network(self, net: torch.nn.Module, optimizer: torch.optim.Optimizer, synset: SynSet,
                       generator: torch.Generator) -> None:
        """``inner`` epochs of the network on the current synthetic set (DSA per sample); on several ranks each
        class's images come from the rank that owns it, so every rank trains the same network."""
        with torch.no_grad():
            images = synset.decode().detach()
            if self.owned is not None:
                start = 0
                for label, count in enumerate(synset.counts):
                    broadcast_from(images[start:start + count], owner(label, self.context), self.context)
                    start += count
        train_epochs(net, optimizer, images, synset.labels, epochs=self.inner, generator=generator,
                     batch_size=self.batch_train, augment=self.dsa)
