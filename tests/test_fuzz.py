"""Fuzzing the reader: on any bad input ``fredset.read_file`` raises FredsetError and nothing else.

a. byte mutations of whole files, format 1.0 and 2.0 (checksum not fixed): always refused;
b. mutations of the metadata JSON inside a well-formed container with a valid checksum: success
   or FredsetError, and FredsetError whenever the document breaks the schema;
c. semantic mutations written with h5py (types, shapes, values, frames, links, storage, versions);
d. a crafted file that declares a huge decompressed size does not make the reader allocate it;
e. format 2.0: the metadata document inside its frame, the mask bitmaps, steps and codes of /data with
   an oracle, damaged frames, and frames declaring huge sizes.

Files that libhdf5 itself must parse after random damage (checksum recomputed) are fuzzed in a
separate process by bench/fuzz_report.py: a crash in libhdf5 would take pytest down with it.
"""

from __future__ import annotations

import functools
import io
import json
import math
import struct
import subprocess
import sys
import textwrap
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import jsonschema
import numpy as np
import pytest
import torch
import zstandard
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import fredset
from fredset import FredsetError
from fredset.format import to_bytes
from fredset.format._crafting import (build_file, build_file_2, compact, datasets_of, decompressed,
                                      document_of, external_storage, frames_of, hard_link_as,
                                      quantized_artifact, random_artifact, raw_zstd_frame, recompress,
                                      replace_dataset, sections_of, set_attribute, swapped_soft_link, unallocated,
                                      virtual_dataset, with_datasets, with_frames, with_item)
from fredset.format.codec import encode_block
from fredset.format.header import HEADER_SIZE
from fredset.format.metadata import MAX_METADATA_BYTES, schema

# int8 values dequantised with absurd scales overflow to inf (and are refused); numpy warns first
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")

FUZZ = functools.partial(settings, deadline=None, derandomize=True, database=None,
                         suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                HealthCheck.filter_too_much])


# -- valid artifacts and raw-file building ------------------------------------------------------

def make_artifact(channels: int, size: tuple[int, int], k: int, counts: list[int], seed: int) -> fredset.Artifact:
    return random_artifact(channels, size, k, counts, seed, mean=[0.1 * (c + 1) for c in range(channels)],
                           std=[0.2 + 0.05 * c for c in range(channels)], license="CC0-1.0")


ARTIFACTS = {
    "gray-float32": (make_artifact(1, (8, 8), 6, [2, 3, 1], 0), "float32", True),
    "gray-int8": (make_artifact(1, (5, 7), 9, [1, 4], 1), "int8", True),
    "rgb-float16": (make_artifact(3, (6, 6), 7, [3, 1, 2, 1], 2), "float16", True),
    "rgb-int8": (make_artifact(3, (4, 4), 5, [2, 1, 3], 3), "int8", False),
    "rgb-float32-noshuffle": (make_artifact(3, (4, 6), 4, [1, 2], 4), "float32", False),
}
VALID = {name: to_bytes(artifact, encoding=encoding, shuffle=shuffle, level=3)
         for name, (artifact, encoding, shuffle) in ARTIFACTS.items()}
NAMES = sorted(VALID)


def _with_zero_frequency(artifact: fredset.Artifact) -> fredset.Artifact:
    artifact.coefficients[0][:, :, 1] = 0  # class 0's second frequency: a zero step, its codes all 0
    return artifact


# format 2.0: planes of 35 and 36 frequencies (padding bits and none), 1 and 3 channels, 2 to 8 bits
ARTIFACTS_2 = {
    "gray-q4": quantized_artifact(_with_zero_frequency(make_artifact(1, (5, 7), 6, [2, 3, 1], 5)), 4),
    "rgb-q8": quantized_artifact(make_artifact(3, (6, 6), 7, [3, 1, 2, 1], 6), 8),
    "gray-q2": quantized_artifact(_with_zero_frequency(make_artifact(1, (3, 3), 9, [1, 2], 7)), 2),
}
VALID_2 = {name: to_bytes(artifact, level=3) for name, artifact in ARTIFACTS_2.items()}
NAMES_2 = sorted(VALID_2)
EVERY_VALID = {**VALID, **VALID_2}


def parts_of(data: bytes) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The datasets of a valid file as numpy arrays, and its metadata document."""
    arrays = datasets_of(data)
    return arrays, json.loads(bytes(arrays["metadata"]))


PARTS = {name: parts_of(data) for name, data in VALID.items()}


def outcome(data: bytes, **limits: int) -> str:
    """"ok" or "error"; any exception other than FredsetError fails the test."""
    try:
        fredset.read_file(data, **limits)
    except FredsetError as error:
        message = str(error)
        assert "\n" not in message and message.startswith("<bytes>: "), message
        return "error"
    return "ok"


def refused(data: bytes, *fragments: str, **limits: int) -> str:
    with pytest.raises(FredsetError) as info:
        fredset.read_file(data, **limits)
    message = str(info.value)
    assert "\n" not in message and message.startswith("<bytes>: "), message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_the_building_blocks_round_trip():
    for name, data in VALID.items():
        artifact, info = fredset.read_file(data)
        assert artifact.counts == ARTIFACTS[name][0].counts and info.format_version == "1.0"
        arrays, document = PARTS[name]
        rebuilt, _ = fredset.read_file(build_file(arrays))
        assert all(torch.equal(a, b) for a, b in zip(rebuilt.coefficients, artifact.coefficients))
        assert torch.equal(rebuilt.masks, artifact.masks)
        fredset.read_file(build_file(arrays, metadata=document))


# -- a. mutations of whole files, checksum not fixed --------------------------------------------

@st.composite
def mutated_files(draw) -> tuple[bytes, bytes]:
    original = EVERY_VALID[draw(st.sampled_from(sorted(EVERY_VALID)))]
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["flip", "flip", "overwrite", "insert", "delete", "truncate", "append"]))
        # positions: anywhere, or in the header, or in the superblock just after it
        position = draw(st.one_of(st.integers(0, max(len(data) - 1, 0)), st.integers(0, HEADER_SIZE - 1),
                                  st.integers(HEADER_SIZE, HEADER_SIZE + 96)))
        position = min(position, max(len(data) - 1, 0))
        if kind == "flip" and data:
            data[position] ^= 1 << draw(st.integers(0, 7))
        elif kind == "overwrite":
            run = draw(st.one_of(st.binary(min_size=1, max_size=32),
                                 st.sampled_from([b"\x00" * 8, b"\xff" * 8, b"\x7f\xff\xff\xff"])))
            data[position:position + len(run)] = run
        elif kind == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=64))
        elif kind == "delete":
            del data[position:position + draw(st.integers(1, 64))]
        elif kind == "truncate":
            del data[draw(st.integers(0, len(data))):]
        elif kind == "append":
            data += draw(st.binary(min_size=1, max_size=64))
    return original, bytes(data)


def only_minor_version_changed(original: bytes, mutated: bytes) -> bool:
    """The header's minor version (bytes 10..11) is the one field a checksum does not cover."""
    return (len(mutated) == len(original) and mutated[:10] == original[:10]
            and mutated[12:] == original[12:])


@FUZZ(max_examples=3000)
@given(mutated_files())
def test_any_mutation_without_a_fixed_checksum_is_refused(case):
    original, mutated = case
    if mutated == original or only_minor_version_changed(original, mutated):
        assert outcome(mutated) == "ok"
    else:
        refused(mutated)


@pytest.mark.parametrize("name", ["rgb-int8", "gray-q4"])
def test_every_truncation_is_refused(name):
    data = EVERY_VALID[name]
    for length in range(len(data)):
        refused(data[:length])


@pytest.mark.parametrize("name", ["gray-float32", "rgb-q8"])
def test_every_single_bit_flip_of_the_header_is_refused(name):
    data = bytearray(EVERY_VALID[name])
    for position in range(HEADER_SIZE):
        for bit in range(8):
            data[position] ^= 1 << bit
            if position in (10, 11):  # minor version: a newer minor is read
                assert outcome(bytes(data)) == "ok"
            else:
                refused(bytes(data))
            data[position] ^= 1 << bit


@pytest.mark.parametrize("name", ["rgb-float16", "gray-q2"])
def test_every_payload_byte_is_covered_by_the_checksum(name):
    data = bytearray(EVERY_VALID[name])
    for position in range(HEADER_SIZE, len(data)):
        data[position] ^= 0x10
        refused(bytes(data), "checksum")
        data[position] ^= 0x10


def test_non_files_are_refused(tmp_path):
    refused(b"")
    refused(b"\x89HDF\r\n\x1a\n" + bytes(600), "HDF5")
    refused(VALID["gray-float32"][HEADER_SIZE:])
    with pytest.raises(FredsetError):
        fredset.read_file(tmp_path / "missing.fredset")
    with pytest.raises(FredsetError):
        fredset.read_file(tmp_path)
    path = tmp_path / "big.fredset"
    path.write_bytes(VALID["gray-float32"])
    with pytest.raises(FredsetError, match="max_file_bytes"):
        fredset.read_file(path, max_file_bytes=len(VALID["gray-float32"]) - 1)
    with pytest.raises(FredsetError, match="binary mode"):
        with open(path, encoding="latin-1") as stream:
            fredset.read_file(stream)


class _FailingStream(io.RawIOBase):
    name = "failing-stream"

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        raise OSError(5, "Input/output error")


def test_unreadable_sources_are_refused(tmp_path):
    with pytest.raises(FredsetError, match="invalid path"):
        fredset.read_file(str(tmp_path / "bad\0name.fredset"))
    with pytest.raises(FredsetError, match="Input/output error"):
        fredset.read_file(_FailingStream())
    with open(tmp_path / "write-only.fredset", "wb") as stream:
        with pytest.raises(FredsetError, match="cannot read file"):
            fredset.read_file(stream)
    with pytest.raises(FredsetError, match="cannot read file"):
        fredset.read_file(stream)  # closed
    assert outcome(bytearray(VALID[G32])) == outcome(memoryview(VALID[G32])) == "ok"


# -- b. mutations of the metadata document, container and checksum valid -----------------------

VALIDATOR = jsonschema.Draft202012Validator(schema())


def violates_schema(raw: bytes, validator: Any = VALIDATOR) -> bool | None:
    """True when ``raw`` is no schema-valid document (the reader must refuse it); None: cannot tell."""
    try:
        document = json.loads(raw.decode("utf-8"), parse_constant=lambda name: (_ for _ in ()).throw(ValueError(name)))
    except (UnicodeDecodeError, ValueError):
        return True
    except RecursionError:
        return True
    try:
        if not validator.is_valid(document):
            return True
        channels = document["image"]["channels"]
        return (len(document["normalization"]["mean"]) != channels
                or len(document["normalization"]["std"]) != channels
                or len(document["instances_per_class"]) != len(document["dataset"]["classes"])
                or document["k"] > document["image"]["height"] * document["image"]["width"])
    except RecursionError:
        return None


def json_paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += json_paths(item, prefix + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += json_paths(item, prefix + (index,))
    return found


INTERESTING_NUMBERS = st.sampled_from([0, -1, 1, 2, 3, 63, 64, 65, 4096, 4097, 2**24, 2**24 + 1, 2**31, 2**32,
                                       2**53 + 1, 2**63, 2**64, 10**30, 10**400, -2**63, 0.5, 1.0, 2.0, -0.0,
                                       1e-300, 1e300, 1e308, float("nan"), float("inf"), float("-inf")])
JSON_LEAVES = st.one_of(st.none(), st.booleans(), INTERESTING_NUMBERS, st.integers(), st.floats(),
                        st.text(max_size=12), st.sampled_from(["", "float32", "int8", "zstd", "little", "fredset"]),
                        st.integers(0, 0).map(lambda _: "x" * 5000))
JSON_VALUES = st.recursive(JSON_LEAVES, lambda children: st.one_of(
    st.lists(children, max_size=4), st.dictionaries(st.text(max_size=6), children, max_size=4)), max_leaves=10)


def set_at(document: Any, path: tuple, value: Any) -> Any:
    if not path:
        return value
    document[path[0]] = set_at(document[path[0]], path[1:], value)
    return document


@st.composite
def mutated_documents(draw) -> tuple[str, bytes]:
    name = draw(st.sampled_from(NAMES))
    document = json.loads(json.dumps(PARTS[name][1]))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(json_paths(document)))
        kind = draw(st.sampled_from(["replace", "replace", "drop", "add", "nest", "wrap", "resize"]))
        target = functools.reduce(lambda value, key: value[key], path, document)
        if kind == "replace":
            document = set_at(document, path, draw(JSON_VALUES))
        elif kind == "drop" and path:
            parent = functools.reduce(lambda value, key: value[key], path[:-1], document)
            del parent[path[-1]]
        elif kind == "add" and isinstance(target, dict):
            target[draw(st.sampled_from(["extra", "k", "dtype", "", "name"]))] = draw(JSON_VALUES)
        elif kind == "nest":
            depth = draw(st.sampled_from([2, 50, 500, 990, 3000]))
            document = set_at(document, path, functools.reduce(lambda inner, _: [inner], range(depth), 1)
                              if depth < 900 else "__DEEP%d__" % depth)
        elif kind == "wrap":
            document = set_at(document, path, [target])
        elif kind == "resize" and isinstance(target, list):
            if target and draw(st.booleans()):
                target.pop()
            else:
                target.append(target[0] if target else 1)
    text = json.dumps(document, allow_nan=True, ensure_ascii=draw(st.booleans()))
    for depth in (990, 3000):  # nesting deeper than json.dumps would write
        text = text.replace('"__DEEP%d__"' % depth, "[" * depth + "]" * depth)
    return name, text.encode("utf-8")


@st.composite
def mutated_json_bytes(draw) -> tuple[str, bytes]:
    name = draw(st.sampled_from(NAMES))
    raw = bytearray(bytes(PARTS[name][0]["metadata"]))
    for _ in range(draw(st.integers(1, 3))):
        position = draw(st.integers(0, len(raw)))
        kind = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "overwrite"]))
        snippet = draw(st.one_of(st.binary(min_size=1, max_size=8), st.sampled_from(
            [b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00", b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-1",
             b"99999999999999999999", b"9" * 5000, b"[", b"{", b"}", b"]", b",", b'"', b"\\", b"\\ud800", b" " * 16])))
        if kind == "flip" and position < len(raw):
            raw[position] ^= 1 << draw(st.integers(0, 7))
        elif kind == "insert":
            raw[position:position] = snippet
        elif kind == "delete":
            del raw[position:position + draw(st.integers(1, 16))]
        elif kind == "truncate":
            del raw[position:]
        elif kind == "overwrite":
            raw[position:position + len(snippet)] = snippet
    return name, bytes(raw)


def check_metadata_case(name: str, raw: bytes) -> None:
    arrays, _ = PARTS[name]
    result = outcome(build_file(arrays, metadata=raw))
    invalid = violates_schema(raw)
    event(f"{result}, {'schema-invalid' if invalid else 'schema-valid'}")
    if invalid:
        assert result == "error", raw[:300]


@FUZZ(max_examples=1000)
@given(mutated_documents())
def test_mutated_metadata_documents(case):
    check_metadata_case(*case)


@FUZZ(max_examples=1000)
@given(mutated_json_bytes())
def test_mutated_metadata_bytes(case):
    check_metadata_case(*case)


@pytest.mark.parametrize("text", [
    "", "null", "[]", "{}", "1", '"fredset"', "{" * 100000, "[" * 100000, "[" * 995 + "]" * 995,
    '{"format": NaN}', "\ufeff{}", "{}\x00", "\xff\xfe",
])
def test_degenerate_metadata_documents(text):
    raw = text.encode("utf-8", "surrogateescape") if text != "\xff\xfe" else b"\xff\xfe"
    refused(build_file(PARTS["gray-float32"][0], metadata=raw), "metadata")


def test_deeply_nested_class_names_are_refused():
    # classes has uniqueItems: nested values there must not make validation recurse out of the stack
    arrays, document = PARTS["gray-float32"]
    for depth in (10, 500, 900, 980, 995):
        text = json.dumps(document).replace('"class-0"', "[" * depth + "]" * depth)
        refused(build_file(arrays, metadata=text), "metadata")


def test_oversized_metadata_is_refused():
    arrays, document = PARTS["gray-float32"]
    text = json.dumps(document)
    padded = text[:-1] + " " * (MAX_METADATA_BYTES + 1 - len(text)) + "}"
    refused(build_file(arrays, metadata=padded), "metadata")


# -- c. semantic mutations written with h5py ----------------------------------------------------

def replaced(name: str, **changes: Any) -> bytes:
    """The file ``name`` with datasets replaced (a value) or removed (None)."""
    return build_file(with_datasets(PARTS[name][0], **changes))


def with_metadata(name: str, **fields: Any) -> dict[str, Any]:
    document = json.loads(json.dumps(PARTS[name][1]))
    for dotted, value in fields.items():
        keys = dotted.split("__")
        target = functools.reduce(lambda value, key: value[key], keys[:-1], document)
        target[keys[-1]] = value
    return document


def tweaked(name: str, tweak: Callable[[h5py.File], None], version: tuple[int, int] = (1, 0),
            drop: tuple[str, ...] = ()) -> bytes:
    arrays = {key: value for key, value in PARTS[name][0].items() if key not in drop}
    return build_file(arrays, tweak=tweak, version=version)


def frame_variant(name: str, label: int, make: Callable[[bytes], bytes]) -> bytes:
    frames = frames_of(PARTS[name][0])
    frames[label] = make(frames[label])
    return build_file(with_frames(PARTS[name][0], frames))


def masks_variant(name: str, edit: Callable[[np.ndarray], np.ndarray]) -> bytes:
    return replaced(name, masks=edit(PARTS[name][0]["masks"].copy()))


def offsets_variant(name: str, edit: Callable[[np.ndarray], np.ndarray]) -> bytes:
    return replaced(name, coefficient_offsets=edit(PARTS[name][0]["coefficient_offsets"].copy()))


NO_SUCH_FILE = str(Path(__file__).with_name("no-such-external-file.bin"))
G32, I8, F16, RI8 = "gray-float32", "gray-int8", "rgb-float16", "rgb-int8"
_ARR, _META = (lambda name: PARTS[name][0]), (lambda name: PARTS[name][1])
COUNT0 = PARTS[G32][1]["instances_per_class"][0]
CHANNELS, K = PARTS[G32][1]["image"]["channels"], PARTS[G32][1]["k"]
EXPECTED0 = COUNT0 * CHANNELS * K * 4

BAD_CASES: dict[str, Callable[[], bytes]] = {
    # wrong dtypes
    "masks float64": lambda: replaced(G32, masks=_ARR(G32)["masks"].astype("<f8")),
    "masks big-endian": lambda: replaced(G32, masks=_ARR(G32)["masks"].astype(">u4")),
    "masks int32": lambda: replaced(G32, masks=_ARR(G32)["masks"].astype("<i4")),
    "masks int64": lambda: replaced(G32, masks=_ARR(G32)["masks"].astype("<i8")),
    "masks uint16": lambda: replaced(G32, masks=_ARR(G32)["masks"].astype("<u2")),
    "masks compound": lambda: replaced(G32, masks=_ARR(G32)["masks"].astype([("index", "<u4")])),
    "offsets int8": lambda: replaced(G32, coefficient_offsets=_ARR(G32)["coefficient_offsets"].astype("i1")),
    "offsets big-endian": lambda: replaced(G32, coefficient_offsets=_ARR(G32)["coefficient_offsets"].astype(">u8")),
    "offsets float64": lambda: replaced(G32, coefficient_offsets=_ARR(G32)["coefficient_offsets"].astype("<f8")),
    "coefficients int8": lambda: replaced(G32, coefficients=_ARR(G32)["coefficients"].astype("i1")),
    "coefficients bool": lambda: replaced(G32, coefficients=_ARR(G32)["coefficients"].astype(bool)),
    "metadata vlen string": lambda: tweaked(G32, lambda h: h.create_dataset(
        "metadata", data=json.dumps(_META(G32)), dtype=h5py.string_dtype()), drop=("metadata",)),
    "metadata vlen string array": lambda: tweaked(G32, lambda h: h.create_dataset(
        "metadata", data=[json.dumps(_META(G32))], dtype=h5py.string_dtype()), drop=("metadata",)),
    "metadata fixed string": lambda: replaced(G32, metadata=np.array(json.dumps(_META(G32)).encode())),
    "metadata vlen bytes": lambda: tweaked(G32, lambda h: h.create_dataset(
        "metadata", data=with_item(np.empty(1, object), 0, _ARR(G32)["metadata"]), dtype=h5py.vlen_dtype("u1")),
        drop=("metadata",)),
    "metadata int8": lambda: replaced(G32, metadata=_ARR(G32)["metadata"].view("i1")),
    "quantization float64": lambda: replaced(I8, quantization=_ARR(I8)["quantization"].astype("<f8")),
    "quantization big-endian": lambda: replaced(I8, quantization=_ARR(I8)["quantization"].astype(">f4")),
    # wrong shapes
    "masks transposed": lambda: replaced(G32, masks=np.ascontiguousarray(_ARR(G32)["masks"].T)),
    "masks flattened": lambda: replaced(G32, masks=_ARR(G32)["masks"].reshape(-1)),
    "masks 3-D": lambda: replaced(G32, masks=_ARR(G32)["masks"][..., None]),
    "masks one row short": lambda: replaced(G32, masks=_ARR(G32)["masks"][:-1]),
    "masks one column more": lambda: replaced(G32, masks=np.concatenate(
        [_ARR(G32)["masks"], np.full((len(_ARR(G32)["masks"]), 1), 63, "<u4")], axis=1)),
    "masks empty": lambda: replaced(G32, masks=np.zeros((3, 0), "<u4")),
    "metadata 2-D": lambda: replaced(G32, metadata=_ARR(G32)["metadata"][None, :]),
    "metadata scalar": lambda: replaced(G32, metadata=np.uint8(123)),
    "metadata null dataspace": lambda: tweaked(G32, lambda h: h.create_dataset("metadata", data=h5py.Empty("u1")),
                                               drop=("metadata",)),
    "metadata empty": lambda: replaced(G32, metadata=np.zeros(0, "u1")),
    "coefficients 2-D": lambda: replaced(G32, coefficients=_ARR(G32)["coefficients"][None, :]),
    "coefficients null dataspace": lambda: tweaked(G32, lambda h: h.create_dataset(
        "coefficients", data=h5py.Empty("u1")), drop=("coefficients",)),
    "offsets one short": lambda: replaced(G32, coefficient_offsets=_ARR(G32)["coefficient_offsets"][1:]),
    "offsets one more": lambda: replaced(G32, coefficient_offsets=np.append(
        _ARR(G32)["coefficient_offsets"], _ARR(G32)["coefficient_offsets"][-1])),
    "offsets 2-D": lambda: replaced(G32, coefficient_offsets=_ARR(G32)["coefficient_offsets"][None, :]),
    "quantization wrong shape": lambda: replaced(I8, quantization=_ARR(I8)["quantization"][:, :, :, :-1]),
    "quantization 3-D": lambda: replaced(I8, quantization=_ARR(I8)["quantization"][:, 0]),
    # mask values
    "mask index = H*W": lambda: masks_variant(G32, lambda m: with_item(m, (0, -1), 64)),
    "mask index 2**32-1": lambda: masks_variant(G32, lambda m: with_item(m, (1, -1), 2**32 - 1)),
    "mask index repeated": lambda: masks_variant(G32, lambda m: with_item(m, (0, 1), m[0, 0])),
    "mask indices unsorted": lambda: masks_variant(G32, lambda m: with_item(m, 2, m[2, ::-1])),
    "mask indices all zero": lambda: masks_variant(G32, lambda m: m * 0),
    "rgb mask out of range": lambda: masks_variant(F16, lambda m: with_item(m, (3, -1), 36)),
    # offsets
    "offsets not from 0": lambda: offsets_variant(G32, lambda o: with_item(o, 0, 1)),
    "offsets decreasing": lambda: offsets_variant(G32, lambda o: with_item(o, 1, o[2] + 1)),
    "offsets end short": lambda: offsets_variant(G32, lambda o: with_item(o, -1, o[-1] - 1)),
    "offsets end beyond the stream": lambda: offsets_variant(G32, lambda o: with_item(o, -1, o[-1] + 1)),
    "offsets end 2**64-1": lambda: offsets_variant(G32, lambda o: with_item(o, -1, 2**64 - 1)),
    "offsets middle 2**64-1": lambda: offsets_variant(G32, lambda o: with_item(o, 1, 2**64 - 1)),
    "offsets empty frame": lambda: offsets_variant(G32, lambda o: with_item(o, 1, 0)),
    "offsets all zero": lambda: offsets_variant(G32, lambda o: o * 0),
    # zstd frames
    "frame declares one byte more": lambda: frame_variant(G32, 0, lambda f: recompress(decompressed(f) + b"\0")),
    "frame declares one element less": lambda: frame_variant(G32, 1, lambda f: recompress(decompressed(f)[:-4])),
    "frame declares huge": lambda: frame_variant(G32, 0, lambda f: raw_zstd_frame(2**40)),
    "frame declares 2**64-2": lambda: frame_variant(G32, 0, lambda f: raw_zstd_frame(2**64 - 2)),
    "frame declares the right size, holds 3 bytes": lambda: frame_variant(G32, 0, lambda f: raw_zstd_frame(
        EXPECTED0)),
    "frame declares the right size, ends early": lambda: frame_variant(G32, 0, lambda f: raw_zstd_frame(
        EXPECTED0, last=True)),
    "frame with trailing bytes": lambda: frame_variant(G32, 1, lambda f: f + b"\0\1\2"),
    "frame followed by a second frame": lambda: frame_variant(G32, 1, lambda f: f + f),
    "frame followed by a skippable frame": lambda: frame_variant(G32, 1, lambda f: f + b"\x50\x2a\x4d\x18\0\0\0\0"),
    "frame without content size": lambda: frame_variant(G32, 2, lambda f: recompress(decompressed(f),
                                                                                     content_size=False)),
    "frame truncated": lambda: frame_variant(G32, 0, lambda f: f[:-3]),
    "frame header only": lambda: frame_variant(G32, 0, lambda f: f[:6]),
    "frame not zstd": lambda: frame_variant(G32, 0, lambda f: b"\0" * len(f)),
    "frame skippable only": lambda: frame_variant(G32, 0, lambda f: b"\x50\x2a\x4d\x18\4\0\0\0abcd"),
    "frame with a wrong checksum": lambda: frame_variant(G32, 0, lambda f: zstandard.ZstdCompressor(
        level=3, write_checksum=True).compress(decompressed(f))[:-1] + b"\xaa"),
    "frame window too large": lambda: frame_variant(G32, 0, lambda f: raw_zstd_frame(
        EXPECTED0, window_descriptor=0xF8)),
    "frames of two classes swapped": lambda: build_file(with_frames(_ARR(G32), frames_of(_ARR(G32))[::-1])),
    "frame of the wrong encoding": lambda: frame_variant(F16, 0, lambda f: recompress(decompressed(f) * 2)),
    # non-finite values
    "coefficient NaN": lambda: frame_variant(G32, 0, lambda f: encode_block(
        np.full(EXPECTED0 // 4, np.nan, "<f4"), "float32", True, 3)),
    "one coefficient NaN": lambda: frame_variant(G32, 1, lambda f: encode_block(
        with_item(np.ones(len(decompressed(f)) // 4, "<f4"), 5, np.nan), "float32", True, 3)),
    "coefficient +Inf": lambda: frame_variant("rgb-float32-noshuffle", 1, lambda f: recompress(
        with_item(np.frombuffer(decompressed(f), "<f4").copy(), 3, np.inf).tobytes())),
    "float16 coefficient Inf": lambda: frame_variant(F16, 1, lambda f: recompress(
        b"\x00" * (len(decompressed(f)) // 2) + b"\x7c" * (len(decompressed(f)) // 2))),
    "quantization scale NaN": lambda: replaced(I8, quantization=with_item(_ARR(I8)["quantization"].copy(),
                                                                       (0, 0, 0, 0), np.nan)),
    "quantization offset Inf": lambda: replaced(RI8, quantization=with_item(_ARR(RI8)["quantization"].copy(),
                                                                         (1, 1, 2, 3), np.inf)),
    "quantization scale negative": lambda: replaced(I8, quantization=with_item(_ARR(I8)["quantization"].copy(),
                                                                            (1, 0, 0, 2), -1.0)),
    "quantization overflows float32": lambda: replaced(RI8, quantization=with_item(with_item(
        _ARR(RI8)["quantization"].copy(), (0, 0), 3e38), (0, 1), 3e38)),
    # missing or extra objects
    "metadata missing": lambda: replaced(G32, metadata=None),
    "masks missing": lambda: replaced(G32, masks=None),
    "coefficients missing": lambda: replaced(G32, coefficients=None),
    "offsets missing": lambda: replaced(G32, coefficient_offsets=None),
    "quantization missing": lambda: replaced(I8, quantization=None),
    "quantization with float32": lambda: replaced(G32, quantization=np.zeros((3, 2, 1, 6), "<f4")),
    "empty file": lambda: build_file({}),
    "extra dataset": lambda: replaced(G32, extra=np.arange(3)),
    "extra group": lambda: tweaked(G32, lambda h: h.create_group("extra")),
    "dataset inside a group": lambda: tweaked(G32, lambda h: h.create_group("g").create_dataset("x", data=[1])),
    "group named masks": lambda: tweaked(G32, lambda h: h.create_group("masks"), drop=("masks",)),
    "named datatype": lambda: tweaked(G32, lambda h: h.__setitem__("type", np.dtype("<u4"))),
    "root attribute": lambda: tweaked(G32, set_attribute("/", "note", "hello")),
    "dataset attribute": lambda: tweaked(G32, set_attribute("masks", "note", 1)),
    "soft link extra": lambda: tweaked(G32, lambda h: h.__setitem__("alias", h5py.SoftLink("/masks"))),
    "soft link as a dataset": lambda: tweaked(G32, swapped_soft_link),
    "dangling soft link": lambda: tweaked(G32, lambda h: h.__setitem__("masks", h5py.SoftLink("/nowhere")),
                                          drop=("masks",)),
    "external link": lambda: tweaked(G32, lambda h: h.__setitem__("ext", h5py.ExternalLink("other.h5", "/x"))),
    "external link as a dataset": lambda: tweaked(G32, lambda h: h.__setitem__(
        "masks", h5py.ExternalLink("other.h5", "/masks")), drop=("masks",)),
    "hard link from a group": lambda: tweaked(G32, hard_link_as("masks", "masks")),
    "second hard link": lambda: tweaked(G32, lambda h: h.__setitem__("masks2", h["masks"])),
    "group cycle": lambda: tweaked(G32, lambda h: h.create_group("g").__setitem__("root", h["/"])),
    # storage
    "chunked": lambda: tweaked(G32, replace_dataset("coefficients", chunks=(16,))),
    "gzip": lambda: tweaked(G32, replace_dataset("masks", compression="gzip")),
    "shuffle filter": lambda: tweaked(G32, replace_dataset("metadata", shuffle=True, chunks=True)),
    "fletcher32": lambda: tweaked(G32, replace_dataset("coefficient_offsets", fletcher32=True)),
    "resizable": lambda: tweaked(G32, replace_dataset("coefficients", maxshape=(None,))),
    "external storage": lambda: tweaked(G32, external_storage(NO_SUCH_FILE)),
    "virtual dataset (same file)": lambda: tweaked(G32, virtual_dataset(".", True)),
    "virtual dataset (other file)": lambda: tweaked(G32, virtual_dataset("other.h5", False)),
    "unallocated dataset": lambda: tweaked(G32, unallocated),
    # header and versions
    "major version 2 with 1.0 datasets": lambda: build_file(_ARR(G32), version=(2, 0)),
    "major version 3": lambda: build_file(_ARR(G32), version=(3, 0)),
    "major version 0": lambda: build_file(_ARR(G32), version=(0, 9)),
    "1.0 with an unknown metadata field": lambda: build_file(_ARR(G32), metadata={**_META(G32), "new": 1}),
    "1.7 with an unknown required-looking dataset of the wrong type": lambda: build_file(
        {**_ARR(G32), "masks": _ARR(G32)["masks"].astype("<f8")}, version=(1, 7)),
    "1.7 with a soft link": lambda: tweaked(G32, lambda h: h.__setitem__("alias", h5py.SoftLink("/masks")),
                                            version=(1, 7)),
    # declared sizes
    "instances_per_class huge": lambda: build_file(_ARR(G32), metadata=with_metadata(
        G32, instances_per_class=[2**24] * 3)),
    "image huge": lambda: build_file(_ARR(G32), metadata=with_metadata(
        G32, image={"channels": 64, "height": 4096, "width": 4096},
        normalization={"mean": [0.0] * 64, "std": [1.0] * 64})),
    "counts disagree with frames": lambda: build_file(_ARR(G32), metadata=with_metadata(
        G32, instances_per_class=[3, 2, 1])),
    "k disagrees with masks": lambda: build_file(_ARR(G32), metadata=with_metadata(G32, k=5)),
    "channels disagree": lambda: build_file(_ARR(G32), metadata=with_metadata(
        G32, image={"channels": 2, "height": 8, "width": 8}, normalization={"mean": [0, 0], "std": [1, 1]})),
    "image smaller than masks": lambda: build_file(_ARR(G32), metadata=with_metadata(
        G32, image={"channels": 1, "height": 4, "width": 4})),
    "fewer classes": lambda: build_file(_ARR(G32), metadata=with_metadata(
        G32, dataset__classes=["a", "b"], instances_per_class=[2, 3])),
    "encoding int8 without quantization": lambda: build_file(_ARR(G32), metadata=with_metadata(
        G32, coefficients__dtype="int8")),
    "encoding float16 for float32 frames": lambda: build_file(_ARR(G32), metadata=with_metadata(
        G32, coefficients__dtype="float16")),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_semantic_mutation_is_refused(case):
    message = refused(BAD_CASES[case]())
    if case.startswith("major version 2"):
        assert "(a dataset of format 1.x, not 2.x)" in message
    elif case.startswith("major version"):
        assert "version 3.0 is not supported" in message or "version 0.9 is not supported" in message


def test_newer_minor_version_with_extras_is_read():
    arrays, document = PARTS[G32]
    extra = build_file({**arrays, "future_table": np.arange(12, dtype="<f8").reshape(3, 4)},
                       metadata={**document, "future_field": {"nested": [1, 2, 3]}}, version=(1, 7),
                       tweak=lambda h: h.attrs.__setitem__("note", "from 1.7"))
    artifact, info = fredset.read_file(extra)
    assert info.format_version == "1.7" and info.metadata["future_field"] == {"nested": [1, 2, 3]}
    original = fredset.load(VALID[G32])
    assert all(torch.equal(a, b) for a, b in zip(artifact.coefficients, original.coefficients))
    assert torch.equal(artifact.masks, original.masks)


def test_integer_valued_floats_are_integers():
    # JSON Schema's "integer" includes 6.0; the reader accepts such sizes as the integers they are
    document = with_metadata(G32, k=6.0, instances_per_class=[2.0, 3.0, 1.0],
                             image={"channels": 1.0, "height": 8.0, "width": 8.0})
    artifact = fredset.load(build_file(_ARR(G32), metadata=document))
    assert artifact.counts == [2, 3, 1] and artifact.k == 6 and artifact.image_size == (8, 8)


NEWER_MINOR_CASES: dict[str, tuple[Callable[[h5py.File], None], str]] = {
    # a 1.7 file may hold objects 1.0 does not know, but the 1.0 datasets keep their rules
    "virtual dataset (same file)": (virtual_dataset(".", True), "error"),
    "external storage": (external_storage(NO_SUCH_FILE), "error"),
    "gzip": (replace_dataset("masks", compression="gzip"), "error"),
    "dataset attribute": (set_attribute("masks", "future", [1, 2]), "ok"),
    "group cycle": (lambda h: h.create_group("g").__setitem__("root", h["/"]), "ok"),
    "hard link from a group": (hard_link_as("masks", "masks"), "ok"),
    # objects a minor version adds must follow the storage rules too (FORMAT.md section 8)
    "chunked extra dataset": (lambda h: h.create_dataset("future", data=np.arange(100), chunks=(10,),
                                                         compression="gzip"), "error"),
    "vlen extra dataset": (lambda h: h.create_dataset("future", data=["a", "bc"],
                                                      dtype=h5py.string_dtype()), "error"),
    "plain extra dataset": (lambda h: h.create_dataset("future", data=np.arange(4)), "ok"),
    "extra soft link": (lambda h: h.__setitem__("alias", h5py.SoftLink("/masks")), "error"),
}


@pytest.mark.parametrize("case", sorted(NEWER_MINOR_CASES))
def test_newer_minor_version_objects(case):
    tweak, expected = NEWER_MINOR_CASES[case]
    data = tweaked(G32, tweak, version=(1, 7))
    assert outcome(data) == expected


@pytest.mark.parametrize("name", ["masks", "metadata", "coefficients", "coefficient_offsets"])
def test_compact_layout_is_read(name):
    artifact, _ = fredset.read_file(tweaked(G32, compact(name)))
    assert torch.equal(artifact.masks, fredset.load(VALID[G32]).masks)


def test_limits_are_enforced_on_a_valid_file():
    data = VALID[F16]
    decoded = fredset.load(data).decoded_bytes
    assert outcome(data, max_decoded_bytes=decoded) == "ok"
    refused(data, "max_decoded_bytes", max_decoded_bytes=decoded - 1)
    refused(data, "max_file_bytes", max_file_bytes=len(data) - 1)


# random semantic mutations with an oracle

@st.composite
def mask_arrays(draw) -> tuple[str, np.ndarray]:
    name = draw(st.sampled_from(NAMES))
    masks = PARTS[name][0]["masks"].astype(np.int64)
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["set", "swap", "shift", "sort"]))
        row = draw(st.integers(0, masks.shape[0] - 1))
        column = draw(st.integers(0, masks.shape[1] - 1))
        if kind == "set":
            masks[row, column] = draw(st.one_of(st.integers(0, 80), st.sampled_from([2**31, 2**32 - 1])))
        elif kind == "swap":
            other = draw(st.integers(0, masks.shape[1] - 1))
            masks[row, [column, other]] = masks[row, [other, column]]
        elif kind == "shift":
            masks[row] += draw(st.integers(-2, 2))
        elif kind == "sort":
            masks[row] = np.sort(masks[row])
    masks = masks.clip(0, 2**32 - 1)
    dtype = draw(st.sampled_from(["<u4"] * 6 + [">u4", "<i4", "<u8", "<f4", "<u2"]))
    shape = draw(st.sampled_from(["same"] * 6 + ["transposed", "flat"]))
    stored = masks.astype(dtype)
    if shape == "transposed":
        stored = np.ascontiguousarray(stored.T)
    elif shape == "flat":
        stored = stored.reshape(-1)
    return name, stored


@FUZZ(max_examples=400)
@given(mask_arrays())
def test_random_masks(case):
    name, stored = case
    document = PARTS[name][1]
    plane = document["image"]["height"] * document["image"]["width"]
    valid = (stored.dtype == np.dtype("<u4") and stored.shape == PARTS[name][0]["masks"].shape
             and bool((stored < plane).all()) and bool((np.diff(stored.astype(np.int64), axis=1) > 0).all()))
    result = outcome(replaced(name, masks=stored))
    assert result == ("ok" if valid else "error")
    if valid:
        assert np.array_equal(fredset.load(replaced(name, masks=stored)).masks.numpy(), stored)


@st.composite
def offset_arrays(draw) -> tuple[str, np.ndarray]:
    name = draw(st.sampled_from(NAMES))
    offsets = PARTS[name][0]["coefficient_offsets"].astype(object)
    for _ in range(draw(st.integers(1, 3))):
        index = draw(st.integers(0, len(offsets) - 1))
        offsets[index] = draw(st.one_of(st.integers(0, int(offsets[-1]) + 4),
                                        st.sampled_from([2**63, 2**64 - 1, int(offsets[index]) + 1,
                                                         max(int(offsets[index]) - 1, 0)])))
    dtype = draw(st.sampled_from(["<u8"] * 5 + [">u8", "<i8", "<u4"]))
    return name, np.array([int(o) % 2**64 for o in offsets], dtype=np.uint64).astype(dtype)


@FUZZ(max_examples=300)
@given(offset_arrays())
def test_random_offsets(case):
    name, stored = case
    original = PARTS[name][0]["coefficient_offsets"]
    result = outcome(replaced(name, coefficient_offsets=stored))
    if stored.dtype != np.dtype("<u8") or not np.array_equal(stored, original):
        assert result == "error"  # every other split cuts some frame (class frames differ in size)
    else:
        assert result == "ok"


def damage(draw, frame: bytearray, kinds: list[str]) -> None:
    """One to three drawn edits of ``frame`` in place, each of one of ``kinds``."""
    for _ in range(draw(st.integers(1, 3))):
        position = draw(st.integers(0, len(frame) - 1))
        kind = draw(st.sampled_from(kinds))
        if kind == "flip":
            frame[position] ^= 1 << draw(st.integers(0, 7))
        elif kind == "overwrite":
            frame[position:position + 8] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "insert":
            frame[position:position] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del frame[position:position + draw(st.integers(1, 8))]
        elif kind == "truncate":
            del frame[max(position, 1):]
        else:
            frame += draw(st.binary(min_size=1, max_size=8))


@st.composite
def stream_mutations(draw) -> tuple[str, bytes]:
    name = draw(st.sampled_from(NAMES))
    frames = frames_of(PARTS[name][0])
    label = draw(st.integers(0, len(frames) - 1))
    frame = bytearray(frames[label])
    damage(draw, frame, ["flip", "flip", "overwrite", "insert", "delete"])
    frames[label] = bytes(frame)
    return name, build_file(with_frames(PARTS[name][0], frames))


@FUZZ(max_examples=500)
@given(stream_mutations())
def test_damaged_frames(case):
    name, data = case
    if outcome(data) == "ok":  # zstd frames carry no checksum: damaged literals may decode
        artifact = fredset.load(data)
        assert all(torch.isfinite(c).all() for c in artifact.coefficients)
        assert artifact.counts == ARTIFACTS[name][0].counts


@st.composite
def quantization_arrays(draw) -> tuple[str, np.ndarray, bool]:
    name = draw(st.sampled_from([I8, RI8]))
    quantization = PARTS[name][0]["quantization"].copy()
    index = tuple(draw(st.integers(0, size - 1)) for size in quantization.shape)
    value = draw(st.one_of(st.floats(width=32), st.sampled_from([0.0, -0.0, -1e-30, np.nan, np.inf, -np.inf])))
    quantization[index] = value
    bad = not math.isfinite(value) or (index[1] == 0 and value < 0)
    return name, quantization, bad


@FUZZ(max_examples=300)
@given(quantization_arrays())
def test_random_quantization(case):
    name, quantization, bad = case
    result = outcome(replaced(name, quantization=quantization))
    if bad:
        assert result == "error"


# -- d. memory: a huge declared size is refused without being allocated -------------------------

def bomb_file(frame_size: int | None = None) -> bytes:
    """Metadata declaring 2**24 instances x 48 channels of a 1x1 image (3 GiB decoded, within the
    default limit), and a 17-byte frame declaring that size (or ``frame_size``)."""
    arrays, document = PARTS[G32]
    document = with_metadata(G32, image={"channels": 48, "height": 1, "width": 1}, k=1,
                             normalization={"mean": [0.0] * 48, "std": [1.0] * 48},
                             instances_per_class=[2**24, 1, 1])
    declared = 2**24 * 48 * 4 if frame_size is None else frame_size
    frames = [raw_zstd_frame(declared, window_descriptor=0x88), raw_zstd_frame(48 * 4), raw_zstd_frame(48 * 4)]
    arrays = with_frames({**arrays, "masks": np.zeros((3, 1), "<u4")}, frames)
    return build_file(arrays, metadata=document)


def peak_python_allocation(action: Callable[[], object]) -> int:
    """Peak bytes Python allocated while ``action`` ran (tracemalloc)."""
    tracemalloc.start()
    try:
        action()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("frame_size", [None, 2**40, 2**62])
def test_huge_declared_size_is_not_allocated(frame_size):
    data = bomb_file(frame_size)
    assert len(data) < 8192
    peak = peak_python_allocation(lambda: refused(data, "/coefficients, class 0"))
    assert peak < 4 * 2**20, f"reading a {len(data)}-byte file allocated {peak} bytes"


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_huge_declared_size_is_not_allocated_outside_python(tmp_path):
    """tracemalloc does not see libzstd or libhdf5: compare the peak resident size in a fresh process."""
    path = tmp_path / "bomb.fredset"
    path.write_bytes(bomb_file())
    script = textwrap.dedent(f"""
        import fredset

        def status(field):
            with open("/proc/self/status") as stream:
                return next(int(line.split()[1]) for line in stream if line.startswith(field + ":"))

        with open("/proc/self/clear_refs", "w") as stream:  # resets the peak (VmHWM) to the current size
            stream.write("5")
        before = status("VmRSS")
        try:
            fredset.read_file({str(path)!r})
        except fredset.FredsetError:
            pass
        else:
            raise SystemExit("the bomb was read")
        print(status("VmHWM") - before)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.strip()) < 32 * 1024, f"peak resident size grew by {result.stdout.strip()} KiB"


def test_huge_counts_are_refused_before_reading_data():
    document = with_metadata(G32, instances_per_class=[2**24] * 3)
    data = build_file(PARTS[G32][0], metadata=document)
    assert peak_python_allocation(lambda: refused(data, "max_decoded_bytes")) < 4 * 2**20
    assert struct.unpack_from("<Q", data, 16)[0] == len(data) - HEADER_SIZE  # the header is valid


# -- e. format 2.0 -------------------------------------------------------------------------------

PARTS_2 = {name: (datasets_of(data), document_of(datasets_of(data))) for name, data in VALID_2.items()}
SECTIONS_2 = {name: sections_of(arrays) for name, (arrays, _) in PARTS_2.items()}
VALIDATOR_2 = jsonschema.Draft202012Validator(schema(2))


def test_the_2_0_building_blocks_round_trip():
    for name, data in VALID_2.items():
        artifact, info = fredset.read_file(data)
        assert info.format_version == "2.0" and artifact.counts == ARTIFACTS_2[name].counts
        arrays, document = PARTS_2[name]
        for rebuilt in (build_file_2(arrays), build_file_2(arrays, document, sections=SECTIONS_2[name])):
            again = fredset.load(rebuilt)
            assert all(torch.equal(a, b) for a, b in zip(again.coefficients, artifact.coefficients))
            assert torch.equal(again.masks, artifact.masks)


@st.composite
def mutated_documents_2(draw) -> tuple[str, bytes]:
    name = draw(st.sampled_from(NAMES_2))
    document = json.loads(json.dumps(PARTS_2[name][1]))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(json_paths(document)))
        kind = draw(st.sampled_from(["replace", "replace", "drop", "add"]))
        if kind == "replace":
            document = set_at(document, path, draw(JSON_VALUES | st.sampled_from([2, 8, 9, 1, 4.0, "float16"])))
        elif kind == "drop" and path:
            parent = functools.reduce(lambda value, key: value[key], path[:-1], document)
            del parent[path[-1]]
        elif kind == "add":
            target = functools.reduce(lambda value, key: value[key], path, document)
            if isinstance(target, dict):
                target[draw(st.sampled_from(["extra", "dtype", "shuffle", "bits", "byte_order"]))] = draw(JSON_VALUES)
    return name, json.dumps(document, allow_nan=True).encode("utf-8")


@FUZZ(max_examples=500)
@given(mutated_documents_2())
def test_mutated_2_0_metadata_documents(case):
    """The document inside /metadata's frame: refused whenever it breaks the 2.0 schema (or the size rules)."""
    name, raw = case
    result = outcome(build_file_2(PARTS_2[name][0], recompress(raw)))
    invalid = violates_schema(raw, VALIDATOR_2)
    event(f"{result}, {'schema-invalid' if invalid else 'schema-valid'}")
    if invalid:
        assert result == "error", raw[:300]


@st.composite
def bitmap_mutations(draw) -> tuple[str, np.ndarray]:
    name = draw(st.sampled_from(NAMES_2))
    bitmap = SECTIONS_2[name]["bitmap"].copy()
    for _ in range(draw(st.integers(0, 3))):
        row, column = draw(st.integers(0, bitmap.shape[0] - 1)), draw(st.integers(0, bitmap.shape[1] - 1))
        kind = draw(st.sampled_from(["flip", "swap", "move", "set"]))
        if kind == "flip":
            bitmap[row, column] ^= 1 << draw(st.integers(0, 7))
        elif kind == "swap":  # exchange two bits of a row: still k bits, maybe in the padding
            bits = np.unpackbits(bitmap[row], bitorder="little")
            a, b = draw(st.integers(0, len(bits) - 1)), draw(st.integers(0, len(bits) - 1))
            bits[[a, b]] = bits[[b, a]]
            bitmap[row] = np.packbits(bits, bitorder="little")
        elif kind == "move":
            bitmap[[row, (row + 1) % bitmap.shape[0]]] = bitmap[[(row + 1) % bitmap.shape[0], row]]
        else:
            bitmap[row, column] = draw(st.sampled_from([0, 255, 1, 128]))
    return name, bitmap


@FUZZ(max_examples=300)
@given(bitmap_mutations())
def test_random_bitmaps(case):
    """Oracle: read exactly when every row sets k bits and no padding bit; then the masks are those bits."""
    name, bitmap = case
    _, document = PARTS_2[name]
    plane, k = document["image"]["height"] * document["image"]["width"], document["k"]
    bits = np.unpackbits(bitmap, axis=1, bitorder="little")
    valid = not bits[:, plane:].any() and bool((bits.sum(axis=1) == k).all())
    data = build_file_2(PARTS_2[name][0], sections={**SECTIONS_2[name], "bitmap": bitmap})
    assert outcome(data) == ("ok" if valid else "error")
    if valid:
        assert np.array_equal(fredset.load(data).masks.numpy(), np.nonzero(bits)[1].reshape(-1, k))


INTERESTING_STEPS = [0.0, -0.0, np.nan, -np.nan, np.inf, -np.inf, -1.0, 65504.0, 6e-8, -6e-8, 1.0, 0.25]


@st.composite
def value_mutations(draw) -> tuple[str, dict[str, np.ndarray]]:
    name = draw(st.sampled_from(NAMES_2))
    changed = {key: value.copy() for key, value in SECTIONS_2[name].items()}
    for _ in range(draw(st.integers(1, 3))):
        target = draw(st.sampled_from(["steps", "codes", "codes"]))
        flat = changed[target].reshape(-1)
        index = draw(st.integers(0, flat.size - 1))
        if target == "steps":
            flat[index] = draw(st.sampled_from(INTERESTING_STEPS))
        else:
            flat[index] = draw(st.sampled_from([0, 1, -1, 2, -2, 3, -3, 7, -7, 8, -8, 127, -127, -128]))
    return name, changed


@FUZZ(max_examples=400)
@given(value_mutations())
def test_random_steps_and_codes(case):
    """Oracle: read exactly when every step is finite, >= 0 and not -0.0, every code is in the b-bit range and
    0 under a zero step; then every value is step x code."""
    name, changed = case
    bits = PARTS_2[name][1]["coefficients"]["bits"]
    counts = PARTS_2[name][1]["instances_per_class"]
    steps, codes = changed["steps"], changed["codes"]
    zero = np.repeat(steps == 0, counts, axis=0)
    valid = (bool(np.isfinite(steps).all()) and not np.signbit(steps).any()
             and -(2 ** (bits - 1)) <= int(codes.min()) and int(codes.max()) <= 2 ** (bits - 1) - 1
             and not (codes[zero] != 0).any())
    data = build_file_2(PARTS_2[name][0], sections=changed)
    assert outcome(data) == ("ok" if valid else "error")
    if valid:
        values = torch.cat(fredset.load(data).coefficients).numpy()
        assert values.tobytes() == (np.repeat(steps.astype(np.float32), counts, axis=0) * codes).tobytes()


@st.composite
def frame_damage_2(draw) -> tuple[str, bytes]:
    name = draw(st.sampled_from(NAMES_2))
    arrays = dict(PARTS_2[name][0])
    target = draw(st.sampled_from(["data", "data", "metadata"]))
    frame = bytearray(arrays[target].tobytes())
    damage(draw, frame, ["flip", "flip", "overwrite", "insert", "delete", "truncate", "append"])
    arrays[target] = np.frombuffer(bytes(frame), dtype="u1")
    return name, build_file_2(arrays)


@FUZZ(max_examples=500)
@given(frame_damage_2())
def test_damaged_2_0_frames(case):
    name, data = case
    if outcome(data) == "ok":  # no content checksum: damaged literals may decode
        artifact = fredset.load(data)
        assert all(torch.isfinite(c).all() for c in artifact.coefficients)
        assert artifact.counts == ARTIFACTS_2[name].counts
        artifact.validate()  # what the reader built without re-checking is on its grid


def bomb_file_2(declared: int | None = None, metadata_declared: int | None = None) -> bytes:
    """Metadata declaring 2**24 instances x 48 channels of a 1x1 image (3 GiB decoded, within the default limit)
    and a 17-byte /data frame declaring the size that implies (or ``declared``); or a /metadata frame
    declaring ``metadata_declared`` bytes."""
    arrays, document = PARTS_2["gray-q4"]
    document = {**document, "image": {"channels": 48, "height": 1, "width": 1}, "k": 1,
                "normalization": {"mean": [0.0] * 48, "std": [1.0] * 48}, "instances_per_class": [2**24, 1, 1]}
    implied = 3 * 1 + 2 * 3 * 48 + (2**24 + 2) * 48
    data = np.frombuffer(raw_zstd_frame(implied if declared is None else declared, window_descriptor=0x88), "u1")
    metadata = raw_zstd_frame(metadata_declared) if metadata_declared is not None else document
    return build_file_2({**arrays, "data": data}, metadata)


@pytest.mark.parametrize("declared", [None, 2**40, 2**62])
def test_huge_declared_data_size_is_not_allocated(declared):
    data = bomb_file_2(declared)
    assert len(data) < 8192
    peak = peak_python_allocation(lambda: refused(data, "/data"))
    assert peak < 4 * 2**20, f"reading a {len(data)}-byte file allocated {peak} bytes"


@pytest.mark.parametrize("declared", [MAX_METADATA_BYTES, MAX_METADATA_BYTES + 1, 2**62])
def test_huge_declared_metadata_size_is_not_allocated(declared):
    data = bomb_file_2(metadata_declared=declared)
    peak = peak_python_allocation(lambda: refused(data, "/metadata"))
    assert peak < 4 * 2**20, f"reading a {len(data)}-byte file allocated {peak} bytes"
