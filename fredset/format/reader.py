"""Reading a .fredset file, format 1.x or 2.x: verify the header, check the HDF5 structure, then load and validate.

Order matters for safety: the whole file is read into memory with a size bound, its header and
SHA-256 are checked in plain Python, and only then does libhdf5 open the bytes (from memory).
Before any dataset is read, every link, type, layout and size is checked, so nothing
variable-length, external, virtual, filtered or unallocated is ever touched.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
from dataclasses import dataclass
from typing import Any, BinaryIO

import h5py
import numpy as np
import torch

from ..artifact import Artifact, validate_masks
from ..errors import FredsetError
from ..quantize import Quantization
from ..remote import check_sha256, fetch, forget, is_url
from .codec import decode_block, decompress_frame, dequantize_int8
from .codes import check_codes, check_steps, dequantize_codes, section_sizes, split_sections, unpack_masks
from .header import HEADER_SIZE, parse_header
from .metadata import MAX_METADATA_BYTES, decode_metadata
from .structure import checked_datasets, read_dataset, short_error

DEFAULT_MAX_FILE_BYTES = 1 * 2**30
DEFAULT_MAX_DECODED_BYTES = 4 * 2**30

_FILE_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
               (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))

Source = str | os.PathLike | bytes | BinaryIO


@dataclass(frozen=True)
class FileInfo:
    """Facts about a file that are not part of the artifact."""

    path: str
    file_bytes: int
    format_version: str
    sha256: str
    metadata: dict[str, Any]

    @property
    def encoding(self) -> dict[str, Any]:
        return self.metadata["coefficients"]


def read_file(source: Source, *, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
              max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES,
              sha256: str | None = None) -> tuple[Artifact, FileInfo]:
    """Read and fully validate a .fredset file; raise FredsetError on any problem.

    ``source`` is a path, an ``http(s)://`` URL (a ``str``; downloaded into the cache first, see
    :mod:`fredset.remote`, and named in errors and ``FileInfo.path``), bytes, or a binary file object.
    ``sha256``: the whole file's SHA-256 (64 hex digits, as ``sha256sum`` prints it), refused if the file's
    differs; for a URL it is checked on the download and on a cached copy, and names the cache entry.
    A URL's cached copy that fails these checks is removed from the cache, so the next open downloads it
    again (a server that sent a wrong file once is not stuck in the cache).
    """
    data, path = _read_bytes(source, max_file_bytes, sha256)
    try:
        return _validated(data, path, max_decoded_bytes)
    except FredsetError:
        if is_url(source):
            forget(source, sha256=sha256)
        raise


def _validated(data: bytes, path: str, max_decoded_bytes: int) -> tuple[Artifact, FileInfo]:
    header = parse_header(data, path)
    try:
        with h5py.File(io.BytesIO(data), "r") as handle:
            read = _read_container_2 if header.major == 2 else _read_container
            artifact, metadata = read(handle, data, path, header.newer_minor, max_decoded_bytes)
    except FredsetError:
        raise
    except Exception as error:  # libhdf5 and numpy raise many types on malformed content
        cause = error.__cause__ or error.__context__ if isinstance(error, SystemError) else None
        shown = cause or error  # h5py can wrap the real error (a name that is not UTF-8) in a SystemError
        raise FredsetError(f"malformed HDF5 content ({type(shown).__name__}: {short_error(shown)})", path) from None
    info = FileInfo(path, len(data), header.version, header.sha256.hex(), metadata)
    return artifact, info


def load(source: Source, *, sha256: str | None = None, **limits: int) -> Artifact:
    """Read a .fredset file (a path, an http(s) URL, bytes or a binary file object) into an :class:`Artifact`
    (see :func:`read_file` for ``sha256`` and the limits)."""
    return read_file(source, sha256=sha256, **limits)[0]


def load_bytes(data: bytes | bytearray | memoryview, **limits: int) -> Artifact:
    """The :class:`Artifact` in the bytes of a whole .fredset file, held in memory.

    The same checks as for a file, in the same order (size bound, header and SHA-256, then the
    HDF5 structure); error messages name ``<bytes>`` where they would name a path.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"load_bytes takes bytes, bytearray or memoryview, not {type(data).__name__} "
                        "(fredset.load reads paths and file objects)")
    return read_file(data, **limits)[0]


def _read_bytes(source: Source, limit: int, sha256: str | None = None) -> tuple[bytes, str]:
    """The whole file's bytes (at most ``limit``) and the name errors give it; a URL is fetched into the cache
    first (:func:`fredset.remote.fetch`, which checks ``sha256`` itself), any other source hashed here when
    ``sha256`` is given."""
    digest = check_sha256(sha256)
    if is_url(source):
        data, path = _read_path(fetch(source, sha256=digest, max_file_bytes=limit), limit, source), source
        digest = None  # checked by fetch, on the download or on the cached copy
    elif isinstance(source, (bytes, bytearray, memoryview)):
        data, path = bytes(source), "<bytes>"
    elif hasattr(source, "read"):
        path = str(getattr(source, "name", "<stream>"))
        try:
            data = source.read(limit + 1)
        except (OSError, ValueError) as error:  # closed, write-only (io.UnsupportedOperation), I/O error
            reason = getattr(error, "strerror", None) or f"{type(error).__name__}: {error}"
            raise FredsetError(f"cannot read file ({reason})", path) from None
        if not isinstance(data, bytes):
            raise FredsetError("file object must be opened in binary mode", path)
    else:
        path = os.fspath(source)
        data = _read_path(path, limit, path)
    if len(data) > limit:
        raise FredsetError(f"file is larger than the {limit}-byte limit (max_file_bytes)", path)
    if digest is not None and (actual := hashlib.sha256(data).hexdigest()) != digest:
        raise FredsetError(f"sha256 mismatch: the file's SHA-256 is {actual}, not {digest}", path)
    return data, path


def _read_path(path: str | bytes | os.PathLike, limit: int, shown: str | bytes) -> bytes:
    """At most ``limit`` + 1 bytes of the regular file at ``path``; errors name ``shown``."""
    try:
        with _open_regular_file(path, shown) as stream:  # a buffer of the file's size, not of the limit
            return stream.read(min(os.fstat(stream.fileno()).st_size, limit) + 1)
    except FileNotFoundError:
        raise FredsetError("no such file", shown) from None
    except OSError as error:
        raise FredsetError(f"cannot read file ({error.strerror or error})", shown) from None
    except ValueError as error:  # a NUL byte or an unencodable character in the path
        raise FredsetError(f"invalid path ({error})", shown) from None


def _open_regular_file(path: str | bytes | os.PathLike, shown: str | bytes) -> BinaryIO:
    """``path`` opened for reading, after making sure it is a regular file.

    A FIFO would block ``open`` (and ``read``) forever and a device could be endless, so anything but
    a regular file is refused before it is opened; the check is repeated on the opened descriptor
    (opened non-blocking, so even a FIFO swapped in meanwhile cannot block) against such a swap.
    """
    _refuse_non_regular(os.stat(path).st_mode, shown)
    nonblocking = getattr(os, "O_NONBLOCK", 0)
    descriptor = os.open(path, os.O_RDONLY | nonblocking | getattr(os, "O_BINARY", 0))
    try:
        _refuse_non_regular(os.fstat(descriptor).st_mode, shown)
        if nonblocking:
            os.set_blocking(descriptor, True)
        return os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise


def _refuse_non_regular(mode: int, path: str | bytes) -> None:
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _FILE_KINDS if test(mode)), "an unknown kind of file")
        raise FredsetError(f"not a regular file ({kind})", path)


def _read_container(handle: h5py.File, data: bytes, path: str, newer_minor: bool,
                    max_decoded_bytes: int) -> tuple[Artifact, dict[str, Any]]:
    datasets = checked_datasets(handle, path, newer_minor)
    for name in ("metadata", "masks", "coefficients", "coefficient_offsets"):
        if name not in datasets:
            raise FredsetError(f"not a fredset file: dataset /{name} is missing", path)

    raw = bytes(_metadata_dataset(datasets, data, path))
    document = decode_metadata(raw, path, strict=not newer_minor)
    classes, k, counts, channels, height, width = _shape(document, path, max_decoded_bytes)
    encoding = document["coefficients"]

    masks = read_dataset(datasets["masks"], "masks", data, path, (len(classes), k)).astype(np.int64)
    try:  # checked now, before any frame is decompressed (the Artifact checks again)
        validate_masks(masks, height * width)
    except FredsetError as error:
        raise FredsetError(f"/masks: {error.problem}", path) from None
    masks = torch.from_numpy(masks)

    offsets = read_dataset(datasets["coefficient_offsets"], "coefficient_offsets", data, path, (len(classes) + 1,))
    stream = read_dataset(datasets["coefficients"], "coefficients", data, path, (None,))
    if offsets[0] != 0 or offsets[-1] != len(stream) or np.any(offsets[1:] < offsets[:-1]):
        raise FredsetError("/coefficient_offsets: offsets must rise from 0 to the length of /coefficients", path)

    quantized = encoding["dtype"] == "int8"
    if quantized != ("quantization" in datasets):
        raise FredsetError("/quantization must be present exactly when coefficients are int8", path)
    if quantized:
        quantization = read_dataset(datasets["quantization"], "quantization", data, path,
                                    (len(classes), 2, channels, k))
        if not np.isfinite(quantization).all() or (quantization[:, 0] < 0).any():
            raise FredsetError("/quantization: scales must be finite and >= 0, offsets finite", path)

    def decode_class(label: int) -> torch.Tensor:
        frame = stream[offsets[label]:offsets[label + 1]]
        values = decode_block(frame, (counts[label], channels, k), encoding["dtype"], encoding["shuffle"],
                              f"/coefficients, class {label}", path)
        if quantized:
            values = dequantize_int8(values, quantization[label, 0], quantization[label, 1])
        return torch.from_numpy(values)

    # One thread: a pool measured slower here (thread start-up outweighs ~0.1 ms frames).
    coefficients = [decode_class(label) for label in range(len(counts))]

    return _artifact(document, coefficients, masks, path), document


def _read_container_2(handle: h5py.File, data: bytes, path: str, newer_minor: bool,
                      max_decoded_bytes: int) -> tuple[Artifact, dict[str, Any]]:
    """Format 2.x (FORMAT.md section 13): /metadata a zstd frame of the JSON, /data one frame of the masks'
    bitmaps, the float16 steps and the int8 codes; every size checked before anything is decompressed."""
    datasets = checked_datasets(handle, path, newer_minor, major=2)
    for name in ("metadata", "data"):
        if name not in datasets:
            raise FredsetError(f"not a fredset 2.x file: dataset /{name} is missing", path)
    frame = _metadata_dataset(datasets, data, path)
    document = decode_metadata(decompress_frame(frame, "/metadata", path, limit=MAX_METADATA_BYTES), path,
                               strict=not newer_minor, major=2)
    _, k, counts, channels, height, width = _shape(document, path, max_decoded_bytes)
    bits = document["coefficients"]["bits"]

    plane = height * width
    stored = read_dataset(datasets["data"], "data", data, path, (None,))
    raw = decompress_frame(stored, "/data", path, expected=sum(section_sizes(counts, channels, plane, k)))
    sections = split_sections(raw, counts, channels, plane, k)
    masks = unpack_masks(sections.bitmap, plane, k, path)  # increasing and in range by construction
    check_steps(sections.steps, path)
    check_codes(sections.codes, sections.steps, counts, bits, path)
    steps = sections.steps.view("<f2").astype(np.float32)  # float16 -> float32 is exact
    values = dequantize_codes(sections.codes, steps, counts)
    starts = np.cumsum([0] + counts)
    coefficients = [torch.from_numpy(values[starts[label]:starts[label + 1]]) for label in range(len(counts))]
    artifact = _artifact(document, coefficients, torch.from_numpy(masks), path)
    # Every value is step x code with the code in range, and 0 where the step is 0, so the values lie on this
    # grid by construction: set it after validation, which would re-check that with torch at a cost.
    artifact.quantization = _grid(bits, steps)
    return artifact, document


def _grid(bits: int, steps: np.ndarray) -> Quantization:
    """The file's grid, from steps already checked (finite, >= 0, float16 values, [K, C, k] float32):
    Quantization's own checks cost a few torch operations per class, which for many classes would cost more
    than reading the file."""
    grid = object.__new__(Quantization)
    object.__setattr__(grid, "bits", bits)
    object.__setattr__(grid, "steps", [torch.from_numpy(class_steps) for class_steps in steps])
    return grid


def _metadata_dataset(datasets: dict[str, h5py.h5d.DatasetID], data: bytes, path: str) -> np.ndarray:
    """/metadata's stored bytes (JSON in 1.x, a zstd frame of it in 2.x), after the 4 MiB bound."""
    metadata_bytes = datasets["metadata"].get_storage_size()  # = its size: checked by structure.checked_datasets
    if metadata_bytes > MAX_METADATA_BYTES:
        raise FredsetError(f"/metadata is {metadata_bytes} bytes, more than the "
                           f"{MAX_METADATA_BYTES} allowed", path)
    return read_dataset(datasets["metadata"], "metadata", data, path, (None,))


def _shape(document: dict[str, Any], path: str, max_decoded_bytes: int) -> tuple[list[str], int, list[int], int,
                                                                                   int, int]:
    """classes, k, counts, C, H, W of a validated document, after the decoded-size limit (FORMAT.md section 7)."""
    image = document["image"]
    channels, height, width = image["channels"], image["height"], image["width"]
    counts = document["instances_per_class"]
    decoded = sum(counts) * channels * height * width * 4
    if decoded > max_decoded_bytes:
        raise FredsetError(f"decoded images would need {decoded} bytes, more than the "
                           f"{max_decoded_bytes}-byte limit (max_decoded_bytes)", path)
    return document["dataset"]["classes"], document["k"], counts, channels, height, width


def _artifact(document: dict[str, Any], coefficients: list[torch.Tensor], masks: torch.Tensor,
              path: str) -> Artifact:
    dataset = document["dataset"]
    image = document["image"]
    try:
        return Artifact(coefficients=coefficients, masks=masks, classes=dataset["classes"],
                        image_size=(image["height"], image["width"]), mean=document["normalization"]["mean"],
                        std=document["normalization"]["std"], dataset=dataset["name"],
                        provenance=document["provenance"], license=document.get("license"),
                        citation=document.get("citation"), dataset_license=dataset.get("license"))
    except FredsetError as error:
        raise FredsetError(error.problem, path) from None


__all__ = ["FileInfo", "read_file", "load", "load_bytes", "HEADER_SIZE", "DEFAULT_MAX_FILE_BYTES",
           "DEFAULT_MAX_DECODED_BYTES"]
