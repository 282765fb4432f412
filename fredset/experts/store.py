"""The expert buffer on disk (spec/BUFFER.md): its layout, writing one expert, and :class:`ExpertBuffer`, the
validated reader TM draws snapshots from.

A buffer is a directory::

    DIR/buffer.json           the options every expert of the directory was trained with
    DIR/expert_00000.h5       one finished expert: its kept snapshots, float32, plus metadata
    DIR/expert_00001.lock     expert 1 is being trained (host, pid, time)
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pathlib
import re
from typing import Any

import h5py
import numpy as np
import torch

from ..errors import FredsetError
from ..files import sha256_file, write_atomically
from .locks import lock_is_stale

__all__ = ["BUFFER_FORMAT", "BUFFER_VERSION", "MANIFEST", "ExpertBuffer", "expert_path", "index_ranges",
           "lock_path", "read_json", "write_expert"]

BUFFER_FORMAT = "fredset-expert-buffer"
BUFFER_VERSION = 1
MANIFEST = "buffer.json"

_EXPERT_FILE = re.compile(r"expert_(\d{5,})\.h5")
_EXPERT_LOCK = re.compile(r"expert_(\d{5,})\.lock")
_REQUIRED = ("format", "version", "dataset", "model", "channels", "num_classes", "image_size", "parameter_names",
             "parameter_shapes", "epochs", "keep_epochs", "experts", "lr", "batch_size", "dsa", "seed")


def expert_path(directory: str | os.PathLike, index: int) -> pathlib.Path:
    """``DIR/expert_00003.h5`` for expert 3."""
    return pathlib.Path(directory) / f"expert_{int(index):05d}.h5"


def lock_path(directory: str | os.PathLike, index: int) -> pathlib.Path:
    """``DIR/expert_00003.lock``: expert 3 is being trained."""
    return pathlib.Path(directory) / f"expert_{int(index):05d}.lock"


def json_bytes(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, allow_nan=False).encode("utf-8")


def read_json(path: pathlib.Path) -> Any:
    try:
        return json.loads(path.read_bytes())
    except OSError as error:
        raise FredsetError(f"cannot read ({error.strerror or error})", path) from None
    except ValueError as error:
        raise FredsetError(f"not valid JSON ({error})", path) from None


def write_expert(directory: str | os.PathLike, index: int, snapshots: dict[int, list[torch.Tensor]],
                 parameter_names: list[str], meta: dict) -> pathlib.Path:
    """Write ``DIR/expert_NNNNN.h5`` atomically (a temporary sibling, flushed, then renamed into place).

    ``snapshots`` maps an epoch number to that snapshot's parameters, in ``parameter_names`` order; every
    snapshot must have the same shapes. ``meta`` (JSON-able) is stored with the expert's index, format, kept
    epochs and parameter names and shapes added. Returns the path written.
    """
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise FredsetError(f"expert index must be a non-negative integer, got {index!r}", directory)
    if not snapshots:
        raise FredsetError(f"expert {index}: no snapshot to write", directory)
    epochs = sorted(int(epoch) for epoch in snapshots)
    if epochs[0] < 0 or len(set(epochs)) != len(epochs):
        raise FredsetError(f"expert {index}: snapshot epochs must be distinct and >= 0, got {epochs}", directory)
    names = [str(name) for name in parameter_names]
    if not names or len(set(names)) != len(names) or any("/" in name or not name for name in names):
        raise FredsetError(f"expert {index}: parameter names must be distinct non-empty names without '/'",
                           directory)
    first = snapshots[epochs[0]]
    shapes = [list(tensor.shape) for tensor in first]
    for epoch in epochs:
        params = snapshots[epoch]
        if len(params) != len(names) or [list(t.shape) for t in params] != shapes:
            raise FredsetError(f"expert {index}: snapshot {epoch} does not have the {len(names)} parameters of "
                               f"shapes {shapes}", directory)
    full_meta = {**meta, "format": BUFFER_FORMAT, "version": BUFFER_VERSION, "expert": index,
                 "epochs_kept": epochs, "parameter_names": names, "parameter_shapes": shapes}
    data = io.BytesIO()
    with h5py.File(data, "w") as handle:
        handle.create_dataset("epochs", data=np.asarray(epochs, dtype=np.int64))
        handle.create_dataset("meta", data=np.frombuffer(json_bytes(full_meta), dtype=np.uint8))
        for position, name in enumerate(names):
            stacked = torch.stack([snapshots[epoch][position].detach().to("cpu", torch.float32) for epoch in epochs])
            handle.create_dataset(f"parameters/{name}", data=stacked.numpy())
    path = expert_path(directory, index)
    write_atomically(path, data.getvalue())
    return path



class ExpertBuffer:
    """A buffer directory, validated: the manifest and every finished expert file (shapes, epochs, metadata).

    ``experts`` are the finished experts when the buffer was opened (files appearing later are not seen);
    ``epochs`` the snapshot numbers every expert keeps (0 = initialisation); ``load(expert, epoch)`` one
    snapshot as tensors in ``parameter_names`` order (``model.named_parameters()`` order).
    """

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = pathlib.Path(directory)
        if not self.directory.is_dir():
            raise FredsetError("not a directory (an expert buffer is a directory made by fredset buffer)",
                               self.directory)
        path = self.directory / MANIFEST
        if not path.is_file():
            raise FredsetError(f"not an expert buffer (no {MANIFEST})", self.directory)
        manifest = read_json(path)
        if not isinstance(manifest, dict):
            raise FredsetError("not a buffer manifest (expected a JSON object)", path)
        if manifest.get("format") != BUFFER_FORMAT:
            raise FredsetError(f"not a buffer manifest (format {manifest.get('format')!r}, expected "
                               f"{BUFFER_FORMAT!r})", path)
        if manifest.get("version") != BUFFER_VERSION:
            raise FredsetError(f"buffer version {manifest.get('version')!r} not understood (this fredset reads "
                               f"version {BUFFER_VERSION})", path)
        missing = [key for key in _REQUIRED if key not in manifest]
        if missing:
            raise FredsetError(f"buffer manifest lacks {', '.join(missing)}", path)
        try:
            names = [str(name) for name in manifest["parameter_names"]]
            shapes = [tuple(int(side) for side in shape) for shape in manifest["parameter_shapes"]]
            keep = int(manifest["keep_epochs"])
            int(manifest["epochs"]), int(manifest["experts"])
        except (TypeError, ValueError) as error:
            raise FredsetError(f"buffer manifest has a malformed field ({error})", path) from None
        if len(names) != len(shapes) or not names or keep < 0 or keep > int(manifest["epochs"]):
            raise FredsetError("buffer manifest is inconsistent (parameter names/shapes or keep_epochs)", path)
        self.manifest: dict = manifest
        self.parameter_names: list[str] = names
        self.parameter_shapes: list[tuple[int, ...]] = shapes
        self.epochs: list[int] = list(range(keep + 1))
        self._meta: dict[int, dict] = {}
        self._fingerprint: str | None = None
        found = []
        try:
            entries = sorted(os.listdir(self.directory))
        except OSError as error:
            raise FredsetError(f"cannot list the buffer ({error.strerror or error})", self.directory) from None
        for entry in entries:
            match = _EXPERT_FILE.fullmatch(entry)
            if match is None:
                continue
            index = int(match.group(1))
            if entry != expert_path(self.directory, index).name:
                raise FredsetError("expert file name does not follow expert_NNNNN.h5", self.directory / entry)
            self._meta[index] = self._validate(index)
            found.append(index)
        self.experts: list[int] = sorted(found)

    def _validate(self, index: int) -> dict:
        path = expert_path(self.directory, index)
        rows = len(self.epochs)
        try:
            with h5py.File(path, "r") as handle:
                meta = json.loads(bytes(handle["meta"][()]))
                stored = handle["epochs"][()]
                if list(np.asarray(stored).reshape(-1)) != self.epochs or stored.dtype.kind not in "iu":
                    raise FredsetError(f"expert keeps snapshots {np.asarray(stored).tolist()}, the manifest "
                                       f"says 0..{self.epochs[-1]}", path)
                group = handle["parameters"]
                if sorted(group) != sorted(self.parameter_names):
                    raise FredsetError("expert's parameters differ from the manifest's", path)
                for name, shape in zip(self.parameter_names, self.parameter_shapes):
                    dataset = group[name]
                    if dataset.dtype != np.float32 or tuple(dataset.shape) != (rows, *shape):
                        raise FredsetError(f"parameter {name} is {dataset.dtype} {list(dataset.shape)}, expected "
                                           f"float32 {[rows, *shape]}", path)
        except FredsetError:
            raise
        except (OSError, KeyError, ValueError, TypeError, AttributeError) as error:
            raise FredsetError(f"not a readable expert file ({error})", path) from None
        named = meta.get("expert") if isinstance(meta, dict) else None
        if named != index:
            raise FredsetError(f"expert file's metadata names expert {named!r}, not {index}", path)
        return meta

    def __len__(self) -> int:
        return len(self.experts)

    def __repr__(self) -> str:
        return (f"ExpertBuffer({str(self.directory)!r}, dataset={self.manifest.get('dataset')!r}, "
                f"model={self.manifest.get('model')!r}, experts={len(self)}, epochs=0..{self.epochs[-1]})")

    def load(self, expert: int, epoch: int, device: torch.device | str = "cpu") -> list[torch.Tensor]:
        """Snapshot ``epoch`` of ``expert``: float32 tensors on ``device``, in ``parameter_names`` order."""
        if expert not in self._meta:
            raise FredsetError(f"no finished expert {expert!r} (finished: {index_ranges(self.experts) or 'none'})",
                               self.directory)
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or int(epoch) not in self.epochs:
            raise FredsetError(f"no snapshot {epoch!r}: the buffer keeps epochs 0..{self.epochs[-1]}",
                               self.directory)
        path = expert_path(self.directory, expert)
        try:
            with h5py.File(path, "r") as handle:
                group = handle["parameters"]
                arrays = [np.asarray(group[name][int(epoch)], dtype=np.float32) for name in self.parameter_names]
        except (OSError, KeyError, ValueError, TypeError) as error:
            raise FredsetError(f"cannot read snapshot {epoch} ({error})", path) from None
        return [torch.from_numpy(array).to(device) for array in arrays]

    def meta(self, expert: int) -> dict:
        """The metadata stored with a finished expert (per-epoch losses, test accuracy, seconds, ...)."""
        if expert not in self._meta:
            raise FredsetError(f"no finished expert {expert!r}", self.directory)
        return self._meta[expert]

    def _files(self) -> list[pathlib.Path]:
        return [self.directory / MANIFEST] + [expert_path(self.directory, index) for index in self.experts]

    @property
    def fingerprint(self) -> str:
        """SHA-256 (hex) over the lines ``"<file name> <file sha256>\\n"``, sorted by name, of ``buffer.json``
        and the finished expert files."""
        if self._fingerprint is None:
            try:
                lines = sorted(f"{path.name} {sha256_file(path)}\n" for path in self._files())
            except OSError as error:
                raise FredsetError(f"cannot read a buffer file ({error.strerror or error})", self.directory) from None
            self._fingerprint = hashlib.sha256("".join(lines).encode()).hexdigest()
        return self._fingerprint

    def summary(self) -> dict:
        """What ``fredset inspect DIR`` shows, JSON-able."""
        manifest = self.manifest
        try:
            size = sum(path.stat().st_size for path in self._files())
            locks = sorted(int(m.group(1)) for entry in os.listdir(self.directory)
                           if (m := _EXPERT_LOCK.fullmatch(entry)) is not None)
        except OSError as error:
            raise FredsetError(f"cannot read the buffer ({error.strerror or error})", self.directory) from None
        experts = []
        for index in self.experts:
            meta = self._meta[index]
            losses, accuracies = meta.get("train_loss") or [None], meta.get("train_accuracy") or [None]
            experts.append({"expert": index, "final_train_loss": losses[-1], "final_train_accuracy": accuracies[-1],
                            "test_accuracy": meta.get("test_accuracy"), "seconds": meta.get("seconds"),
                            "device": meta.get("device")})
        parameters = sum(int(np.prod(shape)) for shape in self.parameter_shapes)
        return {
            "path": str(self.directory),
            "format": BUFFER_FORMAT,
            "format_version": manifest["version"],
            "dataset": manifest["dataset"],
            "num_images": manifest.get("num_images"),
            "model": manifest["model"],
            "image": {"channels": manifest["channels"], "height": manifest["image_size"][0],
                      "width": manifest["image_size"][1]},
            "num_classes": manifest["num_classes"],
            "parameters": parameters,
            "training": {"epochs": manifest["epochs"], "lr": manifest["lr"], "batch_size": manifest["batch_size"],
                         "optimizer": manifest.get("optimizer"), "dsa": manifest["dsa"], "seed": manifest["seed"]},
            "experts_asked": manifest["experts"],
            "experts_finished": len(self.experts),
            "finished": self.experts,
            "in_progress": [index for index in locks if index not in self._meta
                            and not lock_is_stale(lock_path(self.directory, index))],
            "stale_locks": [index for index in locks if index not in self._meta
                            and lock_is_stale(lock_path(self.directory, index))],
            "keep_epochs": self.epochs[-1],
            "snapshots_per_expert": len(self.epochs),
            "snapshot_bytes": 4 * parameters,
            "experts": experts,
            "bytes": size,
            "fingerprint": self.fingerprint,
        }


def index_ranges(values: list[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``"0-2, 5"``."""
    parts: list[tuple[int, int]] = []
    for value in sorted(values):
        if parts and value == parts[-1][1] + 1:
            parts[-1] = (parts[-1][0], value)
        else:
            parts.append((value, value))
    return ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in parts)
