"""fredset.files: the device policy, atomic and exclusive writes, file SHA-256, source summaries."""

import hashlib

import pytest
import torch

from fredset import FredsetError
from fredset.files import create_exclusively, resolve_device, sha256_file, summarised_source, write_atomically


def test_device_policy():
    assert resolve_device(None) == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("AUTO") == resolve_device("auto")
    for bad in ("banana", "gpu0", 3.5):
        with pytest.raises(FredsetError, match="unknown device"):
            resolve_device(bad)
    with pytest.raises(FredsetError, match="not supported"):
        resolve_device("meta")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")
def test_cuda_asked_for_without_cuda_is_refused():
    for device in ("cuda", "cuda:1", torch.device("cuda")):
        with pytest.raises(FredsetError, match="CUDA is not available"):
            resolve_device(device)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_index_beyond_the_machine_is_refused():
    assert resolve_device("cuda").type == "cuda"
    with pytest.raises(FredsetError, match="CUDA device"):
        resolve_device(f"cuda:{torch.cuda.device_count()}")


def test_write_atomically_replaces_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "out.bin"
    write_atomically(path, b"first")
    write_atomically(path, b"second")
    assert path.read_bytes() == b"second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]
    with pytest.raises(FredsetError, match="missing"):
        write_atomically(tmp_path / "missing" / "x.bin", b"data")


def test_create_exclusively_never_replaces(tmp_path):
    path = tmp_path / "manifest.json"
    assert create_exclusively(path, b"mine") is True
    assert create_exclusively(path, b"theirs") is False
    assert path.read_bytes() == b"mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json"]


def test_sha256_file(tmp_path):
    path = tmp_path / "data.bin"
    data = bytes(range(256)) * 5000  # more than one 1 MiB block
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()
    with pytest.raises(FredsetError, match="nope.bin"):
        sha256_file(tmp_path / "nope.bin")


def test_summarised_source_keeps_small_lists_and_digests_long_ones():
    few = {"dataset": "d", "files": {"a": "1" * 64}}
    assert summarised_source(few) is few
    many = {"dataset": "d", "split": "train", "files": {f"img{i:03d}.png": f"{i:064x}" for i in range(100)}}
    short = summarised_source(many)
    listing = "".join(f"img{i:03d}.png {i:064x}\n" for i in range(100))
    assert short == {"dataset": "d", "split": "train", "files_count": 100,
                     "files_sha256": hashlib.sha256(listing.encode()).hexdigest()}
