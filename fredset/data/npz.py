"""``.npz`` datasets: arrays ``images`` and ``labels`` (the train split), or ``train_images``/``train_labels``/
``test_images``/...; optional ``classes``, ``mean``, ``std``. Read without pickle."""

from __future__ import annotations

import pathlib
import zipfile

import numpy as np
import torch

from ..errors import FredsetError
from .checksums import file_hashes
from .realdata import RealData
from .statistics import channel_statistics, normalise


def load_npz(path: pathlib.Path, split: str) -> RealData:
    """One split of an ``.npz`` file, normalised with its stored statistics, else those of its train images."""
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as error:
        raise FredsetError(f"cannot read .npz file ({error})", path) from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise FredsetError("not an .npz archive (expected arrays 'images' and 'labels')", path)
    with archive:
        keys = set(archive.files)

        def get(key):
            try:
                return archive[key]
            except (ValueError, OSError, zipfile.BadZipFile, EOFError) as error:
                raise FredsetError(f"cannot read array {key!r} ({str(error).splitlines()[0]})", path) from None

        if f"{split}_images" in keys:
            prefix = f"{split}_"
        elif "images" in keys:
            if split != "train":
                raise FredsetError(f"no {split!r} split (arrays {split}_images and {split}_labels); its arrays "
                                   "'images' and 'labels' are the train split", path)
            prefix = ""
        else:
            raise FredsetError(f"no array 'images' (or '{split}_images'); it has {', '.join(sorted(keys)) or 'none'}",
                               path)
        if f"{prefix}labels" not in keys:
            raise FredsetError(f"no array '{prefix}labels' beside '{prefix}images'", path)
        images = _npz_images(get(f"{prefix}images"), path, f"{prefix}images")
        labels = get(f"{prefix}labels")
        classes = _npz_classes(get("classes"), path) if "classes" in keys else None
        if "mean" in keys or "std" in keys:
            mean, std = _npz_statistics(get("mean") if "mean" in keys else None,
                                        get("std") if "std" in keys else None, images.shape[1], path)
        elif prefix and split != "train":
            if "train_images" not in keys:
                raise FredsetError("no array 'train_images' to compute the normalisation statistics from "
                                   "(or store arrays 'mean' and 'std')", path)
            mean, std = channel_statistics(_npz_images(get("train_images"), path, "train_images"))
        else:
            mean, std = channel_statistics(images)
    labels = _npz_labels(labels, len(images), classes, path, f"{prefix}labels")
    if classes is None:
        classes = [str(i) for i in range(int(labels.max()) + 1 if labels.numel() else 0)]
    if len(mean) != images.shape[1]:
        raise FredsetError(f"statistics for {len(mean)} channels, images with {images.shape[1]}", path)
    source = {"dataset": path.stem, "split": split, "files": file_hashes([path], path.parent),
              "root": str(path.parent), "format": "npz"}
    return RealData(name=path.stem, images=normalise(images, mean, std), labels=labels, classes=classes,
                    mean=mean, std=std, source=source, license=None)


def _npz_images(array: np.ndarray, path, key) -> torch.Tensor:
    """uint8 or float32 ``[N, C, H, W]`` from ``[N, H, W]``, ``[N, H, W, C]`` or ``[N, C, H, W]``."""
    if array.ndim not in (3, 4) or array.shape[0] == 0 or 0 in array.shape:
        raise FredsetError(f"array {key!r} must be non-empty [N, H, W], [N, H, W, C] or [N, C, H, W], "
                           f"found shape {list(array.shape)}", path)
    if array.dtype.kind == "f":
        if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
            raise FredsetError(f"array {key!r}: float images must be finite and in [0, 1]", path)
        array = array.astype(np.float32, copy=False)
    elif array.dtype.kind in "ui":
        if array.dtype != np.uint8:
            if array.min() < 0 or array.max() > 255:
                raise FredsetError(f"array {key!r}: integer images must be in 0..255", path)
            array = array.astype(np.uint8)
    else:
        raise FredsetError(f"array {key!r}: images must be uint8 or float in [0, 1], found {array.dtype}", path)
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if tensor.ndim == 3:
        return tensor.unsqueeze(1)
    channels_first, channels_last = tensor.shape[1] <= 4, tensor.shape[3] <= 4
    if channels_last and not channels_first:
        return tensor.permute(0, 3, 1, 2)
    if channels_first:
        return tensor
    raise FredsetError(f"array {key!r}: cannot tell the channel axis of shape {list(tensor.shape)} "
                       "(expected 1, 3 or 4 channels)", path)


def _npz_labels(labels: np.ndarray, count: int, classes, path, key) -> torch.Tensor:
    if labels.ndim != 1 or labels.dtype.kind not in "ui":
        raise FredsetError(f"array {key!r} must be integers [N], found {labels.dtype} {list(labels.shape)}", path)
    if len(labels) != count:
        raise FredsetError(f"array {key!r} holds {len(labels)} labels for {count} images", path)
    if labels.min() < 0:
        raise FredsetError(f"array {key!r} holds a negative label", path)
    if classes is not None and labels.max() >= len(classes):
        raise FredsetError(f"array {key!r} holds label {int(labels.max())} but 'classes' names "
                           f"{len(classes)}", path)
    return torch.from_numpy(labels.astype(np.int64))


def _npz_classes(array: np.ndarray, path) -> list[str]:
    if array.ndim != 1 or array.dtype.kind not in "US" or len(array) == 0:
        raise FredsetError(f"array 'classes' must be non-empty strings [K], found {array.dtype} "
                           f"{list(array.shape)}", path)
    names = [c.decode("utf-8", "replace") if isinstance(c, bytes) else str(c) for c in array.tolist()]
    if len(set(names)) != len(names):
        raise FredsetError("array 'classes' repeats a name", path)
    return names


def _npz_statistics(mean, std, channels, path):
    if mean is None or std is None:
        raise FredsetError("store both arrays 'mean' and 'std', or neither", path)
    mean = np.asarray(mean, dtype=np.float64).reshape(-1)
    std = np.asarray(std, dtype=np.float64).reshape(-1)
    if len(mean) != channels or len(std) != channels or not np.isfinite(mean).all() or not (std > 0).all():
        raise FredsetError(f"arrays 'mean' and 'std' must hold {channels} finite values (std > 0)", path)
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)
