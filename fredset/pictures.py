"""Pictures of an artifact: decoded images one row per class, and the per-class frequency masks."""

from __future__ import annotations

import os
import struct
import zlib

import numpy as np
import torch

from .artifact import Artifact, to_pixel_space
from .dct import DEFAULT_MAX_WORKING_BYTES, decode_classes
from .errors import FredsetError
from .files import write_atomically

MAX_PICTURE_BYTES = 256 * 2**20  # a larger PNG is of no use to look at; refusing it bounds inspect's memory


def _check_picture(height: int, width: int, channels: int, what: str) -> None:
    """FredsetError before allocating a picture (and the float32 images behind it) over MAX_PICTURE_BYTES."""
    if height * width * channels * 4 > MAX_PICTURE_BYTES:
        raise FredsetError(f"the {what} picture would be {width}x{height} pixels, more than the "
                           f"{MAX_PICTURE_BYTES >> 20} MiB allowed; use a smaller --scale (or --per-class)")


def class_grid(artifact: Artifact, *, per_class: int = 10, scale: int = 1, gap: int = 1,
               max_working_bytes: int = DEFAULT_MAX_WORKING_BYTES) -> np.ndarray:
    """Decoded images in pixel space, one row per class (up to ``per_class`` each): uint8 [H', W', 1 or 3].

    Three-channel data is shown in colour; other channel counts show the first channel in grey.
    """
    height, width = artifact.image_size
    shown = 3 if artifact.channels == 3 else 1
    columns = max(1, min(per_class, max(artifact.counts)))
    # Only the pictures shown are decoded (the first ``columns`` instances of each class, the shown
    # channels), with the decode's working memory bounded as in Artifact.decode.
    cell_h, cell_w = height * scale + gap, width * scale + gap
    _check_picture(artifact.num_classes * cell_h + gap, columns * cell_w + gap, shown, "image grid")
    blocks = [block[:columns, :shown].to(torch.float32) for block in artifact.coefficients]
    images = to_pixel_space(decode_classes(blocks, artifact.masks, height, width, max_working_bytes=max_working_bytes),
                            artifact.mean[:shown], artifact.std[:shown], inplace=True)
    canvas = np.zeros((artifact.num_classes * cell_h + gap, columns * cell_w + gap, shown), np.uint8)
    canvas[:] = 64  # dark grey background marks missing cells and gaps
    start = 0
    for label, count in enumerate(artifact.counts):
        block = images[start:start + min(count, columns)]
        start += min(count, columns)
        pixels = (block * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        pixels = pixels.repeat(scale, axis=1).repeat(scale, axis=2)
        for column, picture in enumerate(pixels):
            top, left = gap + label * cell_h, gap + column * cell_w
            canvas[top:top + height * scale, left:left + width * scale] = picture
    return canvas


def mask_grid(artifact: Artifact, *, scale: int = 4, gap: int = 2, columns: int = 10) -> np.ndarray:
    """Each class's mask as an H x W plane (white = kept frequency, DC top-left), tiled: uint8 [H', W', 1]."""
    height, width = artifact.image_size
    columns = max(1, min(columns, artifact.num_classes))
    rows = -(-artifact.num_classes // columns)
    cell_h, cell_w = height * scale + gap, width * scale + gap
    _check_picture(rows * cell_h + gap, columns * cell_w + gap, 1, "mask")
    canvas = np.full((rows * cell_h + gap, columns * cell_w + gap, 1), 128, np.uint8)
    for label, mask in enumerate(artifact.masks.cpu().numpy()):
        plane = np.zeros(height * width, np.uint8)
        plane[mask] = 255
        plane = plane.reshape(height, width).repeat(scale, axis=0).repeat(scale, axis=1)
        top, left = gap + (label // columns) * cell_h, gap + (label % columns) * cell_w
        canvas[top:top + height * scale, left:left + width * scale, 0] = plane
    return canvas


def encode_png(pixels: np.ndarray) -> bytes:
    """An 8-bit greyscale ([H, W, 1]) or RGB ([H, W, 3]) PNG."""
    height, width, channels = pixels.shape
    colour_type = {1: 0, 3: 2}[channels]
    rows = np.concatenate([np.zeros((height, 1), np.uint8), pixels.reshape(height, width * channels)], axis=1)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows.tobytes(), 9))
            + chunk(b"IEND", b""))


def write_png(path: str | os.PathLike, pixels: np.ndarray) -> None:
    """Write ``pixels`` as a PNG, atomically."""
    write_atomically(path, encode_png(pixels))
