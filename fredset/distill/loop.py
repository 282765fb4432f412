"""The distillation loop: initialise, iterate an objective, checkpoint, resume, export an Artifact."""

from __future__ import annotations

import hashlib
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
from ..errors import FredsetError
from ..format import write_atomically
from .augment import DSA, STRATEGY
from .objectives import OBJECTIVES
from .objectives.tm import open_buffer, tm_defaults
from .synset import SynSet, default_k, init_frequency_synset, init_pixel_synset, instances_per_class

CITATION = ("@inproceedings{shin2023fred, title={Frequency Domain-based Dataset Distillation}, "
            "author={Shin, Donghyeok and Shin, Seungjae and Moon, Il-Chul}, "
            "booktitle={Advances in Neural Information Processing Systems}, year={2023}}")

# Published learning rates. For "freq" they are on the reference's unnormalised-DCT scale, which
# FrequencySynSet reproduces exactly (see synset.reference_scale).
# TM pixel: MTT's lr_img for CIFAR-10 ipc 1.
DEFAULT_LR = {("dm", "freq"): 1e6, ("dm", "pixel"): 1.0, ("dc", "freq"): 1e3, ("dc", "pixel"): 0.1,
              ("tm", "freq"): 1e8, ("tm", "pixel"): 1e3}
TM_DEFAULT_K = 64  # the reference TM scripts' msz_per_channel
CHECKPOINT_VERSION = 1


@dataclass
class DistillConfig:
    """Everything that determines a run (recorded in the artifact's provenance)."""

    dataset: str
    objective: str = "dm"
    parameterization: str = "freq"
    ipc: float = 1.0
    k: int | None = None  # default: H*W/16 (FreD's CIFAR-10 ratio)
    iterations: int = 1000
    lr: float | None = None  # default: DEFAULT_LR
    momentum: float = 0.5
    seed: int = 0
    mask_source: str = "init"
    model: str = "convnet"
    batch_real: int = 256
    dsa: str = "auto"  # "auto": the reference's choice per objective (DM: STRATEGY, DC: none)
    autocast: bool | str = "auto"  # DM: real-image embedding in bfloat16 ("auto": where the hardware supports it);
    # TM: the unrolled steps in bfloat16 ("auto": never)
    # TM only (None: the reference's value for the dataset and ipc, see objectives.tm.TM_DEFAULTS)
    buffer: str | None = None
    syn_steps: int | None = None
    max_start_epoch: int | None = None
    expert_epochs: int | None = None
    lr_lr: float | None = None
    lr_teacher: float | None = None
    batch_syn: int | None = None  # images per unrolled step; 0: all
    checkpoint_steps: bool | None = None  # recompute unrolled steps in the backward pass (memory of one step)

    def resolved(self, real: Any, device: torch.device | str = "cpu") -> DistillConfig:
        """A copy with defaults filled in and options checked against the data."""
        if self.objective not in OBJECTIVES:
            raise FredsetError(f"--objective {self.objective!r} is not available; choose from {', '.join(OBJECTIVES)}")
        if self.parameterization not in ("freq", "pixel"):
            raise FredsetError(f"--parameterization must be 'freq' or 'pixel', got {self.parameterization!r}")
        if self.iterations < 0:
            raise FredsetError(f"--iterations must be >= 0, got {self.iterations}")
        height, width = real.image_size
        values = asdict(self)
        tm_fields = ("buffer", "syn_steps", "max_start_epoch", "expert_epochs", "lr_lr", "lr_teacher", "batch_syn",
                     "checkpoint_steps")
        if self.objective == "tm":
            for name, value in tm_defaults(real.name, self.ipc).items():
                if name in values and values[name] is None:
                    values[name] = value
            values["batch_syn"] = values["batch_syn"] or 0
            values["checkpoint_steps"] = bool(values["checkpoint_steps"])
        else:
            given = [name for name in tm_fields if values[name] is not None]
            if given:
                raise FredsetError(f"--{given[0].replace('_', '-')} only applies to --objective tm")
        if self.parameterization == "freq":
            # TM keeps the reference's k 64 where an image has room for it (>= 256 pixels), else H*W/16
            tm_k = self.objective == "tm" and height * width >= 4 * TM_DEFAULT_K
            values["k"] = self.k or (TM_DEFAULT_K if tm_k else default_k(height, width))
            instances_per_class(self.ipc, height, width, values["k"])  # refuses n < 2 early
        else:
            if self.ipc != int(self.ipc) or self.ipc < 1:
                raise FredsetError(f"--ipc must be a whole number >= 1 for the pixel parameterization, "
                                   f"got {self.ipc:g}")
            values["k"] = None
        if values["lr"] is None:
            values["lr"] = DEFAULT_LR[(self.objective, self.parameterization)]
        if values["dsa"] == "auto":
            values["dsa"] = STRATEGY if OBJECTIVES[self.objective].default_dsa else "none"
        if values["autocast"] == "auto":  # TM's unrolled steps stay float32 unless bf16 is asked for
            values["autocast"] = self.objective != "tm" and bfloat16_is_fast(device)
        resolved = DistillConfig(**values)
        if resolved.objective == "tm":
            open_buffer(resolved, real)  # a wrong buffer fails here, before anything starts
        return resolved


def bfloat16_is_fast(device: torch.device | str = "cpu") -> bool:
    """bfloat16 has hardware support: a CUDA device of compute capability 8+, or a CPU with
    AVX-512 BF16 / AMX (where it ran the DM real-image pass 2x faster, see docs/RESULTS.md)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


@dataclass
class RunState:
    """What changes while a run goes on (checkpointed)."""

    iteration: int = 0
    seconds: float = 0.0
    losses: list[float] = field(default_factory=list)
    evaluations: list[dict[str, Any]] = field(default_factory=list)


def distill(config: DistillConfig, real: Any, *, device: torch.device | str = "cpu",
            checkpoint: str | os.PathLike | None = None, checkpoint_every: int = 0, resume: bool = False,
            on_iteration: Callable[[int, float], None] | None = None,
            evaluate_every: int = 0, evaluate: Callable[..., dict[str, Any] | None] | None = None) -> Artifact:
    """Run ``config`` on ``real`` (a fredset.data.RealData train split) and return the Artifact.

    With ``checkpoint``, the state is saved there every ``checkpoint_every`` iterations and at the
    end; ``resume=True`` continues from it (same config required; more iterations allowed) and
    gives the same result as an uninterrupted run on the CPU. ``evaluate(synset, iteration, lr=...)`` runs
    every ``evaluate_every`` iterations (``lr``: the objective's recommended learning rate or None); it
    must use its own generator.
    """
    device = torch.device(device)
    config = config.resolved(real, device)
    generator = torch.Generator().manual_seed(config.seed)
    if config.parameterization == "freq":
        synset: SynSet = init_frequency_synset(real, config.ipc, config.k, generator=generator,
                                               mask_source=config.mask_source, device=device)
    else:
        synset = init_pixel_synset(real, config.ipc, generator=generator, device=device)
    optimizer = torch.optim.SGD(synset.parameters(), lr=config.lr, momentum=config.momentum)
    dsa = DSA(config.dsa) if config.dsa and config.dsa != "none" else None
    objective = OBJECTIVES[config.objective].from_config(config, real, dsa, device)
    state = RunState()
    if resume and checkpoint is not None and os.path.exists(checkpoint):
        state = load_checkpoint(checkpoint, config, synset, optimizer, generator, objective)

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
            # None: nothing to record at this iteration; lr: the learned one (TM) or None
            result = evaluate(synset, state.iteration, lr=objective.recommended_lr())
            if result:
                state.evaluations.append({"iteration": state.iteration, **result})
            start += time.perf_counter() - evaluation_started  # timings count distillation only
        if checkpoint is not None and checkpoint_every and state.iteration % checkpoint_every == 0:
            save_checkpoint(checkpoint, config, synset, optimizer, generator, objective, state)
    if checkpoint is not None:
        save_checkpoint(checkpoint, config, synset, optimizer, generator, objective, state)
    return synset.to_artifact(**artifact_fields(config, real, synset, objective, state, device))


def artifact_fields(config: DistillConfig, real: Any, synset: SynSet, objective: Any, state: RunState,
                    device: torch.device) -> dict[str, Any]:
    provenance: dict[str, Any] = {
        "objective": config.objective,
        "parameterization": config.parameterization,
        "budget": {"ipc": config.ipc, "k": config.k, "instances_per_class": synset.counts[0]},
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


def summarised_source(source: dict[str, Any], limit: int = 64) -> dict[str, Any]:
    """``source`` with a long file list (an ImageFolder) replaced by its count and one digest, so the
    file's metadata stays small; the digest is SHA-256 over the sorted "name sha256" lines."""
    files = source.get("files", {})
    if len(files) <= limit:
        return source
    listing = "".join(f"{name} {digest}\n" for name, digest in sorted(files.items()))
    return {**{key: value for key, value in source.items() if key != "files"},
            "files_count": len(files), "files_sha256": hashlib.sha256(listing.encode()).hexdigest()}


# -- checkpoints (HDF5, never pickle) ---------------------------------------------------------

def save_checkpoint(path: str | os.PathLike, config: DistillConfig, synset: SynSet, optimizer: torch.optim.Optimizer,
                    generator: torch.Generator, objective: Any, state: RunState) -> None:
    """Parameters, momentum buffers, generator state, objective state and progress; written atomically."""
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as handle:
        handle["config"] = np.frombuffer(json.dumps(asdict(config), sort_keys=True).encode(), np.uint8)
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
            mine = asdict(config)
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
