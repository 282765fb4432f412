"""Expert trajectories for trajectory matching (TM): ``fredset buffer`` and :class:`ExpertBuffer`.

An *expert* is a network trained from scratch on the real training set with the TM reference's recipe
(fact sheet sections 4-6): SGD at a constant learning rate (0.01), no momentum, no weight decay, batch 256
reshuffled every epoch, DSA on every batch, drawn independently per sample, with ``align_corners=True``,
no ZCA. Its parameters are saved at initialisation (snapshot 0) and after every epoch (snapshot ``e`` after
``e`` epochs).

A buffer is a directory (the format is described in ``spec/BUFFER.md``)::

    DIR/buffer.json           the options every expert of the directory was trained with
    DIR/expert_00000.h5       one finished expert: its kept snapshots, float32, plus metadata
    DIR/expert_00001.lock     expert 1 is being trained (host, pid, time)

Expert ``i`` depends only on ``(seed, i)``: its generator is ``torch.Generator().manual_seed(seed * 100003
+ i)``, which draws the initial parameters (:func:`~fredset.models.init_parameters`), then every epoch's
shuffle and every batch's augmentation. Any process trains the same expert ``i`` (up to floating-point
differences between devices), so several processes, on one machine or several sharing the directory, can fill
one buffer together: each claims an expert with an exclusive lock file, finished experts are skipped, and an
interrupted run resumes where it stopped.

``keep_epochs=K`` keeps snapshots ``0..K`` only (TM uses snapshots up to ``max_start_epoch + expert_epochs``).
Training still runs all ``epochs`` epochs, so the recorded final loss and test accuracy describe the expert the
options name; only the snapshots written are fewer.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pathlib
import re
import secrets
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import h5py
import numpy as np
import torch

from ..errors import FredsetError
from ..format import write_atomically
from ..models import backward_in_micro_batches, build_model, init_parameters, micro_batch_size
from .augment import DSA, STRATEGY, parse_strategy

try:  # a directory-wide mutex around claims; POSIX only (elsewhere the lock files alone are the protocol)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["BUFFER_FORMAT", "BUFFER_VERSION", "MANIFEST", "ExpertBuffer", "expert_path", "train_experts",
           "write_expert"]

BUFFER_FORMAT = "fredset-expert-buffer"
BUFFER_VERSION = 1
MANIFEST = "buffer.json"
MUTEX = ".claim.mutex"
SEED_STRIDE = 100003
OPTIMIZER = "SGD, constant lr, momentum 0, weight decay 0"

_EXPERT_FILE = re.compile(r"expert_(\d{5,})\.h5")
_EXPERT_LOCK = re.compile(r"expert_(\d{5,})\.lock")
# manifest fields that only describe the buffer: they may differ between calls on the same directory
_INFORMATIONAL = ("experts", "fredset_version", "torch_version")
_REQUIRED = ("format", "version", "dataset", "model", "channels", "num_classes", "image_size", "parameter_names",
             "parameter_shapes", "epochs", "keep_epochs", "experts", "lr", "batch_size", "dsa", "seed")
_UNREADABLE_LOCK_GRACE_S = 60.0


def expert_path(directory: str | os.PathLike, index: int) -> pathlib.Path:
    """``DIR/expert_00003.h5`` for expert 3."""
    return pathlib.Path(directory) / f"expert_{int(index):05d}.h5"


def _lock_path(directory: str | os.PathLike, index: int) -> pathlib.Path:
    return pathlib.Path(directory) / f"expert_{int(index):05d}.lock"


def _generator(seed: int, index: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * SEED_STRIDE + index)


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, allow_nan=False).encode("utf-8")


def _sha256_file(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _source_summary(source: dict[str, Any], limit: int = 64) -> dict[str, Any]:
    """The provenance to compare buffers by: the data files' SHA-256s, or (for many files, as in an ImageFolder)
    their count and one SHA-256 over the sorted "name sha256" lines."""
    files = dict(source.get("files") or {})
    kept = {key: source[key] for key in ("dataset", "split", "format") if key in source}
    if len(files) <= limit:
        return {**kept, "files": files}
    lines = "".join(f"{name} {files[name]}\n" for name in sorted(files))
    return {**kept, "files_count": len(files), "files_sha256": hashlib.sha256(lines.encode()).hexdigest()}


# -- writing one expert ---------------------------------------------------------------------------------------

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
        handle.create_dataset("meta", data=np.frombuffer(_json_bytes(full_meta), dtype=np.uint8))
        for position, name in enumerate(names):
            stacked = torch.stack([snapshots[epoch][position].detach().to("cpu", torch.float32) for epoch in epochs])
            handle.create_dataset(f"parameters/{name}", data=stacked.numpy())
    path = expert_path(directory, index)
    write_atomically(path, data.getvalue())
    return path


# -- locks ----------------------------------------------------------------------------------------------------

def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, belongs to someone else
        return True
    except OSError:
        return True  # cannot tell: assume alive, never steal
    return True


@contextmanager
def _mutex(directory: pathlib.Path) -> Iterator[None]:
    """Serialise claims among cooperating processes (advisory flock, released by the kernel if we die)."""
    if fcntl is None:  # pragma: no cover
        yield
        return
    try:
        descriptor = os.open(directory / MUTEX, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as error:
        raise FredsetError(f"cannot open the claim mutex ({error.strerror or error})", directory / MUTEX) from None
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # closing releases the flock


class _Lock:
    """This process's claim on one expert: the lock file and the token written in it."""

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path
        self.token = secrets.token_hex(8)
        self.content = _json_bytes({"host": socket.gethostname(), "pid": os.getpid(), "time": time.time(),
                                    "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "token": self.token})

    def create(self) -> bool:
        try:
            descriptor = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        except OSError as error:
            raise FredsetError(f"cannot create lock file ({error.strerror or error})", self.path) from None
        try:
            os.write(descriptor, self.content)
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        return True

    def release(self) -> None:
        """Remove the lock file if it is still ours."""
        try:
            if self.path.read_bytes() == self.content:
                self.path.unlink()
        except OSError:
            pass


def _lock_is_stale(path: pathlib.Path) -> bool:
    """A lock is stale when its process is dead on this host (or it cannot be read and is old)."""
    try:
        raw = path.read_bytes()
        modified = path.stat().st_mtime
    except FileNotFoundError:
        return True  # gone meanwhile: free
    except OSError:
        return False
    try:
        holder = json.loads(raw)
        host, pid = str(holder["host"]), int(holder["pid"])
    except (ValueError, KeyError, TypeError):
        return time.time() - modified > _UNREADABLE_LOCK_GRACE_S
    if host != socket.gethostname():
        return False  # another machine's process: we cannot tell, never steal
    return pid == os.getpid() or not _pid_alive(pid)


def _claim(directory: pathlib.Path, index: int) -> _Lock | None:
    """Claim expert ``index``: None when it is finished or another live process holds it."""
    lock = _Lock(_lock_path(directory, index))
    with _mutex(directory):
        if expert_path(directory, index).exists():
            return None
        if not lock.create():
            if not _lock_is_stale(lock.path):
                return None
            try:
                lock.path.unlink()
            except FileNotFoundError:
                pass
            except OSError as error:
                raise FredsetError(f"cannot remove a stale lock ({error.strerror or error})", lock.path) from None
            if not lock.create():
                return None
        # checked again after the lock exists: a process that finished meanwhile renamed its file before unlocking
        if expert_path(directory, index).exists():
            lock.release()
            return None
    return lock


# -- the manifest ---------------------------------------------------------------------------------------------

def _read_json(path: pathlib.Path) -> Any:
    try:
        return json.loads(path.read_bytes())
    except OSError as error:
        raise FredsetError(f"cannot read ({error.strerror or error})", path) from None
    except ValueError as error:
        raise FredsetError(f"not valid JSON ({error})", path) from None


def _create_exclusively(path: pathlib.Path, data: bytes) -> bool:
    """Write ``path`` only if it does not exist yet, atomically; False when another process got there first."""
    if path.exists():
        return False
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(temporary, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        try:
            os.link(temporary, path)  # fails if path exists: never replaces another process's manifest
        except FileExistsError:
            return False
        except OSError:  # a file system without hard links: the mutex is the only guard there
            if path.exists():
                return False
            os.replace(temporary, path)
        return True
    except OSError as error:
        raise FredsetError(f"cannot write file ({error.strerror or error})", path) from None
    finally:
        try:
            os.unlink(temporary)
        except OSError:
            pass


def _differing_options(saved: dict, mine: dict) -> list[str]:
    keys = (set(saved) | set(mine)) - set(_INFORMATIONAL)
    return sorted(key for key in keys if saved.get(key) != mine.get(key))


def _prepare_manifest(directory: pathlib.Path, manifest: dict) -> dict:
    """Write the manifest if the directory has none; check it against ours if it has one; record a larger
    number of experts asked for. Returns the manifest on disk."""
    path = directory / MANIFEST
    with _mutex(directory):
        if _create_exclusively(path, json.dumps(manifest, indent=2, sort_keys=True).encode() + b"\n"):
            return manifest
        saved = _read_json(path)
        if not isinstance(saved, dict):
            raise FredsetError("not a buffer manifest (expected a JSON object)", path)
        if saved.get("format") != BUFFER_FORMAT or saved.get("version") != BUFFER_VERSION:
            raise FredsetError(f"buffer {directory} has format {saved.get('format')!r} version "
                               f"{saved.get('version')!r}; this fredset reads {BUFFER_FORMAT} version "
                               f"{BUFFER_VERSION}")
        differing = _differing_options(saved, manifest)
        if differing:
            raise FredsetError(f"buffer {directory} was made with different options ({', '.join(differing)}); "
                               "use the same options or another directory")
        if int(saved.get("experts", 0)) < manifest["experts"]:
            saved = {**saved, "experts": manifest["experts"]}
            write_atomically(path, json.dumps(saved, indent=2, sort_keys=True).encode() + b"\n")
        return saved


# -- training -------------------------------------------------------------------------------------------------

def _check_int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise FredsetError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


def train_experts(real: Any, directory: str | os.PathLike, *, experts: int, epochs: int,
                  keep_epochs: int | None = None, model: str = "convnet", lr: float = 0.01, batch_size: int = 256,
                  dsa: str = STRATEGY, seed: int = 0, device: torch.device | str = "cpu",
                  test: Any | None = None,
                  on_epoch: Callable[[int, int, float], None] | None = None) -> list[int]:
    """Train the experts 0..experts-1 of ``directory`` that are neither finished nor being trained by another
    process; return the indices this call finished. ``on_epoch(expert, epoch, train_loss)`` after each epoch.

    ``real`` is the training set (:class:`~fredset.data.RealData`); ``test``, if given, is tested after the last
    epoch and its accuracy recorded. Snapshots ``0..keep_epochs`` (default: all ``epochs``) are written; training
    always runs ``epochs`` epochs. ``dsa`` is a strategy or ``"none"``. The directory is created if needed.
    """
    experts = _check_int("experts", experts, 1)
    epochs = _check_int("epochs", epochs, 1)
    keep = epochs if keep_epochs is None else _check_int("keep_epochs", keep_epochs, 0)
    if keep > epochs:
        raise FredsetError(f"keep_epochs ({keep}) cannot exceed epochs ({epochs})")
    batch_size = _check_int("batch_size", batch_size, 1)
    seed = _check_int("seed", seed, 0)
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0 or lr == float("inf"):
        raise FredsetError(f"lr must be a positive number, got {lr!r}")
    if len(real) == 0:
        raise FredsetError(f"dataset {real.name!r} has no images to train experts on")
    families = parse_strategy(dsa)
    augment = DSA(dsa, align_corners=True) if families else None
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise FredsetError(f"unknown device {device!r} ({error})") from None
    model_name = model.strip().lower() if isinstance(model, str) else model
    size = tuple(real.image_size)
    template = build_model(model_name, real.channels, real.num_classes, size)  # FredsetError if unknown/too small
    names = [name for name, _ in template.named_parameters()]
    shapes = [list(parameter.shape) for _, parameter in template.named_parameters()]
    if test is not None and (test.channels, tuple(test.image_size)) != (real.channels, size):
        raise FredsetError(f"the test set {test.name} ({test.channels}x{test.image_size[0]}x{test.image_size[1]}) "
                           f"does not fit the training set ({real.channels}x{size[0]}x{size[1]})")
    if test is not None and len(test) and int(test.labels.max()) >= real.num_classes:
        raise FredsetError(f"the test set {test.name} has labels beyond the {real.num_classes} training classes")

    directory = pathlib.Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise FredsetError(f"cannot create the buffer directory ({error.strerror or error})", directory) from None
    if not directory.is_dir() or not os.access(directory, os.W_OK | os.X_OK):
        raise FredsetError("the buffer directory is not a writable directory", directory)

    from .. import __version__

    manifest = {
        "format": BUFFER_FORMAT, "version": BUFFER_VERSION,
        "dataset": real.name, "split": real.split, "num_images": len(real), "classes": list(real.classes),
        "mean": list(real.mean), "std": list(real.std), "source": _source_summary(real.source),
        "model": model_name, "channels": real.channels, "num_classes": real.num_classes, "image_size": list(size),
        "parameter_names": names, "parameter_shapes": shapes,
        "experts": experts, "epochs": epochs, "keep_epochs": keep,
        "lr": float(lr), "batch_size": batch_size, "optimizer": OPTIMIZER,
        "dsa": "_".join(families) if families else "none", "dsa_align_corners": True, "dsa_per_sample": True,
        "seed": seed, "expert_seed": f"torch.Generator().manual_seed(seed * {SEED_STRIDE} + expert)",
        "fredset_version": __version__, "torch_version": torch.__version__,
    }
    _prepare_manifest(directory, manifest)

    images = real.images.to(device=device, dtype=torch.float32)
    labels = real.labels.to(device=device, dtype=torch.int64)
    finished: list[int] = []
    for index in range(experts):
        if expert_path(directory, index).exists():
            continue
        lock = _claim(directory, index)
        if lock is None:
            continue
        try:
            snapshots, meta = _train_one(index, images, labels, model_name, real, size, epochs, keep, float(lr),
                                         batch_size, augment, seed, device, test, on_epoch)
            write_expert(directory, index, snapshots, names, meta)
        finally:
            lock.release()  # after the rename (or on any error, KeyboardInterrupt included)
        finished.append(index)
    return finished


def _train_one(index: int, images: torch.Tensor, labels: torch.Tensor, model: str, real: Any, size: tuple,
               epochs: int, keep: int, lr: float, batch_size: int, augment: DSA | None, seed: int,
               device: torch.device, test: Any | None,
               on_epoch: Callable[[int, int, float], None] | None) -> tuple[dict[int, list[torch.Tensor]], dict]:
    started = time.perf_counter()
    generator = _generator(seed, index)
    net = init_parameters(build_model(model, real.channels, real.num_classes, size), generator)
    net = net.to(device).train()
    optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.0, weight_decay=0.0)
    micro_batch = micro_batch_size(size)

    def snapshot() -> list[torch.Tensor]:
        return [parameter.detach().to("cpu", torch.float32, copy=True) for parameter in net.parameters()]

    snapshots = {0: snapshot()}
    count = len(images)
    losses, accuracies, seconds = [], [], []
    for epoch in range(1, epochs + 1):
        epoch_started = time.perf_counter()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.int64)
        order = torch.randperm(count, generator=generator)
        for start in range(0, count, batch_size):
            batch_index = order[start:start + batch_size].to(device)
            batch = images[batch_index]
            if augment is not None:
                batch = augment(batch, generator=generator, siamese=False)
            target = labels[batch_index]
            optimizer.zero_grad(set_to_none=True)
            loss, output = backward_in_micro_batches(net, batch, target, micro_batch)
            optimizer.step()
            loss_sum += loss * len(batch_index)
            correct += (output.detach().argmax(dim=1) == target).sum()
        train_loss = float(loss_sum) / count
        if not np.isfinite(train_loss):
            raise FredsetError(f"expert {index} diverged at epoch {epoch} (train loss {train_loss}); "
                               "try a smaller lr")
        losses.append(round(train_loss, 6))
        accuracies.append(round(int(correct) / count, 6))
        seconds.append(round(time.perf_counter() - epoch_started, 3))
        if epoch <= keep:
            snapshots[epoch] = snapshot()
        if on_epoch is not None:
            on_epoch(index, epoch, train_loss)
    meta: dict[str, Any] = {"train_loss": losses, "train_accuracy": accuracies, "epoch_seconds": seconds,
                            "epochs_trained": epochs, "device": str(device), "torch_version": torch.__version__,
                            "seed": seed * SEED_STRIDE + index}
    if test is not None and len(test):
        from ..evaluate import test_accuracy

        meta["test_accuracy"] = round(test_accuracy(net.eval(), test.images, test.labels), 6)
        meta["test_dataset"] = {"name": test.name, "split": test.split, "images": len(test)}
    meta["seconds"] = round(time.perf_counter() - started, 3)
    return snapshots, meta


# -- reading --------------------------------------------------------------------------------------------------

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
        manifest = _read_json(path)
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
                lines = sorted(f"{path.name} {_sha256_file(path)}\n" for path in self._files())
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
                            and not _lock_is_stale(_lock_path(self.directory, index))],
            "stale_locks": [index for index in locks if index not in self._meta
                            and _lock_is_stale(_lock_path(self.directory, index))],
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
