"""Loading a whole split into a RealData: named datasets, ImageFolder directories and ``.npz`` files.

MNIST and Fashion-MNIST are read from their IDX files with :func:`read_idx` (no torchvision). SVHN and
CIFAR-10/100 are read through torchvision when it imports (our code never unpickles the CIFAR batches).
Tiny-ImageNet and ImageFolder directories are decoded with Pillow when it imports. Every file read is
hashed (SHA-256) into ``source["files"]`` and checked against a ``SHA256SUMS`` file found next to it.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import zipfile

import numpy as np
import torch

from ..errors import FredsetError
from . import registry
from .idx import read_idx
from .realdata import RealData

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm",
                              ".pbm"})
_PATH_SPLITS = ("train", "test", "val")
_SPLIT_FALLBACK = {"test": "val", "val": "test"}
_TINY_IMAGENET_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
_TINY_IMAGENET_MD5 = "90528d7ca1a48142e341f4ef8d21d0de"


def load_dataset(name_or_path: str | os.PathLike, *, split: str = "train",
                 root: str | os.PathLike | None = None, download: bool = False) -> RealData:
    """Load a whole split, normalised.

    ``name_or_path``: a registry name (``mnist``, ``fashion-mnist``, ``svhn``, ``cifar10``, ``cifar100``,
    ``tiny-imagenet`` and aliases such as ``fmnist``, ``FashionMNIST``, ``cifar-10``), or a path to an
    ImageFolder directory (class sub-folders of images, optionally under ``train/``, ``test/``, ``val/``) or to
    an ``.npz`` file (arrays ``images`` and ``labels``, or ``train_images``/``train_labels``/``test_images``/...;
    optional ``classes``, ``mean``, ``std``). A bare registry name always means the named dataset: write
    ``./mnist`` for a folder of that name. Named datasets are searched for as described in
    :mod:`fredset.data.registry`; with ``download=True`` and torchvision importable, missing data is downloaded
    into ``root`` (else ``~/.cache/fredset``). Named datasets use their published statistics; others use
    per-channel statistics of their train data.
    """
    text = os.fspath(name_or_path)
    looks_like_path = (isinstance(name_or_path, os.PathLike) or os.sep in text or "/" in text
                       or text.lower().endswith(".npz"))
    canonical = None if looks_like_path else registry.canonical_name(text)
    if canonical is not None:
        return _load_named(canonical, split, root, download)
    path = pathlib.Path(text).expanduser()
    if not path.exists():
        if looks_like_path or pathlib.Path(text).suffix:
            raise FredsetError("no such file or directory (expected an ImageFolder directory or an .npz file)",
                               path)
        raise FredsetError(f"unknown dataset {text!r}; known: {', '.join(registry.DATASETS)}, or the path of "
                           "an ImageFolder directory or an .npz file")
    if path.is_dir():
        return _load_image_folder(path, _path_split(split, path))
    if path.suffix.lower() == ".npz" or zipfile.is_zipfile(path):
        return _load_npz(path, _path_split(split, path))
    raise FredsetError("not a dataset: expected an ImageFolder directory or an .npz file", path)


# -- named datasets -------------------------------------------------------------------------------------------

def _load_named(name: str, split: str, root, download: bool) -> RealData:
    spec = registry.DATASETS[name]
    split = registry.resolve_split(name, split)
    found = registry.locate(name, split, root)
    if found is None:
        if download:
            _download(name, split, root)
            found = registry.locate(name, split, root)
        if found is None:
            extra = "" if download else " (download not requested)"
            raise registry.not_found_error(name, split, root, extra)
    directory, files = found
    hashes = _checksums(files, directory)
    if name in ("mnist", "fashion-mnist"):
        images, labels, classes = _read_idx_pair(name, spec, files)
    elif name in ("svhn", "cifar10", "cifar100"):
        images, labels, classes = _read_torchvision(name, spec, split, directory)
    else:
        images, labels, classes = _read_tiny_imagenet(spec, split, directory, files, hashes)
    _check_labels(labels, len(classes), name)
    source = {"dataset": name, "split": split, "files": hashes, "root": str(directory)}
    return RealData(name=name, images=_normalise(images, spec.mean, spec.std), labels=labels, classes=classes,
                    mean=spec.mean, std=spec.std, source=source, license=spec.license)


def _read_idx_pair(name, spec, files):
    image_file, label_file = files
    images = read_idx(image_file)
    labels = read_idx(label_file)
    if images.ndim != 3 or images.dtype != np.uint8 or tuple(images.shape[1:]) != spec.image_size:
        raise FredsetError(f"expected {name} images uint8 [N, {spec.image_size[0]}, {spec.image_size[1]}], "
                           f"found {images.dtype} {list(images.shape)}", image_file)
    if labels.ndim != 1 or labels.dtype.kind not in "ui":
        raise FredsetError(f"expected {name} labels as integers [N], found {labels.dtype} {list(labels.shape)}",
                           label_file)
    if len(labels) != len(images):
        raise FredsetError(f"{len(labels)} labels for {len(images)} images in {image_file.name}", label_file)
    if labels.size and (labels.min() < 0 or labels.max() >= spec.num_classes):
        raise FredsetError(f"labels outside 0..{spec.num_classes - 1}", label_file)
    return (torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels.astype(np.int64)),
            list(spec.classes))


def _torchvision(name: str, purpose: str):
    try:
        import torchvision.datasets  # noqa: F401  (optional dependency)
        import torchvision.datasets.utils  # noqa: F401
    except Exception as error:  # ImportError, or a torchvision built for another torch
        raise FredsetError(f"dataset {name!r}: {purpose} needs torchvision, which does not import here "
                           f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}); "
                           "pip install torchvision") from None
    import torchvision
    return torchvision


def _read_torchvision(name, spec, split, directory: pathlib.Path):
    torchvision = _torchvision(name, "reading it")
    try:
        if name == "svhn":
            dataset = torchvision.datasets.SVHN(str(directory), split=split, download=False)
            images = torch.from_numpy(np.ascontiguousarray(dataset.data, dtype=np.uint8))
            labels = torch.as_tensor(np.asarray(dataset.labels), dtype=torch.int64)
            classes = list(spec.classes)
        else:
            kind = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
            dataset = kind(str(directory.parent), train=split == "train", download=False)
            images = torch.from_numpy(np.ascontiguousarray(dataset.data, dtype=np.uint8)).permute(0, 3, 1, 2)
            labels = torch.as_tensor(dataset.targets, dtype=torch.int64)
            classes = [str(c) for c in dataset.classes]
    except FredsetError:
        raise
    except Exception as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise FredsetError(f"dataset {name!r}: torchvision could not read the {split} split ({message})",
                           directory) from None
    if tuple(images.shape[1:]) != (spec.channels, *spec.image_size):
        raise FredsetError(f"dataset {name!r}: unexpected image shape {list(images.shape)}", directory)
    if len(labels) != len(images):
        raise FredsetError(f"dataset {name!r}: {len(labels)} labels for {len(images)} images", directory)
    return images, labels, classes


def _read_tiny_imagenet(spec, split, directory: pathlib.Path, files, hashes):
    wnids_file = directory / "wnids.txt"
    wnids = sorted(line.strip() for line in wnids_file.read_text("utf-8").splitlines() if line.strip())
    if len(set(wnids)) != len(wnids) or not wnids:
        raise FredsetError("wnids.txt lists no classes or repeats one", wnids_file)
    index = {wnid: i for i, wnid in enumerate(wnids)}
    if split == "train":
        paths, labels = [], []
        for wnid in wnids:
            found = _image_files(directory / "train" / wnid)
            if not found:
                raise FredsetError(f"class {wnid} has no images", directory / "train" / wnid)
            paths += found
            labels += [index[wnid]] * len(found)
    else:
        annotations = directory / "val" / "val_annotations.txt"
        paths, labels = [], []
        for number, line in enumerate(annotations.read_text("utf-8").splitlines(), 1):
            fields = line.split("\t")
            if not line.strip():
                continue
            if len(fields) < 2 or fields[1] not in index:
                raise FredsetError(f"line {number}: expected 'FILE<TAB>WNID' with a WNID of wnids.txt",
                                   annotations)
            paths.append(directory / "val" / "images" / fields[0])
            labels.append(index[fields[1]])
    hashes.update(_checksums(paths, directory))
    images = _decode_images(paths, channels=3)
    return images, torch.tensor(labels, dtype=torch.int64), wnids


def _download(name: str, split: str, root) -> None:
    torchvision = _torchvision(name, "--download")
    target = pathlib.Path(root).expanduser() if root is not None else registry.CACHE_DIR.expanduser()
    target = target / name
    try:
        target.mkdir(parents=True, exist_ok=True)
        datasets = torchvision.datasets
        if name in ("mnist", "fashion-mnist"):
            kind = datasets.MNIST if name == "mnist" else datasets.FashionMNIST
            kind(str(target), train=split == "train", download=True)
        elif name == "svhn":
            datasets.SVHN(str(target), split=split, download=True)
        elif name in ("cifar10", "cifar100"):
            kind = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
            kind(str(target), train=split == "train", download=True)
        else:
            datasets.utils.download_and_extract_archive(_TINY_IMAGENET_URL, str(target), md5=_TINY_IMAGENET_MD5)
    except Exception as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise FredsetError(f"dataset {name!r}: download failed ({message})", target) from None


# -- ImageFolder ----------------------------------------------------------------------------------------------

def _path_split(split, path) -> str:
    if not isinstance(split, str) or split.lower() not in _PATH_SPLITS:
        raise FredsetError(f"bad split {split!r}; choose one of {', '.join(_PATH_SPLITS)}", path)
    return split.lower()


def _split_folder(path: pathlib.Path, split: str) -> pathlib.Path | None:
    """The folder of ``split`` when ``path`` has train/test/val sub-folders, else None (path is one split)."""
    present = [name for name in _PATH_SPLITS if (path / name).is_dir()]
    if not present:
        return None
    for name in (split, _SPLIT_FALLBACK.get(split)):
        if name in present:
            return path / name
    raise FredsetError(f"no {split!r} split (it has {', '.join(present)})", path)


def _class_folders(folder: pathlib.Path) -> list[pathlib.Path]:
    classes = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise FredsetError("no class sub-folders (expected an ImageFolder: one folder of images per class)", folder)
    return classes


def _image_files(folder: pathlib.Path) -> list[pathlib.Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def _scan_folder(folder: pathlib.Path, classes: list[str] | None = None):
    """Image paths and labels of an ImageFolder split; ``classes`` fixes the label order (of the train split)."""
    folders = _class_folders(folder)
    names = [p.name for p in folders]
    if classes is None:
        classes = names
    unknown = sorted(set(names) - set(classes))
    if unknown:
        raise FredsetError(f"class folder {unknown[0]!r} is not a class of the train split", folder)
    paths, labels = [], []
    index = {name: i for i, name in enumerate(classes)}
    for class_folder in folders:
        found = _image_files(class_folder)
        if not found:
            raise FredsetError("class folder holds no images "
                               f"({', '.join(sorted(IMAGE_EXTENSIONS))})", class_folder)
        paths += found
        labels += [index[class_folder.name]] * len(found)
    return paths, torch.tensor(labels, dtype=torch.int64), classes


def _load_image_folder(path: pathlib.Path, split: str) -> RealData:
    split_folder = _split_folder(path, split)
    if split_folder is None and split != "train":
        raise FredsetError(f"no {split!r} split: the folder is one split of class folders; give a folder with "
                           "train/ and test/ (or val/) sub-folders, or the test folder's own path", path)
    folder = split_folder or path
    train_folder = path / "train" if split_folder is not None and (path / "train").is_dir() else None
    classes = None
    hashes: dict[str, str] = {}
    mean = std = None
    if train_folder is not None and train_folder != folder:
        train_paths, _, classes = _scan_folder(train_folder)
        hashes.update(_checksums(train_paths, path))
        mean, std = _statistics(_decode_images(train_paths))
    paths, labels, classes = _scan_folder(folder, classes)
    hashes.update(_checksums(paths, path))
    images = _decode_images(paths)
    if mean is None:
        mean, std = _statistics(images)
    if len(mean) != images.shape[1]:
        raise FredsetError(f"the {split} images have {images.shape[1]} channels, the train images {len(mean)}",
                           folder)
    source = {"dataset": path.name, "split": split, "files": hashes, "root": str(path), "format": "imagefolder"}
    return RealData(name=path.name, images=_normalise(images, mean, std), labels=labels, classes=list(classes),
                    mean=mean, std=std, source=source, license=None)


def _decode_images(paths: list[pathlib.Path], channels: int | None = None) -> torch.Tensor:
    """uint8 ``[N, C, H, W]``: grayscale (C = 1) when every image is, else RGB, unless ``channels`` is given."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise FredsetError("decoding images needs Pillow, which is not installed: pip install pillow",
                           paths[0].parent if paths else None) from None
    grey_modes = {"1", "L", "LA", "I", "I;16", "F"}
    if channels is None:
        channels = 1
        for path in paths:
            try:
                with Image.open(path) as image:
                    if image.mode not in grey_modes:
                        channels = 3
                        break
            except (UnidentifiedImageError, OSError, ValueError) as error:
                raise FredsetError(f"cannot decode image ({error})", path) from None
    mode = "L" if channels == 1 else "RGB"
    out = None
    for i, path in enumerate(paths):
        try:
            with Image.open(path) as image:
                pixels = np.asarray(image.convert(mode), dtype=np.uint8)
        except (UnidentifiedImageError, OSError, ValueError) as error:
            raise FredsetError(f"cannot decode image ({error})", path) from None
        if out is None:
            out = np.empty((len(paths), *pixels.shape[:2], channels), dtype=np.uint8)
        if pixels.shape[:2] != out.shape[1:3]:
            raise FredsetError(f"image is {pixels.shape[1]}x{pixels.shape[0]}, the first image "
                               f"{out.shape[2]}x{out.shape[1]}; all images must have one size", path)
        out[i] = pixels.reshape(out.shape[1:])
    if out is None:
        raise FredsetError("no images")
    return torch.from_numpy(out).permute(0, 3, 1, 2)


# -- npz ------------------------------------------------------------------------------------------------------

def _load_npz(path: pathlib.Path, split: str) -> RealData:
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
            mean, std = _statistics(_npz_images(get("train_images"), path, "train_images"))
        else:
            mean, std = _statistics(images)
    labels = _npz_labels(labels, len(images), classes, path, f"{prefix}labels")
    if classes is None:
        classes = [str(i) for i in range(int(labels.max()) + 1 if labels.numel() else 0)]
    if len(mean) != images.shape[1]:
        raise FredsetError(f"statistics for {len(mean)} channels, images with {images.shape[1]}", path)
    source = {"dataset": path.stem, "split": split, "files": _checksums([path], path.parent),
              "root": str(path.parent), "format": "npz"}
    return RealData(name=path.stem, images=_normalise(images, mean, std), labels=labels, classes=classes,
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


# -- shared helpers -------------------------------------------------------------------------------------------

def _check_labels(labels: torch.Tensor, num_classes: int, name: str) -> None:
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise FredsetError(f"dataset {name!r}: labels outside 0..{num_classes - 1}")


def _statistics(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) std of uint8 or [0, 1] float images; a constant channel gets std 1."""
    channels = images.shape[1]
    flat = images.transpose(0, 1).reshape(channels, -1)
    scale = 255.0 if images.dtype == torch.uint8 else 1.0
    # Chunked float64 sums: exact enough for any size, no full float64 copy.
    total = torch.zeros(channels, dtype=torch.float64)
    squares = torch.zeros(channels, dtype=torch.float64)
    step = 1 << 22
    for start in range(0, flat.shape[1], step):
        chunk = flat[:, start:start + step].to(torch.float64)
        total += chunk.sum(dim=1)
        squares += (chunk * chunk).sum(dim=1)
    count = flat.shape[1]
    mean = total / count
    var = (squares / count - mean * mean).clamp_min(0)
    std = var.sqrt() / scale
    mean = mean / scale
    return (tuple(float(m) for m in mean),
            tuple(float(s) if s > 1e-12 else 1.0 for s in std))


def _normalise(images: torch.Tensor, mean, std) -> torch.Tensor:
    """float32 ``(images / 255 - mean) / std`` (``images`` uint8, or float in [0, 1]) for the whole split."""
    shape = (1, -1, 1, 1)
    out = torch.empty(images.shape, dtype=torch.float32)   # contiguous [N, C, H, W], one conversion pass
    out.copy_(images)
    if images.dtype == torch.uint8:
        out.div_(255.0)
    out.sub_(torch.tensor(mean, dtype=torch.float32).view(shape))
    out.div_(torch.tensor(std, dtype=torch.float32).view(shape))
    return out


def _sha256(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as stream:
            while block := stream.read(1 << 20):
                digest.update(block)
    except OSError as error:
        raise FredsetError(f"cannot read ({error.strerror or error})", path) from None
    return digest.hexdigest()


def _read_sums(path: pathlib.Path) -> dict[str, str]:
    sums = {}
    for number, line in enumerate(path.read_text("utf-8", errors="replace").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(maxsplit=1)
        if len(parts) != 2 or len(parts[0]) != 64 or any(c not in "0123456789abcdefABCDEF" for c in parts[0]):
            raise FredsetError(f"line {number} is not 'SHA256  FILENAME'", path)
        sums[parts[1].lstrip("*").strip().removeprefix("./")] = parts[0].lower()
    return sums


def _checksums(paths, base: pathlib.Path) -> dict[str, str]:
    """``{name relative to base: sha256}`` of every file, verified against any ``SHA256SUMS`` in a file's
    folder or a folder above it up to ``base`` (names relative to that SHA256SUMS); mismatch -> FredsetError."""
    base = pathlib.Path(base)
    sums_cache: dict[pathlib.Path, dict[str, str] | None] = {}
    hashes: dict[str, str] = {}
    for path in paths:
        path = pathlib.Path(path)
        if path.is_dir():
            continue
        digest = _sha256(path)
        try:
            key = path.relative_to(base).as_posix()
        except ValueError:
            key = path.name
        hashes[key] = digest
        folder = path.parent
        while True:
            if folder not in sums_cache:
                sums_file = folder / "SHA256SUMS"
                sums_cache[folder] = _read_sums(sums_file) if sums_file.is_file() else None
            sums = sums_cache[folder]
            if sums is not None:
                expected = sums.get(path.relative_to(folder).as_posix())
                if expected is not None and expected != digest:
                    raise FredsetError(f"SHA-256 {digest} does not match {expected} in {folder / 'SHA256SUMS'}",
                                       path)
            if folder == base or folder.parent == folder or base not in folder.parents:
                break
            folder = folder.parent
    return hashes
