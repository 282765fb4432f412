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

# Normalisation statistics: fred-reference.md section 7.
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


def _sha256(digest: str, source: str) -> KnownDigest:
    return KnownDigest("sha256", digest, source)


def _md5(digest: str, source: str) -> KnownDigest:
    return KnownDigest("md5", digest, source)


_TFDS = "TensorFlow Datasets url_checksums"
_TORCHVISION = "torchvision"
_DEBIAN = "Debian package dataset-fashion-mnist 0.0~git20200523.55506a9-1"

# The published digests of the files of each named dataset, keyed by dataset name, then by file name (as in the
# layout). A file may have several accepted copies (the SHA-256 of one download and torchvision's MD5 of the same
# file, or a re-packed copy); a file found with a name listed here must match one of its digests, wherever it
# is found (root, FREDSET_DATA, Debian path, shared copy, cache). A file not listed here (decompressed IDX
# files, Tiny-ImageNet) is only checked against a SHA256SUMS beside it, if any. SHA-256 wherever one is
# published; MD5 only where torchvision's is the one published (the files extracted from the CIFAR archives),
# or as the alternative torchvision itself checks. Where the values come from:
# - SHA-256 of the MNIST, Fashion-MNIST and SVHN downloads and of cifar-10-python.tar.gz / cifar-100-python.tar.gz:
#   TensorFlow Datasets' url_checksums (tensorflow_datasets/url_checksums/mnist.txt, fashion_mnist.txt,
#   svhn_cropped.txt, cifar10.csv, cifar100.csv);
# - MD5: torchvision's dataset classes (torchvision/datasets/mnist.py MNIST/FashionMNIST.resources, svhn.py
#   SVHN.split_list, cifar.py CIFAR10/CIFAR100 tgz_md5, train_list, test_list and meta);
# - Fashion-MNIST as the Debian package installs it in /usr/share/datasets/fashion-mnist (its gzip headers lack
#   the file names, so it is not byte-identical to the download): the SHA-256 of the files the package installs,
#   listed in the project's shared/data/fashion-mnist/SHA256SUMS; their MD5 match the package's own md5sums
#   (/var/lib/dpkg/info/dataset-fashion-mnist.md5sums).
KNOWN_FILES: dict[str, dict[str, tuple[KnownDigest, ...]]] = {
    "mnist": {
        "train-images-idx3-ubyte.gz": (
            _sha256("440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609", _TFDS),
            _md5("f68b3c2dcbeaaa9fbdd348bbdeb94873", _TORCHVISION)),
        "train-labels-idx1-ubyte.gz": (
            _sha256("3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c", _TFDS),
            _md5("d53e105ee54ea40749a09fcbcd1e9432", _TORCHVISION)),
        "t10k-images-idx3-ubyte.gz": (
            _sha256("8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6", _TFDS),
            _md5("9fb629c4189551a2d022fa330f9573f3", _TORCHVISION)),
        "t10k-labels-idx1-ubyte.gz": (
            _sha256("f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6", _TFDS),
            _md5("ec29112dd5afa0611ce80d1b7f02629c", _TORCHVISION)),
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": (
            _sha256("3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84", _TFDS),
            _sha256("b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7", _DEBIAN),
            _md5("8d4fb7e6c68d591d4c3dfef9ec88bf0d", _TORCHVISION)),
        "train-labels-idx1-ubyte.gz": (
            _sha256("a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845", _TFDS),
            _sha256("0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056", _DEBIAN),
            _md5("25c81989df183df01b3e8a0aad5dffbe", _TORCHVISION)),
        "t10k-images-idx3-ubyte.gz": (
            _sha256("346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073", _TFDS),
            _sha256("cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa", _DEBIAN),
            _md5("bef4ecab320f06d8554ea6380940ec79", _TORCHVISION)),
        "t10k-labels-idx1-ubyte.gz": (
            _sha256("67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5", _TFDS),
            _sha256("8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05", _DEBIAN),
            _md5("bb300cfdad3c16e7a12a480ee83cd310", _TORCHVISION)),
    },
    "svhn": {
        "train_32x32.mat": (
            _sha256("435e94d69a87fde4fd4d7f3dd208dfc32cb6ae8af2240d066de1df7508d083b8", _TFDS),
            _md5("e26dedcc434d2e4c54c9b2d4a06d8373", _TORCHVISION)),
        "test_32x32.mat": (
            _sha256("cdce80dfb2a2c4c6160906d0bd7c68ec5a99d7ca4831afa54f09182025b6a75b", _TFDS),
            _md5("eb5a983be6a315427106f1b164d9cef3", _TORCHVISION)),
        "extra_32x32.mat": (
            _sha256("a133a4beb38a00fcdda90c9489e0c04f900b660ce8a316a5e854838379a71eb3", _TFDS),
            _md5("a93ce644f1a588dc4d68dda5feec44a7", _TORCHVISION)),
    },
    "cifar10": {
        "cifar-10-python.tar.gz": (
            _sha256("6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce", _TFDS),
            _md5("c58f30108f718f92721af3b95e74349a", _TORCHVISION)),
        "data_batch_1": (_md5("c99cafc152244af753f735de768cd75f", _TORCHVISION),),
        "data_batch_2": (_md5("d4bba439e000b95fd0a9bffe97cbabec", _TORCHVISION),),
        "data_batch_3": (_md5("54ebc095f3ab1f0389bbae665268c751", _TORCHVISION),),
        "data_batch_4": (_md5("634d18415352ddfa80567beed471001a", _TORCHVISION),),
        "data_batch_5": (_md5("482c414d41f54cd18b22e5b47cb7c3cb", _TORCHVISION),),
        "test_batch": (_md5("40351d587109b95175f43aff81a1287e", _TORCHVISION),),
        "batches.meta": (_md5("5ff9c542aee3614f3951f8cda6e48888", _TORCHVISION),),
    },
    "cifar100": {
        "cifar-100-python.tar.gz": (
            _sha256("85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7", _TFDS),
            _md5("eb9058c3a382ffc7106e4002c42a8d85", _TORCHVISION)),
        "train": (_md5("16019d7e3df5f24257cddd939b257f8d", _TORCHVISION),),
        "test": (_md5("f0ef6b0ae62326f3e7ffdfab6717acfc", _TORCHVISION),),
        "meta": (_md5("7973b15100ade9c7d40fb424638fde48", _TORCHVISION),),
    },
}


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
