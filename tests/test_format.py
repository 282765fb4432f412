import io
import os

import h5py
import numpy as np
import pytest
import torch

import fredset
from fredset import FredsetError, load, read_file, save
from fredset.artifact import to_pixel_space
from fredset.format import HEADER_SIZE, to_bytes
from fredset.format.header import pack_header

from conftest import make_artifact
from test_dct import scatter_and_invert


def test_float32_round_trip_is_bit_exact(artifact, tmp_path):
    artifact.license = "CC-BY-4.0"
    artifact.citation = "@inproceedings{shin2023fred, title={Frequency Domain-based Dataset Distillation}}"
    artifact.dataset_license = "MIT"
    path = tmp_path / "a.fredset"
    size = save(artifact, path)
    assert size == path.stat().st_size
    loaded, info = read_file(path)
    for original, restored in zip(artifact.coefficients, loaded.coefficients):
        assert torch.equal(original, restored)
    assert torch.equal(loaded.masks, artifact.masks)
    for field in ("classes", "image_size", "mean", "std", "dataset", "license", "citation", "dataset_license"):
        assert getattr(loaded, field) == getattr(artifact, field)
    assert loaded.provenance["objective"] == "dm" and loaded.provenance["budget"] == {"ipc": 1}
    assert loaded.provenance["library"] == {"name": "fredset", "version": fredset.__version__}
    assert info.format_version == "1.0" and info.file_bytes == size and len(info.sha256) == 64
    assert torch.equal(loaded.labels, torch.tensor([0, 0, 0, 0, 1, 1, 2, 2, 2]))


def test_decode_equals_inverse_dct_of_masked_coefficients(artifact):
    loaded = load(to_bytes(artifact))
    expected = scatter_and_invert(loaded.coefficients, loaded.masks, *loaded.image_size)
    assert torch.allclose(loaded.decode().double(), expected, atol=1e-5)
    pixels = loaded.decode(pixel_space=True)
    assert pixels.min() >= 0 and pixels.max() <= 1
    mean = torch.tensor(artifact.mean).view(1, -1, 1, 1)
    std = torch.tensor(artifact.std).view(1, -1, 1, 1)
    assert torch.allclose(pixels, (expected.float() * std + mean).clamp(0, 1), atol=1e-5)


def test_to_pixel_space_leaves_its_input_alone_unless_asked():
    images = torch.randn(2, 3, 4, 4)
    original = images.clone()
    pixels = to_pixel_space(images, (0.5, 0.4, 0.3), (0.25, 0.2, 0.1))
    assert torch.equal(images, original)
    overwritten = to_pixel_space(images, (0.5, 0.4, 0.3), (0.25, 0.2, 0.1), inplace=True)
    assert overwritten.data_ptr() == images.data_ptr() and torch.equal(overwritten, pixels)


def test_float16_error_is_bounded_by_half_precision(artifact):
    loaded = load(to_bytes(artifact, encoding="float16"))
    for original, restored in zip(artifact.coefficients, loaded.coefficients):
        # binary16 rounds to 11 significant bits: relative error <= 2^-11 (plus the subnormal floor)
        assert ((restored - original).abs() <= original.abs() * 2**-11 + 2**-24).all()
    images = (loaded.decode() - artifact.decode()).abs().max()
    assert images < 1e-2


def test_int8_error_is_bounded_by_half_a_step(artifact):
    data = to_bytes(artifact, encoding="int8")
    loaded = load(data)
    for original, restored in zip(artifact.coefficients, loaded.coefficients):
        step = (original.max(dim=0).values - original.min(dim=0).values) / 254
        assert ((restored - original).abs() <= step / 2 + 1e-5).all()


def test_int8_constant_frequency_is_exact():
    artifact = make_artifact(counts=(3,), k=4)
    artifact.coefficients[0][:, :, 2] = 1.25  # no spread: scale 0
    loaded = load(to_bytes(artifact, encoding="int8"))
    assert torch.equal(loaded.coefficients[0][:, :, 2], torch.full((3, 1), 1.25))


@pytest.mark.parametrize("encoding", ["float32", "float16", "int8"])
@pytest.mark.parametrize("shuffle", [True, False])
def test_every_encoding_round_trips(encoding, shuffle):
    artifact = make_artifact(counts=(2, 5, 1), channels=3, size=(6, 4), k=5)
    loaded = load(to_bytes(artifact, encoding=encoding, shuffle=shuffle))
    assert loaded.counts == [2, 5, 1]
    tolerance = {"float32": 0, "float16": 5e-3, "int8": 5e-2}[encoding]
    for original, restored in zip(artifact.coefficients, loaded.coefficients):
        assert (restored - original).abs().max() <= tolerance


def test_same_artifact_gives_same_bytes(artifact, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    first = to_bytes(artifact)
    assert to_bytes(artifact) == first
    assert load(first).provenance["created"] == "2023-11-14T22:13:20Z"


def test_reads_from_bytes_and_file_objects(artifact, tmp_path):
    data = to_bytes(artifact)
    path = tmp_path / "a.fredset"
    path.write_bytes(data)
    with open(path, "rb") as stream:
        assert load(stream).counts == artifact.counts
    assert load(io.BytesIO(data)).counts == artifact.counts


def test_save_is_atomic_when_interrupted(artifact, tmp_path, monkeypatch):
    path = tmp_path / "a.fredset"
    path.write_bytes(b"previous contents")

    def interrupted(descriptor):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save(artifact, path)
    assert path.read_bytes() == b"previous contents"
    assert os.listdir(tmp_path) == ["a.fredset"]  # no temporary file left behind


def test_save_into_missing_folder_is_a_fredset_error(artifact, tmp_path):
    with pytest.raises(FredsetError, match="cannot write"):
        save(artifact, tmp_path / "missing" / "a.fredset")


def test_save_refuses_bad_options_and_values(artifact):
    with pytest.raises(FredsetError, match="encoding"):
        to_bytes(artifact, encoding="bfloat16")
    with pytest.raises(FredsetError, match="level"):
        to_bytes(artifact, level=40)
    big = make_artifact(counts=(2,), k=3)
    big.coefficients[0][0, 0, 0] = 1e6
    with pytest.raises(FredsetError, match="float16"):
        to_bytes(big, encoding="float16")


@pytest.mark.parametrize("change,message", [
    (lambda a: a.masks.__setitem__((0, 1), a.masks[0, 0]), "strictly increasing"),
    (lambda a: a.masks.__setitem__((0, -1), 10_000), "out of range"),
    (lambda a: a.coefficients[1].__setitem__((0, 0, 0), float("nan")), "NaN"),
    (lambda a: setattr(a, "std", (0.0, 1.0, 1.0)), "std"),
    (lambda a: setattr(a, "mean", (0.0,)), "mean"),
    (lambda a: a.coefficients.__setitem__(0, a.coefficients[0].double()), "float32"),
    (lambda a: a.coefficients.__setitem__(0, a.coefficients[0][:, :2]), "shape"),
    (lambda a: setattr(a, "classes", ["a", "a", "b"]), "unique"),
])
def test_invalid_artifacts_are_refused(artifact, change, message):
    change(artifact)
    with pytest.raises(FredsetError, match=message):
        to_bytes(artifact)


# -- bad files: each is the library's own exception, naming the file -------------------------

def assert_refused(tmp_path, data: bytes, message: str, **limits):
    path = tmp_path / "bad.fredset"
    path.write_bytes(data)
    with pytest.raises(FredsetError, match=message) as caught:
        read_file(path, **limits)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(FredsetError, match="no such file"):
        load(tmp_path / "nothing.fredset")
    with pytest.raises(FredsetError, match="directory"):
        load(tmp_path)


def test_not_a_fredset_file(tmp_path):
    assert_refused(tmp_path, b"hello world, this is text" * 40, "not a fredset file")
    assert_refused(tmp_path, b"", "not a fredset file")
    plain = io.BytesIO()
    with h5py.File(plain, "w") as handle:
        handle["x"] = np.arange(3)
    assert_refused(tmp_path, plain.getvalue(), "HDF5 file but not a fredset")


def test_truncated_and_bit_flipped_files(artifact, tmp_path):
    data = to_bytes(artifact)
    assert_refused(tmp_path, data[:-100], "truncated")
    assert_refused(tmp_path, data[:300], "truncated")
    assert_refused(tmp_path, data + b"\0", "unexpected bytes")
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x10
    assert_refused(tmp_path, bytes(flipped), "checksum mismatch")


def with_version(data: bytes, major: int, minor: int) -> bytes:
    return pack_header(data[HEADER_SIZE:], (major, minor)) + data[HEADER_SIZE:]


def test_unknown_major_version_is_refused_clearly(artifact, tmp_path):
    for major, minor in ((3, 0), (0, 9), (65535, 1)):
        assert_refused(tmp_path, with_version(to_bytes(artifact), major, minor),
                       rf"version {major}\.{minor} is not supported; this fredset reads versions 1\.x and 2\.x "
                       r"\(upgrade fredset")


def test_content_of_the_other_major_version_is_refused(artifact, tmp_path):
    """1.0 datasets behind a 2.0 header are refused by name (FORMAT.md section 8: a new encoding is a new major)."""
    assert_refused(tmp_path, with_version(to_bytes(artifact), 2, 0),
                   r"unexpected object /\w+ \(a dataset of format 1\.x, not 2\.x\)")


def test_newer_minor_version_is_read(artifact):
    loaded, info = read_file(with_version(to_bytes(artifact), 1, 9))
    assert info.format_version == "1.9" and loaded.counts == artifact.counts


def test_size_limits_are_enforced_before_reading(artifact, tmp_path):
    data = to_bytes(artifact)
    assert_refused(tmp_path, data, "max_file_bytes", max_file_bytes=len(data) - 1)
    assert_refused(tmp_path, data, "max_decoded_bytes", max_decoded_bytes=artifact.decoded_bytes - 1)
    assert load(data, max_file_bytes=len(data), max_decoded_bytes=artifact.decoded_bytes).counts == artifact.counts


def test_error_messages_say_what_is_wrong(artifact, tmp_path):
    """A structurally valid file with an out-of-range mask index (checksum recomputed)."""
    def out_of_range(handle):
        masks = handle["masks"][()]
        masks[1, -1] = 10 * 8 * 10
        handle["masks"][...] = masks

    assert_refused(tmp_path, rebuilt(artifact, out_of_range), "mask index out of range")


def rebuilt(artifact, edit) -> bytes:
    """The artifact's file with ``edit(handle)`` applied in HDF5 and the checksum recomputed."""
    raw = io.BytesIO(to_bytes(artifact))
    with h5py.File(raw, "r+") as handle:
        edit(handle)
    data = raw.getvalue()
    return pack_header(data[HEADER_SIZE:], (1, 0)) + data[HEADER_SIZE:]


def test_duplicate_metadata_keys_are_refused(artifact, tmp_path):
    def duplicate_k(handle):
        text = bytes(handle["metadata"][()]).decode()
        del handle["metadata"]
        handle["metadata"] = np.frombuffer(text.replace('"k":7', '"k":7,"k":5').encode(), np.uint8)

    assert_refused(tmp_path, rebuilt(artifact, duplicate_k), "duplicate key 'k'")


def test_superblock_must_sit_at_byte_512(artifact, tmp_path):
    moved = io.BytesIO()
    with h5py.File(moved, "w", userblock_size=1024) as handle:
        with h5py.File(io.BytesIO(to_bytes(artifact)), "r") as source:
            for name in source:
                handle[name] = source[name][()]
    data = moved.getvalue()[HEADER_SIZE:]
    assert_refused(tmp_path, pack_header(data, (1, 0)) + data, "no HDF5 superblock at byte 512")


def test_mask_problems_are_named_before_decompressing(artifact, tmp_path):
    def repeat_index(handle):
        masks = handle["masks"][()]
        masks[0, 1] = masks[0, 0]
        handle["masks"][...] = masks

    assert_refused(tmp_path, rebuilt(artifact, repeat_index), "/masks: mask indices must be strictly increasing")


# -- whole files as bytes in memory: fredset.save_bytes and fredset.load_bytes --------------------

@pytest.mark.parametrize("options", [{}, {"encoding": "float16", "shuffle": False}, {"encoding": "int8", "level": 3}])
def test_save_bytes_is_the_file_that_save_writes(artifact, tmp_path, monkeypatch, options):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")  # the creation time is in the file
    path = tmp_path / "a.fredset"
    size = fredset.save(artifact, path, **options)
    data = fredset.save_bytes(artifact, **options)
    assert type(data) is bytes and len(data) == size and data == path.read_bytes()


def test_load_bytes_round_trip_equals_save_and_load(artifact, tmp_path):
    artifact.license = "CC-BY-4.0"
    path = tmp_path / "a.fredset"
    fredset.save(artifact, path, encoding="int8")
    from_file = fredset.load(path)
    data = fredset.save_bytes(artifact, encoding="int8")
    for source in (data, bytearray(data), memoryview(data)):
        loaded = fredset.load_bytes(source)
        assert all(torch.equal(a, b) for a, b in zip(loaded.coefficients, from_file.coefficients))
        assert torch.equal(loaded.masks, from_file.masks)
        for field in ("classes", "image_size", "mean", "std", "dataset", "license", "citation", "dataset_license",
                      "counts"):
            assert getattr(loaded, field) == getattr(from_file, field)
        assert {k: v for k, v in loaded.provenance.items() if k != "created"} == \
            {k: v for k, v in from_file.provenance.items() if k != "created"}


def _damaged_superblock(data: bytes) -> bytes:
    payload = bytearray(data[HEADER_SIZE:])
    payload[24:40] = b"\xff" * 16  # base, extension and end-of-file addresses; checksum recomputed
    return pack_header(bytes(payload), (1, 0)) + bytes(payload)


def test_load_bytes_checks_exactly_what_reading_a_file_checks(artifact, tmp_path):
    data = fredset.save_bytes(artifact)
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x10
    bad = {
        "empty": (b"", {}), "text": (b"hello world" * 60, {}), "header only": (data[:300], {}),
        "truncated": (data[:-1], {}), "extra byte": (data + b"\0", {}), "bit flip": (bytes(flipped), {}),
        "major version 3": (with_version(data, 3, 0), {}), "superblock": (_damaged_superblock(data), {}),
        "extra group": (rebuilt(artifact, lambda handle: handle.create_group("extra")), {}),
        "mask index": (rebuilt(artifact, lambda handle: handle["masks"].__setitem__((1, -1), 800)), {}),
        "file size limit": (data, {"max_file_bytes": len(data) - 1}),
        "decoded size limit": (data, {"max_decoded_bytes": artifact.decoded_bytes - 1}),
    }
    path = tmp_path / "bad.fredset"
    for name, (content, limits) in bad.items():
        with pytest.raises(FredsetError) as from_bytes:
            fredset.load_bytes(content, **limits)
        path.write_bytes(content)
        with pytest.raises(FredsetError) as from_file:
            fredset.load(path, **limits)
        assert type(from_bytes.value) is FredsetError, name
        assert from_bytes.value.path == "<bytes>" and str(from_bytes.value).startswith("<bytes>: "), name
        assert from_bytes.value.problem == from_file.value.problem, name


def test_load_bytes_takes_only_bytes(tmp_path):
    path = tmp_path / "a.fredset"
    fredset.save(make_artifact(), path)
    for source in (path, str(path), io.BytesIO(path.read_bytes())):
        with pytest.raises(TypeError, match="load_bytes takes bytes"):
            fredset.load_bytes(source)
