"""Format 2.0 (spec/FORMAT.md section 13): low-bit codes times float16 steps, mask bitmaps, two zstd frames.

Round trips are bit-exact on the artifact's grid; other bits re-quantise; every rule of section 13 refuses
its file with one line naming it; format 1.0 still reads and writes exactly as before.
"""

from __future__ import annotations

import dataclasses
import io
import json
import struct
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner

import fredset
from fredset import FredsetError
from fredset.format import ENCODINGS, read_file, save, to_bytes
from fredset.format._crafting import (build_file, build_file_2, data_bytes, datasets_of, document_of, frame_array,
                                      quantized_artifact, random_artifact, raw_zstd_frame, recompress, sections_of,
                                      with_datasets)
from fredset.format.codes import section_sizes
from fredset.format.header import HEADER_SIZE, pack_header
from fredset.format.layout import file_layout
from fredset.format.metadata import MAX_METADATA_BYTES
from fredset.quantize import Quantization, dequantize

from conftest import load_module, make_artifact

SPEC = Path(__file__).resolve().parents[1] / "spec"
make_vectors = load_module("fredset_v2_make_vectors", SPEC / "make_vectors.py")


def on_grid(artifact: fredset.Artifact, bits: int) -> fredset.Artifact:
    return quantized_artifact(artifact, bits)


def base_artifact() -> fredset.Artifact:
    """1 x 5 x 7 (35 frequencies: 5 bytes per bitmap, 5 padding bits), counts 2, 3, 1, k 6, 4 bits; class 0's
    third frequency is 0 everywhere (a zero step)."""
    artifact = random_artifact(1, (5, 7), 6, [2, 3, 1], 11, mean=[0.5], std=[0.25])
    artifact.coefficients[0][:, :, 2] = 0
    return on_grid(artifact, 4)


BASE = base_artifact()
VALID = to_bytes(BASE, level=3)
ARRAYS = datasets_of(VALID)
DOCUMENT = document_of(ARRAYS)
SECTIONS = sections_of(ARRAYS)


def sections(**changes: np.ndarray) -> dict[str, np.ndarray]:
    return {**{name: value.copy() for name, value in SECTIONS.items()}, **changes}


def edited(name: str, index: tuple, value) -> dict[str, np.ndarray]:
    changed = sections()
    changed[name][index] = value
    return changed


def refused(data: bytes, *fragments: str, **limits) -> str:
    with pytest.raises(FredsetError) as caught:
        read_file(data, **limits)
    message = str(caught.value)
    assert message.startswith("<bytes>: ") and "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message
    return message


# -- round trips -------------------------------------------------------------------------------------

@pytest.mark.parametrize("bits", range(2, 9))
@pytest.mark.parametrize("shape", [(1, (28, 28), 49, (3, 3)), (3, (6, 5), 7, (2, 5, 1))])
def test_round_trip_is_bit_exact(bits, shape):
    channels, size, k, counts = shape
    artifact = on_grid(make_artifact(counts=counts, channels=channels, size=size, k=k, seed=bits), bits)
    data = to_bytes(artifact, level=3)
    loaded, info = read_file(data)
    assert info.format_version == "2.0" and info.encoding == {"bits": bits, "steps": "float16", "compression": "zstd"}
    assert torch.equal(loaded.masks, artifact.masks) and loaded.counts == artifact.counts
    for ours, theirs in zip(loaded.coefficients, artifact.coefficients):
        assert ours.dtype == torch.float32 and ours.numpy().tobytes() == theirs.numpy().tobytes()
    assert loaded.quantization.bits == bits
    for ours, theirs in zip(loaded.quantization.steps, artifact.quantization.steps):
        assert ours.dtype == torch.float32 and ours.numpy().tobytes() == theirs.numpy().tobytes()
    assert loaded.decode().numpy().tobytes() == artifact.decode().numpy().tobytes()
    assert loaded.decode(pixel_space=True).numpy().tobytes() == artifact.decode(pixel_space=True).numpy().tobytes()
    for field in ("classes", "image_size", "mean", "std", "dataset", "license", "citation", "dataset_license"):
        assert getattr(loaded, field) == getattr(artifact, field)
    loaded.validate()  # the reader sets the grid without re-checking it; the full check agrees


def test_rewriting_a_read_file_gives_the_same_bytes():
    """The file's grid comes back with it, so writing what was read is lossless, byte for byte."""
    assert to_bytes(fredset.load(VALID), level=3) == VALID
    vector = (SPEC / "vectors" / "gray15x13-q3.fredset").read_bytes()  # with the code -2^(b-1) = -4
    assert to_bytes(fredset.load(vector)) == vector


def test_dequantize_is_step_times_code_in_float32():
    loaded = fredset.load(VALID)
    codes = torch.from_numpy(SECTIONS["codes"].astype(np.int8))
    start = 0
    for label, block in enumerate(loaded.coefficients):
        steps = torch.from_numpy(SECTIONS["steps"][label].astype(np.float32))
        exact = dequantize(codes[start:start + len(block)], steps)
        assert block.numpy().tobytes() == exact.numpy().tobytes()
        start += len(block)
    assert (SECTIONS["steps"][0, 0, 2] == 0) and not SECTIONS["codes"][:2, 0, 2].any()


def test_same_artifact_gives_same_bytes(monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    artifact = on_grid(make_artifact(), 5)
    first = to_bytes(artifact)
    assert to_bytes(artifact) == first and first[HEADER_SIZE + 8] == 2  # superblock version 2 (libhdf5 1.8)
    with h5py.File(io.BytesIO(first), "r") as handle:
        assert list(handle) == ["data", "metadata"] and not handle.attrs.keys()
        for name in handle:
            assert handle[name].dtype == np.uint8 and handle[name].id.get_offset() is not None  # contiguous
            assert handle[name].compression is None and not handle[name].attrs.keys()


def test_save_writes_what_to_bytes_makes(tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    artifact = on_grid(make_artifact(), 3)
    path = tmp_path / "a.fredset"
    assert save(artifact, path) == path.stat().st_size and path.read_bytes() == to_bytes(artifact)
    assert fredset.read_file(path)[1].format_version == "2.0"


# -- encodings -----------------------------------------------------------------------------------------

def test_encodings_list_both_versions():
    assert ENCODINGS == ("float32", "float16", "int8", "q2", "q3", "q4", "q5", "q6", "q7", "q8")
    with pytest.raises(FredsetError, match="unknown coefficient encoding 'q9'"):
        to_bytes(BASE, encoding="q9")


def test_default_encoding_follows_the_quantization():
    assert read_file(to_bytes(BASE))[1].encoding["bits"] == 4
    plain = make_artifact()
    assert read_file(to_bytes(plain))[1].encoding["dtype"] == "float32"
    as_float = fredset.load(to_bytes(BASE, encoding="float32"))  # 1.0 carries no grid
    assert as_float.quantization is None
    assert all(torch.equal(a, b) for a, b in zip(as_float.coefficients, BASE.coefficients))


def test_other_bits_requantise():
    """q<b> with other bits than the artifact's grid (or without a grid) quantises anew, as Quantization.of."""
    six = on_grid(make_artifact(counts=(4, 3), channels=3, size=(8, 8), k=9), 6)
    for source in (six, dataclasses.replace(six, quantization=None)):
        loaded = fredset.load(to_bytes(source, encoding="q4"))
        expected = Quantization.of(six.coefficients, 4)
        assert loaded.quantization.bits == 4
        for ours, theirs, steps, block in zip(loaded.coefficients, expected.apply(six.coefficients), expected.steps,
                                              six.coefficients):
            assert torch.equal(ours, theirs)
            assert ((ours - block).abs() <= steps * 0.5 * (1 + 2**-10)).all()  # half a step (steps are float16)


def test_requantising_beyond_the_float16_range_is_refused():
    artifact = make_artifact(counts=(2,), k=3)
    artifact.coefficients[0][0, 0, 0] = 1e9
    with pytest.raises(FredsetError, match="float16 range"):
        to_bytes(artifact, encoding="q8")


def test_q4_is_smaller_than_int8():
    """The measurement of FORMAT.md 13.8: 10 classes x 100 instances of 28 x 28, k 49."""
    artifact = make_artifact(counts=(100,) * 10, channels=1, size=(28, 28), k=49)
    int8 = len(to_bytes(artifact, encoding="int8"))
    sizes = {bits: len(to_bytes(on_grid(artifact, bits))) for bits in (4, 6, 8)}
    assert sizes[4] < sizes[6] < sizes[8] < int8
    assert sizes[4] < 0.55 * int8


def test_1_0_writing_is_unchanged():
    """Regenerating the 1.0 vectors gives their committed bytes (made before format 2.0 existed), where the
    toolchain is the one recorded in them."""
    for spec in make_vectors.VECTORS:
        if spec["encoding"].startswith("q"):
            continue
        committed = (SPEC / "vectors" / f"{spec['name']}.fredset").read_bytes()
        toolchain = fredset.read_file(committed)[1].metadata["provenance"]["toolchain"]
        if toolchain != make_vectors.toolchain():
            pytest.skip("other libhdf5/libzstd versions than the vectors were made with")
        with make_vectors.fixed_creation_time():
            data, _ = make_vectors.build(spec)
        assert data == committed, spec["name"]


def test_1_0_vectors_still_read():
    for path in sorted((SPEC / "vectors").glob("*.fredset")):
        if path.stem.startswith("bad-"):
            continue
        artifact, info = read_file(path)
        assert info.format_version == ("2.0" if "-q" in path.stem else "1.0")
        assert (artifact.quantization is not None) == (info.format_version == "2.0")


# -- refusals ----------------------------------------------------------------------------------------

def test_the_base_file_reads():
    assert read_file(build_file_2(ARRAYS))[0].counts == [2, 3, 1]
    assert read_file(build_file_2(ARRAYS, DOCUMENT, sections=sections()))[0].counts == [2, 3, 1]


def with_bit(label: int, frequency: int) -> dict[str, np.ndarray]:
    """The sections with bit ``frequency`` of class ``label``'s bitmap set."""
    changed = sections()
    changed["bitmap"][label, frequency // 8] |= 1 << (frequency % 8)
    return changed


# per class, the first frequency (of 35) that is not in its mask
FREE = [min(set(range(35)) - set(mask.tolist())) for mask in BASE.masks]
EXPECTED = sum(section_sizes(DOCUMENT["instances_per_class"], 1, 35, 6))
RAW = data_bytes(SECTIONS)
METADATA_RAW = json.dumps(DOCUMENT).encode()

REFUSED = {
    # the /data frame
    "data declares one byte more": (
        lambda: build_file_2({**ARRAYS, "data": frame_array(RAW + b"\0")}),
        f"/data: zstd frame declares {EXPECTED + 1} bytes, the metadata implies {EXPECTED}"),
    "data declares one byte less": (lambda: build_file_2({**ARRAYS, "data": frame_array(RAW[:-1])}),
                                    f"declares {EXPECTED - 1} bytes"),
    "data declares 2**40": (lambda: build_file_2({**ARRAYS, "data": np.frombuffer(raw_zstd_frame(2**40), "u1")}),
                            f"declares {2**40} bytes"),
    "data without content size": (lambda: build_file_2({**ARRAYS, "data": frame_array(RAW, content_size=False)}),
                                  "/data: zstd frame does not declare its size"),
    "data declares the right size, holds less": (
        lambda: build_file_2({**ARRAYS, "data": np.frombuffer(raw_zstd_frame(EXPECTED, RAW[:10], last=True), "u1")}),
        "/data: corrupt zstd frame"),
    "data truncated": (lambda: build_file_2({**ARRAYS, "data": ARRAYS["data"][:-3]}), "/data"),
    "data with trailing bytes": (
        lambda: build_file_2({**ARRAYS, "data": np.append(ARRAYS["data"], np.arange(3, dtype="u1"))}),
                                 "/data: 3 stray bytes after the zstd frame"),
    "data twice": (lambda: build_file_2({**ARRAYS, "data": np.concatenate([ARRAYS["data"]] * 2)}), "stray bytes"),
    "data not zstd": (lambda: build_file_2({**ARRAYS, "data": np.frombuffer(RAW, "u1")}), "/data: not a zstd frame"),
    "data empty": (lambda: build_file_2({**ARRAYS, "data": np.zeros(0, "u1")}), "/data: not a zstd frame"),
    # the /metadata frame
    "metadata not zstd": (lambda: build_file_2(ARRAYS, METADATA_RAW), "/metadata: not a zstd frame"),
    "metadata declares more than 4 MiB": (
        lambda: build_file_2(ARRAYS, raw_zstd_frame(MAX_METADATA_BYTES + 1)),
        f"/metadata: zstd frame declares {MAX_METADATA_BYTES + 1} bytes, more than the {MAX_METADATA_BYTES} allowed"),
    "metadata without content size": (lambda: build_file_2(ARRAYS, recompress(METADATA_RAW, content_size=False)),
                                      "/metadata: zstd frame does not declare its size"),
    "metadata with trailing bytes": (lambda: build_file_2(ARRAYS, recompress(METADATA_RAW) + b"\0"),
                                     "/metadata: 1 stray bytes"),
    "metadata truncated": (lambda: build_file_2(ARRAYS, recompress(METADATA_RAW)[:-2]), "/metadata"),
    "metadata stored beyond 4 MiB": (lambda: build_file_2(ARRAYS, recompress(METADATA_RAW) + bytes(MAX_METADATA_BYTES)),
                                     f"more than the {MAX_METADATA_BYTES} allowed"),
    "metadata with 1.0 coefficients": (
        lambda: build_file_2(ARRAYS, {**DOCUMENT, "coefficients": {"dtype": "int8", "byte_order": "little",
                                                                   "shuffle": True, "compression": "zstd"}}),
        "invalid metadata at coefficients: 'bits' is a required property"),
    "metadata with bits 9": (lambda: build_file_2(ARRAYS, {**DOCUMENT, "coefficients": {
        **DOCUMENT["coefficients"], "bits": 9}}), "coefficients/bits"),
    "metadata with shuffle": (lambda: build_file_2(ARRAYS, {**DOCUMENT, "coefficients": {
        **DOCUMENT["coefficients"], "shuffle": False}}), "unexpected property 'shuffle'"),
    "metadata not JSON": (lambda: build_file_2(ARRAYS, recompress(b"{not json")), "not valid UTF-8 JSON"),
    "metadata NaN": (lambda: build_file_2(ARRAYS, recompress(METADATA_RAW.replace(b'"mean": [0.5]', b'"mean": [NaN]'))),
                     "NaN is not JSON"),
    "more instances than codes": (
        lambda: build_file_2(ARRAYS, {**DOCUMENT, "instances_per_class": [2, 3, 2]}),
        f"declares {EXPECTED} bytes, the metadata implies {EXPECTED + 6}"),
    # mask bitmaps
    "bitmap with k + 1 bits": (lambda: build_file_2(ARRAYS, sections=with_bit(1, FREE[1])),
                               "/data: the mask bitmap of class 1 sets 7 bits, expected k = 6"),
    "bitmap with k - 1 bits": (lambda: build_file_2(ARRAYS, sections=edited(
        "bitmap", (2, np.flatnonzero(SECTIONS["bitmap"][2])[0]), 0)), "the mask bitmap of class 2 sets"),
    "bitmap empty": (lambda: build_file_2(ARRAYS, sections=sections(bitmap=np.zeros_like(SECTIONS["bitmap"]))),
                     "sets 0 bits, expected k = 6"),
    "bitmap padding bit": (lambda: build_file_2(ARRAYS, sections=edited("bitmap", (0, 4),
                                                                        SECTIONS["bitmap"][0, 4] | 0x80)),
                           "/data: the mask bitmap of class 0 sets a padding bit (bits from H*W = 35 on must be 0)"),
    "bitmap all ones": (lambda: build_file_2(ARRAYS, sections=sections(bitmap=np.full_like(SECTIONS["bitmap"], 255))),
                        "padding bit"),
    # steps
    "step NaN": (lambda: build_file_2(ARRAYS, sections=edited("steps", (1, 0, 3), np.nan)),
                 "/data: steps must be finite and >= 0 (not -0.0); class 1, channel 0, frequency 3 holds nan"),
    "step +inf": (lambda: build_file_2(ARRAYS, sections=edited("steps", (0, 0, 0), np.inf)), "holds inf"),
    "step -inf": (lambda: build_file_2(ARRAYS, sections=edited("steps", (2, 0, 5), -np.inf)), "holds -inf"),
    "step negative": (lambda: build_file_2(ARRAYS, sections=edited("steps", (1, 0, 1), -0.5)), "holds -0.5"),
    "step -0.0": (lambda: build_file_2(ARRAYS, sections=edited("steps", (0, 0, 2), -0.0)), "holds -0.0"),
    # codes
    "code 8 at 4 bits": (lambda: build_file_2(ARRAYS, sections=edited("codes", (3, 0, 1), 8)),
                         "/data: code 8 of instance 3 (class 1) is outside the 4-bit range -8..7"),
    "code -9 at 4 bits": (lambda: build_file_2(ARRAYS, sections=edited("codes", (5, 0, 0), -9)),
                          "code -9 of instance 5 (class 2)"),
    "code -128 at 4 bits": (lambda: build_file_2(ARRAYS, sections=edited("codes", (0, 0, 0), -128)), "code -128"),
    "code 2 at 2 bits": (lambda: build_file_2(ARRAYS, {**DOCUMENT, "coefficients": {
        **DOCUMENT["coefficients"], "bits": 2}}), "outside the 2-bit range -2..1"),
    "code under a zero step": (lambda: build_file_2(ARRAYS, sections=edited("codes", (1, 0, 2), 3)),
                               "/data: class 0 has step 0 at channel 0, frequency 2 but instance 1 has code 3 there"),
    # datasets of the other version, missing or mistyped datasets
    "2.0 with /masks": (lambda: build_file_2({**ARRAYS, "masks": np.zeros((3, 6), "<u4")}),
                        "unexpected object /masks (a dataset of format 1.x, not 2.x)"),
    "2.0 with /quantization": (lambda: build_file_2({**ARRAYS, "quantization": np.zeros((3, 2, 1, 6), "<f4")}),
                               "unexpected object /quantization"),
    "2.0 with /extra": (lambda: build_file_2({**ARRAYS, "extra": np.arange(3)}), "unexpected object /extra"),
    "2.0 without /data": (lambda: build_file_2(with_datasets(ARRAYS, data=None)),
                          "not a fredset 2.x file: dataset /data is missing"),
    "2.0 without /metadata": (lambda: build_file_2(with_datasets(ARRAYS, metadata=None)), "/metadata is missing"),
    "/data uint16": (lambda: build_file_2({**ARRAYS, "data": ARRAYS["data"].astype("<u2")}),
                     "/data has the wrong HDF5 datatype"),
    "/data 2-D": (lambda: build_file_2({**ARRAYS, "data": ARRAYS["data"][None]}), "/data has 2 dimensions"),
    "/data attribute": (lambda: build_file_2(ARRAYS, tweak=lambda h: h["data"].attrs.__setitem__("x", 1)),
                        "unexpected attributes on /data"),
    "/data chunked": (lambda: build_file_2(ARRAYS, tweak=lambda h: (h.__delitem__("data"), h.create_dataset(
        "data", data=ARRAYS["data"], chunks=(16,)))), "must be stored contiguously"),
    "2.0 as version 3.0": (lambda: build_file_2(ARRAYS, version=(3, 0)), "format version 3.0 is not supported"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_refusals(case):
    make, fragment = REFUSED[case]
    refused(make(), fragment)


def test_code_minus_2_to_the_b_minus_1_is_read_and_kept():
    """Writers write -(2^(b-1)-1)..2^(b-1)-1; readers accept -2^(b-1), and its value survives a rewrite."""
    data = build_file_2(ARRAYS, sections=edited("codes", (4, 0, 0), -8))
    loaded = fredset.load(data)
    assert loaded.coefficients[1][2, 0, 0] == -8 * SECTIONS["steps"][1, 0, 0].astype(np.float32)
    again = fredset.load(to_bytes(loaded, level=3))
    assert all(torch.equal(a, b) for a, b in zip(again.coefficients, loaded.coefficients))


def test_1_0_content_and_headers_do_not_mix():
    one = datasets_of(to_bytes(make_artifact(), encoding="int8"))
    refused(build_file(one, version=(2, 0), libver=("v108", "v108")), "(a dataset of format 1.x, not 2.x)")
    refused(build_file(ARRAYS, version=(1, 0), libver=("v108", "v108")), "unexpected object /data "
            "(a dataset of format 2.x, not 1.x)")
    refused(build_file({**one, "data": ARRAYS["data"]}), "unexpected object /data")
    meta_2 = json.loads(json.dumps(DOCUMENT))
    refused(build_file({**one, "metadata": np.frombuffer(json.dumps(
        {**json.loads(bytes(one["metadata"])), "coefficients": meta_2["coefficients"]}).encode(), "u1")}),
        "invalid metadata at coefficients")


def test_limits_apply_to_2_0():
    loaded = fredset.load(VALID)
    refused(VALID, "max_decoded_bytes", max_decoded_bytes=loaded.decoded_bytes - 1)
    refused(VALID, "max_file_bytes", max_file_bytes=len(VALID) - 1)
    assert fredset.load(VALID, max_decoded_bytes=loaded.decoded_bytes).counts == [2, 3, 1]
    huge = build_file_2(ARRAYS, {**DOCUMENT, "instances_per_class": [2**24] * 3})
    refused(huge, "max_decoded_bytes")


def test_newer_minor_2_x_ignores_what_it_does_not_know():
    extra = build_file_2({**ARRAYS, "future": np.arange(4.0), "masks": np.arange(3, dtype="<u4")},
                         {**DOCUMENT, "future_field": [1, 2]}, version=(2, 3),
                         tweak=lambda h: h.attrs.__setitem__("note", "from 2.3"))
    artifact, info = read_file(extra)
    assert info.format_version == "2.3" and info.metadata["future_field"] == [1, 2]
    assert all(torch.equal(a, b) for a, b in zip(artifact.coefficients, BASE.coefficients))
    refused(build_file_2(ARRAYS, {**DOCUMENT, "future_field": [1, 2]}), "unexpected property 'future_field'")


def test_every_header_bit_flip_of_a_2_0_file_is_refused():
    data = bytearray(VALID)
    for position in range(HEADER_SIZE):
        for bit in range(8):
            data[position] ^= 1 << bit
            if position in (10, 11):  # minor version: a newer minor is read
                fredset.load(bytes(data))
            else:
                refused(bytes(data))
            data[position] ^= 1 << bit


# -- where the bytes go -------------------------------------------------------------------------------

def test_layout_accounts_for_every_byte(tmp_path):
    artifact = on_grid(make_artifact(counts=(20,) * 4, channels=3, size=(9, 9), k=11), 5)
    path = tmp_path / "a.fredset"
    save(artifact, path)
    layout = file_layout(path, read_file(path)[1])
    assert layout["header"] + layout["hdf5_container"] + sum(layout["datasets"].values()) == layout["file"]
    assert list(layout["datasets"]) == ["metadata", "data"]
    sizes = section_sizes(artifact.counts, 3, 81, 11)
    parts = layout["data_sections"]
    assert [parts[name]["bytes"] for name in ("masks", "steps", "codes")] == list(sizes)
    assert sum(parts[name]["compressed_estimate"] for name in ("masks", "steps", "codes")) == \
        pytest.approx(layout["datasets"]["data"], abs=2)
    assert layout["per_class"] == pytest.approx(layout["file"] / 4, abs=0.1)
    assert layout["bits_per_coefficient"] == pytest.approx(8 * parts["codes"]["compressed_estimate"] / sizes[2],
                                                           abs=1e-3)
    assert layout["metadata_json"] > layout["datasets"]["metadata"]  # compressed

    save(artifact, path, encoding="int8")
    layout = file_layout(path, read_file(path)[1])
    assert layout["header"] + layout["hdf5_container"] + sum(layout["datasets"].values()) == layout["file"]
    assert "data_sections" not in layout and layout["metadata_json"] == layout["datasets"]["metadata"]
    assert layout["bits_per_coefficient"] == pytest.approx(8 * layout["datasets"]["coefficients"] / (80 * 3 * 11),
                                                           abs=1e-3)


def test_layout_refuses_a_file_changed_since_it_was_read(tmp_path):
    path = tmp_path / "a.fredset"
    path.write_bytes(VALID)
    info = read_file(path)[1]
    path.write_bytes(to_bytes(BASE, encoding="q5", level=3))
    with pytest.raises(FredsetError, match="changed while it was being inspected"):
        file_layout(path, info)


def test_inspect_shows_where_the_bytes_go(tmp_path):
    from fredset_cli.main import cli

    path = tmp_path / "a.fredset"
    path.write_bytes(VALID)
    text = CliRunner().invoke(cli, ["inspect", str(path)])
    assert text.exit_code == 0, text.output
    for expected in ("fredset format 2.0", "4-bit codes (int8, one per byte) x float16 steps, zstd",
                     "bytes           header 512, HDF5 container", "/data sections  masks 15 -> ~",
                     "estimated share", "bits per coefficient (codes, estimated)"):
        assert expected in text.output, text.output
    report = json.loads(CliRunner().invoke(cli, ["inspect", "--json", str(path)]).stdout)
    assert report["format_version"] == "2.0" and report["coefficients"]["bits"] == 4
    assert report["bytes"]["file"] == len(VALID) and report["bytes"]["data_sections"]["steps"]["bytes"] == 36


def test_the_header_packs_both_versions():
    payload = VALID[HEADER_SIZE:]
    assert pack_header(payload, (2, 0)) == VALID[:HEADER_SIZE]
    assert struct.unpack_from("<HH", pack_header(payload, (1, 0)), 8) == (1, 0)


def test_minimized_object_headers_save_bytes_and_read_the_same():
    """Where libhdf5's H5Pset_dset_no_attrs_hint is reachable (Linux, libhdf5 >= 1.10.5) the writer uses it:
    the same datasets take ~338 bytes less of container, and read to the same artifact."""
    from fredset.format.writer import _pack_container, no_attrs_hint

    datasets = {name: ARRAYS[name] for name in ("metadata", "data")}
    plain, small = _pack_container(datasets, (2, 0), ("v108", "v108")), VALID
    assert fredset.load(plain).counts == fredset.load(small).counts
    assert all(torch.equal(a, b) for a, b in zip(fredset.load(plain).coefficients, fredset.load(small).coefficients))
    if no_attrs_hint() is None:
        pytest.skip("H5Pset_dset_no_attrs_hint is not reachable here")
    assert len(plain) - len(small) > 300
