"""Exporting a distilled dataset so that it works where fredset is not installed.

Three targets, chosen by :func:`export` from the destination's name:

- a directory: an ImageFolder tree, ``DIR/<label>-<class name>/<index>.png``, 8-bit PNGs in **pixel space**.
  Pixel values are clipped to [0, 1] and rounded to multiples of 1/255, so this loses information:
  distilled images often leave [0, 1] (the result says how many values did), and the rounding moves each
  value by up to 1/510. Folder names start with the zero-padded label so that sorting them, as torchvision's
  ``ImageFolder`` and every other ImageFolder reader do, gives back fredset's label order. Grayscale images
  are PNG mode "L", three-channel ones "RGB"; other channel counts have no PNG mode and are refused.
  ``DIR/fredset-export.json`` records the class names, normalisation, clipping and source.
- ``X.npz``: the decoded float32 images ``images`` [N, C, H, W] exactly as fredset serves them, in the
  **normalised space** the network trains on (``(pixel - mean) / std``), ``labels`` int64 [N], ``classes``
  (strings), ``mean`` and ``std`` (float64 [C], so ``images * std + mean`` gives pixels), ``recommended_lr``
  (0-d float64, only when the file stores one) and ``metadata`` (a 0-d string, JSON of every fact). No
  object arrays: ``numpy.load(path, allow_pickle=False)`` reads it.
- ``X.safetensors``: ``images`` and ``labels`` as in the .npz, and the same facts in the file's string
  metadata (strings as they are, other values as JSON). safetensors is the field's safe tensor format (a
  JSON header and raw little-endian buffers, no pickle); it needs the optional ``safetensors`` package
  (``pip install safetensors``, or ``pip install fredset[export]``).

Nothing is half-written: files go through :func:`fredset.files.write_atomically`, and an ImageFolder is
written into a temporary sibling directory, ``.DIR.PID.RANDOM.tmp``, that is renamed into place at the end (a
failed export removes it; a killed one may leave it behind, never a partial DIR). An existing non-empty
directory is refused (never merged into or replaced); an existing file is replaced, as fredset's writes do.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import secrets
import shutil
from dataclasses import dataclass
from typing import Any

import numpy as np

from .artifact import Artifact
from .errors import FredsetError
from .files import file_digest, write_atomically
from .format import DEFAULT_MAX_DECODED_BYTES, read_file
from .format.reader import Source
from .pictures import encode_png
from .version import __version__

__all__ = ["EXPORT_KINDS", "ExportResult", "export", "export_imagefolder", "export_kind", "export_npz",
           "export_safetensors", "folder_names", "source_facts"]

EXPORT_KINDS = ("imagefolder", "npz", "safetensors")
METADATA_NAME = "fredset-export.json"  # beside the class folders; ImageFolder readers only look at directories
_SUFFIXES = {".npz": "npz", ".safetensors": "safetensors"}
_UNSAFE = re.compile(r"[^A-Za-z0-9._ +-]+")  # anything else (slashes, control characters, ...) becomes "_"


@dataclass(frozen=True)
class ExportResult:
    """What an export wrote.

    ``clipped_fraction``: for an ImageFolder, the fraction of pixel values (over all images and channels)
    that lay outside [0, 1] before clipping; None for the float exports, which keep every value.
    """

    destination: str
    kind: str
    shape: tuple[int, int, int, int]
    num_classes: int
    bytes_written: int
    recommended_lr: float | None
    clipped_fraction: float | None = None

    @property
    def num_images(self) -> int:
        return self.shape[0]


def export_kind(destination: str | os.PathLike) -> str:
    """``"npz"``, ``"safetensors"`` or ``"imagefolder"`` for ``destination``; FredsetError for a name that is
    none of them (a file name with another suffix), so a typo never becomes a directory."""
    text = os.fspath(destination)
    suffix = os.path.splitext(text.rstrip("/" + os.sep))[1].lower()
    if suffix in _SUFFIXES:
        return _SUFFIXES[suffix]
    if not suffix or text.endswith(("/", os.sep)) or os.path.isdir(text):
        return "imagefolder"
    raise FredsetError(f"cannot export to a {suffix} file: use a directory (an ImageFolder of PNGs), X.npz or "
                       "X.safetensors (end a directory name that holds a dot with /)", destination)


def export(source: Source | Artifact, destination: str | os.PathLike, *,
           max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES, **read_options: Any) -> ExportResult:
    """Export ``source`` (anything :func:`fredset.read_file` reads, or an Artifact) to ``destination``, the
    kind chosen by :func:`export_kind`. The destination is checked before the file is read.

    ``read_options`` go to :func:`fredset.read_file` (``max_file_bytes``, ...); ``max_decoded_bytes`` bounds
    the read and the decode, as in FredDataset.
    """
    kind = export_kind(destination)
    _check_destination(kind, destination)
    if isinstance(source, Artifact):
        artifact, facts = source, {}
    else:
        artifact, info = read_file(source, max_decoded_bytes=max_decoded_bytes, **read_options)
        facts = source_facts(source, info.path, info.sha256)
        if "sha256" not in facts and isinstance(read_options.get("sha256"), str):  # verified by the reader
            facts["sha256"] = read_options["sha256"].strip().lower()
    writer = {"imagefolder": export_imagefolder, "npz": export_npz, "safetensors": export_safetensors}[kind]
    return writer(artifact, destination, source=facts, max_decoded_bytes=max_decoded_bytes)


def source_facts(source: Source, name: str, payload_sha256: str) -> dict[str, str]:
    """Name and SHA-256 of the exported file (of its bytes where they can be hashed again: a local file or
    bytes), and the payload SHA-256 its header holds (what ``fredset inspect`` shows)."""
    facts = {"name": os.path.basename(os.fsdecode(name)) or os.fsdecode(name), "payload_sha256": payload_sha256}
    if isinstance(source, (bytes, bytearray, memoryview)):
        facts["sha256"] = hashlib.sha256(source).hexdigest()
    elif isinstance(source, (str, os.PathLike)) and os.path.isfile(source):
        facts["sha256"] = file_digest(source)
    return facts


def export_npz(artifact: Artifact, path: str | os.PathLike, *, source: dict[str, str] | None = None,
               max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES) -> ExportResult:
    """Write the decoded images (normalised space), labels and facts as an .npz readable without pickle."""
    images, labels = _decoded(artifact, max_decoded_bytes)
    facts = _facts(artifact, source, "normalised")
    arrays: dict[str, np.ndarray] = {
        "images": images, "labels": labels, "classes": np.array(artifact.classes, dtype=str),
        "mean": np.array(artifact.mean, dtype=np.float64), "std": np.array(artifact.std, dtype=np.float64),
        "metadata": np.array(json.dumps(facts, ensure_ascii=False)),
    }
    if facts["recommended_lr"] is not None:
        arrays["recommended_lr"] = np.array(facts["recommended_lr"], dtype=np.float64)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    data = buffer.getvalue()
    write_atomically(path, data)
    return _result(path, "npz", artifact, len(data), facts)


def export_safetensors(artifact: Artifact, path: str | os.PathLike, *, source: dict[str, str] | None = None,
                       max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES) -> ExportResult:
    """Write ``images`` and ``labels`` as safetensors, the facts in its string metadata."""
    save = _safetensors_save(path)
    images, labels = _decoded(artifact, max_decoded_bytes)
    facts = _facts(artifact, source, "normalised")
    metadata = {key: value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
                for key, value in facts.items()}
    data = save({"images": images, "labels": labels}, metadata=metadata)
    write_atomically(path, data)
    return _result(path, "safetensors", artifact, len(data), facts)


def export_imagefolder(artifact: Artifact, directory: str | os.PathLike, *, source: dict[str, str] | None = None,
                       max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES) -> ExportResult:
    """Write 8-bit PNGs in pixel space (clipped to [0, 1], rounded), one folder per class, atomically."""
    if artifact.channels not in (1, 3):
        raise FredsetError(f"the images have {artifact.channels} channels; PNG holds 1 (grayscale) or 3 (RGB): "
                           "export to X.npz or X.safetensors instead", directory)
    _check_destination("imagefolder", directory)
    images, _ = _decoded(artifact, max_decoded_bytes)
    shape = (1, -1, 1, 1)  # the float32 arithmetic of Artifact.decode(pixel_space=True), before its clamp
    pixels = images * np.array(artifact.std, np.float32).reshape(shape)
    pixels += np.array(artifact.mean, np.float32).reshape(shape)
    outside = int(np.count_nonzero((pixels < 0) | (pixels > 1)))
    clipped = outside / pixels.size
    np.clip(pixels, 0.0, 1.0, out=pixels)
    codes = np.rint(pixels * 255).astype(np.uint8).transpose(0, 2, 3, 1)  # [N, H, W, C]
    del pixels
    names = folder_names(artifact.classes)
    facts = _facts(artifact, source, "pixel")
    facts.update(png={"bits": 8, "mode": "L" if artifact.channels == 1 else "RGB",
                      "clipped_to": [0, 1], "clipped_fraction": clipped, "rounding": "round(clip(pixel) * 255)"},
                 folders=names)
    target = os.path.abspath(os.fspath(directory))
    parent = os.path.dirname(target)
    temporary = os.path.join(parent, f".{os.path.basename(target)}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    written = 0
    try:
        os.mkdir(temporary)
        start = 0
        for label, count in enumerate(artifact.counts):
            folder = os.path.join(temporary, names[label])
            os.mkdir(folder)
            width = len(str(count - 1))
            for index in range(count):
                data = encode_png(codes[start + index])
                with open(os.path.join(folder, f"{index:0{width}d}.png"), "wb") as stream:
                    stream.write(data)
                written += len(data)
            start += count
        document = json.dumps(facts, indent=2, ensure_ascii=False).encode("utf-8") + b"\n"
        with open(os.path.join(temporary, METADATA_NAME), "wb") as stream:
            stream.write(document)
        written += len(document)
        _check_destination("imagefolder", directory)  # still free (or empty) just before the rename
        os.replace(temporary, target)  # an empty directory at ``target`` is replaced; a non-empty one refuses
    except OSError as error:
        shutil.rmtree(temporary, ignore_errors=True)
        raise FredsetError(f"cannot write the ImageFolder ({error.strerror or error})", directory) from None
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return _result(directory, "imagefolder", artifact, written, facts, clipped)


def folder_names(classes: list[str]) -> list[str]:
    """One folder name per class: the zero-padded label, "-", and the class name with every character
    outside letters, digits and ``. _ + -`` and space replaced by "_" (at most 64 of them). The label
    keeps names unique and makes sorted order the label order."""
    width = len(str(len(classes) - 1))
    names = []
    for label, name in enumerate(classes):
        clean = _UNSAFE.sub("_", name).strip(" .")[:64].strip(" .")
        names.append(f"{label:0{width}d}-{clean}" if clean else f"{label:0{width}d}")
    return names


def _check_destination(kind: str, destination: str | os.PathLike) -> None:
    """FredsetError unless ``destination`` can be written: its folder exists, and a directory target is
    new or empty (a file target is replaced, like every file fredset writes)."""
    path = os.path.abspath(os.fspath(destination))
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):
        raise FredsetError(f"folder {parent} does not exist", destination)
    if kind == "imagefolder":
        if os.path.lexists(path) and not os.path.isdir(path):
            raise FredsetError("exists and is not a directory", destination)
        if os.path.isdir(path) and os.listdir(path):
            raise FredsetError("directory exists and is not empty; export into a new directory (nothing is merged "
                               "or replaced)", destination)
    elif os.path.isdir(path):
        raise FredsetError("is a directory", destination)


def _safetensors_save(path: str | os.PathLike) -> Any:
    try:
        from safetensors.numpy import save
    except ImportError:
        raise FredsetError("writing .safetensors needs the safetensors package: pip install safetensors",
                           path) from None
    return save


def _decoded(artifact: Artifact, max_decoded_bytes: int) -> tuple[np.ndarray, np.ndarray]:
    """The images [N, C, H, W] float32 (normalised, class-sorted) and labels int64 [N], as numpy."""
    images = artifact.decode(max_working_bytes=max_decoded_bytes).numpy()
    return np.ascontiguousarray(images, dtype=np.float32), artifact.labels.numpy().astype(np.int64)


def _facts(artifact: Artifact, source: dict[str, str] | None, space: str) -> dict[str, Any]:
    """What every export records beside the images: enough to train, to map back to pixels, and to tell
    which file the data came from."""
    channels, (height, width) = artifact.channels, artifact.image_size
    if space == "normalised":
        meaning = "images are (pixel - mean) / std per channel, the space the network trains on"
    else:
        meaning = "PNG pixels are round(clip(x * std + mean, 0, 1) * 255), x the normalised image"
    lr = artifact.provenance.get("recommended_lr")
    return {
        "exported_by": f"fredset {__version__}",
        "space": space,
        "space_meaning": meaning,
        "dataset": artifact.dataset,
        "classes": list(artifact.classes),
        "instances_per_class": artifact.counts,
        "image": {"channels": channels, "height": height, "width": width},
        "mean": list(artifact.mean),
        "std": list(artifact.std),
        "recommended_lr": float(lr) if isinstance(lr, (int, float)) and not isinstance(lr, bool) else None,
        "source": dict(source or {}),
    }


def _result(destination: str | os.PathLike, kind: str, artifact: Artifact, size: int, facts: dict[str, Any],
            clipped: float | None = None) -> ExportResult:
    height, width = artifact.image_size
    return ExportResult(os.fspath(destination), kind, (artifact.num_instances, artifact.channels, height, width),
                        artifact.num_classes, size, facts["recommended_lr"], clipped)
