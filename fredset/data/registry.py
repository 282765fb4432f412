"""Named datasets: what is known before loading them (spec, published checksums of their files), and where
their files are found.

Search order for a named dataset (first directory holding every file of the split wins):

1. the ``root`` argument (CLI ``--data-root``): ``root/<name>/``, then ``root/`` itself;
2. the environment variable ``FREDSET_DATA`` (same layout; several directories separated by ``os.pathsep``);
3. the Debian package location ``/usr/share/datasets/<name>``;
4. the project's shared copy ``../shared/data/<name>`` beside the repository root;
5. the download cache ``~/.cache/fredset`` (where ``download=True`` puts data when no root is given).

Within each directory the files may also sit where torchvision's own downloads put them
(``FashionMNIST/raw/``, ``MNIST/raw/``, ``cifar-10-batches-py/``, ...). Wherever they are found, files named
in :data:`KNOWN_FILES` must match one of their published digests.
"""

from __future__ import annotations

import os
import pathlib
import re
from importlib import resources
from dataclasses import dataclass

from ..errors import FredsetError


@dataclass(frozen=True)
class DatasetSpec:
    """What is known about a named dataset before loading it."""

    name: str
    channels: int
    image_size: tuple[int, int]
    num_classes: int
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    license: str | None


_DIGITS = tuple(str(i) for i in range(10))
_FASHION = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
            "Ankle boot")
_CIFAR10 = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
_CIFAR100 = tuple("""
apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly camel can
castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup dinosaur dolphin
elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion lizard lobster
man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree pear pickup_truck
pine_tree plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk
skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television tiger
tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm""".split())
# Tiny-ImageNet: the WordNet ids of wnids.txt, sorted (the label order of an ImageFolder over train/).
_TINY_IMAGENET = tuple("""
n01443537 n01629819 n01641577 n01644900 n01698640 n01742172 n01768244 n01770393 n01774384 n01774750 n01784675
n01855672 n01882714 n01910747 n01917289 n01944390 n01945685 n01950731 n01983481 n01984695 n02002724 n02056570
n02058221 n02074367 n02085620 n02094433 n02099601 n02099712 n02106662 n02113799 n02123045 n02123394 n02124075
n02125311 n02129165 n02132136 n02165456 n02190166 n02206856 n02226429 n02231487 n02233338 n02236044 n02268443
n02279972 n02281406 n02321529 n02364673 n02395406 n02403003 n02410509 n02415577 n02423022 n02437312 n02480495
n02481823 n02486410 n02504458 n02509815 n02666196 n02669723 n02699494 n02730930 n02769748 n02788148 n02791270
n02793495 n02795169 n02802426 n02808440 n02814533 n02814860 n02815834 n02823428 n02837789 n02841315 n02843684
n02883205 n02892201 n02906734 n02909870 n02917067 n02927161 n02948072 n02950826 n02963159 n02977058 n02988304
n02999410 n03014705 n03026506 n03042490 n03085013 n03089624 n03100240 n03126707 n03160309 n03179701 n03201208
n03250847 n03255030 n03355925 n03388043 n03393912 n03400231 n03404251 n03424325 n03444034 n03447447 n03544143
n03584254 n03599486 n03617480 n03637318 n03649909 n03662601 n03670208 n03706229 n03733131 n03763968 n03770439
n03796401 n03804744 n03814639 n03837869 n03838899 n03854065 n03891332 n03902125 n03930313 n03937543 n03970156
n03976657 n03977966 n03980874 n03983396 n03992509 n04008634 n04023962 n04067472 n04070727 n04074963 n04099969
n04118538 n04133789 n04146614 n04149813 n04179913 n04251144 n04254777 n04259630 n04265275 n04275548 n04285008
n04311004 n04328186 n04356056 n04366367 n04371430 n04376876 n04398044 n04399382 n04417672 n04456115 n04465501
n04486054 n04487081 n04501370 n04507155 n04532106 n04532670 n04540053 n04560804 n04562935 n04596742 n04597913
n06596364 n07579787 n07583066 n07614500 n07615774 n07695742 n07711569 n07715103 n07720875 n07734744 n07747607
n07749582 n07753592 n07768694 n07871810 n07873807 n07875152 n07920052 n09193705 n09246464 n09256479 n09332890
n09428293 n12267677""".split())

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Normalisation statistics: docs/ALGORITHM.md, Evaluation protocol.
DATASETS: dict[str, DatasetSpec] = {spec.name: spec for spec in (
    DatasetSpec("mnist", 1, (28, 28), 10, _DIGITS, (0.1307,), (0.3081,), "CC-BY-SA-3.0"),
    DatasetSpec("fashion-mnist", 1, (28, 28), 10, _FASHION, (0.2861,), (0.3530,), "MIT"),
    DatasetSpec("svhn", 3, (32, 32), 10, _DIGITS, (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970),
                "SVHN terms: non-commercial use only"),
    DatasetSpec("cifar10", 3, (32, 32), 10, _CIFAR10, (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010), None),
    DatasetSpec("cifar100", 3, (32, 32), 100, _CIFAR100, (0.5071, 0.4866, 0.4409), (0.2673, 0.2564, 0.2762),
                None),
    DatasetSpec("tiny-imagenet", 3, (64, 64), 200, _TINY_IMAGENET, IMAGENET_MEAN, IMAGENET_STD,
                "ImageNet terms of access: non-commercial research and education only"),
)}

# Aliases, keyed by the name lower-cased with "-", "_", " " and "." removed.
_ALIASES = {
    "mnist": "mnist",
    "fashionmnist": "fashion-mnist", "fmnist": "fashion-mnist",
    "svhn": "svhn",
    "cifar10": "cifar10",
    "cifar100": "cifar100",
    "tinyimagenet": "tiny-imagenet", "tinyimagenet200": "tiny-imagenet",
}


def canonical_name(name: str) -> str | None:
    """The registry name for ``name`` or one of its aliases (case-insensitive), else None."""
    return _ALIASES.get(re.sub(r"[-_ .]", "", name.strip().lower()))


def dataset_spec(name: str) -> DatasetSpec:
    """The spec of a named dataset; FredsetError listing the known names for an unknown one."""
    canonical = canonical_name(name) if isinstance(name, str) else None
    if canonical is None:
        raise FredsetError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    return DATASETS[canonical]


# -- known checksums ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class KnownDigest:
    """A published digest of one file of a named dataset: ``algorithm`` is ``"sha256"`` or ``"md5"`` (MD5 only
    where no SHA-256 is published), ``source`` says which copy of the file it describes."""

    algorithm: str
    digest: str
    source: str


_SOURCES = {"tfds": "TensorFlow Datasets url_checksums", "torchvision": "torchvision",
            "debian": "Debian package dataset-fashion-mnist 0.0~git20200523.55506a9-1"}


def _read_known_files() -> dict[str, dict[str, tuple[KnownDigest, ...]]]:
    """The table in ``known_checksums.txt`` (its header says where each value comes from)."""
    table: dict[str, dict[str, tuple[KnownDigest, ...]]] = {}
    text = resources.files(__package__).joinpath("known_checksums.txt").read_text("utf-8")
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            dataset, name, algorithm, digest, source = line.split()
            files = table.setdefault(dataset, {})
            files[name] = files.get(name, ()) + (KnownDigest(algorithm, digest, _SOURCES[source]),)
    return table


# The published digests of the files of each named dataset, by dataset name, then by file name (as in the
# layout). A file may have several accepted copies (the SHA-256 of one download and torchvision's MD5 of the same
# file, or a re-packed copy); a file found with a name listed here must match one of its digests, wherever it
# is found (root, FREDSET_DATA, Debian path, shared copy, cache). A file not listed here (decompressed IDX
# files, Tiny-ImageNet) is only checked against a SHA256SUMS beside it, if any. SHA-256 wherever one is
# published; MD5 only where torchvision's is the one published (the files extracted from the CIFAR archives),
# or as the alternative torchvision itself checks.
KNOWN_FILES: dict[str, dict[str, tuple[KnownDigest, ...]]] = _read_known_files()


# -- where the files are --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Layout:
    """The files of a named dataset: per split, required names (each a tuple of alternatives, the first
    present wins), relative to a data directory that may sit in ``subdirs`` of a searched directory."""

    subdirs: tuple[str, ...]
    files: dict[str, tuple[tuple[str, ...], ...]]
    split_aliases: dict[str, str]
    hint: str


def _idx(prefix: str) -> tuple[tuple[str, ...], ...]:
    names = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
    return tuple((f"{name}.gz", name) for name in names)


_IDX_HINT = ("pass --data-root DIR holding the IDX files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
             "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz), or set FREDSET_DATA, "
             "or install torchvision and pass --download")
_CIFAR10_BATCHES = tuple((f"data_batch_{i}",) for i in range(1, 6))

LAYOUTS: dict[str, Layout] = {
    "mnist": Layout(("", "MNIST/raw"), {"train": _idx("train"), "test": _idx("t10k")}, {}, _IDX_HINT),
    "fashion-mnist": Layout(
        ("", "FashionMNIST/raw"), {"train": _idx("train"), "test": _idx("t10k")}, {},
        "install the Debian package dataset-fashion-mnist, or " + _IDX_HINT),
    "svhn": Layout(
        ("",), {"train": (("train_32x32.mat",),), "test": (("test_32x32.mat",),), "extra": (("extra_32x32.mat",),)},
        {}, "pass --data-root DIR holding train_32x32.mat and test_32x32.mat, or install torchvision and scipy "
            "and pass --download"),
    "cifar10": Layout(
        ("cifar-10-batches-py",), {"train": _CIFAR10_BATCHES + (("batches.meta",),),
                                   "test": (("test_batch",), ("batches.meta",))},
        {}, "pass --data-root DIR holding cifar-10-batches-py/ (the extracted cifar-10-python.tar.gz), "
            "or install torchvision and pass --download"),
    "cifar100": Layout(
        ("cifar-100-python",), {"train": (("train",), ("meta",)), "test": (("test",), ("meta",))},
        {}, "pass --data-root DIR holding cifar-100-python/ (the extracted cifar-100-python.tar.gz), "
            "or install torchvision and pass --download"),
    "tiny-imagenet": Layout(
        ("tiny-imagenet-200", ""),
        {"train": (("wnids.txt",), ("train",)),
         "val": (("wnids.txt",), ("val/val_annotations.txt",), ("val/images",))},
        {"test": "val", "valid": "val", "validation": "val"},
        "pass --data-root DIR holding tiny-imagenet-200/ (the unzipped "
        "http://cs231n.stanford.edu/tiny-imagenet-200.zip), or install torchvision and pass --download"),
}

# Search locations; module attributes so that tests (and packagers) can change them.
SYSTEM_DATA = pathlib.Path("/usr/share/datasets")
SHARED_DATA = pathlib.Path(__file__).resolve().parents[2].parent / "shared" / "data"
CACHE_DIR = pathlib.Path("~/.cache/fredset")


def resolve_split(name: str, split: str) -> str:
    """The split name of a named dataset's layout; FredsetError for one it does not have."""
    layout = LAYOUTS[name]
    if not isinstance(split, str):
        raise FredsetError(f"dataset {name!r}: bad split {split!r}; choose one of {', '.join(layout.files)}")
    key = layout.split_aliases.get(split.lower(), split.lower())
    if key not in layout.files:
        raise FredsetError(f"dataset {name!r}: bad split {split!r}; choose one of {', '.join(layout.files)}")
    return key


def search_places(name: str, root: str | os.PathLike | None = None) -> list[pathlib.Path]:
    """The directories searched for a named dataset, in order (before the layout's sub-directories)."""
    bases: list[pathlib.Path] = []
    if root is not None:
        bases.append(pathlib.Path(root).expanduser())
    for entry in os.environ.get("FREDSET_DATA", "").split(os.pathsep):
        if entry.strip():
            bases.append(pathlib.Path(entry.strip()).expanduser())
    places = []
    for base in bases:
        places += [base / name, base]
    places += [SYSTEM_DATA / name, SHARED_DATA / name, CACHE_DIR.expanduser() / name]
    unique: list[pathlib.Path] = []
    for place in places:
        if place not in unique:
            unique.append(place)
    return unique


def locate(name: str, split: str, root: str | os.PathLike | None = None
           ) -> tuple[pathlib.Path, list[pathlib.Path]] | None:
    """(data directory, files of the split) for the first searched directory holding them all, else None."""
    layout = LAYOUTS[name]
    for place in search_places(name, root):
        for subdir in layout.subdirs:
            directory = place / subdir if subdir else place
            found = _files_in(directory, layout.files[split])
            if found is not None:
                return directory, found
    return None


def _files_in(directory: pathlib.Path, required) -> list[pathlib.Path] | None:
    if not directory.is_dir():
        return None
    found = []
    for alternatives in required:
        for relative in alternatives:
            candidate = directory / relative
            if candidate.exists():
                found.append(candidate)
                break
        else:
            return None
    return found


def not_found_error(name: str, split: str, root: str | os.PathLike | None = None,
                    extra: str = "") -> FredsetError:
    """The one-line error for a named dataset whose files are nowhere: places searched and how to get them."""
    places = ", ".join(str(place) for place in search_places(name, root))
    return FredsetError(f"dataset {name!r} ({split} split) not found (searched: {places}){extra}; "
                        f"{LAYOUTS[name].hint}")


def find_root(name: str, root: str | os.PathLike | None = None, *, split: str | None = None) -> pathlib.Path:
    """The directory holding the files of a named dataset (of ``split``, else of any split), following the
    search order of this module; FredsetError naming the places searched and how to get the data."""
    canonical = dataset_spec(name).name
    splits = [resolve_split(canonical, split)] if split is not None else list(LAYOUTS[canonical].files)
    for each in splits:
        found = locate(canonical, each, root)
        if found is not None:
            return found[0]
    raise not_found_error(canonical, split or "any", root)
