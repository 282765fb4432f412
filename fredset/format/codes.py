"""Format 2.0's /data (spec/FORMAT.md section 13): mask bitmaps, float16 steps and int8 codes, in one zstd frame.

The sections are plain arrays laid end to end, so zstd sees every class at once (one frame saves ~40 B per
class over one frame per class) and codes stay one per byte (as small as bit-packed codes once compressed,
docs/RESULTS.md). Every check runs in numpy: in a fresh process each first torch operation costs far more.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from ..errors import FredsetError

__all__ = ["FLOAT16_LARGEST_BITS", "Sections", "check_codes", "check_steps", "dequantize_codes", "pack_masks",
           "section_sizes", "split_sections", "unpack_masks"]

FLOAT16_LARGEST_BITS = 0x7BFF  # 65504: every bit pattern above is negative (sign bit), infinite or NaN
_UNPACK_CHUNK_BYTES = 2**26  # the bitmaps are unpacked in row chunks of at most this many bytes


class Sections(NamedTuple):
    """The three sections of a decompressed /data frame, as read-only views."""

    bitmap: np.ndarray  # [K, ceil(H*W/8)] uint8
    steps: np.ndarray  # [K, C, k] the little-endian float16 steps' bits, as uint16
    codes: np.ndarray  # [N, C, k] int8


def section_sizes(counts: Sequence[int], channels: int, plane: int, k: int) -> tuple[int, int, int]:
    """Bytes of the mask bitmaps, the steps and the codes: K*ceil(H*W/8), 2*K*C*k, N*C*k."""
    classes = len(counts)
    return classes * ((plane + 7) // 8), 2 * classes * channels * k, sum(counts) * channels * k


def split_sections(raw: bytes, counts: Sequence[int], channels: int, plane: int, k: int) -> Sections:
    """Views of the three sections of ``raw`` (whose length the caller checked against :func:`section_sizes`)."""
    masks_bytes, steps_bytes, codes_bytes = section_sizes(counts, channels, plane, k)
    classes = len(counts)
    bitmap = np.frombuffer(raw, np.uint8, masks_bytes, 0).reshape(classes, (plane + 7) // 8)
    steps = np.frombuffer(raw, "<u2", steps_bytes // 2, masks_bytes).reshape(classes, channels, k)
    codes = np.frombuffer(raw, np.int8, codes_bytes, masks_bytes + steps_bytes).reshape(sum(counts), channels, k)
    return Sections(bitmap, steps, codes)


def pack_masks(masks: np.ndarray, plane: int) -> np.ndarray:
    """Masks [K, k] (flat indices p) as bitmaps [K, ceil(plane/8)]: bit p mod 8 (LSB first) of byte p div 8."""
    classes, k = masks.shape
    bitmap = np.zeros((classes, (plane + 7) // 8), np.uint8)
    flat = masks.reshape(-1).astype(np.int64)
    rows = np.repeat(np.arange(classes), k)
    np.bitwise_or.at(bitmap, (rows, flat >> 3), (1 << (flat & 7)).astype(np.uint8))
    return bitmap


def unpack_masks(bitmap: np.ndarray, plane: int, k: int, path: str) -> np.ndarray:
    """Bitmaps [K, ceil(plane/8)] -> masks int64 [K, k], increasing; refuses a row with other than k bits set
    or with a padding bit (beyond ``plane``) set. Unpacked in chunks of rows, so the work memory stays small."""
    classes, width = bitmap.shape
    masks = np.empty((classes, k), np.int64)
    rows = max(1, _UNPACK_CHUNK_BYTES // (8 * width))
    for start in range(0, classes, rows):
        bits = np.unpackbits(bitmap[start:start + rows], axis=1, bitorder="little")
        padding = bits[:, plane:].any(axis=1)
        if padding.any():
            label = start + int(np.flatnonzero(padding)[0])
            raise FredsetError(f"/data: the mask bitmap of class {label} sets a padding bit (bits from "
                               f"H*W = {plane} on must be 0)", path)
        counts = bits.sum(axis=1, dtype=np.int64)
        wrong = np.flatnonzero(counts != k)
        if wrong.size:
            label = start + int(wrong[0])
            raise FredsetError(f"/data: the mask bitmap of class {label} sets {int(counts[wrong[0]])} bits, "
                               f"expected k = {k}", path)
        masks[start:start + len(bits)] = np.nonzero(bits)[1].reshape(-1, k)
    return masks


def check_steps(steps: np.ndarray, path: str) -> None:
    """Steps (float16 bits [K, C, k]) must be finite and >= 0, and not -0: every bit pattern up to 0x7BFF."""
    if steps.size and int(steps.max()) > FLOAT16_LARGEST_BITS:
        label, channel, index = (int(i) for i in np.unravel_index(int(np.argmax(steps > FLOAT16_LARGEST_BITS)),
                                                                  steps.shape))
        value = steps[label, channel, index].view("<f2")
        shown = "-0.0" if value == 0 else str(float(value))
        raise FredsetError(f"/data: steps must be finite and >= 0 (not -0.0); class {label}, channel {channel}, "
                           f"frequency {index} holds {shown}", path)


def check_codes(codes: np.ndarray, steps: np.ndarray, counts: Sequence[int], bits: int, path: str) -> None:
    """Codes [N, C, k] must be in the ``bits``-bit range -2^(b-1) .. 2^(b-1)-1, and 0 wherever the class's
    step is 0 (so a coefficient has one code and no value is -0.0)."""
    low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    if codes.size and (int(codes.min()) < low or int(codes.max()) > high):
        instance = int(np.flatnonzero(((codes < low) | (codes > high)).reshape(len(codes), -1).any(axis=1))[0])
        label = int(np.searchsorted(np.cumsum(counts), instance, side="right"))
        outside = codes[instance][(codes[instance] < low) | (codes[instance] > high)]
        raise FredsetError(f"/data: code {int(outside[0])} of instance {instance} (class {label}) is outside the "
                           f"{bits}-bit range {low}..{high}", path)
    zero = steps == 0
    if zero.any():
        stray = np.repeat(zero, counts, axis=0) & (codes != 0)
        if stray.any():
            instance, channel, index = (int(i) for i in np.unravel_index(int(np.argmax(stray)), stray.shape))
            label = int(np.searchsorted(np.cumsum(counts), instance, side="right"))
            raise FredsetError(f"/data: class {label} has step 0 at channel {channel}, frequency {index} but "
                               f"instance {instance} has code {int(codes[instance, channel, index])} there "
                               "(codes must be 0 where the step is 0)", path)


def dequantize_codes(codes: np.ndarray, steps: np.ndarray, counts: Sequence[int]) -> np.ndarray:
    """float32 [N, C, k]: step x code, each class's steps (float32 [K, C, k]) times its instances' codes.

    The product of a binary16 step (11 significant bits) and a code (at most 8) is exact in binary32, so this
    is bit for bit :func:`fredset.quantize.dequantize` and any decoder's result, FMA or not.
    """
    values = codes.astype(np.float32)
    if len(set(counts)) == 1:  # broadcast: no per-instance copy of the steps
        values.reshape(len(counts), counts[0], *codes.shape[1:])[...] *= steps[:, None]
    else:
        values *= np.repeat(steps, counts, axis=0)
    return values
