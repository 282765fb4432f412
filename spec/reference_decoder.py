#!/usr/bin/env python3
"""Reference decoder for .fredset files, format versions 1.x and 2.x (spec/FORMAT.md).

A second, independent implementation written from FORMAT.md: only the Python standard library,
numpy, h5py and zstandard; no fredset, no torch. It favours being easy to read over speed.

    images, labels, metadata = decode("some.fredset")   # float32 [N, C, H, W], int64 [N], dict

Any file it refuses raises ValueError with a one-line message. Run it as a script to print a
summary of a file:  python spec/reference_decoder.py FILE.fredset
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import stat
import struct
import sys
from dataclasses import dataclass
from typing import Any

import h5py
import numpy as np
import zstandard

# -- Section "The header" ----------------------------------------------------------------------
MAGIC = b"\x89FRD\r\n\x1a\n"
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
HEADER_SIZE = 512
HEADER = struct.Struct("<8sHHIQ32s")  # magic, major, minor, header size, payload length, SHA-256
READER_VERSIONS = {1: 0, 2: 0}  # major -> the newest minor this decoder knows

# -- Reader limits (section "Memory bounds") ----------------------------------------------------
MAX_FILE_BYTES = 2**30
MAX_DECODED_BYTES = 4 * 2**30
MAX_METADATA_BYTES = 4 * 2**20

# -- Section "The HDF5 content": name -> (HDF5 type class, size in bytes, rank) ------------------
DATASETS = {
    "metadata": (h5py.h5t.INTEGER, 1, 1),
    "masks": (h5py.h5t.INTEGER, 4, 2),
    "coefficients": (h5py.h5t.INTEGER, 1, 1),
    "coefficient_offsets": (h5py.h5t.INTEGER, 8, 1),
    "quantization": (h5py.h5t.FLOAT, 4, 4),
}
# Structure limits: links in all groups, names in a path, and what a link name may be.
MAX_LINKS, MAX_DEPTH = 1024, 8
LINK_NAME = re.compile(rb"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
REQUIRED = ("metadata", "masks", "coefficients", "coefficient_offsets")
STORED_DTYPE = {"float32": np.dtype("<f4"), "float16": np.dtype("<f2"), "int8": np.dtype("i1")}
# -- Section "Format 2.0": two datasets, each one zstd frame ---------------------------------------
DATASETS_2 = {"metadata": (h5py.h5t.INTEGER, 1, 1), "data": (h5py.h5t.INTEGER, 1, 1)}
REQUIRED_2 = ("metadata", "data")


@dataclass
class Contents:
    """Everything in a file, before the inverse transform."""

    version: tuple[int, int]
    sha256: str
    file_bytes: int
    metadata: dict[str, Any]
    masks: np.ndarray  # int64 [K, k]
    coefficients: list[np.ndarray]  # per class float32 [n_c, C, k], stored values


def decode(path: str, *, max_file_bytes: int = MAX_FILE_BYTES,
           max_decoded_bytes: int = MAX_DECODED_BYTES) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Images float32 [N, C, H, W] in normalised space, labels int64 [N], metadata."""
    contents = read(path, max_file_bytes=max_file_bytes, max_decoded_bytes=max_decoded_bytes)
    return inverse_transform(contents)


def inverse_transform(contents: Contents) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Section "The transform": decode every instance in float64, then round to float32."""
    image = contents.metadata["image"]
    height, width = image["height"], image["width"]
    d_h, d_w = dct_matrix(height), dct_matrix(width)
    images = []
    for mask, values in zip(contents.masks, contents.coefficients):
        plane = np.zeros(values.shape[:2] + (height * width,), dtype=np.float64)
        plane[:, :, mask] = values  # scatter: flat index p = u*W + v
        plane = plane.reshape(values.shape[:2] + (height, width))
        images.append((d_h.T @ plane @ d_w).astype(np.float32))  # x = D_H^T X D_W
    counts = contents.metadata["instances_per_class"]
    labels = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
    return np.concatenate(images), labels, contents.metadata


def dct_matrix(n: int) -> np.ndarray:
    """Orthonormal DCT-II matrix D[u, x] = a(u) cos(pi (2x+1) u / 2n), float64."""
    u, x = np.arange(n)[:, None], np.arange(n)[None, :]
    matrix = math.sqrt(2.0 / n) * np.cos(np.pi * (2 * x + 1) * u / (2 * n))
    matrix[0] = math.sqrt(1.0 / n)
    return matrix


def to_pixels(images: np.ndarray, metadata: dict[str, Any]) -> np.ndarray:
    """Normalised images -> pixels in [0, 1]: value * std[ch] + mean[ch], clamped."""
    mean = np.array(metadata["normalization"]["mean"], dtype=np.float32)[:, None, None]
    std = np.array(metadata["normalization"]["std"], dtype=np.float32)[:, None, None]
    return np.clip(images * std + mean, 0.0, 1.0)


def read(path: str, *, max_file_bytes: int = MAX_FILE_BYTES,
         max_decoded_bytes: int = MAX_DECODED_BYTES) -> Contents:
    """Verify and read a file: header and checksum first, then the HDF5 structure, then data."""
    if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO or a device could block or never end
        raise ValueError("not a regular file")
    descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # in case it was swapped since
    with os.fdopen(descriptor, "rb") as stream:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise ValueError("not a regular file")
        data = stream.read(max_file_bytes + 1)
    if len(data) > max_file_bytes:
        raise ValueError(f"file is larger than the {max_file_bytes}-byte limit")
    version, digest = check_header(data)
    strict = version[1] <= READER_VERSIONS[version[0]]  # a newer minor may add things we must ignore
    # Only now, with the bytes verified, does libhdf5 see them (from memory, never the path).
    try:
        with h5py.File(io.BytesIO(data), "r") as handle:
            reader = read_container_2 if version[0] == 2 else read_container
            metadata, masks, coefficients = reader(handle, len(data), strict, max_decoded_bytes)
    except ValueError:
        raise
    except Exception as error:  # libhdf5 and numpy raise many types on malformed content
        raise ValueError(f"malformed HDF5 content ({type(error).__name__}: {error})") from None
    return Contents(version, digest, len(data), metadata, masks, coefficients)


def check_header(data: bytes) -> tuple[tuple[int, int], str]:
    if len(data) < HEADER_SIZE or data[:8] != MAGIC:
        raise ValueError("not a fredset file (no fredset header)" if data[:8] != MAGIC
                         else "file is truncated (shorter than the 512-byte header)")
    _, major, minor, header_size, payload_length, digest = HEADER.unpack_from(data)
    if major not in READER_VERSIONS:
        raise ValueError(f"format version {major}.{minor} is not supported (this decoder reads 1.x and 2.x)")
    if header_size != HEADER_SIZE:
        raise ValueError(f"corrupt header: header size {header_size}, expected 512")
    if any(data[HEADER.size:HEADER_SIZE]):
        raise ValueError("corrupt header: reserved bytes are not zero")
    if payload_length != len(data) - HEADER_SIZE:
        raise ValueError(f"file length {len(data)} does not match the header ({payload_length + HEADER_SIZE})")
    if hashlib.sha256(data[HEADER_SIZE:]).digest() != digest:
        raise ValueError("checksum mismatch: SHA-256 of the payload differs from the header")
    if data[HEADER_SIZE:HEADER_SIZE + 8] != HDF5_SIGNATURE:
        raise ValueError("no HDF5 superblock at byte 512")
    return (major, minor), digest.hex()


def check_structure(handle: h5py.File, file_bytes: int, strict: bool, known: dict[str, tuple[int, int, int]] = DATASETS,
                    required: tuple[str, ...] = REQUIRED) -> dict[str, h5py.Dataset]:
    """The ``known`` datasets (1.x: DATASETS, 2.x: DATASETS_2), after checking every link and object; reads no data."""
    if strict and handle.attrs.keys():
        raise ValueError("unexpected attributes on the root group")
    names: list[str] = []
    paths: set[bytes] = set()
    problems: list[str] = []  # (raising inside an h5py visitor is not safe; collect and stop instead)

    def visit(name: bytes, link: Any) -> int | None:
        parts = name.split(b"/")
        if len(paths) == MAX_LINKS:
            problems.append(f"more than {MAX_LINKS} links")
        elif not all(LINK_NAME.match(part) for part in parts):
            problems.append(f"link name {name[:200]!r} is not allowed")
        elif len(parts) > MAX_DEPTH:
            problems.append(f"objects nested more than {MAX_DEPTH} deep")
        elif name in paths:
            problems.append(f"/{name.decode()} is linked twice")
        elif link.type != h5py.h5l.TYPE_HARD:
            problems.append(f"/{name.decode()} is not a hard link; only hard links are allowed")
        elif name.decode() in known:
            names.append(name.decode())
        elif strict:
            problems.append(f"unexpected object /{name.decode()}")
        paths.add(name)
        return 1 if problems else None

    # depth first, each group entered once; native order, so nothing is sorted before the visit
    handle.id.links.visit(visit, info=True, order=h5py.h5.ITER_NATIVE)
    if problems:
        raise ValueError(problems[0])
    for name in required:
        if name not in names:
            raise ValueError(f"dataset /{name} is missing")
    found = {}
    for name in names:
        item = handle[name]
        type_class, size, rank = known[name]
        if not isinstance(item, h5py.Dataset):
            raise ValueError(f"/{name} must be a dataset")
        if not exact_type(item.id.get_type(), type_class, size):
            raise ValueError(f"/{name} has the wrong datatype")
        if item.shape is None or len(item.shape) != rank:
            raise ValueError(f"/{name} must have {rank} dimensions")
        plist = item.id.get_create_plist()
        if plist.get_layout() not in (h5py.h5d.CONTIGUOUS, h5py.h5d.COMPACT) \
                or plist.get_external_count() or plist.get_nfilters():
            raise ValueError(f"/{name} must be contiguous or compact, unfiltered, inside the file")
        if strict and item.attrs.keys():
            raise ValueError(f"unexpected attributes on /{name}")
        if item.id.get_storage_size() != item.size * size or item.size * size > file_bytes:
            raise ValueError(f"/{name} is not fully stored in the file")
        found[name] = item
    return found


def exact_type(h5type: Any, type_class: int, size: int) -> bool:
    """The datatype is exactly H5T_STD_U8LE, _U32LE or _U64LE (integers) or H5T_IEEE_F32LE, as stored
    in the dataset (not committed); a 1-byte integer may also be declared big-endian."""
    zero = h5py.h5t.PAD_ZERO
    if h5type.get_class() != type_class or h5type.committed() or h5type.get_size() != size \
            or h5type.get_precision() != 8 * size or h5type.get_offset() != 0 or h5type.get_pad() != (zero, zero) \
            or h5type.get_order() not in ((h5py.h5t.ORDER_LE, h5py.h5t.ORDER_BE) if size == 1 else (h5py.h5t.ORDER_LE,)):
        return False
    if type_class == h5py.h5t.INTEGER:
        return h5type.get_sign() == h5py.h5t.SGN_NONE
    return (h5type.get_fields() == (31, 23, 8, 0, 23) and h5type.get_ebias() == 127
            and h5type.get_norm() == h5py.h5t.NORM_IMPLIED and h5type.get_inpad() == zero)


def read_container(handle: h5py.File, file_bytes: int, strict: bool, max_decoded_bytes: int):
    datasets = check_structure(handle, file_bytes, strict)

    if datasets["metadata"].size > MAX_METADATA_BYTES:
        raise ValueError(f"metadata is larger than {MAX_METADATA_BYTES} bytes")
    metadata = parse_metadata(datasets["metadata"][()].tobytes(), strict, major=1)
    classes, counts, k = metadata["dataset"]["classes"], metadata["instances_per_class"], metadata["k"]
    channels, height, width = (metadata["image"][key] for key in ("channels", "height", "width"))
    encoding = metadata["coefficients"]
    num_classes = len(classes)
    if sum(counts) * channels * height * width * 4 > max_decoded_bytes:
        raise ValueError(f"decoded images would exceed the {max_decoded_bytes}-byte limit")

    masks = read_exact(datasets["masks"], (num_classes, k)).astype(np.int64)
    if masks.min() < 0 or masks.max() >= height * width:
        raise ValueError("/masks: index outside 0..H*W-1")
    if not (masks[:, 1:] > masks[:, :-1]).all():
        raise ValueError("/masks: indices must be strictly increasing within each class")

    offsets = read_exact(datasets["coefficient_offsets"], (num_classes + 1,))
    stream = datasets["coefficients"][()]
    if offsets[0] != 0 or offsets[-1] != len(stream) or (offsets[1:] < offsets[:-1]).any():
        raise ValueError("/coefficient_offsets must rise from 0 to the length of /coefficients")

    quantized = encoding["dtype"] == "int8"
    if quantized != ("quantization" in datasets):
        raise ValueError("/quantization must be present exactly when coefficients are int8")
    if quantized:
        quantization = read_exact(datasets["quantization"], (num_classes, 2, channels, k))
        if not np.isfinite(quantization).all() or (quantization[:, 0] < 0).any():
            raise ValueError("/quantization: scales must be finite and >= 0, offsets finite")

    coefficients = []
    for label, count in enumerate(counts):
        frame = stream[offsets[label]:offsets[label + 1]].tobytes()
        values = decode_frame(frame, (count, channels, k), encoding["dtype"], encoding["shuffle"], label)
        if quantized:  # binary32 arithmetic: the product is rounded, then the sum
            scale, offset = quantization[label, 0], quantization[label, 1]
            values = offset + scale * values.astype(np.float32)
        if not np.isfinite(values).all():
            raise ValueError(f"class {label}: coefficients hold NaN or infinity")
        coefficients.append(values.astype(np.float32))
    return metadata, masks, coefficients


def read_container_2(handle: h5py.File, file_bytes: int, strict: bool, max_decoded_bytes: int):
    """Format 2.x: /metadata = one zstd frame of the JSON, /data = one zstd frame of three sections."""
    datasets = check_structure(handle, file_bytes, strict, DATASETS_2, REQUIRED_2)

    stored_metadata = datasets["metadata"]
    if stored_metadata.size > MAX_METADATA_BYTES:
        raise ValueError(f"metadata is larger than {MAX_METADATA_BYTES} bytes")
    raw = one_frame(stored_metadata[()].tobytes(), "/metadata", limit=MAX_METADATA_BYTES)
    metadata = parse_metadata(raw, strict, major=2)
    counts, k, bits = metadata["instances_per_class"], metadata["k"], metadata["coefficients"]["bits"]
    channels, height, width = (metadata["image"][key] for key in ("channels", "height", "width"))
    num_classes, plane = len(counts), height * width
    if sum(counts) * channels * plane * 4 > max_decoded_bytes:
        raise ValueError(f"decoded images would exceed the {max_decoded_bytes}-byte limit")

    row = (plane + 7) // 8  # bytes per mask bitmap
    masks_size, steps_size, codes_size = num_classes * row, 2 * num_classes * channels * k, sum(counts) * channels * k
    raw = one_frame(datasets["data"][()].tobytes(), "/data", expected=masks_size + steps_size + codes_size)

    bitmaps = np.frombuffer(raw[:masks_size], dtype=np.uint8).reshape(num_classes, row)
    masks = np.empty((num_classes, k), dtype=np.int64)
    for label, bitmap in enumerate(bitmaps):
        bits_set = np.unpackbits(bitmap, bitorder="little")  # bit p mod 8 of byte p div 8, LSB first
        if bits_set[plane:].any():
            raise ValueError(f"/data: class {label}'s mask bitmap has a padding bit set")
        indices = np.flatnonzero(bits_set)
        if len(indices) != k:
            raise ValueError(f"/data: class {label}'s mask bitmap sets {len(indices)} bits, not k = {k}")
        masks[label] = indices

    steps = np.frombuffer(raw[masks_size:masks_size + steps_size], dtype="<f2").reshape(num_classes, channels, k)
    if not (np.isfinite(steps).all() and (steps >= 0).all() and not np.signbit(steps).any()):
        raise ValueError("/data: steps must be finite and >= 0 (and not -0)")
    codes = np.frombuffer(raw[masks_size + steps_size:], dtype=np.int8).reshape(sum(counts), channels, k)
    if codes.size and (codes.min() < -2 ** (bits - 1) or codes.max() > 2 ** (bits - 1) - 1):
        raise ValueError(f"/data: a code is outside the {bits}-bit range")

    coefficients, start = [], 0
    for label, count in enumerate(counts):
        class_codes = codes[start:start + count]
        start += count
        if (class_codes[:, steps[label] == 0] != 0).any():
            raise ValueError(f"/data: class {label} has a non-zero code where its step is 0")
        # binary32: the product of a binary16 step and a code of at most 8 bits is exact
        coefficients.append(steps[label].astype(np.float32) * class_codes.astype(np.float32))
    return metadata, masks, coefficients


def one_frame(frame: bytes, what: str, *, expected: int | None = None, limit: int | None = None) -> bytes:
    """The content of ``frame``: exactly one zstd frame that declares its size (``expected`` bytes, or at most
    ``limit``), the declared size checked before decompressing."""
    try:
        declared = zstandard.frame_content_size(frame)
    except zstandard.ZstdError:
        raise ValueError(f"{what}: not a zstd frame") from None
    if declared < 0 or (expected is not None and declared != expected) or (limit is not None and declared > limit):
        raise ValueError(f"{what}: zstd frame declares {declared} bytes, expected "
                         + (f"{expected}" if expected is not None else f"at most {limit}"))
    decompressor = zstandard.ZstdDecompressor().decompressobj()
    try:
        raw = decompressor.decompress(frame)
    except zstandard.ZstdError as error:
        raise ValueError(f"{what}: corrupt zstd frame ({error})") from None
    if len(raw) != declared or not decompressor.eof or decompressor.unused_data:
        raise ValueError(f"{what}: zstd data is not exactly one frame of {declared} bytes")
    return raw


def read_exact(item: h5py.Dataset, shape: tuple[int, ...]) -> np.ndarray:
    """Read a dataset after checking its shape; the result is native-endian numpy."""
    if item.shape != shape:
        raise ValueError(f"{item.name} has shape {item.shape}, expected {shape}")
    return item[()]


def decode_frame(frame: bytes, shape: tuple[int, int, int], dtype_name: str, shuffle: bool,
                 label: int) -> np.ndarray:
    """One class's zstd frame -> stored values [n, C, k] (float32, or int8 codes)."""
    dtype = STORED_DTYPE[dtype_name]
    expected = shape[0] * shape[1] * shape[2] * dtype.itemsize
    raw = one_frame(frame, f"class {label}", expected=expected)  # size checked BEFORE decompressing
    data = np.frombuffer(raw, dtype=np.uint8)
    if shuffle and dtype.itemsize > 1:  # stored as [itemsize, count]; undo the transpose
        data = data.reshape(dtype.itemsize, -1).T.copy().reshape(-1)
    values = data.view(dtype).reshape(shape)
    return values if dtype_name == "int8" else values.astype(np.float32)


# -- Section "Metadata": the checks of metadata.schema.json that decoding relies on, plus the
#    closed property sets and the cross-field rules. (fredset validates the full schema.)
TOP_LEVEL = {"format", "dataset", "image", "normalization", "transform", "k", "instances_per_class",
             "coefficients", "provenance", "license", "citation"}
CLOSED = {"dataset": {"name", "classes", "license"}, "image": {"channels", "height", "width"},
          "normalization": {"mean", "std"}, "coefficients": {"dtype", "byte_order", "shuffle", "compression"}}
COEFFICIENTS_2 = {"bits", "steps", "compression"}  # format 2.x: coefficients is closed over these
CREATED = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")  # used with fullmatch
MAX_NESTING = 64  # FORMAT.md section 3: levels of arrays and objects, the top-level object is level 1
MAX_MAGNITUDE = 1.7976931348623157e308  # the largest finite binary64 number
FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")  # C0 but TAB LF CR, DEL, C1
ONE_LINE = re.compile("[\x00-\x1f\x7f-\x9f]")


def check_everywhere(doc: Any) -> None:
    """FORMAT.md section 3's rules for the whole document: nesting depth and forbidden characters
    (numbers are checked while parsing). Iterative, so a deep document cannot exhaust the stack."""
    pending = [(doc, 1)]
    while pending:
        value, level = pending.pop()
        if isinstance(value, (dict, list)):
            if level > MAX_NESTING:
                raise ValueError(f"invalid metadata: nested deeper than {MAX_NESTING} levels")
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:
                if isinstance(key, str) and FORBIDDEN.search(key):
                    raise ValueError("invalid metadata: a key holds a forbidden character")
                pending.append((item, level + 1))
        elif isinstance(value, str) and FORBIDDEN.search(value):
            raise ValueError("invalid metadata: a string holds a forbidden character")


def parse_metadata(raw: bytes, strict: bool, major: int) -> dict[str, Any]:
    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        if len({key for key, _ in pairs}) != len(pairs):
            raise ValueError("duplicate key in metadata JSON")
        return dict(pairs)

    def refuse_constant(name: str) -> None:
        raise ValueError(f"{name} is not allowed in metadata JSON")

    def finite_float(literal: str) -> float:
        value = float(literal)
        if not math.isfinite(value):
            raise ValueError(f"number {literal[:24]} is not a finite binary64 value")
        return value

    def finite_int(literal: str) -> int:
        if len(literal.lstrip("-")) > 309 or abs(int(literal)) > MAX_MAGNITUDE:  # length first: int() is slow
            raise ValueError(f"integer {literal[:24]} is not a finite binary64 value")
        return int(literal)

    try:
        doc = json.loads(raw.decode("utf-8"), object_pairs_hook=no_duplicates, parse_constant=refuse_constant,
                         parse_float=finite_float, parse_int=finite_int)
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise ValueError(f"metadata is not valid UTF-8 JSON ({error})") from None
    check_everywhere(doc)

    def need(condition: bool, what: str) -> None:
        if not condition:
            raise ValueError(f"invalid metadata: {what}")

    def integer(value: Any, low: int, high: int) -> bool:  # JSON Schema: 16.0 is an integer too
        return (type(value) is int or (type(value) is float and value.is_integer())) and low <= value <= high

    def number(value: Any) -> bool:
        return type(value) in (int, float) and math.isfinite(value)

    def text(value: Any, high: int, nullable: bool = True) -> bool:
        return (nullable and value is None) or (isinstance(value, str) and len(value) <= high)

    need(isinstance(doc, dict), "not a JSON object")
    missing = TOP_LEVEL - {"license", "citation"} - doc.keys()
    need(not missing, f"missing {sorted(missing)}")
    for name, keys in CLOSED.items():
        need(isinstance(doc[name], dict), f"{name} must be an object")
        keys = COEFFICIENTS_2 if major == 2 and name == "coefficients" else keys
        if strict:
            need(doc[name].keys() <= keys, f"unexpected property in {name}")
    if strict:
        need(doc.keys() <= TOP_LEVEL, f"unexpected property {sorted(doc.keys() - TOP_LEVEL)}")
    need(doc["format"] == "fredset", "format must be 'fredset'")
    need(doc["transform"] == "dct-ii-orthonormal", "transform must be 'dct-ii-orthonormal'")

    dataset, image, norm, coef = doc["dataset"], doc["image"], doc["normalization"], doc["coefficients"]
    need(isinstance(dataset.get("name"), str) and 1 <= len(dataset["name"]) <= 256
         and not ONE_LINE.search(dataset["name"]), "dataset.name")
    classes = dataset.get("classes")
    need(isinstance(classes, list) and 1 <= len(classes) <= 100000
         and all(text(c, 256, nullable=False) and not ONE_LINE.search(c) for c in classes)
         and len(set(classes)) == len(classes),
         "dataset.classes must be 1..100000 unique strings")
    need(text(dataset.get("license"), 4096), "dataset.license")
    need(integer(image.get("channels"), 1, 64), "image.channels must be an integer in 1..64")
    need(integer(image.get("height"), 1, 4096) and integer(image.get("width"), 1, 4096),
         "image.height and image.width must be integers in 1..4096")
    for name in ("mean", "std"):
        values = norm.get(name)
        need(isinstance(values, list) and len(values) == image["channels"] and all(number(v) for v in values),
             f"normalization.{name} must hold one finite number per channel")
    need(min(norm["std"]) > 0, "normalization.std must be positive")
    need(integer(doc["k"], 1, min(16777216, image["height"] * image["width"])), "k must be in 1..H*W")
    counts = doc["instances_per_class"]
    need(isinstance(counts, list) and len(counts) == len(classes)
         and all(integer(n, 1, 16777216) for n in counts), "instances_per_class: one count >= 1 per class")
    for key in ("channels", "height", "width"):  # sizes become shapes: make them Python ints
        image[key] = int(image[key])
    doc["k"], doc["instances_per_class"] = int(doc["k"]), [int(n) for n in counts]
    if major == 2:
        need(integer(coef.get("bits"), 2, 8), "coefficients.bits must be an integer in 2..8")
        need(coef.get("steps") == "float16" and coef.get("compression") == "zstd",
             "coefficients: steps must be float16, compression zstd")
        coef["bits"] = int(coef["bits"])
    else:
        need(coef.get("dtype") in STORED_DTYPE, "coefficients.dtype must be float32, float16 or int8")
        need(coef.get("byte_order") == "little" and coef.get("compression") == "zstd"
             and type(coef.get("shuffle")) is bool, "coefficients: byte_order, shuffle or compression")
    need(text(doc.get("license"), 4096) and text(doc.get("citation"), 65536), "license or citation")

    provenance = doc["provenance"]
    need(isinstance(provenance, dict), "provenance must be an object")
    library = provenance.get("library")
    need(isinstance(library, dict) and isinstance(library.get("name"), str)
         and isinstance(library.get("version"), str), "provenance.library needs name and version")
    need(not any(ONE_LINE.search(value) for value in (library["name"], library["version"],
                                                      *(provenance.get(key) for key in ("objective",
                                                                                        "parameterization")))
                 if isinstance(value, str)), "names in provenance are one line of text")
    need(isinstance(provenance.get("created"), str) and CREATED.fullmatch(provenance["created"]) is not None,
         "provenance.created must be YYYY-MM-DDTHH:MM:SSZ")
    optional = {"objective": str, "parameterization": str, "budget": dict, "hyperparameters": dict,
                "recommended_lr": (int, float), "source": dict, "evaluation": (dict, list)}
    for name, kind in optional.items():
        value = provenance.get(name)
        need(value is None or (isinstance(value, kind) and not isinstance(value, bool)), f"provenance.{name}")
    for name, low in (("seed", -math.inf), ("iterations", 0)):
        need(provenance.get(name) is None or integer(provenance[name], low, math.inf), f"provenance.{name}")
    need(provenance.get("recommended_lr") is None or provenance["recommended_lr"] > 0, "provenance.recommended_lr")
    ipc = (provenance.get("budget") or {}).get("ipc")
    need(ipc is None or (number(ipc) and ipc > 0), "provenance.budget.ipc")
    return doc


def summary(path: str) -> str:
    contents = read(path)
    images, _, meta = inverse_transform(contents)
    image, coef, prov = meta["image"], meta["coefficients"], meta["provenance"]
    classes = meta["dataset"]["classes"]
    shown = ", ".join(classes[:10]) + (", ..." if len(classes) > 10 else "")
    return (f"{path}: fredset format {contents.version[0]}.{contents.version[1]}, {contents.file_bytes} bytes, "
            f"SHA-256 of payload {contents.sha256[:16]}... verified. Dataset {meta['dataset']['name']!r} with "
            f"{len(classes)} classes ({shown}); {len(images)} images of {image['channels']}x{image['height']}x"
            f"{image['width']} (instances per class {meta['instances_per_class']}). Each class keeps k={meta['k']} "
            f"DCT frequencies; coefficients stored as {stored_as(coef)}, zstd-compressed. "
            f"Written by {prov['library']['name']} {prov['library']['version']} on {prov['created']}"
            f"{', objective ' + prov['objective'] if prov.get('objective') else ''}. Decoded values span "
            f"[{images.min():.4g}, {images.max():.4g}] in normalised space (pixel = value*std + mean, "
            f"mean={meta['normalization']['mean']}, std={meta['normalization']['std']}).")


def stored_as(coef: dict[str, Any]) -> str:
    if "bits" in coef:
        return f"{coef['bits']}-bit codes times float16 steps"
    return coef["dtype"] + (", byte-shuffled" if coef["shuffle"] and coef["dtype"] != "int8" else "")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python reference_decoder.py FILE.fredset")
    try:
        print(summary(sys.argv[1]))
    except (ValueError, OSError) as error:
        sys.exit(f"{sys.argv[1]}: refused: {error}")
