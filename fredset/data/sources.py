"""Loading a whole split into a RealData: :func:`load_dataset` picks the source by what it is given.

A registry name goes to :mod:`fredset.data.named`, a directory to :mod:`fredset.data.folder` (ImageFolder),
an ``.npz`` file to :mod:`fredset.data.npz`; checksums are in :mod:`fredset.data.checksums`, normalisation in
:mod:`fredset.data.statistics`.
"""

from __future__ import annotations

import os
import pathlib
import zipfile

from ..errors import FredsetError
from . import registry
from .folder import PATH_SPLITS, load_image_folder
from .named import load_named
from .npz import load_npz
from .realdata import RealData


def load_dataset(name_or_path: str | os.PathLike, *, split: str = "train",
                 root: str | os.PathLike | None = None, download: bool = False) -> RealData:
    """Load a whole split, normalised.

    ``name_or_path``: a registry name (``mnist``, ``fashion-mnist``, ``svhn``, ``cifar10``, ``cifar100``,
    ``tiny-imagenet`` and aliases such as ``fmnist``, ``FashionMNIST``, ``cifar-10``), or a path to an
    ImageFolder directory (class sub-folders of images, optionally under ``train/``, ``test/``, ``val/``) or to
    an ``.npz`` file (arrays ``images`` and ``labels``, or ``train_images``/``train_labels``/``test_images``/...;
    optional ``classes``, ``mean``, ``std``). A bare registry name always means the named dataset: write
    ``./mnist`` for a folder of that name. Named datasets are searched for as described in
    :mod:`fredset.data.registry` and their files checked against the registry's published checksums; with
    ``download=True`` and torchvision importable, missing data is downloaded into ``root`` (else
    ``~/.cache/fredset``). Named datasets use their published statistics; others use per-channel statistics of
    their train data. Every file read is hashed (SHA-256) into ``source["files"]`` and checked against any
    ``SHA256SUMS`` file next to it.
    """
    text = os.fspath(name_or_path)
    looks_like_path = (isinstance(name_or_path, os.PathLike) or os.sep in text or "/" in text
                       or text.lower().endswith(".npz"))
    canonical = None if looks_like_path else registry.canonical_name(text)
    if canonical is not None:
        return load_named(canonical, split, root, download)
    path = pathlib.Path(text).expanduser()
    if not path.exists():
        if looks_like_path or pathlib.Path(text).suffix:
            raise FredsetError("no such file or directory (expected an ImageFolder directory or an .npz file)",
                               path)
        raise FredsetError(f"unknown dataset {text!r}; known: {', '.join(registry.DATASETS)}, or the path of "
                           "an ImageFolder directory or an .npz file")
    if path.is_dir():
        return load_image_folder(path, _path_split(split, path))
    if path.suffix.lower() == ".npz" or zipfile.is_zipfile(path):
        return load_npz(path, _path_split(split, path))
    raise FredsetError("not a dataset: expected an ImageFolder directory or an .npz file", path)


def _path_split(split, path) -> str:
    if not isinstance(split, str) or split.lower() not in PATH_SPLITS:
        raise FredsetError(f"bad split {split!r}; choose one of {', '.join(PATH_SPLITS)}", path)
    return split.lower()
