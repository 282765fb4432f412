"""Importing the output of the FreD reference implementation (docs/ALGORITHM.md, Sources) as a .fredset file.

What the reference saves, all with ``torch.save`` (its DC, DM and TM scripts):

- ``mask.pt``: a float32 tensor [N, C, H, W] of 0s and 1s, one plane per synthetic image (N = classes x
  images per class, class-sorted). Within a class every image and every channel has the same plane: the
  class's k = ``msz_per_channel`` frequencies. It is written once, when the masks are chosen.
- TM: ``images_best.pt`` (and ``images_<iteration>.pt``): the decoded float32 images [N, C, H, W],
  IDCT(mask * F), in the dataset's normalised space (in ZCA space for a ``--zca`` run, which fredset does not
  represent: convert those images only after undoing the whitening), class-sorted; ``labels_best.pt``
  (``labels_<iteration>.pt``) beside them: int64 [N]. The learned learning rate is only logged (log.txt,
  ``Synthetic_LR``): pass it as ``lr``.
- DC and DM: ``res_<method>_<dataset>_<model>_<ipc>ipc.pt``: a dict ``{"data": [[(images, labels)], ...]
  (one entry per experiment), "accs_all_exps": {model: [accuracy, ...]}}``, the accuracies numpy scalars.

Reading: ``torch.load(path, map_location="cpu", weights_only=True)``, with numpy's scalar type and dtypes
allowed besides (they are plain values, and the DC/DM result files hold them). Anything else, any other
Python class, is refused by torch's restricted unpickler before it is built, and :func:`load_reference_file`
says so in one line; nothing is ever fully unpickled.

Recovering the coefficients: the reference decodes with its unnormalised DCT, whose inverse is exact, so an
image is x = IDCT(mask * F) and its orthonormal DCT is zero outside the mask (up to the float32 rounding of
x). fredset's coefficients are that orthonormal DCT at the mask (docs/ALGORITHM.md, Reference DCT scale,
says how they relate to the reference's F), computed in float64 from the float32 images and stored as
float32; decoding them gives the images back to float32 rounding. The fraction of each image's DCT energy
that lies outside its class's mask is reported: about 1e-14 for genuine reference output, large when the
images were not made with that mask (then the .fredset holds only their masked part).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import re
import warnings
import zipfile
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
import torch

from .artifact import Artifact
from .data import load_dataset
from .data.registry import canonical_name, dataset_spec
from .dct import dct2
from .errors import FredsetError
from .files import sha256_file

__all__ = ["Conversion", "DatasetFacts", "ENERGY_WARNING", "MAX_INPUT_BYTES", "PROVENANCE_NOTE", "REFERENCE",
           "ReferenceOutput", "class_masks", "convert", "convert_reference", "dataset_facts", "load_reference_file",
           "read_reference"]

REFERENCE = "https://github.com/sdh0818/FreD"
PROVENANCE_NOTE = f"converted from the reference implementation ({REFERENCE})"
#: A reference file larger than this is refused before torch reads it.
MAX_INPUT_BYTES = 4 * 2**30
#: Above this fraction of DCT energy outside the mask the images were not made with that mask.
ENERGY_WARNING = 1e-6


# -- reading the reference's files ----------------------------------------------------------------------------

def _numpy_value_types() -> list[Any]:
    """numpy's scalar reconstructor and dtype classes: the plain values torch's restricted unpickler needs
    allowed for numpy scalars (the DC/DM result files' accuracies). torch < 2.5 has no ``safe_globals``;
    there numpy scalars are refused like any other object."""
    try:
        from numpy._core.multiarray import scalar  # numpy 2
    except ImportError:  # numpy 1
        from numpy.core.multiarray import scalar  # type: ignore[no-redef]
    return [scalar, np.dtype] + [type(np.dtype(code)) for code in "?bBhHiIlLqQefdgFD"]


@contextlib.contextmanager
def _allowed_numpy_values() -> Iterator[None]:
    safe_globals = getattr(torch.serialization, "safe_globals", None)  # torch >= 2.5
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. "Detected pickle protocol 4": the error, if any, says enough
        if safe_globals is None:
            yield
        else:
            with safe_globals(_numpy_value_types()):
                yield


_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")
_BOILERPLATE = ("Weights only load failed", "Please file an issue", "Check the documentation", "In PyTorch 2.6",
                "Re-running", "(1)", "(2)")


def _unpickling_reason(message: str) -> str:
    """The short cause in torch's long weights_only error message."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith(_BOILERPLATE)]
    return lines[-1][:200] if lines else "not a torch.save file of tensors"


def load_reference_file(path: str | os.PathLike, *, max_bytes: int = MAX_INPUT_BYTES) -> Any:
    """The content of a ``torch.save`` file, read with ``torch.load(weights_only=True)`` on the CPU.

    Tensors, lists, tuples, dicts, numbers, strings and numpy scalars load; a file holding any other
    Python object is refused with one line naming it (FredsetError), without building it.
    """
    try:
        size = os.stat(path).st_size
    except OSError as error:
        raise FredsetError(f"cannot read ({error.strerror or error})", path) from None
    if not os.path.isfile(path):
        raise FredsetError("not a regular file", path)
    if size > max_bytes:
        raise FredsetError(f"{size:,} bytes, more than the {max_bytes:,} allowed", path)
    try:
        with _allowed_numpy_values():
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        found = _GLOBAL.search(str(error))
        if found:
            raise FredsetError(f"refused: it holds a Python object of {found.group(1)}, not only tensors and plain "
                               "containers (fredset reads reference files with torch.load(weights_only=True) and "
                               "never unpickles anything else)", path) from None
        raise FredsetError(f"not a torch.save file of tensors (torch.load(weights_only=True): "
                           f"{_unpickling_reason(str(error))})", path) from None
    except OSError as error:
        raise FredsetError(f"cannot read ({error.strerror or error})", path) from None
    except (RuntimeError, EOFError, ValueError, zipfile.BadZipFile, KeyError, TypeError, AttributeError,
            IndexError) as error:
        reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        raise FredsetError(f"not a torch.save file of tensors ({reason})", path) from None


@dataclass(eq=False)
class ReferenceOutput:
    """The reference's tensors as read: images [N, C, H, W], labels [N] (None when neither given nor saved
    beside the images), the dense mask as saved; ``files`` maps each file read to its SHA-256."""

    images: torch.Tensor
    labels: torch.Tensor | None
    mask: torch.Tensor
    files: dict[str, str] = field(default_factory=dict)
    labels_from: str | None = None


def _labels_beside(images_path: str | os.PathLike) -> str | None:
    """``labels_X.pt`` beside ``images_X.pt``, as the reference TM script writes them, when it exists."""
    folder, name = os.path.split(os.fspath(images_path))
    match = re.fullmatch(r"images_(.+)\.pt", name)
    if match is None:
        return None
    candidate = os.path.join(folder, f"labels_{match.group(1)}.pt")
    return candidate if os.path.isfile(candidate) else None


def _images_and_labels(content: Any, path: str | os.PathLike, experiment: int | None
                       ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Images (and labels, where the file holds them) from a tensor, an (images, labels) pair, or a DC/DM
    result dict ``{"data": [[(images, labels)], ...]}`` (one entry per experiment)."""
    if isinstance(content, torch.Tensor):
        return content, None
    if isinstance(content, dict) and "data" in content:
        runs = content["data"]
        if not isinstance(runs, (list, tuple)) or not runs:
            raise FredsetError("its 'data' holds no experiments", path)
        if experiment is None:
            if len(runs) > 1:
                raise FredsetError(f"it holds {len(runs)} experiments; choose one with experiment 0..{len(runs) - 1} "
                                   "(--experiment)", path)
            experiment = 0
        if not 0 <= experiment < len(runs):
            raise FredsetError(f"no experiment {experiment}: it holds {len(runs)} (0..{len(runs) - 1})", path)
        content = runs[experiment]
        while isinstance(content, (list, tuple)) and len(content) == 1:  # [(images, labels)]
            content = content[0]
    elif experiment is not None:
        raise FredsetError("experiment applies to a DC/DM result file (a dict with 'data'); this file holds "
                           f"{_describe(content)}", path)
    if isinstance(content, (list, tuple)) and len(content) == 2 and all(isinstance(t, torch.Tensor) for t in content):
        return content[0], content[1]
    raise FredsetError("expected a tensor of images [N, C, H, W] (images_best.pt), an (images, labels) pair or a "
                       f"DC/DM result dict with 'data'; found {_describe(content)}", path)


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {str(value.dtype).replace('torch.', '')} tensor {list(value.shape)}"
    if isinstance(value, dict):
        keys = ", ".join(repr(k) for k in list(value)[:8])
        return f"a dict with keys {keys}" if keys else "an empty dict"
    if isinstance(value, (list, tuple)):
        return f"a {type(value).__name__} of {len(value)}"
    return f"a {type(value).__name__}"


def _file_names(paths: list[str | os.PathLike]) -> list[str]:
    """Base names, or the paths as given where two base names collide."""
    names = [os.path.basename(os.fspath(p)) for p in paths]
    return names if len(set(names)) == len(names) else [os.fspath(p) for p in paths]


def read_reference(images_path: str | os.PathLike, mask_path: str | os.PathLike, *,
                   labels_path: str | os.PathLike | None = None, experiment: int | None = None,
                   max_bytes: int = MAX_INPUT_BYTES) -> ReferenceOutput:
    """Read the reference's images, mask and labels (see the module docstring for what it saves).

    Labels come from ``labels_path``; else from the images file itself (a DC/DM result or a pair); else from
    ``labels_X.pt`` beside ``images_X.pt``; else they are left None, and :func:`convert_reference` takes the
    images as class-sorted equal blocks, the reference's own order.
    """
    images, labels = _images_and_labels(load_reference_file(images_path, max_bytes=max_bytes), images_path,
                                        experiment)
    read = [images_path]
    labels_from = f"saved with the images in {os.path.basename(os.fspath(images_path))}" if labels is not None else None
    if labels_path is None and labels is None:
        labels_path = _labels_beside(images_path)
    if labels_path is not None:
        content = load_reference_file(labels_path, max_bytes=max_bytes)
        if not isinstance(content, torch.Tensor):
            raise FredsetError(f"expected a tensor of labels [N]; found {_describe(content)}", labels_path)
        labels, labels_from = content, f"read from {os.path.basename(os.fspath(labels_path))}"
        read.append(labels_path)
    mask = load_reference_file(mask_path, max_bytes=max_bytes)
    if not isinstance(mask, torch.Tensor):
        raise FredsetError(f"expected a dense mask tensor of 0s and 1s; found {_describe(mask)}", mask_path)
    read.append(mask_path)
    files = {name: sha256_file(path) for name, path in zip(_file_names(read), read)}
    return ReferenceOutput(images, labels, mask, files, labels_from)


# -- from dense tensors to an Artifact ------------------------------------------------------------------------

@dataclass(frozen=True)
class DatasetFacts:
    """What a conversion needs to know about the dataset: a registry spec's, or a loaded dataset's."""

    name: str
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    channels: int
    image_size: tuple[int, int]
    license: str | None = None


def dataset_facts(name_or_path: str | os.PathLike, *, root: str | os.PathLike | None = None) -> DatasetFacts:
    """A registry dataset's facts from its spec, without loading (or downloading) any data; for the path of an
    ImageFolder or .npz, the facts of its train split, which is loaded for that (statistics, class names)."""
    text = os.fspath(name_or_path)
    looks_like_path = isinstance(name_or_path, os.PathLike) or "/" in text or os.sep in text \
        or text.lower().endswith(".npz")
    if not looks_like_path and canonical_name(text) is not None:
        spec = dataset_spec(text)
        return DatasetFacts(spec.name, spec.classes, spec.mean, spec.std, spec.channels, spec.image_size,
                            spec.license)
    real = load_dataset(name_or_path, split="train", root=root)
    return DatasetFacts(real.name, tuple(real.classes), real.mean, real.std, real.channels, real.image_size,
                        real.license)


@dataclass(eq=False)
class Conversion:
    """A converted artifact and how faithfully it holds the reference's images.

    ``max_abs_error``: the largest |decoded - reference| over every value (float32 rounding: about 1e-7
    times ``image_scale``, the largest |reference value|). ``energy_outside_mask``: the largest fraction,
    over the images, of an image's DCT energy outside its class's mask. ``reordered``: the images were not
    class-sorted, and the artifact holds them class-sorted (stable within a class).
    """

    artifact: Artifact
    max_abs_error: float
    image_scale: float
    energy_outside_mask: float
    labels_from: str
    reordered: bool

    @property
    def mask_mismatch(self) -> bool:
        """The images were not produced by this mask (their energy outside it is above ENERGY_WARNING)."""
        return self.energy_outside_mask > ENERGY_WARNING


def class_masks(mask: torch.Tensor, labels: torch.Tensor, num_classes: int, channels: int,
                image_size: tuple[int, int], path: str | os.PathLike | None = None) -> torch.Tensor:
    """Per-class flat frequency indices int64 [K, k] from a dense 0/1 mask.

    Accepted layouts: [N, C, H, W] (the reference's: one plane per image and channel), [N, H, W], [K, C, H, W],
    [K, H, W], [C, H, W] or [H, W] (one mask for all classes); C may be 1. Refused with one line: values other
    than 0 and 1; planes that differ between the channels of a class or between the images of a class (a
    .fredset mask is one per class, shared by its images and channels); classes that keep different numbers
    of frequencies (a .fredset file has one k); an empty mask.
    """
    height, width = image_size
    count = int(labels.shape[0])
    if mask.dtype.is_complex:
        raise FredsetError(f"the mask must hold 0s and 1s, found dtype {mask.dtype}", path)
    values = mask.detach().cpu()
    if values.dim() == 2:
        values = values[None, None]
    elif values.dim() == 3:
        first = values.shape[0]
        if first in (count, num_classes):
            values = values[:, None]
        elif first == channels:
            values = values[None]
        else:
            raise FredsetError(f"mask of shape {list(mask.shape)}: {first} planes are not one per image ({count}), "
                               f"per class ({num_classes}) or per channel ({channels})", path)
    elif values.dim() != 4:
        raise FredsetError(f"mask of shape {list(mask.shape)}: expected [N, C, H, W] (the reference's), [N, H, W], "
                           "[K, C, H, W], [K, H, W], [C, H, W] or [H, W]", path)
    planes, mask_channels = int(values.shape[0]), int(values.shape[1])
    if tuple(values.shape[2:]) != (height, width):
        raise FredsetError(f"mask planes are {values.shape[2]}x{values.shape[3]}, the images {height}x{width}", path)
    if mask_channels not in (1, channels):
        raise FredsetError(f"mask has {mask_channels} channels, the images {channels}", path)
    if planes not in (count, num_classes, 1):
        raise FredsetError(f"mask has {planes} planes: expected one per image ({count}), one per class "
                           f"({num_classes}) or one for all", path)
    binary = values != 0
    if not bool(((values == 0) | (values == 1)).all()):
        raise FredsetError("the mask holds values other than 0 and 1", path)
    flat = binary.reshape(planes, mask_channels, height * width)
    differs = (flat != flat[:, :1]).any(dim=(1, 2))
    if bool(differs.any()):
        row = int(differs.nonzero()[0, 0])
        label = int(labels[row]) if planes == count else row
        raise FredsetError(f"the mask of class {label} differs between channels; a .fredset file keeps one mask per "
                           "class, shared by all its channels", path)
    flat = flat[:, 0]  # [planes, H*W]
    if planes == count:  # one plane per image: every image of a class must have its class's plane
        present, first = np.unique(labels.numpy(), return_index=True)  # each class's first image
        if len(present) < num_classes:
            missing = int(np.setdiff1d(np.arange(num_classes), present)[0])
            raise FredsetError(f"no image of class {missing}; a .fredset file needs at least one per class", path)
        per_class = flat[torch.from_numpy(first)]
        mismatch = (flat != per_class[labels]).any(dim=1)
        if bool(mismatch.any()):
            row = int(mismatch.nonzero()[0, 0])
            raise FredsetError(f"image {row} of class {int(labels[row])} has another mask than the class's first "
                               "image; a .fredset file keeps one mask per class", path)
    elif planes == num_classes:
        per_class = flat
    else:
        per_class = flat.expand(num_classes, -1)
    ks = per_class.sum(dim=1)
    if bool((ks == 0).any()):
        raise FredsetError(f"the mask of class {int((ks == 0).nonzero()[0, 0])} keeps no frequency", path)
    if bool((ks != ks[0]).any()):
        other = int((ks != ks[0]).nonzero()[0, 0])
        raise FredsetError(f"the mask keeps k = {int(ks[0])} frequencies for class 0 but {int(ks[other])} for class "
                           f"{other}; a .fredset file needs the same k for every class", path)
    return torch.stack([row.nonzero()[:, 0] for row in per_class]).to(torch.int64)


def _checked_labels(labels: torch.Tensor | None, count: int, num_classes: int,
                    path: str | os.PathLike | None) -> tuple[torch.Tensor, str]:
    if labels is None:
        if count % num_classes:
            raise FredsetError(f"no labels saved or given, and {count} images are not {num_classes} equal class-sorted "
                               "blocks; pass the labels file (--labels)", path)
        return (torch.arange(num_classes).repeat_interleave(count // num_classes),
                f"inferred: class-sorted blocks of {count // num_classes}")
    if not isinstance(labels, torch.Tensor) or labels.dtype.is_floating_point or labels.dtype.is_complex \
            or labels.dtype == torch.bool or labels.dim() != 1:
        raise FredsetError(f"labels must be an integer tensor [N], found {_describe(labels)}", path)
    if labels.shape[0] != count:
        raise FredsetError(f"{labels.shape[0]} labels for {count} images", path)
    labels = labels.detach().cpu().to(torch.int64)
    if count and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise FredsetError(f"labels must be in 0..{num_classes - 1} (the dataset's classes), found "
                           f"{int(labels.min())}..{int(labels.max())}", path)
    return labels, ""


def convert_reference(images: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor | None, *,
                      dataset: DatasetFacts, provenance: dict[str, Any] | None = None,
                      images_path: str | os.PathLike | None = None, mask_path: str | os.PathLike | None = None,
                      labels_from: str | None = None) -> Conversion:
    """An Artifact holding the reference's ``images`` exactly: per class, the orthonormal DCT of its images at
    its mask (:func:`class_masks`). ``provenance`` is merged over the conversion's own record."""
    if not isinstance(images, torch.Tensor) or not images.dtype.is_floating_point or images.dim() != 4:
        raise FredsetError(f"images must be a float tensor [N, C, H, W], found {_describe(images)}", images_path)
    count, channels, height, width = (int(s) for s in images.shape)
    if count == 0:
        raise FredsetError("no images", images_path)
    if (channels, (height, width)) != (dataset.channels, tuple(dataset.image_size)):
        raise FredsetError(f"images are {channels}x{height}x{width} but {dataset.name} images are "
                           f"{dataset.channels}x{dataset.image_size[0]}x{dataset.image_size[1]}", images_path)
    images = images.detach().cpu().to(torch.float32)
    if not bool(torch.isfinite(images).all()):
        raise FredsetError("the images hold NaN or infinity", images_path)
    num_classes = len(dataset.classes)
    labels, inferred = _checked_labels(labels, count, num_classes, images_path)
    labels_from = labels_from or inferred
    masks = class_masks(mask, labels, num_classes, channels, (height, width), mask_path)
    order = torch.argsort(labels, stable=True)
    reordered = not torch.equal(order, torch.arange(count))
    images, labels = images[order], labels[order]
    counts = torch.bincount(labels, minlength=num_classes)
    if bool((counts == 0).any()):
        raise FredsetError(f"no image of class {int((counts == 0).nonzero()[0, 0])}; a .fredset file needs at least "
                           "one per class", images_path)
    coefficients, worst, start = [], 0.0, 0
    for label, n in enumerate(counts.tolist()):
        spectrum = dct2(images[start:start + n].to(torch.float64)).flatten(-2)  # [n, C, H*W]
        start += n
        energy = spectrum.square()
        kept = energy[..., masks[label]].sum(dim=(1, 2))
        total = energy.sum(dim=(1, 2))
        outside = (total - kept).clamp_min(0) / total.clamp_min(torch.finfo(torch.float64).tiny)
        worst = max(worst, float(outside.max()))
        coefficients.append(spectrum[..., masks[label]].to(torch.float32).contiguous())
    ipc = counts[0].item() * masks.shape[1] / (height * width) if bool((counts == counts[0]).all()) else None
    record: dict[str, Any] = {"objective": None, "parameterization": "freq", "converted": PROVENANCE_NOTE}
    if ipc is not None:
        record["budget"] = {"ipc": ipc}
    record.update(provenance or {})
    artifact = Artifact(coefficients=coefficients, masks=masks, classes=list(dataset.classes),
                        image_size=(height, width), mean=dataset.mean, std=dataset.std, dataset=dataset.name,
                        provenance=record, dataset_license=dataset.license)
    decoded = artifact.decode()
    error = float((decoded - images).abs().max())
    scale = float(images.abs().max())
    artifact.provenance["conversion"] = {"max_abs_error": error, "image_scale": scale,
                                         "energy_outside_mask": worst, "labels": labels_from,
                                         "reordered_to_class_order": reordered}
    return Conversion(artifact, error, scale, worst, labels_from, reordered)


def convert(images_path: str | os.PathLike, mask_path: str | os.PathLike, dataset: str | os.PathLike | DatasetFacts,
            *, labels_path: str | os.PathLike | None = None, experiment: int | None = None, lr: float | None = None,
            objective: str | None = None, data_root: str | os.PathLike | None = None,
            max_bytes: int = MAX_INPUT_BYTES) -> Conversion:
    """Read the reference's files (:func:`read_reference`) and convert them (:func:`convert_reference`) for
    ``dataset`` (a registry name, whose spec is enough, a dataset path, or DatasetFacts). ``lr`` (TM's
    learned rate from its log) becomes the file's recommended lr; ``objective`` (dc, dm, tm) is recorded."""
    if lr is not None and not (lr > 0 and np.isfinite(lr)):
        raise FredsetError(f"the learning rate must be a positive number, got {lr}")
    if objective is not None and objective not in ("dc", "dm", "tm"):
        raise FredsetError(f"objective must be dc, dm or tm, got {objective!r}")
    facts = dataset if isinstance(dataset, DatasetFacts) else dataset_facts(dataset, root=data_root)
    output = read_reference(images_path, mask_path, labels_path=labels_path, experiment=experiment,
                            max_bytes=max_bytes)
    provenance: dict[str, Any] = {"objective": objective, "source": {"reference": REFERENCE, "files": output.files}}
    if lr is not None:
        provenance["recommended_lr"] = float(lr)
    return convert_reference(output.images, output.mask, output.labels, dataset=facts, provenance=provenance,
                             images_path=images_path, mask_path=mask_path, labels_from=output.labels_from)
