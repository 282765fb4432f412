"""Registry-named datasets: MNIST and Fashion-MNIST from their IDX files (no torchvision), SVHN and CIFAR-10/100
through torchvision when it imports (our code never unpickles the CIFAR batches), Tiny-ImageNet decoded with
Pillow, and ``--download`` through torchvision. Every file read is hashed into ``source["files"]`` and checked
against the registry's published digests (:data:`fredset.data.registry.KNOWN_FILES`) and any ``SHA256SUMS``."""

from __future__ import annotations

import pathlib

import numpy as np
import torch

from ..errors import FredsetError
from . import registry
from .checksums import file_hashes
from .folder import decode_images, image_files
from .idx import read_idx
from .realdata import RealData
from .statistics import normalise

_TINY_IMAGENET_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
_TINY_IMAGENET_MD5 = "90528d7ca1a48142e341f4ef8d21d0de"


def _hashes(name: str, paths, directory: pathlib.Path) -> dict[str, str]:
    return file_hashes(paths, directory, registry.KNOWN_FILES.get(name), name)


def load_named(name: str, split: str, root, download: bool) -> RealData:
    """One split of the registry dataset ``name`` (canonical), normalised with its published statistics."""
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
    hashes = _hashes(name, files, directory)
    if name in ("mnist", "fashion-mnist"):
        images, labels, classes = _read_idx_pair(name, spec, files)
    elif name in ("svhn", "cifar10", "cifar100"):
        images, labels, classes = _read_torchvision(name, spec, split, directory)
    else:
        images, labels, classes = _read_tiny_imagenet(spec, split, directory, hashes)
    _check_labels(labels, len(classes), name)
    source = {"dataset": name, "split": split, "files": hashes, "root": str(directory)}
    return RealData(name=name, images=normalise(images, spec.mean, spec.std), labels=labels, classes=classes,
                    mean=spec.mean, std=spec.std, source=source, license=spec.license)


def _check_labels(labels: torch.Tensor, num_classes: int, name: str) -> None:
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise FredsetError(f"dataset {name!r}: labels outside 0..{num_classes - 1}")


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


def _read_tiny_imagenet(spec, split, directory: pathlib.Path, hashes):
    wnids_file = directory / "wnids.txt"
    wnids = sorted(line.strip() for line in wnids_file.read_text("utf-8").splitlines() if line.strip())
    if len(set(wnids)) != len(wnids) or not wnids:
        raise FredsetError("wnids.txt lists no classes or repeats one", wnids_file)
    index = {wnid: i for i, wnid in enumerate(wnids)}
    if split == "train":
        paths, labels = [], []
        for wnid in wnids:
            found = image_files(directory / "train" / wnid)
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
    hashes.update(_hashes(spec.name, paths, directory))
    images = decode_images(paths, channels=3)
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
    # The downloaded archives (the CIFAR .tar.gz) are checked too; the files read are checked when loaded.
    _hashes(name, [target / file for file in registry.KNOWN_FILES.get(name, {}) if (target / file).is_file()],
            target)
