"""The golden vectors of spec/vectors/: fredset and the independent reference decoder
(spec/reference_decoder.py) both reproduce the expected values, and the vectors are reproducible."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.fft
import torch

import fredset

from conftest import load_module

SPEC = Path(__file__).resolve().parents[1] / "spec"
VECTORS = SPEC / "vectors"
# negative vector -> what fredset's and the reference decoder's messages say
BAD = {"bad-checksum": ("checksum", "checksum"), "bad-q3-padding": ("padding bit", "padding bit"),
       "bad-q4-size": ("zstd frame declares 487 bytes", "zstd frame declares 487 bytes")}
NAMES = sorted(p.name.removesuffix(".fredset") for p in VECTORS.glob("*.fredset") if p.stem not in BAD)


reference = load_module("fredset_spec_reference_decoder", SPEC / "reference_decoder.py")
make_vectors = load_module("fredset_spec_make_vectors", SPEC / "make_vectors.py")


def _expected(name: str) -> dict[str, np.ndarray]:
    with np.load(VECTORS / f"{name}.expected.npz", allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files}


def _bits(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array, dtype=np.float32).view(np.uint32)


def _encoding(coefficients: dict) -> str:
    return f"q{coefficients['bits']}" if "bits" in coefficients else coefficients["dtype"]


def test_the_vector_set_is_complete():
    assert len(NAMES) >= 8
    for name in NAMES:
        assert (VECTORS / f"{name}.expected.npz").is_file()
    encodings = {_encoding(reference.read(str(VECTORS / f"{n}.fredset")).metadata["coefficients"]) for n in NAMES}
    assert encodings == {"float32", "float16", "int8", "q3", "q4", "q8"}
    versions = {reference.read(str(VECTORS / f"{n}.fredset")).version for n in NAMES}
    assert versions == {(1, 0), (2, 0)}
    assert set(BAD) == {p.stem for p in VECTORS.glob("bad-*.fredset")}


@pytest.mark.parametrize("name", NAMES)
def test_fredset_decodes_the_vector(name):
    expected = _expected(name)
    path = VECTORS / f"{name}.fredset"
    artifact, info = fredset.read_file(path)
    coefficients = torch.cat([c.reshape(c.shape[0], -1) for c in artifact.coefficients]).numpy()
    assert np.array_equal(_bits(coefficients), _bits(expected["coefficients"].reshape(len(coefficients), -1)))
    images = artifact.decode().numpy()
    assert images.dtype == np.float32 and images.shape == expected["images"].shape
    assert np.abs(images - expected["images"]).max() <= 1e-5
    assert np.array_equal(artifact.labels.numpy(), expected["labels"])
    two = "-q" in name
    assert info.format_version == ("2.0" if two else "1.0")
    if two:  # the file's grid comes with it, and the values are exactly step x code on it
        grid = artifact.quantization
        assert grid is not None and grid.bits == info.metadata["coefficients"]["bits"] == int(name.split("-q")[1])
        assert all(torch.equal(block, exact) for block, exact in zip(artifact.coefficients,
                                                                      grid.apply(artifact.coefficients)))
    else:
        assert artifact.quantization is None

    dataset = fredset.FredDataset(path)
    assert np.abs(dataset.images.numpy() - expected["images"]).max() <= 1e-5
    assert dataset.targets.dtype == torch.int64
    assert np.array_equal(dataset.targets.numpy(), expected["labels"])
    assert len(dataset) == len(expected["labels"])


@pytest.mark.parametrize("name", NAMES)
def test_reference_decoder_decodes_the_vector(name):
    expected = _expected(name)
    path = str(VECTORS / f"{name}.fredset")
    contents = reference.read(path)
    coefficients = np.concatenate([c.reshape(c.shape[0], -1) for c in contents.coefficients])
    assert np.array_equal(_bits(coefficients), _bits(expected["coefficients"].reshape(len(coefficients), -1)))
    images, labels, metadata = reference.decode(path)
    assert images.dtype == np.float32 and labels.dtype == np.int64
    assert np.abs(images - expected["images"]).max() <= 1e-5
    assert np.array_equal(labels, expected["labels"])

    # ... and it agrees with fredset on everything.
    artifact, info = fredset.read_file(path)
    assert metadata == info.metadata
    assert np.array_equal(contents.masks, artifact.masks.numpy())
    assert np.abs(images - artifact.decode().numpy()).max() <= 1e-5
    assert np.array_equal(labels, artifact.labels.numpy())


@pytest.mark.parametrize("bad", sorted(BAD))
def test_negative_vectors_are_refused(bad):
    path = VECTORS / f"{bad}.fredset"
    ours, theirs = BAD[bad]
    with pytest.raises(fredset.FredsetError, match=ours):
        fredset.read_file(path)
    with pytest.raises(fredset.FredsetError, match=ours):
        fredset.FredDataset(path)
    with pytest.raises(ValueError, match=theirs):
        reference.decode(str(path))


def test_reference_decoder_refuses_malformed_headers(tmp_path):
    data = (VECTORS / "gray28-float32.fredset").read_bytes()
    two = (VECTORS / "gray28-q4.fredset").read_bytes()
    cases = {"truncated": data[:-1], "not-fredset": b"\x89HDF\r\n\x1a\n" + data[8:],
             "1.0 content as 2.0": data[:8] + b"\x02\x00" + data[10:], "major-3": data[:8] + b"\x03\x00" + data[10:],
             "2.0 content as 1.0": two[:8] + b"\x01\x00" + two[10:], "2.0 truncated": two[:-1], "short": data[:100]}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ValueError):
            reference.decode(str(tmp_path / name))
        with pytest.raises(fredset.FredsetError):
            fredset.read_file(tmp_path / name)


def test_pixel_space():
    name = "rgb32-float16"
    expected = _expected(name)
    dataset = fredset.FredDataset(VECTORS / f"{name}.fredset", pixel_space=True)
    images, _, metadata = reference.decode(str(VECTORS / f"{name}.fredset"))
    pixels = reference.to_pixels(expected["images"], metadata)
    assert np.abs(dataset.images.numpy() - pixels).max() <= 1e-5
    assert np.abs(reference.to_pixels(images, metadata) - pixels).max() <= 1e-5
    assert dataset.images.min() >= 0 and dataset.images.max() <= 1


def test_decode_is_scipy_inverse_dct():
    """The transform of FORMAT.md is scipy's orthonormal DCT-II; a non-square vector pins u*W + v."""
    name = "gray16x24-float32"
    expected = _expected(name)
    contents = reference.read(str(VECTORS / f"{name}.fredset"))
    height, width = contents.metadata["image"]["height"], contents.metadata["image"]["width"]
    planes = []
    for mask, values in zip(contents.masks, contents.coefficients):
        plane = np.zeros(values.shape[:2] + (height, width))
        u, v = mask // width, mask % width
        plane[:, :, u, v] = values
        planes.append(plane)
    scipy_images = scipy.fft.idctn(np.concatenate(planes), type=2, norm="ortho", axes=(-2, -1))
    assert np.abs(scipy_images - expected["images"]).max() <= 1e-6
    artifact, _ = fredset.read_file(VECTORS / f"{name}.fredset")
    assert np.abs(scipy_images - artifact.decode().numpy()).max() <= 1e-5
    # and the forward transform gives the stored coefficients back
    forward = scipy.fft.dctn(scipy_images, type=2, norm="ortho", axes=(-2, -1)).reshape(len(scipy_images), 1, -1)
    masks = np.repeat(contents.masks, contents.metadata["instances_per_class"], axis=0)
    stored = np.take_along_axis(forward, masks[:, None, :], axis=-1)
    assert np.abs(stored - expected["coefficients"]).max() <= 1e-9


def test_vectors_are_reproducible(tmp_path):
    written = make_vectors.generate(tmp_path / "a")
    names = sorted(p.name for p in written)
    assert names == sorted(p.name for p in VECTORS.iterdir() if p.suffix in (".fredset", ".npz"))

    stored_metadata = reference.read(str(VECTORS / f"{NAMES[0]}.fredset")).metadata["provenance"]
    same_tools = (stored_metadata["toolchain"] == make_vectors.toolchain()
                  and stored_metadata["library"]["version"] == fredset.__version__)
    if same_tools:  # the committed files are exactly what the generator writes
        reference_dir = VECTORS
    else:  # other libhdf5/libzstd/fredset versions write other bytes; still, two runs must agree
        reference_dir = tmp_path / "b"
        make_vectors.generate(reference_dir)
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (reference_dir / name).read_bytes(), name


def test_vectors_readme_lists_every_file():
    readme = (VECTORS / "README.md").read_text("utf-8")
    for path in VECTORS.glob("*.fredset"):
        assert path.name in readme
    assert json.loads((SPEC / "metadata.schema.json").read_text("utf-8"))["$id"] == "urn:fredset:metadata:1.0"
    assert json.loads((SPEC / "metadata-2.schema.json").read_text("utf-8"))["$id"] == "urn:fredset:metadata:2.0"
