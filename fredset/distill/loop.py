"""The distillation loop: initialise, iterate an objective, checkpoint, resume, export an Artifact."""

from __future__ import annotations

import io
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import h5py
import numpy as np
import torch

from ..artifact import Artifact
from ..augment import DSA
from ..distributed import Context, broadcast_from, owner
from ..errors import FredsetError
from ..files import summarised_source, write_atomically
from .budget import fit_within
from .config import CITATION, DistillConfig, ResolvedRun
from .synset import SynSet, init_frequency_synset, init_pixel_synset

__all__ = ["CITATION", "DistillConfig", "ResolvedRun", "RunState", "distill"]

CHECKPOINT_VERSION = 1


@dataclass
class RunState:
    """What changes while a run goes on (checkpointed)."""

    iteration: int = 0
    seconds: float = 0.0
    losses: list[float] = field(default_factory=list)
    evaluations: list[dict[str, Any]] = field(default_factory=list)


def distill(config: DistillConfig | ResolvedRun, real: Any, *, device: torch.device | str = "cpu",
            checkpoint: str | os.PathLike | None = None, checkpoint_every: int = 0, resume: bool = False,
            on_iteration: Callable[[int, float], None] | None = None,
            evaluate_every: int = 0, evaluate: Callable[..., dict[str, Any] | None] | None = None,
            context: Context | None = None) -> Artifact:
    """Run ``config`` on ``real`` (a fredset.data.RealData train split) and return the Artifact.

    ``config`` may be resolved already (:meth:`DistillConfig.resolve` with the same data and device), so
    that a caller that checked the options first does not resolve them twice.

    With ``checkpoint``, the state is saved there every ``checkpoint_every`` iterations and at the
    end; ``resume=True`` continues from it (same config required; more iterations allowed) and
    gives the same result as an uninterrupted run on the CPU. ``evaluate(synset, iteration, lr=...)`` runs
    every ``evaluate_every`` iterations (``lr``: the objective's recommended learning rate or None); it
    must use its own generator.

    ``context`` (a :class:`fredset.distributed.Context` of several ranks, every rank calling this with the
    same arguments): each rank does its share of every iteration (its classes with DM and DC, its share of every
    unrolled batch with TM), the ranks share the whole set from the classes' owners before each evaluation,
    checkpoint and at the end (TM's ranks hold it all along), and only rank 0 writes the checkpoint; every rank returns the
    Artifact. Without it, or with one rank, nothing of this happens.
    """
    device = torch.device(device)
    run = config if isinstance(config, ResolvedRun) else config.resolve(real, device)
    config = run.config
    sharded = context is not None and context.distributed
    writes = context is None or context.is_main
    if sharded:
        run.objective.check_distributed(context)
    generator = torch.Generator().manual_seed(config.seed)
    if config.parameterization == "freq":
        synset: SynSet = init_frequency_synset(real, config.ipc, config.k, generator=generator,
                                               mask_source=config.mask_source, instances=config.instances,
                                               bits=config.bits, device=device)
    else:
        synset = init_pixel_synset(real, config.ipc, generator=generator, device=device)
    optimizer = torch.optim.SGD(synset.parameters(), lr=config.lr, momentum=config.momentum)
    dsa = DSA(config.dsa) if config.dsa and config.dsa != "none" else None
    objective = run.objective.build(config, run.prepared, real, dsa, device)
    if sharded:
        objective.distribute(context)
    state = RunState()
    if resume and checkpoint is not None and os.path.exists(checkpoint):
        state = load_checkpoint(checkpoint, config, synset, optimizer, generator, objective)
        if state.iteration > config.iterations:  # its set has gone further than the run asks for
            raise FredsetError(f"checkpoint is at iteration {state.iteration}, past the {config.iterations} "
                               "asked for; ask for more iterations or use another --checkpoint", checkpoint)

    start = time.perf_counter() - state.seconds
    while state.iteration < config.iterations:
        loss = objective.iteration(synset, optimizer, generator)
        if not np.isfinite(loss):
            raise FredsetError(f"the loss became {loss} at iteration {state.iteration + 1}; lower --lr")
        state.iteration += 1
        state.losses.append(loss)
        state.seconds = time.perf_counter() - start
        if on_iteration is not None:
            on_iteration(state.iteration, loss)
        if evaluate is not None and evaluate_every and state.iteration % evaluate_every == 0:
            evaluation_started = time.perf_counter()
            if sharded:
                share_synset(synset, optimizer, context)
            # None: nothing to record at this iteration; lr: the learned one (TM) or None
            result = evaluate(synset, state.iteration, lr=objective.recommended_lr())
            if result:
                state.evaluations.append({"iteration": state.iteration, **result})
            start += time.perf_counter() - evaluation_started  # timings count distillation only
        if checkpoint is not None and checkpoint_every and state.iteration % checkpoint_every == 0:
            if sharded:
                share_synset(synset, optimizer, context)
            if writes:
                save_checkpoint(checkpoint, config, synset, optimizer, generator, objective, state)
    if sharded:
        share_synset(synset, optimizer, context)
    if checkpoint is not None and writes:
        save_checkpoint(checkpoint, config, synset, optimizer, generator, objective, state)
    artifact = synset.to_artifact(**artifact_fields(config, real, synset, objective, state, device))
    budget = config.byte_budget(real.num_classes)
    if budget is not None:
        artifact, _ = fit_within(artifact, budget)
    return artifact


def artifact_fields(config: DistillConfig, real: Any, synset: SynSet, objective: Any, state: RunState,
                    device: torch.device) -> dict[str, Any]:
    provenance: dict[str, Any] = {
        "objective": config.objective,
        "parameterization": config.parameterization,
        "budget": {"ipc": config.ipc, "k": config.k, "instances_per_class": synset.counts[0],
                   **({"bits": config.bits} if config.bits is not None else {}),
                   **({"max_bytes": config.byte_budget(real.num_classes)}
                      if config.byte_budget(real.num_classes) is not None else {})},
        "hyperparameters": {
            "lr": config.lr,
            "lr_scale": "reference unnormalised DCT-II" if config.parameterization == "freq" else "pixel",
            "momentum": config.momentum, "iterations": config.iterations, "mask_source": config.mask_source,
            **objective.hyperparameters(),
        },
        "seed": config.seed,
        "iterations": state.iteration,
        "source": summarised_source(real.source),
        "device": str(device),
        "final_loss": state.losses[-1] if state.losses else None,
        "recommended_lr": objective.recommended_lr(),
    }
    if "SOURCE_DATE_EPOCH" not in os.environ:  # reproducible builds record no wall-clock times
        provenance["timing"] = {"seconds": round(state.seconds, 3),
                                "seconds_per_iteration": round(state.seconds / max(state.iteration, 1), 4)}
    if state.evaluations:
        provenance["evaluation"] = state.evaluations
    return dict(classes=list(real.classes), mean=real.mean, std=real.std, dataset=real.name,
                provenance=provenance, citation=CITATION, dataset_license=real.license)


# -- several processes ----------------------------------------------------------------------------------

def share_synset(synset: SynSet, optimizer: torch.optim.Optimizer, context: Context) -> None:
    """Every class's parameters, and their momentum buffers, from the rank that owns the class onto every rank,
    so that each holds the whole set (to evaluate, checkpoint or export it). Broadcasts copy bits: exact."""
    with torch.no_grad():
        for label in range(len(synset.counts)):
            source = owner(label, context)
            for parameter, rows in synset.class_parameters(label):
                _broadcast_into(parameter.detach()[rows], source, context)
                state = optimizer.state[parameter]
                buffer = state.get("momentum_buffer")
                has_buffer = torch.tensor([0.0 if buffer is None else 1.0], device=parameter.device)
                if broadcast_from(has_buffer, source, context).item():
                    if buffer is None:  # this rank never stepped the class
                        buffer = state["momentum_buffer"] = torch.zeros_like(parameter)
                    _broadcast_into(buffer[rows], source, context)


def _broadcast_into(view: torch.Tensor, source: int, context: Context) -> None:
    if view.is_contiguous():
        broadcast_from(view, source, context)
    else:
        view.copy_(broadcast_from(view.contiguous(), source, context))


# -- checkpoints (HDF5, never pickle) ---------------------------------------------------------

def save_checkpoint(path: str | os.PathLike, config: DistillConfig, synset: SynSet, optimizer: torch.optim.Optimizer,
                    generator: torch.Generator, objective: Any, state: RunState) -> None:
    """Parameters, momentum buffers, generator state, objective state and progress; written atomically."""
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as handle:
        handle["config"] = np.frombuffer(json.dumps(config.record(), sort_keys=True).encode(), np.uint8)
        handle["state"] = np.frombuffer(json.dumps({**asdict(state), "version": CHECKPOINT_VERSION}).encode(),
                                        np.uint8)
        handle["generator"] = generator.get_state().numpy()
        for name, tensor in synset.state_dict().items():
            handle[f"synset/{name}"] = tensor.detach().cpu().numpy()
        for index, parameter in enumerate(synset.parameters()):
            momentum = optimizer.state.get(parameter, {}).get("momentum_buffer")
            if momentum is not None:
                handle[f"momentum/{index}"] = momentum.detach().cpu().numpy()
        for name, tensor in objective.state_dict().items():
            handle[f"objective/{name}"] = tensor.detach().cpu().numpy()
    write_atomically(path, buffer.getvalue())


def load_checkpoint(path: str | os.PathLike, config: DistillConfig, synset: SynSet, optimizer: torch.optim.Optimizer,
                    generator: torch.Generator, objective: Any) -> RunState:
    try:
        with h5py.File(path, "r") as handle:
            saved = json.loads(bytes(handle["config"][()]))
            mine = config.record()
            differing = sorted(key for key in mine if key != "iterations" and saved.get(key) != mine[key])
            if differing:
                raise FredsetError(f"checkpoint was made with different options ({', '.join(differing)}); "
                                   "use the same options or another --checkpoint", path)
            state_values = json.loads(bytes(handle["state"][()]))
            if state_values.pop("version", None) != CHECKPOINT_VERSION:
                raise FredsetError("checkpoint version not understood", path)
            generator.set_state(torch.from_numpy(handle["generator"][()]))
            device = next(iter(synset.state_dict().values())).device
            synset.load_state_dict({name[len("synset/"):]: torch.from_numpy(handle[name][()]).to(device)
                                    for name in _names(handle, "synset")})
            for index, parameter in enumerate(synset.parameters()):
                if f"momentum/{index}" in handle:
                    optimizer.state[parameter]["momentum_buffer"] = torch.from_numpy(
                        handle[f"momentum/{index}"][()]).to(device)
            objective.load_state_dict({name[len("objective/"):]: torch.from_numpy(handle[name][()])
                                       for name in _names(handle, "objective")})
    except FredsetError:
        raise
    except (OSError, KeyError, ValueError, RuntimeError) as error:
        raise FredsetError(f"cannot resume from this checkpoint ({error})", path) from None
    return RunState(**state_values)


def _names(handle: h5py.File, group: str) -> list[str]:
    if group not in handle:
        return []
    return [f"{group}/{name}" for name in handle[group]]
