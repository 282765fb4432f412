"""ImageFolder directories (one sub-folder of images per class, optionally under ``train/``, ``test/``,
``val/``) and the Pillow decoding of image files, which Tiny-ImageNet shares."""

from __future__ import annotations

import pathlib

import numpy as np
import torch

from ..errors import FredsetError
from .checksums import file_hashes
from .realdata import RealData
from .statistics import channel_statistics, normalise

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm",
                              ".pbm"})
PATH_SPLITS = ("train", "test", "val")
_SPLIT_FALLBACK = {"test": "val", "val": "test"}


def _split_folder(path: pathlib.Path, split: str) -> pathlib.Path | None:
    """The folder of ``split`` when ``path`` has train/test/val sub-folders, else None (path is one split)."""
    present = [name for name in PATH_SPLITS if (path / name).is_dir()]
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


def image_files(folder: pathlib.Path) -> list[pathlib.Path]:
    """The image files under ``folder`` (any depth, hidden paths skipped), sorted."""
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
        found = image_files(class_folder)
        if not found:
            raise FredsetError("class folder holds no images "
                               f"({', '.join(sorted(IMAGE_EXTENSIONS))})", class_folder)
        paths += found
        labels += [index[class_folder.name]] * len(found)
    return paths, torch.tensor(labels, dtype=torch.int64), classes


def load_image_folder(path: pathlib.Path, split: str) -> RealData:
    """One split of an ImageFolder directory, normalised with the statistics of its train images."""
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
        hashes.update(file_hashes(train_paths, path))
        mean, std = channel_statistics(decode_images(train_paths))
    paths, labels, classes = _scan_folder(folder, classes)
    hashes.update(file_hashes(paths, path))
    images = decode_images(paths)
    if mean is None:
        mean, std = channel_statistics(images)
    if len(mean) != images.shape[1]:
        raise FredsetError(f"the {split} images have {images.shape[1]} channels, the train images {len(mean)}",
                           folder)
    source = {"dataset": path.name, "split": split, "files": hashes, "root": str(path), "format": "imagefolder"}
    return RealData(name=path.name, images=normalise(images, mean, std), labels=labels, classes=list(classes),
                    mean=mean, std=std, source=source, license=None)


def decode_images(paths: list[pathlib.Path], channels: int | None = None) -> torch.Tensor:
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
