"""TM, trajectory matching (docs/ALGORITHM.md, Trajectory matching): a few SGD steps on the synthetic set should move a
network as far along an expert's trajectory as many epochs on the real data did.

Each iteration takes an expert snapshot at a random start epoch s (< max_start_epoch) and the one
``expert_epochs`` later; unrolls ``syn_steps`` SGD steps of the same network from the start on
decoded synthetic batches (DSA per sample) with a learned step size ``syn_lr``; the loss is the
squared distance of the end point to the target divided by the start's. The gradient flows back
through every unrolled step into the synthetic set and into ``syn_lr``.

The network is evaluated with :func:`torch.func.functional_call` on a tuple of parameter tensors,
so the unrolled steps are plain tensor expressions. Two ways to differentiate them, equal up to
float rounding:

- the whole unrolled graph kept in memory (the reference's way; about 3 MB per image and step for
  ConvNetD3), or
- ``checkpoint_steps``: the forward pass keeps only each step's parameters; the backward pass
  recomputes one step at a time and propagates the gradient through it. Memory is that of one step
  whatever ``syn_steps`` is; the cost is one extra plain forward/backward per step.

Over several processes (:meth:`TrajectoryMatching.distribute`) every rank holds the whole synthetic set and the
same network, and takes its share of every unrolled step's batch: the step's gradient is the sum over ranks of
each share's gradient (a differentiable all-reduce), so the parameters after each step, and the loss, are the same
on every rank while each keeps the graph of its own images only. The backward of that all-reduce sums over ranks
too; with the loss divided by the number of ranks the partial gradients of the ranks add up to the gradient of the
whole loss, so one more all-reduce of the images' and syn_lr's gradients gives every rank the single-process
meta-gradient (docs/ALGORITHM.md, Distributed runs).
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch.func import functional_call

from ...augment import DSA, AugmentParams
from ...distributed import Context, all_reduce_sum, all_reduce_sum_differentiable, owned_rows
from ...errors import FredsetError
from ...experts import ExpertBuffer
from ...models import build_model, micro_batch_size
from ..options import option
from ..synset import SynSet, default_k
from .base import Objective

# Per dataset and ipc: (syn_steps, max_start_epoch, lr_lr, lr_teacher), from the reference scripts
# (docs/ALGORITHM.md, Trajectory matching). expert_epochs is 2 everywhere.
TM_DEFAULTS: dict[str, dict[int, tuple[int, int, float, float]]] = {
    "mnist": {1: (50, 5, 1e-7, 0.01), 10: (30, 15, 1e-5, 0.01)},
    "fashion-mnist": {1: (50, 5, 1e-7, 0.01), 10: (60, 15, 1e-5, 0.01)},
    "svhn": {1: (50, 5, 1e-7, 0.01), 10: (30, 15, 1e-5, 0.01), 50: (40, 40, 1e-5, 1e-3)},
    "cifar10": {1: (50, 5, 1e-7, 0.01), 10: (40, 15, 1e-5, 0.01), 50: (30, 40, 1e-5, 1e-3)},
    "cifar100": {1: (50, 15, 1e-5, 0.01), 10: (20, 40, 1e-5, 0.01), 50: (80, 40, 1e-5, 0.01)},
    "tiny-imagenet": {1: (30, 30, 1e-4, 0.01), 10: (40, 40, 1e-4, 0.01), 50: (40, 40, 1e-4, 0.01)},
}
FALLBACK_DATASET = "cifar10"  # folders and .npz files get the CIFAR-10 settings
EXPERT_EPOCHS = 2
SYN_LR_MIN = 0.001  # the reference clips the learned step size here after every update
LR_MOMENTUM = 0.5
REFERENCE_K = 64  # the reference TM scripts' msz_per_channel


@dataclass(frozen=True)
class TMOptions:
    """TM's own options; None: the reference's value for the dataset and ipc (:func:`tm_defaults`)."""

    buffer: str | None = option(None, "TM: expert trajectories made by fredset buffer.", metavar="DIR")
    syn_steps: int | None = option(None, "TM: unrolled SGD steps per iteration (default: the reference's for "
                                   "the dataset and ipc, e.g. Fashion-MNIST 50 at ipc 1).", type=int, minimum=1)
    max_start_epoch: int | None = option(None, "TM: start epochs are drawn below this.", type=int, minimum=1)
    expert_epochs: int | None = option(None, f"TM: target = start + this many epochs (default {EXPERT_EPOCHS}).",
                                       type=int, minimum=1)
    lr_lr: float | None = option(None, "TM: learning rate of the learned step size syn_lr.", type=float, minimum=0)
    lr_teacher: float | None = option(None, "TM: initial syn_lr (default 0.01).", type=float)
    batch_syn: int | None = option(None, "TM: synthetic images per unrolled step (0: all).", type=int, minimum=0)
    checkpoint_steps: bool | None = option(None, "TM: recompute unrolled steps in the backward pass: the memory of "
                                           "one step, one extra forward/backward per step.", type=bool, flag=True)


def tm_defaults(dataset: str, ipc: float) -> dict[str, Any]:
    """The reference's TM settings for ``dataset`` at budget ``ipc``: the row of the largest ipc not above
    it (the smallest row below ipc 1); datasets without a row use CIFAR-10's."""
    table = TM_DEFAULTS.get(dataset, TM_DEFAULTS[FALLBACK_DATASET])
    keys = [key for key in sorted(table) if key <= ipc] or [min(table)]
    syn_steps, max_start_epoch, lr_lr, lr_teacher = table[keys[-1]]
    return {"syn_steps": syn_steps, "max_start_epoch": max_start_epoch, "lr_lr": lr_lr, "lr_teacher": lr_teacher,
            "expert_epochs": EXPERT_EPOCHS,
            "defaults_from": f"{dataset if dataset in TM_DEFAULTS else FALLBACK_DATASET} ipc {keys[-1]}"}


@dataclass
class Step:
    """What one unrolled step uses: which synthetic images and which augmentation (replayable)."""

    indices: torch.Tensor
    augment: AugmentParams | None


class TrajectoryMatching(Objective):
    """Match ``syn_steps`` SGD steps on the synthetic set to ``expert_epochs`` epochs of an expert.

    ``buffer`` is a :class:`fredset.experts.ExpertBuffer` (anything with ``experts``, ``epochs``,
    ``parameter_names``, ``manifest``, ``fingerprint`` and ``load(expert, epoch)``). ``syn_lr`` starts at
    ``lr_teacher`` and is trained by its own SGD (``lr_lr``, momentum 0.5), clipped at >= 0.001.
    ``batch_syn`` images per step (0: all); ``checkpoint_steps`` trades one extra forward/backward per
    step for the memory of a single step. Over several processes each rank takes a share of every step's batch.
    """

    name = "tm"
    summary = "trajectory matching (needs --buffer)"
    Options = TMOptions
    default_lr = {"freq": 1e8, "pixel": 1e3}  # pixel: MTT's lr_img for CIFAR-10 ipc 1
    default_dsa = True
    distributed = True

    def __init__(self, buffer: Any, *, syn_steps: int, max_start_epoch: int, lr_lr: float, lr_teacher: float,
                 expert_epochs: int = EXPERT_EPOCHS, batch_syn: int = 0, dsa: DSA | None = None,
                 checkpoint_steps: bool = False, autocast: bool = False,
                 device: torch.device | str = "cpu") -> None:
        if syn_steps < 1:
            raise FredsetError(f"--syn-steps must be at least 1, got {syn_steps}")
        if max_start_epoch < 1 or expert_epochs < 1:
            raise FredsetError(f"--max-start-epoch and --expert-epochs must be at least 1 "
                               f"(got {max_start_epoch}, {expert_epochs})")
        if batch_syn < 0:
            raise FredsetError(f"--batch-syn must be >= 0 (0: all images), got {batch_syn}")
        if not lr_lr >= 0 or not lr_teacher > 0:
            raise FredsetError(f"--lr-lr must be >= 0 and --lr-teacher > 0 (got {lr_lr:g}, {lr_teacher:g})")
        check_coverage(buffer, max_start_epoch, expert_epochs)
        self.buffer = buffer
        self.fingerprint = buffer.fingerprint  # recorded in provenance and checked on --resume
        manifest = buffer.manifest
        self.model = manifest["model"]
        self.syn_steps, self.max_start_epoch, self.expert_epochs = syn_steps, max_start_epoch, expert_epochs
        self.lr_lr, self.lr_teacher, self.batch_syn = lr_lr, lr_teacher, batch_syn
        self.dsa = dsa
        self.checkpoint_steps = checkpoint_steps
        self.autocast = autocast
        # The step's mean loss summed over micro-batches: the same value, but small tensors the allocator
        # recycles instead of page-faulting large ones afresh at every step (timings: docs/RESULTS.md).
        self.micro_batch = micro_batch_size(manifest["image_size"])
        self.device = torch.device(device)
        self.net = build_model(self.model, int(manifest["channels"]), int(manifest["num_classes"]),
                               tuple(manifest["image_size"])).to(self.device)
        names = [name for name, _ in self.net.named_parameters()]
        if names != list(buffer.parameter_names):
            raise FredsetError(f"the buffer's parameters do not fit a {self.model}", getattr(buffer, "directory", None))
        self.names = names
        self.num_parameters = sum(p.numel() for p in self.net.parameters())
        self.syn_lr = torch.tensor(float(lr_teacher), device=self.device, requires_grad=True)
        self.lr_optimizer = torch.optim.SGD([self.syn_lr], lr=lr_lr, momentum=LR_MOMENTUM)
        self.context: Context | None = None  # several ranks: each takes a share of every step's batch

    def distribute(self, context: Context) -> None:
        self.context = context

    @classmethod
    def default_k(cls, height: int, width: int) -> int:
        """The reference's k 64 where an image has room for it (>= 256 pixels), else H*W/16."""
        return REFERENCE_K if height * width >= 4 * REFERENCE_K else default_k(height, width)

    @classmethod
    def default_autocast(cls, device: torch.device) -> bool:
        return False  # the unrolled steps stay float32 unless bf16 is asked for

    @classmethod
    def resolve(cls, options: TMOptions, config: Any, real: Any) -> tuple[TMOptions, ExpertBuffer]:
        """Defaults from :func:`tm_defaults`; the buffer opened and checked against the data (so that the
        command fails before it starts, with one line)."""
        defaults = tm_defaults(real.name, config.ipc)
        values = {name: defaults[name] if value is None and name in defaults else value
                  for name, value in dataclasses.asdict(options).items()}
        values["batch_syn"] = values["batch_syn"] or 0
        values["checkpoint_steps"] = bool(values["checkpoint_steps"])
        resolved = TMOptions(**values)
        return resolved, open_buffer(resolved, config.model, real)

    @classmethod
    def build(cls, config: Any, prepared: ExpertBuffer, real: Any, dsa: DSA | None,
              device: torch.device) -> TrajectoryMatching:
        if dsa is not None:  # TM's reference augments with align_corners=True, per sample
            dsa = DSA(dsa.strategy, align_corners=True)
        options = {name: value for name, value in dataclasses.asdict(config.options).items() if name != "buffer"}
        return cls(prepared, **options, dsa=dsa, autocast=config.precision == "bf16", device=device)

    # ------------------------------------------------------------------ the iteration

    def iteration(self, synset: SynSet, optimizer: torch.optim.Optimizer, generator: torch.Generator) -> float:
        start, target = self.sample_segment(generator)
        images = synset.decode()
        leaf = images.detach().requires_grad_(True)  # the unroll differentiates w.r.t. decoded images once
        labels = synset.labels.to(self.device)
        plan = self.plan(len(leaf), tuple(leaf.shape[-2:]), generator)
        optimizer.zero_grad(set_to_none=True)
        self.lr_optimizer.zero_grad(set_to_none=True)
        if self.checkpoint_steps:
            loss = self._backward_checkpointed(start, target, leaf, labels, plan)
        else:
            end = self.unroll(start, leaf, labels, plan, create_graph=True)
            loss = self.matching_loss(end, start, target)
            (loss / self._ranks()).backward()
        if self.context is not None:
            self._sum_over_ranks(leaf)
        images.backward(leaf.grad)
        optimizer.step()
        self.lr_optimizer.step()
        with torch.no_grad():
            self.syn_lr.clamp_(min=SYN_LR_MIN)
        return float(loss.detach())

    def sample_segment(self, generator: torch.Generator) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """A random expert's snapshot at a random start epoch and its target ``expert_epochs`` later."""
        experts = list(self.buffer.experts)
        expert = experts[int(torch.randint(len(experts), (1,), generator=generator))]
        epoch = int(torch.randint(self.max_start_epoch, (1,), generator=generator))
        start = self.buffer.load(expert, epoch, device=self.device)
        target = self.buffer.load(expert, epoch + self.expert_epochs, device=self.device)
        return start, target

    def plan(self, count: int, image_size: tuple[int, int], generator: torch.Generator) -> list[Step]:
        """Per unrolled step, the batch (chunks of a fresh permutation, as the reference draws them) and
        its per-sample augmentation, drawn in advance so a checkpointed backward can replay them."""
        size = self.batch_syn or count
        steps: list[Step] = []
        chunks: list[torch.Tensor] = []
        for _ in range(self.syn_steps):
            if not chunks:
                chunks = list(torch.split(torch.randperm(count, generator=generator), size))
            indices = chunks.pop()
            augment = None
            if self.dsa is not None:
                augment = self.dsa.sample(len(indices), image_size, generator=generator, siamese=False,
                                          device=self.device)
            steps.append(Step(indices.to(self.device), augment))
        return steps

    def step(self, theta: list[torch.Tensor], images: torch.Tensor, labels: torch.Tensor, step: Step,
             syn_lr: torch.Tensor, *, create_graph: bool) -> list[torch.Tensor]:
        """One SGD step of the functional network from ``theta`` on one planned batch (on several ranks: the
        gradient of this rank's share of the batch, summed over the ranks)."""
        rows = owned_rows(len(step.indices), self.context)
        indices = step.indices[rows]
        batch, targets = images[indices], labels[indices]
        parameters = dict(zip(self.names, theta))
        if len(batch):
            if step.augment is not None:
                batch = self.dsa.apply(batch, step.augment if self.context is None else step.augment.rows(rows))
            with self._precision():
                loss = sum(F.cross_entropy(functional_call(self.net, parameters, (part,)), part_targets,
                                           reduction="sum")
                           for part, part_targets in zip(torch.split(batch, self.micro_batch),
                                                         torch.split(targets, self.micro_batch))) / len(step.indices)
            grads = torch.autograd.grad(loss, theta, create_graph=create_graph)
        else:  # a rank without images in this step (fewer than ranks) still takes part in the sums, forward and back
            grads = [p * 0 for p in theta]
        if self.context is not None:
            grads = self._summed(grads, differentiable=create_graph)
        return [p - syn_lr * g for p, g in zip(theta, grads)]

    def _summed(self, grads: list[torch.Tensor] | tuple[torch.Tensor, ...], *,
                differentiable: bool) -> list[torch.Tensor]:
        """The ranks' gradients summed, one collective for all parameters."""
        flat = torch.cat([g.reshape(-1) for g in grads])
        flat = all_reduce_sum_differentiable(flat, self.context) if differentiable else all_reduce_sum(
            flat.detach(), self.context)
        return [part.view_as(g) for part, g in zip(torch.split(flat, [g.numel() for g in grads]), grads)]

    def _ranks(self) -> int:
        return 1 if self.context is None else self.context.world_size

    def _sum_over_ranks(self, images: torch.Tensor) -> None:
        """Each rank holds its partial gradients of the images and syn_lr (the loss was divided by the number of
        ranks): their sums are the whole loss's, on every rank."""
        grad_images = images.grad if images.grad is not None else torch.zeros_like(images)
        flat = all_reduce_sum(torch.cat([grad_images.reshape(-1), self.syn_lr.grad.reshape(1)]), self.context)
        images.grad = flat[:-1].view_as(images)
        self.syn_lr.grad = flat[-1].reshape(())

    def unroll(self, start: list[torch.Tensor], images: torch.Tensor, labels: torch.Tensor, plan: list[Step],
               *, create_graph: bool = True) -> list[torch.Tensor]:
        """The parameters after the planned SGD steps from ``start`` (with the graph when asked)."""
        theta = [p.detach().requires_grad_(True) for p in start]
        syn_lr = self.syn_lr if create_graph else self.syn_lr.detach()
        for step in plan:
            theta = self.step(theta, images, labels, step, syn_lr, create_graph=create_graph)
            if not create_graph:
                theta = [p.detach().requires_grad_(True) for p in theta]
        return theta

    def matching_loss(self, end: list[torch.Tensor], start: list[torch.Tensor],
                      target: list[torch.Tensor]) -> torch.Tensor:
        """||end - target||^2 / ||start - target||^2 over all parameters (the reference's per-parameter
        means cancel)."""
        moved = sum((e - t).square().sum() for e, t in zip(end, target))
        needed = sum((s - t).square().sum() for s, t in zip(start, target))
        return moved / needed

    def _backward_checkpointed(self, start: list[torch.Tensor], target: list[torch.Tensor], images: torch.Tensor,
                               labels: torch.Tensor, plan: list[Step]) -> torch.Tensor:
        """Forward keeping each step's parameters only; then, last step first, recompute the step with its
        graph and push the gradient through it. Accumulates into images.grad and syn_lr.grad."""
        thetas = [[p.detach() for p in start]]
        syn_lr = self.syn_lr.detach()
        for step in plan:
            theta = [p.detach().requires_grad_(True) for p in thetas[-1]]
            thetas.append([p.detach() for p in self.step(theta, images, labels, step, syn_lr, create_graph=False)])
        end = [p.requires_grad_(True) for p in thetas.pop()]
        loss = self.matching_loss(end, start, target)
        grad_theta = list(torch.autograd.grad(loss / self._ranks(), end))
        grad_images = torch.zeros_like(images)
        grad_lr = torch.zeros_like(self.syn_lr)
        for step in reversed(plan):
            theta = [p.requires_grad_(True) for p in thetas.pop()]
            new = self.step(theta, images, labels, step, self.syn_lr, create_graph=True)
            grads = torch.autograd.grad(new, [*theta, images, self.syn_lr], grad_outputs=grad_theta,
                                        allow_unused=True)
            grad_theta = list(grads[:len(theta)])
            if grads[-2] is not None:
                grad_images += grads[-2]
            grad_lr += grads[-1]
        images.grad = grad_images
        self.syn_lr.grad = grad_lr
        return loss.detach()

    def _precision(self) -> contextlib.AbstractContextManager:
        if self.autocast:
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # ------------------------------------------------------------------ bookkeeping

    def recommended_lr(self) -> float:
        return float(self.syn_lr.detach())

    def hyperparameters(self) -> dict[str, Any]:
        return {"model": self.model, "syn_steps": self.syn_steps, "expert_epochs": self.expert_epochs,
                "max_start_epoch": self.max_start_epoch, "lr_lr": self.lr_lr, "lr_teacher": self.lr_teacher,
                "lr_momentum": LR_MOMENTUM, "syn_lr_min": SYN_LR_MIN, "batch_syn": self.batch_syn,
                "checkpoint_steps": self.checkpoint_steps,
                "unroll_dtype": "bfloat16" if self.autocast else "float32",
                "dsa": self.dsa.strategy if self.dsa is not None else None,
                "dsa_align_corners": self.dsa.align_corners if self.dsa is not None else None,
                "buffer": {"directory": str(getattr(self.buffer, "directory", "")),
                           "fingerprint": self.fingerprint, "experts": len(self.buffer),
                           "epochs_kept": list(self.buffer.epochs), "dataset": self.buffer.manifest.get("dataset")}}

    def state_dict(self) -> dict[str, torch.Tensor]:
        state = {"syn_lr": self.syn_lr.detach().cpu().reshape(1),
                 "buffer_fingerprint": torch.tensor(list(bytes.fromhex(self.fingerprint)), dtype=torch.uint8)}
        momentum = self.lr_optimizer.state.get(self.syn_lr, {}).get("momentum_buffer")
        if momentum is not None:
            state["syn_lr_momentum"] = momentum.detach().cpu().reshape(1)
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        saved = bytes(state["buffer_fingerprint"].tolist()).hex() if "buffer_fingerprint" in state else None
        if saved != self.fingerprint:
            raise FredsetError("the checkpoint was made with another expert buffer (its fingerprint differs: "
                               "experts were added or changed); use that buffer or another --checkpoint",
                               getattr(self.buffer, "directory", None))
        with torch.no_grad():
            self.syn_lr.copy_(state["syn_lr"].reshape(()))
        if "syn_lr_momentum" in state:
            self.lr_optimizer.state[self.syn_lr]["momentum_buffer"] = state["syn_lr_momentum"].reshape(()).to(
                self.device)


def open_buffer(options: TMOptions, model: str, real: Any) -> ExpertBuffer:
    """The ExpertBuffer that resolved TM options name, checked against the data and the model."""
    if not options.buffer:
        raise FredsetError("--objective tm needs --buffer DIR (expert trajectories from fredset buffer)")
    buffer = ExpertBuffer(options.buffer)
    manifest = buffer.manifest
    if (int(manifest["channels"]), int(manifest["num_classes"]), tuple(manifest["image_size"])) != (
            real.channels, real.num_classes, tuple(real.image_size)):
        raise FredsetError(f"the buffer's experts were trained on {manifest.get('dataset')} "
                           f"({manifest['channels']}x{manifest['image_size'][0]}x{manifest['image_size'][1]}, "
                           f"{manifest['num_classes']} classes), which does not fit {real.name}", options.buffer)
    if manifest.get("dataset") != real.name:
        raise FredsetError(f"the buffer's experts were trained on {manifest.get('dataset')}, not {real.name}",
                           options.buffer)
    if model != manifest["model"]:
        raise FredsetError(f"--model {model} differs from the buffer's experts ({manifest['model']})",
                           options.buffer)
    check_coverage(buffer, options.max_start_epoch, options.expert_epochs)
    return buffer


def check_coverage(buffer: Any, max_start_epoch: int, expert_epochs: int) -> None:
    """The buffer has a finished expert and every snapshot TM will read (starts below max_start_epoch,
    targets expert_epochs later)."""
    directory = getattr(buffer, "directory", None)
    if len(buffer) < 1:
        raise FredsetError("the expert buffer has no finished expert yet; run fredset buffer first", directory)
    last = max_start_epoch + expert_epochs - 1
    missing = sorted(set(range(last + 1)) - set(buffer.epochs))
    if missing:
        raise FredsetError(f"TM with --max-start-epoch {max_start_epoch} and --expert-epochs {expert_epochs} "
                           f"needs expert snapshots 0..{last}, but the buffer lacks {missing}; "
                           f"make it with --epochs and --keep-epochs >= {last}", directory)
