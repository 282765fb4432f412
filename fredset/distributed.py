"""Several processes on one job (``torchrun``): the process group, which classes a rank owns, and the few
collectives fredset needs (docs/ALGORITHM.md, Distributed runs).

``torchrun --nproc-per-node N -m fredset_cli distill ...`` starts N copies of the command with ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` in their environment.
:func:`init_from_environment` joins them into one process group, ``gloo`` on the CPU and ``nccl`` on CUDA
(one device per local rank). Without ``WORLD_SIZE``, or with ``WORLD_SIZE=1``, no process group is made at
all and every helper here is a no-op: a plain command takes exactly the code path it took before this
module existed, so its files are byte for byte what they were.

How DM and DC are sharded, and why not with per-class generators (TM splits each unrolled batch instead:
fredset.distill.objectives.tm). Classes are dealt round-robin
(:func:`owned_classes`). Every rank keeps the one generator of the single-process run and replays all of
its draws in the same order every iteration: the network's initialisation, then for every class its real
sample's indices and its DSA parameters. Those draws are cheap; what costs (gathering and embedding real
images, decoding, augmenting and back-propagating the synthetic ones) is done for the rank's own classes
only. Class c's loss term depends on class c's coefficients alone, so each rank's gradients are exactly the
gradients of the whole loss for its classes, and the result does not depend on the number of processes up
to float rounding (how a set is split into batches). Per-class generators would have made the ranks
independent of each other's draws too, but would change the random stream of every single-process run:
its files would no longer be byte-identical to those made before.

Collectives time out after :data:`TIMEOUT` (``FREDSET_DIST_TIMEOUT``, seconds, overrides it), so a rank
that dies or hangs ends the job with an error on the others instead of a hang (torchrun also stops the
other workers as soon as one exits with an error). Waiting for ranks that do unequal amounts of work (the
evaluation runs: one rank may train one network more than another) goes through a second group that waits
up to :data:`WORK_TIMEOUT`, since one training run may take longer than any collective should.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from .errors import FredsetError

try:  # differentiable collectives: PyTorch's replacement for the deprecated torch.distributed.nn.functional
    from torch.distributed import _functional_collectives as _collectives
except ImportError:  # a PyTorch built without torch.distributed: only single processes run
    _collectives = None

__all__ = ["TIMEOUT", "TIMEOUT_VARIABLE", "WORK_TIMEOUT", "Context", "all_reduce_sum", "all_reduce_sum_differentiable",
           "barrier", "broadcast_from", "gather_objects", "init_from_environment", "main_first", "owned_classes",
           "owned_rows", "owner", "shutdown", "timeout"]

TIMEOUT = datetime.timedelta(minutes=10)
"""How long a collective waits for the other ranks before it fails (the whole job then ends)."""
TIMEOUT_VARIABLE = "FREDSET_DIST_TIMEOUT"
"""Environment variable that overrides :data:`TIMEOUT`, in seconds (tests use a few)."""
WORK_TIMEOUT = datetime.timedelta(hours=24)
"""How long a rank waits for the others to finish work of unequal length (their evaluation runs)."""


@dataclass(frozen=True)
class Context:
    """Where this process stands in the job: ``rank`` of ``world_size`` (``local_rank`` on its machine).

    ``backend`` is the process group's (``gloo``, ``nccl``), None when there is none (a single process);
    ``device`` is the device this rank works on (``cuda:LOCAL_RANK`` on CUDA).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes files and prints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Context:
        """The rank and world size torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``), without joining
        anything; a single process (rank 0 of 1) when ``WORLD_SIZE`` is absent."""
        environ = os.environ if environ is None else environ
        world_size = _integer(environ, "WORLD_SIZE", 1)
        if world_size < 1:
            raise FredsetError(f"WORLD_SIZE must be at least 1, got {world_size}")
        if world_size == 1:
            return cls()
        rank = _integer(environ, "RANK", None)
        if not 0 <= rank < world_size:
            raise FredsetError(f"RANK {rank} is outside 0..{world_size - 1} (WORLD_SIZE {world_size})")
        return cls(rank=rank, world_size=world_size, local_rank=_integer(environ, "LOCAL_RANK", rank))


def _integer(environ: Mapping[str, str], name: str, default: int | None) -> int:
    text = environ.get(name)
    if text is None or not text.strip():
        if default is None:
            raise FredsetError(f"{name} is not set but WORLD_SIZE is: start several processes with torchrun")
        return default
    try:
        return int(text)
    except ValueError:
        raise FredsetError(f"{name} must be an integer, got {text!r}") from None


def timeout(environ: Mapping[str, str] | None = None) -> datetime.timedelta:
    """:data:`TIMEOUT`, or ``FREDSET_DIST_TIMEOUT`` seconds when that is set."""
    text = (os.environ if environ is None else environ).get(TIMEOUT_VARIABLE)
    if text is None or not text.strip():
        return TIMEOUT
    try:
        seconds = float(text)
    except ValueError:
        seconds = float("nan")
    if not seconds > 0 or seconds == float("inf"):
        raise FredsetError(f"{TIMEOUT_VARIABLE} must be a positive number of seconds, got {text!r}")
    return datetime.timedelta(seconds=seconds)


_work_group: Any = None  # the gloo group with WORK_TIMEOUT, made with the process group


def init_from_environment(device: torch.device | str = "cpu") -> Context:
    """Join the job's process group when ``WORLD_SIZE`` > 1 and return this process's :class:`Context`.

    ``device`` is what the command was asked to run on: ``cpu`` (gloo) or ``cuda`` (nccl, each rank on
    ``cuda:LOCAL_RANK``; an explicit ``cuda:N`` is refused, it would put every rank on one device).
    With one process nothing is joined and the context says so (``backend`` None, ``device`` unchanged).
    """
    global _work_group
    context = Context.from_environment()
    device = torch.device(device)
    if not context.distributed:
        return Context(device=device)
    import torch.distributed as dist

    if not dist.is_available():
        raise FredsetError("this PyTorch has no torch.distributed: run one process (WORLD_SIZE 1)")
    if device.type == "cuda":
        if device.index is not None:
            raise FredsetError(f"--device {device} names one device, but each of the {context.world_size} processes "
                               "uses its own (cuda:LOCAL_RANK): pass --device cuda or auto")
        if context.local_rank >= torch.cuda.device_count():
            raise FredsetError(f"LOCAL_RANK {context.local_rank} has no CUDA device (this machine has "
                               f"{torch.cuda.device_count()}): start at most that many processes per machine")
        device = torch.device("cuda", context.local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    elif device.type == "cpu":
        backend = "gloo"
    else:
        raise FredsetError(f"--device {device}: several processes run on cpu (gloo) or cuda (nccl)")
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        if not os.environ.get(name):
            raise FredsetError(f"{name} is not set but WORLD_SIZE is {context.world_size}: start several "
                               "processes with torchrun")
    limit = timeout()
    if not dist.is_initialized():
        dist.init_process_group(backend, rank=context.rank, world_size=context.world_size, timeout=limit)
        _work_group = dist.new_group(backend="gloo", timeout=max(WORK_TIMEOUT, limit))
    return Context(rank=context.rank, world_size=context.world_size, local_rank=context.local_rank,
                   backend=backend, device=device)


def shutdown() -> None:
    """Leave the process group (if one was joined); a no-op in a single process."""
    global _work_group
    if _joined():
        import torch.distributed as dist

        dist.destroy_process_group()
    _work_group = None


def _joined() -> bool:
    if not torch.distributed.is_available():
        return False
    return torch.distributed.is_initialized()


def _active(context: Context | None) -> bool:
    return context is not None and context.distributed and context.backend is not None


# -- which rank does what -------------------------------------------------------------------------------------

def owner(label: int, context: Context | None) -> int:
    """The rank that owns class ``label``: classes are dealt round-robin."""
    return 0 if context is None else int(label) % context.world_size


def owned_classes(num_classes: int, context: Context | None) -> list[int]:
    """The classes this rank optimises (all of them in a single process)."""
    if context is None:
        return list(range(num_classes))
    return list(range(context.rank, num_classes, context.world_size))


def owned_rows(count: int, context: Context | None) -> slice:
    """This rank's contiguous share of a batch of ``count`` items (sizes differ by at most one; a rank's share is
    empty when there are fewer items than ranks); the whole batch in a single process."""
    if context is None or not context.distributed:
        return slice(0, count)
    return slice(count * context.rank // context.world_size, count * (context.rank + 1) // context.world_size)


# -- collectives (no-ops in a single process) ---------------------------------------------------------------

def all_reduce_sum(tensor: torch.Tensor, context: Context | None) -> torch.Tensor:
    """Sum ``tensor`` over the ranks, in place; returns it."""
    if _active(context):
        torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.SUM)
    return tensor


def all_reduce_sum_differentiable(tensor: torch.Tensor, context: Context | None) -> torch.Tensor:
    """The sum of ``tensor`` over the ranks as a new tensor in the autograd graph; its backward sums the incoming
    gradients over the ranks as well. ``tensor`` itself in a single process."""
    if not _active(context):
        return tensor
    return _collectives.wait_tensor(_collectives.all_reduce(tensor, "sum", torch.distributed.group.WORLD))


def broadcast_from(tensor: torch.Tensor, source: int, context: Context | None) -> torch.Tensor:
    """Rank ``source``'s ``tensor`` on every rank (in place: a contiguous tensor, or a view of one)."""
    if _active(context):
        torch.distributed.broadcast(tensor, src=source)
    return tensor


def barrier(context: Context | None, *, unequal_work: bool = False) -> None:
    """Wait for every rank (up to :data:`WORK_TIMEOUT` with ``unequal_work``, else :data:`TIMEOUT`)."""
    if _active(context):
        torch.distributed.barrier(group=_work_group if unequal_work else None)


def gather_objects(value: Any, context: Context | None, *, unequal_work: bool = False) -> list[Any]:
    """Every rank's ``value`` (picklable) in rank order, on every rank; ``[value]`` in a single process.

    ``unequal_work``: the ranks may arrive here far apart (each trained its own share of networks), so wait up
    to :data:`WORK_TIMEOUT` rather than :data:`TIMEOUT`.
    """
    if not _active(context):
        return [value]
    gathered: list[Any] = [None] * context.world_size
    group = _work_group if unequal_work else None
    torch.distributed.all_gather_object(gathered, value, group=group)
    return gathered


@contextlib.contextmanager
def main_first(context: Context | None) -> Iterator[None]:
    """Run the block on rank 0 first, then on the others (a download into a shared folder happens once)."""
    if not _active(context):
        yield
        return
    if not context.is_main:
        barrier(context, unequal_work=True)
    yield
    if context.is_main:
        barrier(context, unequal_work=True)
