"""The real-dataset layer: registry, search order, IDX / npz / ImageFolder loading, checksums, RealData."""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import os
import pathlib
import shutil

import numpy as np
import pytest
import torch

from fredset import FredsetError
from fredset.data import DATASETS, RealData, dataset_spec, find_root, load_dataset, read_idx, registry
from fredset.files import sha256_file

FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot"]
TEST_FILES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
TRAIN_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")


def one_line_error(excinfo, *needles):
    message = str(excinfo.value)
    assert "\n" not in message, message
    for needle in needles:
        assert needle in message, message
    return message


def known_sha256(dataset: str, name: str) -> set[str]:
    """The SHA-256 values the registry accepts for one file of a named dataset."""
    return {entry.digest for entry in registry.KNOWN_FILES[dataset][name] if entry.algorithm == "sha256"}


def assert_known_hashes(files: dict[str, str], names) -> None:
    assert set(files) == set(names)
    for name, digest in files.items():
        assert digest in known_sha256("fashion-mnist", name), (name, digest)


def write_idx(path: pathlib.Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if path.suffix == ".gz":
        data = gzip.compress(data)
    path.write_bytes(data)


@pytest.fixture(scope="module")
def fmnist_dir() -> pathlib.Path:
    """Where the real Fashion-MNIST (both splits) is found; the tests that need it skip when it is absent."""
    try:
        return find_root("fashion-mnist")
    except FredsetError as error:
        pytest.skip(f"Fashion-MNIST is not installed here (apt-get install dataset-fashion-mnist): {error}")


@pytest.fixture(scope="module")
def fmnist_train(fmnist_dir) -> RealData:
    return load_dataset("fashion-mnist", split="train")


@pytest.fixture(scope="module")
def fmnist_test(fmnist_dir) -> RealData:
    return load_dataset("fashion-mnist", split="test")


@pytest.fixture
def isolated(monkeypatch, tmp_path):
    """No data anywhere but where a test puts it: empty system, shared and cache locations, no FREDSET_DATA."""
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setattr(registry, "SYSTEM_DATA", empty / "system")
    monkeypatch.setattr(registry, "SHARED_DATA", empty / "shared")
    monkeypatch.setattr(registry, "CACHE_DIR", empty / "cache")
    monkeypatch.delenv("FREDSET_DATA", raising=False)
    return tmp_path


def link_test_files(source: pathlib.Path, target: pathlib.Path, sums: bool = True,
                    names=TEST_FILES) -> pathlib.Path:
    """Symlinks to ``names`` of ``source`` (and its SHA256SUMS, if it has one and ``sums``) in ``target``."""
    target.mkdir(parents=True, exist_ok=True)
    for name in names + (("SHA256SUMS",) if sums and (source / "SHA256SUMS").is_file() else ()):
        os.symlink(source / name, target / name)
    return target


# -- registry -------------------------------------------------------------------------------------------------

def test_registry_names_aliases_and_statistics():
    assert list(DATASETS) == ["mnist", "fashion-mnist", "svhn", "cifar10", "cifar100", "tiny-imagenet"]
    for alias in ("fashion-mnist", "fmnist", "FashionMNIST", "Fashion_MNIST", "FMNIST"):
        assert dataset_spec(alias).name == "fashion-mnist"
    assert dataset_spec("cifar-10").name == "cifar10" and dataset_spec("CIFAR-100").name == "cifar100"
    assert dataset_spec("TinyImageNet").name == "tiny-imagenet"
    fashion = dataset_spec("fmnist")
    assert (fashion.mean, fashion.std, fashion.channels, fashion.image_size) == ((0.2861,), (0.3530,), 1, (28, 28))
    assert list(fashion.classes) == FASHION_CLASSES and fashion.license == "MIT"
    assert dataset_spec("mnist").mean == (0.1307,) and dataset_spec("mnist").std == (0.3081,)
    assert dataset_spec("cifar10").mean == (0.4914, 0.4822, 0.4465)
    tiny = dataset_spec("tiny-imagenet")
    assert tiny.image_size == (64, 64) and tiny.num_classes == len(tiny.classes) == 200
    assert tiny.mean == (0.485, 0.456, 0.406) and tiny.std == (0.229, 0.224, 0.225)
    for spec in DATASETS.values():
        assert spec.num_classes == len(spec.classes) == len(set(spec.classes))
        assert len(spec.mean) == len(spec.std) == spec.channels
    with pytest.raises(FredsetError) as excinfo:
        dataset_spec("imagenet-21k")
    one_line_error(excinfo, "imagenet-21k", "fashion-mnist", "cifar100")


# -- Fashion-MNIST from the shared copy -----------------------------------------------------------------------

def test_fashion_mnist_train(fmnist_train, fmnist_dir):
    data = fmnist_train
    assert data.images.shape == (60000, 1, 28, 28) and data.images.dtype == torch.float32
    assert data.labels.shape == (60000,) and data.labels.dtype == torch.int64
    assert (data.num_classes, data.channels, data.image_size, len(data)) == (10, 1, (28, 28), 60000)
    assert data.classes == FASHION_CLASSES and data.name == "fashion-mnist" and data.license == "MIT"
    assert data.mean == (0.2861,) and data.std == (0.3530,)
    assert abs(data.images.mean().item()) < 0.01 and abs(data.images.std().item() - 1) < 0.01
    assert torch.bincount(data.labels).tolist() == [6000] * 10
    pixels = data.images * 0.3530 + 0.2861      # back in [0, 1], multiples of 1/255
    assert pixels.min().item() == pytest.approx(0, abs=1e-5) and pixels.max().item() == pytest.approx(1, abs=1e-5)
    assert data.source["dataset"] == "fashion-mnist" and data.source["split"] == "train"
    assert pathlib.Path(data.source["root"]) == fmnist_dir
    assert_known_hashes(data.source["files"], TRAIN_FILES)      # the registry's published digests


def test_fashion_mnist_test(fmnist_test, fmnist_dir):
    data = fmnist_test
    assert data.images.shape == (10000, 1, 28, 28) and data.labels.shape == (10000,)
    assert set(data.labels.tolist()) == set(range(10)) and data.source["split"] == "test"
    assert abs(data.images.mean().item()) < 0.05 and abs(data.images.std().item() - 1) < 0.05
    assert_known_hashes(data.source["files"], TEST_FILES)


def test_class_indices_correct_and_cached(fmnist_test):
    data = fmnist_test
    indices = data.class_indices()
    assert len(indices) == 10 and data.class_indices() is indices
    assert all(index is again for index, again in zip(indices, data.class_indices()))
    assert sum(len(index) for index in indices) == len(data)
    for label, index in enumerate(indices):
        assert index.dtype == torch.int64 and bool((data.labels[index] == label).all())
        assert bool((index[1:] > index[:-1]).all())
        assert torch.equal(index, torch.nonzero(data.labels == label).flatten())


def test_sample_uses_only_the_generator(fmnist_test):
    data = fmnist_test
    torch.manual_seed(1)
    first = data.sample(3, 16, generator=torch.Generator().manual_seed(7))
    torch.manual_seed(2)
    torch.rand(100)
    second = data.sample(3, 16, generator=torch.Generator().manual_seed(7))
    assert torch.equal(first, second) and first.shape == (16, 1, 28, 28)
    assert not torch.equal(first, data.sample(3, 16, generator=torch.Generator().manual_seed(8)))
    generator = torch.Generator().manual_seed(7)
    assert not torch.equal(data.sample(3, 16, generator=generator), data.sample(3, 16, generator=generator))
    class_images = data.images[data.class_indices()[3]].flatten(1)
    matches = (first.flatten(1)[:, None, :] == class_images[None]).all(-1)
    assert bool(matches.any(-1).all())
    whole = data.sample(5, 1000, generator=torch.Generator().manual_seed(0))   # the whole class: a permutation
    assert len(whole) == 1000 and len(torch.unique(whole.flatten(1), dim=0)) == len(
        torch.unique(data.images[data.class_indices()[5]].flatten(1), dim=0))
    assert data.sample(0, 0, generator=torch.Generator()).shape == (0, 1, 28, 28)
    with pytest.raises(FredsetError):
        data.sample(10, 1, generator=torch.Generator())
    with pytest.raises(FredsetError):
        data.sample(0, 1, generator=None)


# -- search order ---------------------------------------------------------------------------------------------

def test_root_argument_is_searched_first(isolated, fmnist_dir):
    nested = link_test_files(fmnist_dir, isolated / "nested" / "fashion-mnist")
    data = load_dataset("fmnist", split="test", root=isolated / "nested")
    assert pathlib.Path(data.source["root"]) == nested and len(data) == 10000
    flat = link_test_files(fmnist_dir, isolated / "flat", sums=False)
    assert find_root("fashion-mnist", flat) == flat
    assert find_root("fashion-mnist", str(flat), split="test") == flat
    torchvision_layout = link_test_files(fmnist_dir, isolated / "tv" / "FashionMNIST" / "raw")
    assert find_root("fashion-mnist", isolated / "tv") == torchvision_layout


def test_fredset_data_environment_variable(isolated, fmnist_dir, monkeypatch):
    target = link_test_files(fmnist_dir, isolated / "env" / "fashion-mnist")
    monkeypatch.setenv("FREDSET_DATA", str(isolated / "env"))
    assert find_root("fashion-mnist") == target
    data = load_dataset("FashionMNIST", split="test")
    assert pathlib.Path(data.source["root"]) == target
    other = link_test_files(fmnist_dir, isolated / "root")     # the root argument comes before FREDSET_DATA
    assert find_root("fashion-mnist", other) == other


def test_missing_data_says_where_it_looked_and_how_to_get_it(isolated):
    with pytest.raises(FredsetError) as excinfo:
        load_dataset("fashion-mnist", root=isolated / "nowhere")
    one_line_error(excinfo, "fashion-mnist", str(isolated / "nowhere"), "dataset-fashion-mnist", "--data-root",
                   "--download", "searched")
    with pytest.raises(FredsetError) as excinfo:
        find_root("cifar10")
    one_line_error(excinfo, "cifar10", "--download")


def test_download_without_torchvision_is_a_one_line_error(isolated):
    if importlib.util.find_spec("torchvision") is not None:
        pytest.skip("torchvision is installed: --download would go to the network")
    with pytest.raises(FredsetError) as excinfo:
        load_dataset("mnist", root=isolated, download=True)
    one_line_error(excinfo, "mnist", "torchvision")


def test_cifar_without_torchvision_is_not_unpickled(isolated, monkeypatch):
    try:
        import torchvision.datasets  # noqa: F401
        pytest.skip("torchvision imports here")
    except Exception:
        pass
    batches = isolated / "data" / "cifar10" / "cifar-10-batches-py"
    batches.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
        (batches / name).write_bytes(b"not a pickle")
    assert find_root("cifar-10", isolated / "data") == batches
    with pytest.raises(FredsetError) as excinfo:          # refused by torchvision's published MD5 first
        load_dataset("cifar-10", root=isolated / "data")
    one_line_error(excinfo, "data_batch_1", "cifar10", "MD5 c99cafc152244af753f735de768cd75f (torchvision)",
                   "MD5 " + hashlib.md5(b"not a pickle").hexdigest())
    monkeypatch.delitem(registry.KNOWN_FILES, "cifar10")
    with pytest.raises(FredsetError) as excinfo:
        load_dataset("cifar-10", root=isolated / "data")
    one_line_error(excinfo, "cifar10", "torchvision")


# -- bad files ------------------------------------------------------------------------------------------------

def test_bad_split(fmnist_dir):
    with pytest.raises(FredsetError) as excinfo:
        load_dataset("fashion-mnist", split="validation")
    one_line_error(excinfo, "validation", "train", "test")


def test_unknown_name():
    with pytest.raises(FredsetError) as excinfo:
        load_dataset("not-a-dataset")
    one_line_error(excinfo, "not-a-dataset", "fashion-mnist")
    with pytest.raises(FredsetError) as excinfo:
        load_dataset("./missing/folder")
    one_line_error(excinfo, "missing")


def test_checksum_mismatch(isolated, fmnist_dir):
    target = link_test_files(fmnist_dir, isolated / "data" / "fashion-mnist", sums=False)
    (target / "SHA256SUMS").write_text("".join(f"{'0' * 64}  {name}\n" for name in TEST_FILES))
    with pytest.raises(FredsetError) as excinfo:
        load_dataset("fashion-mnist", split="test", root=isolated / "data")
    one_line_error(excinfo, "t10k-images-idx3-ubyte.gz", "SHA256SUMS", "does not match")


def test_corrupt_idx_files(isolated, fmnist_dir):
    target = isolated / "data" / "fashion-mnist"
    target.mkdir(parents=True)
    os.symlink(fmnist_dir / TEST_FILES[0], target / TEST_FILES[0])
    (target / TEST_FILES[1]).write_bytes(b"this is not gzip data")     # a known name: refused by its checksum
    with pytest.raises(FredsetError) as excinfo:
        load_dataset("fashion-mnist", split="test", root=isolated / "data")
    one_line_error(excinfo, "t10k-labels-idx1-ubyte.gz", "expected")
    (target / TEST_FILES[1]).unlink()
    label_file = target / "t10k-labels-idx1-ubyte"                        # decompressed: no published checksum
    label_file.write_bytes(b"\x00\x00\x08\x01\x00\x00\x27\x10" + b"\x00" * 100)
    with pytest.raises(FredsetError) as excinfo:
        load_dataset("fashion-mnist", split="test", root=isolated / "data")
    one_line_error(excinfo, "t10k-labels-idx1-ubyte", "size")
    label_file.write_bytes(b"not an IDX file")
    with pytest.raises(FredsetError) as excinfo:
        load_dataset("fashion-mnist", split="test", root=isolated / "data")
    one_line_error(excinfo, "t10k-labels-idx1-ubyte", "magic")
    (isolated / "x.gz").write_bytes(b"this is not gzip data")
    with pytest.raises(FredsetError) as excinfo:
        read_idx(isolated / "x.gz")
    one_line_error(excinfo, "x.gz", "cannot read IDX")


def test_idx_label_count_mismatch_and_uncompressed_files(isolated):
    target = isolated / "data" / "mnist"
    target.mkdir(parents=True)
    rng = np.random.default_rng(0)
    write_idx(target / "t10k-images-idx3-ubyte", rng.integers(0, 256, (5, 28, 28)))
    write_idx(target / "t10k-labels-idx1-ubyte", np.arange(5))
    data = load_dataset("MNIST", split="test", root=isolated / "data")
    assert data.images.shape == (5, 1, 28, 28) and data.labels.tolist() == [0, 1, 2, 3, 4]
    assert data.mean == (0.1307,) and set(data.source["files"]) == {"t10k-images-idx3-ubyte",
                                                                    "t10k-labels-idx1-ubyte"}
    write_idx(target / "t10k-labels-idx1-ubyte", np.arange(4))
    with pytest.raises(FredsetError) as excinfo:
        load_dataset("mnist", split="test", root=isolated / "data")
    one_line_error(excinfo, "t10k-labels-idx1-ubyte", "4 labels for 5 images")
    write_idx(target / "t10k-labels-idx1-ubyte", np.array([0, 1, 2, 3, 12]))
    with pytest.raises(FredsetError) as excinfo:
        load_dataset("mnist", split="test", root=isolated / "data")
    one_line_error(excinfo, "labels outside")


# -- known checksums ------------------------------------------------------------------------------------------

def test_known_checksums_cover_every_file_of_the_named_datasets():
    archives = {"cifar10": "cifar-10-python.tar.gz", "cifar100": "cifar-100-python.tar.gz"}
    for name in ("mnist", "fashion-mnist", "svhn", "cifar10", "cifar100"):
        known = registry.KNOWN_FILES[name]
        read = {alternative for split in registry.LAYOUTS[name].files.values() for alternatives in split
                for alternative in alternatives if alternative.endswith((".gz", ".mat")) or name.startswith("cifar")}
        assert read | ({archives[name]} if name in archives else set()) == set(known), name
        for file, digests in known.items():
            assert digests and all(entry.source for entry in digests), (name, file)
            for entry in digests:
                assert len(entry.digest) == {"sha256": 64, "md5": 32}[entry.algorithm], (name, file)
                assert all(c in "0123456789abcdef" for c in entry.digest), (name, file)
            # SHA-256 wherever one is published: only the files extracted from the CIFAR archives lack one
            assert any(entry.algorithm == "sha256" for entry in digests) == (file not in read or
                                                                             not name.startswith("cifar"))
    assert "tiny-imagenet" not in registry.KNOWN_FILES


def test_registry_fashion_mnist_checksums_match_the_installed_copies():
    copies = [place / "fashion-mnist" for place in (registry.SHARED_DATA, registry.SYSTEM_DATA)
              if all((place / "fashion-mnist" / name).is_file() for name in TEST_FILES + TRAIN_FILES)]
    if not copies:
        pytest.skip("no copy of Fashion-MNIST in the shared or the Debian location")
    for copy in copies:
        for name in TEST_FILES + TRAIN_FILES:
            assert sha256_file(copy / name) in known_sha256("fashion-mnist", name), copy / name
        if (copy / "SHA256SUMS").is_file():
            for line in (copy / "SHA256SUMS").read_text().splitlines():
                digest, name = line.split()
                assert digest in known_sha256("fashion-mnist", name), (copy, name)


def write_mnist_test_files(target: pathlib.Path) -> pathlib.Path:
    """Synthetic MNIST test files under the published .gz names (so not the published bytes)."""
    target.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    write_idx(target / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (5, 28, 28)))
    write_idx(target / "t10k-labels-idx1-ubyte.gz", np.arange(5))
    return target


def test_known_checksum_refuses_other_bytes_wherever_they_are_found(isolated, monkeypatch):
    images = "t10k-images-idx3-ubyte.gz"
    published = "SHA-256 8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"

    def refused(**kwargs):
        with pytest.raises(FredsetError) as excinfo:
            load_dataset("mnist", split="test", **kwargs)
        return one_line_error(excinfo, images, published, "MD5 9fb629c4189551a2d022fa330f9573f3 (torchvision)")

    root = write_mnist_test_files(isolated / "root" / "mnist")
    message = refused(root=isolated / "root")
    assert f"SHA-256 {sha256_file(root / images)}" in message and message.startswith(str(root / images))
    # a SHA256SUMS that agrees with the other bytes does not override the published digest
    (root / "SHA256SUMS").write_text(f"{sha256_file(root / images)}  {images}\n")
    refused(root=isolated / "root")
    monkeypatch.setenv("FREDSET_DATA", str(write_mnist_test_files(isolated / "env" / "mnist").parent))
    refused()
    monkeypatch.delenv("FREDSET_DATA")
    for attribute in ("SYSTEM_DATA", "SHARED_DATA"):
        place = write_mnist_test_files(isolated / attribute / "mnist").parent
        monkeypatch.setattr(registry, attribute, place)
        refused()
        monkeypatch.setattr(registry, attribute, isolated / "empty" / attribute)


def test_known_md5_accepts_the_file_and_provenance_stays_sha256(isolated, monkeypatch):
    target = write_mnist_test_files(isolated / "data" / "mnist")
    known = {name: (registry.KnownDigest("sha256", "0" * 64, "test"),
                    registry.KnownDigest("md5", hashlib.md5((target / name).read_bytes()).hexdigest(), "test"))
             for name in TEST_FILES}
    monkeypatch.setitem(registry.KNOWN_FILES, "mnist", known)
    data = load_dataset("mnist", split="test", root=isolated / "data")
    assert data.source["files"] == {name: sha256_file(target / name) for name in TEST_FILES}


def test_corrupted_copy_of_a_real_file_is_refused(isolated, fmnist_dir):
    target = link_test_files(fmnist_dir, isolated / "data" / "fashion-mnist", sums=False, names=TEST_FILES[1:])
    corrupted = bytearray((fmnist_dir / TEST_FILES[0]).read_bytes())
    corrupted[len(corrupted) // 2] ^= 0x01
    (target / TEST_FILES[0]).write_bytes(bytes(corrupted))
    with pytest.raises(FredsetError) as excinfo:
        load_dataset("fashion-mnist", split="test", root=isolated / "data")
    message = one_line_error(excinfo, str(target / TEST_FILES[0]), hashlib.sha256(corrupted).hexdigest(),
                             "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073")
    assert all(digest in message for digest in known_sha256("fashion-mnist", TEST_FILES[0]))


def test_the_four_gz_files_without_sha256sums_load(isolated, fmnist_dir, fmnist_train, fmnist_test):
    target = link_test_files(fmnist_dir, isolated / "data" / "fashion-mnist", sums=False,
                             names=TRAIN_FILES + TEST_FILES)
    assert sorted(p.name for p in target.iterdir()) == sorted(TRAIN_FILES + TEST_FILES)
    for split, names, reference in (("train", TRAIN_FILES, fmnist_train), ("test", TEST_FILES, fmnist_test)):
        data = load_dataset("fashion-mnist", split=split, root=isolated / "data")
        assert pathlib.Path(data.source["root"]) == target
        assert_known_hashes(data.source["files"], names)
        assert data.source["files"] == reference.source["files"]
        assert torch.equal(data.images, reference.images) and torch.equal(data.labels, reference.labels)


# -- npz ------------------------------------------------------------------------------------------------------

def test_npz_with_computed_statistics(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (30, 8, 6, 3), dtype=np.uint8)            # [N, H, W, C]
    labels = np.repeat(np.arange(3), 10)
    path = tmp_path / "toy.npz"
    np.savez(path, images=images, labels=labels, classes=np.array(["a", "b", "c"]))
    data = load_dataset(str(path))
    assert data.images.shape == (30, 3, 8, 6) and data.classes == ["a", "b", "c"] and data.name == "toy"
    as_float = images.astype(np.float64) / 255
    np.testing.assert_allclose(data.mean, as_float.mean(axis=(0, 1, 2)), rtol=1e-9)
    np.testing.assert_allclose(data.std, as_float.std(axis=(0, 1, 2)), rtol=1e-9)
    per_channel = data.images.transpose(0, 1).flatten(1)
    assert per_channel.mean(1).abs().max() < 1e-5 and (per_channel.std(1, correction=0) - 1).abs().max() < 1e-5
    assert data.source["files"] == {"toy.npz": registry_sha(path)} and data.license is None
    # with replacement when the class is smaller than the count
    assert data.sample(1, 25, generator=torch.Generator().manual_seed(0)).shape == (25, 3, 8, 6)
    with pytest.raises(FredsetError) as excinfo:
        load_dataset(path, split="test")
    one_line_error(excinfo, "toy.npz", "test")


def registry_sha(path):
    import hashlib
    return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()


def test_npz_layouts_and_splits(tmp_path):
    rng = np.random.default_rng(1)
    train = rng.random((20, 1, 5, 5)).astype(np.float32)                     # float [N, C, H, W] in [0, 1]
    test = rng.random((6, 5, 5)).astype(np.float32)                          # [N, H, W]
    path = tmp_path / "splits.npz"
    np.savez(path, train_images=train, train_labels=np.arange(20) % 4, test_images=test,
             test_labels=np.arange(6) % 4)
    train_data = load_dataset(path, split="train")
    test_data = load_dataset(path, split="test")
    assert train_data.classes == ["0", "1", "2", "3"] and test_data.images.shape == (6, 1, 5, 5)
    assert test_data.mean == train_data.mean and test_data.std == train_data.std   # train statistics
    assert train_data.mean[0] == pytest.approx(float(train.astype(np.float64).mean()), rel=1e-9)
    expected = (torch.from_numpy(test).unsqueeze(1) - train_data.mean[0]) / train_data.std[0]
    torch.testing.assert_close(test_data.images, expected)


@pytest.mark.parametrize("arrays, needle", [
    (dict(images=np.zeros((4, 5, 5), np.uint8), labels=np.zeros(3, np.int64)), "3 labels for 4 images"),
    (dict(images=np.zeros((4, 5, 5), np.uint8)), "labels"),
    (dict(pictures=np.zeros((4, 5, 5), np.uint8), labels=np.zeros(4, np.int64)), "images"),
    (dict(images=np.full((4, 5, 5), 2.0), labels=np.zeros(4, np.int64)), "[0, 1]"),
    (dict(images=np.zeros((4, 5), np.uint8), labels=np.zeros(4, np.int64)), "shape"),
    (dict(images=np.zeros((4, 5, 5), np.uint8), labels=np.zeros(4, np.float32)), "integers"),
    (dict(images=np.zeros((4, 5, 5), np.uint8), labels=np.array([0, 1, 2, 3]), classes=np.array(["a", "b"])),
     "classes"),
    (dict(images=np.zeros((4, 5, 5), np.uint8), labels=np.zeros(4, np.int64),
          classes=np.array([object()], dtype=object)), "classes"),
])
def test_npz_bad_arrays(tmp_path, arrays, needle):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(FredsetError) as excinfo:
        load_dataset(path)
    one_line_error(excinfo, "bad.npz", needle)


def test_npz_not_a_zip(tmp_path):
    path = tmp_path / "broken.npz"
    path.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(FredsetError) as excinfo:
        load_dataset(path)
    one_line_error(excinfo, "broken.npz")


# -- ImageFolder ----------------------------------------------------------------------------------------------

def write_pngs(folder: pathlib.Path, counts: dict[str, int], mode: str, size=(6, 4), seed=0):
    from PIL import Image
    rng = np.random.default_rng(seed)
    for name, count in counts.items():
        (folder / name).mkdir(parents=True)
        for i in range(count):
            shape = (size[1], size[0]) + ((3,) if mode == "RGB" else ())
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(folder / name / f"{i}.png")


def test_image_folder(tmp_path):
    pytest.importorskip("PIL", reason="Pillow is optional (pip install pillow)")
    folder = tmp_path / "shapes"
    write_pngs(folder, {"circle": 3, "square": 2}, "RGB")
    (folder / "square" / "notes.txt").write_text("not an image")
    data = load_dataset(str(folder))
    assert data.images.shape == (5, 3, 4, 6) and data.classes == ["circle", "square"]
    assert data.labels.tolist() == [0, 0, 0, 1, 1] and data.name == "shapes"
    assert set(data.source["files"]) == {"circle/0.png", "circle/1.png", "circle/2.png", "square/0.png",
                                         "square/1.png"}
    per_channel = data.images.transpose(0, 1).flatten(1)
    assert per_channel.mean(1).abs().max() < 1e-4
    with pytest.raises(FredsetError) as excinfo:
        load_dataset(folder, split="test")
    one_line_error(excinfo, "shapes", "test")


def test_image_folder_with_splits_and_grayscale(tmp_path):
    pytest.importorskip("PIL", reason="Pillow is optional (pip install pillow)")
    root = tmp_path / "digits"
    write_pngs(root / "train", {"0": 4, "1": 4}, "L", seed=1)
    write_pngs(root / "val", {"1": 2}, "L", seed=2)
    train = load_dataset(root)
    test = load_dataset(root, split="test")                                 # falls back to val/
    assert train.images.shape == (8, 1, 4, 6) and test.images.shape == (2, 1, 4, 6)
    assert test.classes == ["0", "1"] and test.labels.tolist() == [1, 1]
    assert test.mean == train.mean and test.std == train.std
    assert "val/1/0.png" in test.source["files"]


def test_image_folder_errors(tmp_path):
    pytest.importorskip("PIL", reason="Pillow is optional (pip install pillow)")
    folder = tmp_path / "mixed"
    write_pngs(folder, {"a": 2}, "RGB", size=(6, 4))
    write_pngs(folder, {"b": 1}, "RGB", size=(5, 5))
    with pytest.raises(FredsetError) as excinfo:
        load_dataset(folder)
    one_line_error(excinfo, "b/0.png", "size")
    shutil.rmtree(folder / "b")
    (folder / "a" / "2.png").write_bytes(b"not a png")
    with pytest.raises(FredsetError) as excinfo:
        load_dataset(folder)
    one_line_error(excinfo, "a/2.png", "decode")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FredsetError) as excinfo:
        load_dataset(empty)
    one_line_error(excinfo, "class sub-folders")


def test_image_folder_without_pillow(tmp_path, monkeypatch):
    import sys
    folder = tmp_path / "pics"
    (folder / "a").mkdir(parents=True)
    (folder / "a" / "0.png").write_bytes(b"\x89PNG")
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(FredsetError) as excinfo:
        load_dataset(folder)
    one_line_error(excinfo, "pip install pillow")


def test_tiny_imagenet_layout(isolated):
    pytest.importorskip("PIL", reason="Pillow is optional (pip install pillow)")
    from PIL import Image
    base = isolated / "data" / "tiny-imagenet" / "tiny-imagenet-200"
    wnids = ["n02", "n01"]
    (base / "val" / "images").mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(wnids) + "\n")
    rng = np.random.default_rng(0)
    for wnid in wnids:
        (base / "train" / wnid / "images").mkdir(parents=True)
        (base / "train" / wnid / f"{wnid}_boxes.txt").write_text("")
        for i in range(2):
            Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(
                base / "train" / wnid / "images" / f"{wnid}_{i}.JPEG", format="JPEG")
    Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8)).save(base / "val" / "images" / "val_0.JPEG",
                                                                         format="JPEG")   # grayscale -> RGB
    (base / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn02\t0\t0\t10\t10\n")
    train = load_dataset("tiny-imagenet", root=isolated / "data")
    assert train.images.shape == (4, 3, 64, 64) and train.classes == ["n01", "n02"]
    assert train.labels.tolist() == [0, 0, 1, 1] and train.mean == (0.485, 0.456, 0.406)
    assert "train/n01/images/n01_0.JPEG" in train.source["files"] and "wnids.txt" in train.source["files"]
    val = load_dataset("tiny-imagenet", split="test", root=isolated / "data")
    assert val.images.shape == (1, 3, 64, 64) and val.labels.tolist() == [1] and val.source["split"] == "val"
