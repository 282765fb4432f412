"""Coefficient encodings of format 1.0: float32, float16, int8 (affine per class, channel and frequency), byte
shuffle, one zstandard frame per class, with the decompressed size fixed in advance; and the zstd frame
rules both versions share (:func:`compress_frame`, :func:`decompress_frame`). Format 2.0's /data sections
are in :mod:`fredset.format.codes`."""

from __future__ import annotations

import threading

import numpy as np
import zstandard

from ..artifact import all_finite
from ..errors import FredsetError
from .metadata import BITS_ENCODINGS

ENCODINGS_1 = ("float32", "float16", "int8")  # written as format 1.0
ENCODINGS_2 = tuple(BITS_ENCODINGS)  # "q2".."q8": low-bit codes, written as format 2.0
ENCODINGS = ENCODINGS_1 + ENCODINGS_2
_PER_THREAD = threading.local()
_STORED_DTYPE = {"float32": np.dtype("<f4"), "float16": np.dtype("<f2"), "int8": np.dtype("i1")}
INT8_LIMIT = 127  # int8 codes use -127..127 so the scale is symmetric around the offset


def quantize_int8(block: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Affine int8 codes for a class block [n, C, k] with scale and offset per (channel, frequency).

    value ~= offset + scale * code, offset the midpoint and scale the half-range / 127 of the
    class's values at that channel and frequency, as image codecs quantise each DCT frequency
    with its own step.
    """
    low, high = block.min(axis=0), block.max(axis=0)
    offset = ((high + low) / 2).astype("<f4")
    scale = ((high - low) / (2 * INT8_LIMIT)).astype("<f4")
    safe = np.where(scale > 0, scale, 1).astype("<f4")
    codes = np.rint((block - offset) / safe)
    codes = np.clip(codes, -INT8_LIMIT, INT8_LIMIT).astype("i1")
    return codes, scale, offset


def dequantize_int8(codes: np.ndarray, scale: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """``offset + scale * code`` in float32. Absurd scales overflow to inf silently: the reader's finite
    check refuses the result with one line, so numpy's warning would only add a second one."""
    with np.errstate(over="ignore", invalid="ignore"):
        return (offset + scale * codes.astype("<f4")).astype(np.float32)


def shuffle_bytes(raw: np.ndarray, itemsize: int) -> np.ndarray:
    """Byte i of every element together, i = 0..itemsize-1 (all low bytes first)."""
    return np.ascontiguousarray(raw.reshape(-1, itemsize).T).reshape(-1)


def unshuffle_bytes(raw: np.ndarray, itemsize: int) -> np.ndarray:
    """Inverse of :func:`shuffle_bytes`. One strided copy per byte plane (faster than a transpose copy,
    docs/RESULTS.md)."""
    planes = raw.reshape(itemsize, -1)
    out = np.empty((planes.shape[1], itemsize), np.uint8)
    for index in range(itemsize):
        out[:, index] = planes[index]
    return out.reshape(-1)


def encode_block(values: np.ndarray, encoding: str, shuffle: bool, level: int) -> bytes:
    """Stored values of one class (already quantised for int8) -> one zstd frame with its content size."""
    stored = np.ascontiguousarray(values, dtype=_STORED_DTYPE[encoding])
    raw = stored.reshape(-1).view(np.uint8)
    if shuffle and stored.itemsize > 1:
        raw = shuffle_bytes(raw, stored.itemsize)
    return compress_frame(raw.tobytes(), level)


def compress_frame(raw: bytes, level: int) -> bytes:
    """One zstd frame of ``raw`` that declares its content size (both versions require it), no checksum."""
    compressor = zstandard.ZstdCompressor(level=level, write_content_size=True, write_checksum=False)
    return compressor.compress(raw)


def _decompressor() -> zstandard.ZstdDecompressor:
    """One decompression context per thread, reused across frames and files."""
    if not hasattr(_PER_THREAD, "decompressor"):
        _PER_THREAD.decompressor = zstandard.ZstdDecompressor()
    return _PER_THREAD.decompressor


def decode_block(frame: bytes, shape: tuple[int, int, int], encoding: str, shuffle: bool,
                 what: str, path: str) -> np.ndarray:
    """One zstd frame -> stored values [n, C, k] (float32 or int8 codes).

    The frame must declare exactly the size that ``shape`` and ``encoding`` imply; that is checked
    before decompressing, so a hostile frame cannot make the reader allocate more.
    """
    dtype = _STORED_DTYPE[encoding]
    expected = int(np.prod(shape)) * dtype.itemsize
    data = np.frombuffer(decompress_frame(frame, what, path, expected=expected), dtype=np.uint8)
    if shuffle and dtype.itemsize > 1:
        data = unshuffle_bytes(data, dtype.itemsize)
    values = data.view(dtype).reshape(shape)
    if encoding == "int8":
        return values
    values = values.astype(np.float32, copy=False)  # no copy for float32 on little-endian machines...
    if not values.flags.writeable:  # ...unless it still views the immutable decompressed bytes
        values = values.copy()
    if not all_finite(values):
        raise FredsetError(f"{what}: coefficients hold NaN or infinity", path)
    return values


def decompress_frame(frame: bytes | memoryview | np.ndarray, what: str, path: str, *, expected: int | None = None,
                     limit: int | None = None) -> bytes:
    """The content of ``frame``, which must be exactly one zstd frame declaring its content size: ``expected``
    bytes exactly, or at most ``limit`` bytes. The declared size is checked before anything is decompressed,
    so a hostile frame cannot make the reader allocate more than the metadata implies."""
    try:
        declared = zstandard.frame_content_size(frame)
    except zstandard.ZstdError as error:
        raise FredsetError(f"{what}: not a zstd frame ({error})", path) from None
    if declared < 0:
        raise FredsetError(f"{what}: zstd frame does not declare its size", path)
    if expected is not None and declared != expected:
        raise FredsetError(f"{what}: zstd frame declares {declared} bytes, the metadata implies {expected}", path)
    if limit is not None and declared > limit:
        raise FredsetError(f"{what}: zstd frame declares {declared} bytes, more than the {limit} allowed", path)
    # Streaming, not one-shot: one-shot allocates the declared size up front, so a corrupt 4 KB
    # frame declaring gigabytes would cost gigabytes; streaming output grows only with real data.
    stream = _decompressor().decompressobj()
    try:
        raw = stream.decompress(frame)
    except zstandard.ZstdError as error:
        raise FredsetError(f"{what}: corrupt zstd frame ({error})", path) from None
    if len(raw) != declared or not stream.eof:
        raise FredsetError(f"{what}: zstd frame decompressed to {len(raw)} bytes, expected {declared}", path)
    if stream.unused_data:
        raise FredsetError(f"{what}: {len(stream.unused_data)} stray bytes after the zstd frame", path)
    return raw
