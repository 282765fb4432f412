"""Crafting .fredset files, valid or deliberately not, for tests/test_fuzz.py and bench/fuzz_report.py.

Private: not exported by :mod:`fredset.format`, and neither the reader nor the writer uses it. Nothing
here checks anything: :func:`build_file` puts any arrays into an HDF5 container behind a valid header,
and a ``tweak`` (one of the factories below, or any function of the open ``h5py.File``) changes the
container before the header is computed. Valid files come from :func:`fredset.format.to_bytes`. Format 2.0
files are taken apart with :func:`sections_of` and rebuilt with :func:`build_file_2` from any sections,
frames or metadata.
"""

from __future__ import annotations

import dataclasses
import io
import json
import struct
from collections.abc import Callable, Sequence
from typing import Any

import h5py
import numpy as np
import torch
import zstandard

from ..artifact import Artifact
from ..quantize import Quantization
from .header import HEADER_SIZE, VERSION_1, VERSION_2, pack_header
from .writer import LIBVER_2

Tweak = Callable[[h5py.File], None]


# -- valid content ------------------------------------------------------------------------------

def random_artifact(channels: int, size: tuple[int, int], k: int, counts: list[int], seed: int, *,
                    mean: Sequence[float], std: Sequence[float], license: str | None = None) -> Artifact:
    """A small valid artifact: random sorted masks and N(0, 9) coefficients from ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    plane = size[0] * size[1]
    masks = torch.stack([torch.sort(torch.randperm(plane, generator=generator)[:k]).values for _ in counts])
    coefficients = [torch.randn(n, channels, k, generator=generator) * 3 for n in counts]
    return Artifact(coefficients=coefficients, masks=masks, classes=[f"class-{i}" for i in range(len(counts))],
                    image_size=size, mean=list(mean), std=list(std), dataset="fuzz",
                    provenance={"created": "2024-01-02T03:04:05Z", "seed": seed}, license=license)


def datasets_of(data: bytes) -> dict[str, np.ndarray]:
    """The top-level datasets of a (valid) file as numpy arrays, in the file's order."""
    with h5py.File(io.BytesIO(data), "r") as handle:
        return {name: handle[name][()] for name in handle}


# -- building containers ------------------------------------------------------------------------

def metadata_array(document: dict[str, Any] | bytes | str) -> np.ndarray:
    """/metadata as stored: a dict as JSON, text as UTF-8, bytes as they are."""
    if isinstance(document, dict):
        document = json.dumps(document)
    if isinstance(document, str):
        document = document.encode("utf-8")
    return np.frombuffer(document, dtype="u1")


def build_file(arrays: dict[str, Any], metadata: dict[str, Any] | bytes | str | None = None, *,
               version: tuple[int, int] = VERSION_1, tweak: Tweak | None = None,
               libver: str | tuple[str, str] | None = None) -> bytes:
    """A well-formed HDF5 file holding ``arrays`` (name -> numpy array, in order), with a valid header.

    ``metadata`` (a dict, JSON text or raw bytes) replaces /metadata; ``tweak`` edits the open file last;
    ``libver`` is h5py's (``"latest"``: superblock v3, object header v2, compact link storage).
    """
    arrays = dict(arrays)
    if metadata is not None:
        arrays["metadata"] = metadata_array(metadata)
    buffer = io.BytesIO()
    with h5py.File(buffer, "w", userblock_size=HEADER_SIZE, libver=libver) as handle:
        for name, values in arrays.items():
            handle.create_dataset(name, data=values)
        if tweak is not None:
            tweak(handle)
    payload = buffer.getbuffer()[HEADER_SIZE:]
    return pack_header(payload, version) + bytes(payload)


def with_checksum(data: bytes | bytearray) -> bytes:
    """``data`` with a header (of the version it declares, 1.0 if it is too short to) whose length and SHA-256
    match its payload again."""
    payload = bytes(data[HEADER_SIZE:])
    version = struct.unpack_from("<HH", data, 8) if len(data) >= 12 else VERSION_1
    return pack_header(payload, version) + payload


def with_datasets(arrays: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """``arrays`` with datasets replaced (a value) or removed (None)."""
    arrays = dict(arrays)
    for key, value in changes.items():
        if value is None:
            arrays.pop(key, None)
        else:
            arrays[key] = value
    return arrays


def with_item(array: np.ndarray, index: Any, value: Any) -> np.ndarray:
    """A copy of ``array`` with ``array[index] = value``."""
    array = array.copy()
    array[index] = value
    return array


# -- coefficient frames -------------------------------------------------------------------------

def frames_of(arrays: dict[str, Any]) -> list[bytes]:
    """The zstd frame of each class, cut from /coefficients at /coefficient_offsets."""
    stream, offsets = arrays["coefficients"].tobytes(), arrays["coefficient_offsets"]
    return [stream[offsets[i]:offsets[i + 1]] for i in range(len(offsets) - 1)]


def with_frames(arrays: dict[str, Any], frames: list[bytes]) -> dict[str, Any]:
    """``arrays`` with /coefficients and /coefficient_offsets rebuilt from ``frames``."""
    return {**arrays, "coefficients": np.frombuffer(b"".join(frames), dtype="u1"),
            "coefficient_offsets": np.cumsum([0] + [len(f) for f in frames]).astype("<u8")}


def raw_zstd_frame(content_size: int | None, payload: bytes = b"abc", last: bool = False,
                   window_descriptor: int = 0x00, checksum: bool = False) -> bytes:
    """A hand-made zstd frame: header declaring ``content_size`` (None: undeclared) and one raw block."""
    if content_size is None:
        descriptor, size_field = 0x00, b""
    else:
        descriptor, size_field = 0xC0, content_size.to_bytes(8, "little")
    descriptor |= 0x04 if checksum else 0
    block = ((len(payload) << 3) | int(last)).to_bytes(3, "little") + payload
    return b"\x28\xb5\x2f\xfd" + bytes([descriptor, window_descriptor]) + size_field + block \
        + (b"\0\0\0\0" if checksum and last else b"")


def recompress(raw: bytes, *, content_size: bool = True) -> bytes:
    return zstandard.ZstdCompressor(level=3, write_content_size=content_size).compress(raw)


def decompressed(frame: bytes) -> bytes:
    return zstandard.ZstdDecompressor().decompress(frame)


# -- format 2.0: sections of /data, frames and containers ---------------------------------------------

def quantized_artifact(artifact: Artifact, bits: int) -> Artifact:
    """``artifact`` moved to the grid :meth:`Quantization.of` picks, holding that quantization (writes 2.0)."""
    grid = Quantization.of(artifact.coefficients, bits)
    return dataclasses.replace(artifact, coefficients=grid.apply(artifact.coefficients), quantization=grid)


def document_of(arrays: dict[str, Any]) -> dict[str, Any]:
    """The metadata document of a file's datasets, 1.x (JSON) or 2.x (a zstd frame of it)."""
    raw = arrays["metadata"].tobytes()
    return json.loads(decompressed(raw) if raw[:4] == b"\x28\xb5\x2f\xfd" else raw)


def sections_of(arrays: dict[str, Any]) -> dict[str, np.ndarray]:
    """The sections of a valid 2.0 file's /data as writable arrays: ``bitmap`` uint8 [K, ceil(H*W/8)],
    ``steps`` float16 [K, C, k], ``codes`` int8 [N, C, k]."""
    document = document_of(arrays)
    image, counts, k = document["image"], document["instances_per_class"], document["k"]
    classes, channels, width = len(counts), image["channels"], (image["height"] * image["width"] + 7) // 8
    raw = decompressed(arrays["data"].tobytes())
    masks_end, steps_end = classes * width, classes * width + 2 * classes * channels * k
    return {"bitmap": np.frombuffer(raw[:masks_end], np.uint8).reshape(classes, width).copy(),
            "steps": np.frombuffer(raw[masks_end:steps_end], "<f2").reshape(classes, channels, k).copy(),
            "codes": np.frombuffer(raw[steps_end:], np.int8).reshape(sum(counts), channels, k).copy()}


def data_bytes(sections: dict[str, np.ndarray]) -> bytes:
    """The content of /data: the bitmap, steps (as little-endian float16) and codes end to end."""
    return b"".join((np.ascontiguousarray(sections["bitmap"], np.uint8).tobytes(),
                     np.ascontiguousarray(sections["steps"], "<f2").tobytes(),
                     np.ascontiguousarray(sections["codes"], np.int8).tobytes()))


def frame_array(content: bytes, *, content_size: bool = True) -> np.ndarray:
    """``content`` as one zstd frame (level 3), stored as a uint8 dataset."""
    return np.frombuffer(recompress(content, content_size=content_size), dtype="u1")


def build_file_2(arrays: dict[str, Any], metadata: dict[str, Any] | bytes | str | None = None, *,
                 sections: dict[str, np.ndarray] | None = None, version: tuple[int, int] = VERSION_2,
                 tweak: Tweak | None = None, libver: str | tuple[str, str] | None = LIBVER_2) -> bytes:
    """A 2.0 container like :func:`build_file`: ``metadata`` (a dict or JSON text, compressed into a frame here;
    raw bytes are stored as they are) replaces /metadata, ``sections`` replace /data (compressed into a frame)."""
    arrays = dict(arrays)
    if isinstance(metadata, (dict, str)):
        arrays["metadata"] = frame_array(metadata_array(metadata).tobytes())
    elif metadata is not None:
        arrays["metadata"] = np.frombuffer(metadata, dtype="u1")
    if sections is not None:
        arrays["data"] = frame_array(data_bytes(sections))
    return build_file(arrays, version=version, tweak=tweak, libver=libver)


# -- tweaks: edits of the open HDF5 file ----------------------------------------------------------

def replace_dataset(name: str, **options: Any) -> Tweak:
    """Rewrite /``name`` with h5py ``create_dataset`` options (chunks, compression, maxshape...)."""
    def tweak(handle: h5py.File) -> None:
        data = handle[name][()]
        del handle[name]
        handle.create_dataset(name, data=data, **options)
    return tweak


def external_storage(filename: str) -> Tweak:
    """/coefficients stored in the external file ``filename`` (which need not exist)."""
    def tweak(handle: h5py.File) -> None:
        size = handle["coefficients"].shape[0]
        del handle["coefficients"]
        handle.create_dataset("coefficients", shape=(size,), dtype="u1", external=[(filename, 0, size)])
    return tweak


def virtual_dataset(source_file: str, extra: bool) -> Tweak:
    """/coefficients as a virtual dataset mapping /source of ``source_file`` ("." is the file itself);
    ``extra``: also write /source here, holding the real coefficients."""
    def tweak(handle: h5py.File) -> None:
        data = handle["coefficients"][()]
        del handle["coefficients"]
        if extra:
            handle.create_dataset("source", data=data)
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_obj_track_times(False)  # h5py's create_virtual_dataset stamps the time: not reproducible
        space = h5py.h5s.create_simple(data.shape)
        dcpl.set_virtual(space, source_file.encode(), b"source", h5py.h5s.create_simple(data.shape))
        h5py.h5d.create(handle.id, b"coefficients", h5py.h5t.STD_U8LE, space, dcpl=dcpl)
    return tweak


def unallocated(handle: h5py.File) -> None:
    """/coefficients declared but never allocated (late allocation, nothing written)."""
    size = handle["coefficients"].shape[0]
    del handle["coefficients"]
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_LATE)
    h5py.h5d.create(handle.id, b"coefficients", h5py.h5t.STD_U8LE, h5py.h5s.create_simple((size,)), dcpl=dcpl)


def compact(name: str) -> Tweak:
    """/``name`` rewritten with the compact layout (data inside the object header)."""
    def tweak(handle: h5py.File) -> None:
        data = handle[name][()]
        tid = handle[name].id.get_type()
        del handle[name]
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_layout(h5py.h5d.COMPACT)
        dataset = h5py.h5d.create(handle.id, name.encode(), tid, h5py.h5s.create_simple(data.shape), dcpl=dcpl)
        dataset.write(h5py.h5s.ALL, h5py.h5s.ALL, np.ascontiguousarray(data))
    return tweak


def hard_link_as(target: str, link: str) -> Tweak:
    """/``target`` moved into a group, /``link`` a second hard link to it."""
    def tweak(handle: h5py.File) -> None:
        data = handle[target][()]
        del handle[target]
        handle.create_group("hidden").create_dataset(target, data=data)
        handle[link] = handle[f"hidden/{target}"]
    return tweak


def swapped_soft_link(handle: h5py.File) -> None:
    """/masks a soft link to /real_masks, which holds the data."""
    data = handle["masks"][()]
    del handle["masks"]
    handle.create_dataset("real_masks", data=data)
    handle["masks"] = h5py.SoftLink("/real_masks")


def set_attribute(obj: str, key: str, value: Any) -> Tweak:
    """An attribute ``key`` on the object ``obj`` ("/" for the root group)."""
    return lambda handle: handle[obj].attrs.__setitem__(key, value)


# -- hostile containers: datatypes, many or deep objects, odd names ---------------------------------

def retyped(name: str, make_type: Callable[[h5py.h5t.TypeID], h5py.h5t.TypeID]) -> Tweak:
    """/``name`` rewritten with the HDF5 datatype ``make_type(original type)``, holding the very same
    bytes: they are written unconverted, so only what the datatype says they mean changes. The new
    type must have the original's size."""
    def tweak(handle: h5py.File) -> None:
        data = np.ascontiguousarray(handle[name][()])
        new_type = make_type(handle[name].id.get_type())
        if new_type.get_size() != data.dtype.itemsize:
            raise ValueError(f"retyped: {name} has {data.dtype.itemsize}-byte items, the type {new_type.get_size()}")
        del handle[name]
        dataset = h5py.h5d.create(handle.id, name.encode(), new_type, h5py.h5s.create_simple(data.shape))
        if data.size:
            dataset.write(h5py.h5s.ALL, h5py.h5s.ALL, data, mtype=new_type)
    return tweak


def nested_groups(depth: int, name: str = "g") -> Tweak:
    """``depth`` groups each inside the last: /g, /g/g, /g/g/g, ..."""
    def tweak(handle: h5py.File) -> None:
        group = handle
        for _ in range(depth):
            group = group.create_group(name)
    return tweak


def extra_objects(count: int, kind: str = "dataset", prefix: str = "extra") -> Tweak:
    """``count`` more objects at the root, /``prefix``0 ...: 2-element int64 datasets, empty groups
    (``kind="group"``), or hard links to /metadata (``kind="link"``, cheap to make)."""
    def tweak(handle: h5py.File) -> None:
        for index in range(count):
            if kind == "dataset":
                handle.create_dataset(f"{prefix}{index}", data=np.arange(2))
            elif kind == "group":
                handle.create_group(f"{prefix}{index}")
            elif kind == "link":
                handle.id.links.create_hard(f"{prefix}{index}".encode(), handle.id, b"metadata")
            else:
                raise ValueError(f"extra_objects: unknown kind {kind!r}")
    return tweak


def hard_link_named(name: bytes, target: str = "metadata") -> Tweak:
    """A second hard link to /``target`` under ``name``, any bytes (non-ASCII, not UTF-8, long...)."""
    return lambda handle: handle.id.links.create_hard(name, handle.id, target.encode())


def committed_datatype(name: str, dtype: Any) -> Tweak:
    """A committed (named) datatype at /``name``."""
    return lambda handle: handle.__setitem__(name, np.dtype(dtype))


def with_committed_type(name: str, type_name: str = "shared_type") -> Tweak:
    """/``name`` rewritten to use a committed copy of its own datatype, linked as /``type_name``."""
    def tweak(handle: h5py.File) -> None:
        data = handle[name][()]
        handle[type_name] = data.dtype
        del handle[name]
        handle.create_dataset(name, data=data, dtype=handle[type_name])
    return tweak


# -- hostile variants shared by bench/fuzz_report.py and tests/test_reference_agreement.py ------------

def enum_type(original: h5py.h5t.TypeID) -> h5py.h5t.TypeID:
    """An enum over ``original``'s (integer) type, one member: same size, other class."""
    enum = h5py.h5t.enum_create(original.copy())
    enum.enum_insert(b"zero", 0)
    return enum


def changed_type(change: Callable[[Any], Any]) -> Callable[[h5py.h5t.TypeID], h5py.h5t.TypeID]:
    """A ``retyped`` factory: a copy of the original type with ``change(copy)`` applied."""
    def make(original: h5py.h5t.TypeID) -> h5py.h5t.TypeID:
        new = original.copy()
        change(new)
        return new
    return make


def precision_type(bits: int, offset: int) -> Callable[[h5py.h5t.TypeID], h5py.h5t.TypeID]:
    """A ``retyped`` factory: the original type with ``bits`` of precision at bit ``offset``."""
    return changed_type(lambda new: (new.set_precision(bits), new.set_offset(offset)))


# name -> (base encoding "float32" or "int8", dataset, retyped factory); every one is refused by
# both readers (FORMAT.md section 2 allows only the exact little-endian types)
EXOTIC_TYPES: dict[str, tuple[str, str, Callable[[h5py.h5t.TypeID], h5py.h5t.TypeID]]] = {
    "masks enum": ("float32", "masks", enum_type),
    "masks 16 bits at offset 8": ("float32", "masks", precision_type(16, 8)),
    "masks big-endian": ("float32", "masks", changed_type(lambda t: t.set_order(h5py.h5t.ORDER_BE))),
    "masks signed": ("float32", "masks", changed_type(lambda t: t.set_sign(h5py.h5t.SGN_2))),
    "metadata 7 bits": ("float32", "metadata", precision_type(7, 0)),
    "metadata enum": ("float32", "metadata", enum_type),
    "coefficients 7 bits at offset 1": ("float32", "coefficients", precision_type(7, 1)),
    "offsets 56 bits at offset 8": ("float32", "coefficient_offsets", precision_type(56, 8)),
    "offsets big-endian": ("float32", "coefficient_offsets",
                           changed_type(lambda t: t.set_order(h5py.h5t.ORDER_BE))),
    "quantization big-endian": ("int8", "quantization", changed_type(lambda t: t.set_order(h5py.h5t.ORDER_BE))),
    "quantization exponent bias 126": ("int8", "quantization", changed_type(lambda t: t.set_ebias(126))),
}


def diagonal_artifact(side: int, counts: Sequence[int] = (1,), channels: int = 1, seed: int = 0) -> Artifact:
    """Valid but expensive: k = ``side`` coefficients on the diagonal of a side x side plane, so every
    row and column of the inverse DCT is used."""
    generator = torch.Generator().manual_seed(seed)
    mask = torch.arange(side) * side + torch.arange(side)
    return Artifact(coefficients=[torch.randn(n, channels, side, generator=generator) for n in counts],
                    masks=torch.stack([mask] * len(counts)), classes=[f"c{i}" for i in range(len(counts))],
                    image_size=(side, side), mean=(0.5,) * channels, std=(0.25,) * channels, dataset="hostile")


def json_with_field(document: dict[str, Any], field: str, literal: str, where: str = "provenance") -> str:
    """``document`` as JSON text with the object ``where`` (a top-level key) gaining ``field: literal``,
    ``literal`` being any text (not necessarily JSON: 1e400, NaN, a 5000-digit integer...)."""
    text = json.dumps(document)
    marker = f'"{where}": {{'
    if marker not in text:
        raise ValueError(f"json_with_field: no object {where!r} in the document")
    return text.replace(marker, f'{marker}"{field}": {literal}, ', 1)


def nested_json(levels: int, kind: str = "list") -> str:
    """JSON text nested ``levels`` deep: [[[...]]] or {"a": {"a": ...}}."""
    if kind == "list":
        return "[" * levels + "]" * levels
    return '{"a": ' * (levels - 1) + "{}" + "}" * (levels - 1)
