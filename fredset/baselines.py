"""Baselines at equal bytes: random real images, compressed to the budget a ``.fredset`` file spends.

A distilled file is worth sharing only if it trains a network better than what the same bytes buy plainly:
random real training images of each class, stored as one mosaic picture per class with an ordinary codec.
:func:`build_baseline` makes that training set exactly as a receiver would decode it (compressed, decoded,
cut into tiles, normalised), so the network trains on what the bytes really carry.

Policy, per class: the most images whose mosaic fits the budget at the lowest quality allowed (``min_quality``),
then the highest quality at which those images still fit. Only the codec's output counts (one JPEG or WebP
stream per class, headers included; ``raw``: the uint8 pixels), whereas a ``.fredset`` file counts its whole
file, metadata and checksums included, so the comparison leans towards the baseline, if anything.

Pillow is the codec (the ``images`` extra: ``pip install 'fredset[images]'``); ``raw`` needs no codec.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from .artifact import to_pixel_space
from .data.realdata import RealData
from .data.statistics import normalise
from .errors import FredsetError

__all__ = ["CLASS_STRIDE", "DEFAULT_MIN_QUALITY", "KINDS", "MAX_QUALITY", "Baseline", "build_baseline",
           "class_generator", "encode_mosaic", "decode_mosaic"]

KINDS = ("jpeg", "webp", "raw")
DEFAULT_MIN_QUALITY = 10   # low enough to buy many images; the team's Fashion-MNIST figure (44 images) uses it
MAX_QUALITY = 100
CLASS_STRIDE = 100003      # class c of seed s draws with a generator seeded s * CLASS_STRIDE + c
NEIGHBOURS = 3             # sizes grow with m and quality only almost monotonically: look this far past a search
CODECS = {"jpeg": "Pillow JPEG, optimize=True (optimised Huffman tables; smaller than without at every size tried)",
          "webp": "Pillow WebP, lossy, method=6"}


@dataclass(eq=False)
class Baseline:
    """A baseline training set: ``images`` float32 ``[N, C, H, W]`` normalised like the dataset, ``labels`` int64.

    ``per_class[c]`` is ``{"label", "class", "images", "quality", "bytes"}``: the images kept, the codec
    quality (None for raw) and the codec's output bytes for class c. ``bytes_per_class`` is the budget B.
    """

    kind: str
    bytes_per_class: int
    min_quality: int | None
    seed: int
    images: torch.Tensor
    labels: torch.Tensor
    per_class: list[dict[str, Any]] = field(default_factory=list)

    @property
    def total_images(self) -> int:
        return sum(record["images"] for record in self.per_class)

    @property
    def total_bytes(self) -> int:
        """The codec's output bytes summed over classes (not a file: no container, no labels, no metadata)."""
        return sum(record["bytes"] for record in self.per_class)

    def summary(self) -> dict[str, Any]:
        """JSON-ready description (no tensors)."""
        counts = [record["images"] for record in self.per_class]
        qualities = [record["quality"] for record in self.per_class if record["quality"] is not None]
        return {"kind": self.kind, "bytes_per_class": self.bytes_per_class, "min_quality": self.min_quality,
                "seed": self.seed, "codec": CODECS.get(self.kind, "uint8 pixels, no codec"),
                "images_per_class": {"min": min(counts), "max": max(counts),
                                     "mean": round(sum(counts) / len(counts), 2)},
                "quality": {"min": min(qualities), "max": max(qualities)} if qualities else None,
                "total_images": self.total_images, "total_bytes": self.total_bytes,
                "bytes_counted": "codec output per class (headers included)", "per_class": self.per_class}


def _pillow() -> Any:
    """Pillow's Image module, or the one-line FredsetError that says how to get it."""
    try:
        from PIL import Image
    except ImportError:
        raise FredsetError("the jpeg and webp baselines need Pillow, which is not installed: "
                           "pip install 'fredset[images]' (or pip install pillow)") from None
    return Image


def class_generator(seed: int, label: int) -> torch.Generator:
    """The generator that draws class ``label``'s images for ``seed``: classes draw independently of each other."""
    try:
        return torch.Generator().manual_seed(int(seed) * CLASS_STRIDE + int(label))
    except RuntimeError:
        raise FredsetError(f"baseline seed {seed} is out of range") from None


def _mosaic(pixels: np.ndarray) -> np.ndarray:
    """uint8 tiles [m, H, W, C] laid out row by row in ceil(sqrt(m)) columns; empty cells are black."""
    count, height, width, channels = pixels.shape
    columns = math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    canvas = np.zeros((rows * height, columns * width, channels), np.uint8)
    for index in range(count):
        row, column = divmod(index, columns)
        canvas[row * height:(row + 1) * height, column * width:(column + 1) * width] = pixels[index]
    return canvas


def encode_mosaic(pixels: np.ndarray, kind: str, quality: int) -> bytes:
    """The mosaic of uint8 tiles ``pixels`` [m, H, W, C] (C = 1 or 3) compressed with ``kind`` at ``quality``."""
    image_module = _pillow()
    canvas = _mosaic(pixels)
    image = image_module.fromarray(canvas[:, :, 0] if canvas.shape[2] == 1 else canvas,
                                   "L" if canvas.shape[2] == 1 else "RGB")
    out = io.BytesIO()
    if kind == "jpeg":
        image.save(out, format="JPEG", quality=quality, optimize=True)
    elif kind == "webp":
        image.save(out, format="WEBP", quality=quality, method=6, lossless=False)
    else:
        raise FredsetError(f"unknown codec {kind!r}; choose jpeg or webp")
    return out.getvalue()


def decode_mosaic(data: bytes, count: int, height: int, width: int, channels: int) -> np.ndarray:
    """The receiver's side: decode ``data`` and cut the first ``count`` tiles back out, uint8 [m, H, W, C]."""
    image_module = _pillow()
    with image_module.open(io.BytesIO(data)) as image:
        canvas = np.asarray(image.convert("L" if channels == 1 else "RGB"))
    canvas = canvas.reshape(canvas.shape[0], canvas.shape[1], channels)
    columns = math.ceil(math.sqrt(count))
    tiles = np.empty((count, height, width, channels), np.uint8)
    for index in range(count):
        row, column = divmod(index, columns)
        tiles[index] = canvas[row * height:(row + 1) * height, column * width:(column + 1) * width]
    return tiles


class _ClassPool:
    """One class's images in the order the generator drew them, turned into uint8 pixels only as far as needed."""

    def __init__(self, real: RealData, label: int, seed: int) -> None:
        indices = real.class_indices()[label]
        order = torch.randperm(int(indices.numel()), generator=class_generator(seed, label))
        self.indices = indices[order.to(indices.device)]
        self.real = real
        self.pixels = np.empty((0, *real.image_size, real.channels), np.uint8)

    def __len__(self) -> int:
        return int(self.indices.numel())

    def first(self, count: int) -> np.ndarray:
        have = len(self.pixels)
        if count > have:
            grow = max(count, 2 * have)
            chosen = self.indices[have:grow].to(self.real.images.device)
            block = to_pixel_space(self.real.images[chosen].to(torch.float32), self.real.mean, self.real.std,
                                   inplace=True)
            block = (block * 255).round_().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
            self.pixels = np.concatenate([self.pixels, block])
        return self.pixels[:count]


def _largest(fits: Callable[[int], bool], low: int, high: int) -> int:
    """The largest v in [low, high] with fits(v), given fits(low): exponential steps up from low, a binary search
    between the last fit and the first miss, then NEIGHBOURS values past the answer checked (and followed) in
    case the size is not monotonic there."""
    step = 1
    miss = None
    while miss is None:
        probe = min(low + step, high)
        if probe == low:
            return low
        if fits(probe):
            low = probe
            step *= 2
        else:
            miss = probe
    while miss - low > 1:
        middle = (low + miss) // 2
        if fits(middle):
            low = middle
        else:
            miss = middle
    beyond = [value for value in range(low + 2, min(low + NEIGHBOURS, high) + 1) if fits(value)]
    return _largest(fits, max(beyond), high) if beyond else low


def _fit_class(pool: _ClassPool, kind: str, budget: int, min_quality: int, label: int, name: str) -> tuple[
        np.ndarray, int | None, int]:
    """(decoded uint8 tiles, quality, bytes) for one class under the policy."""
    height, width = pool.real.image_size
    channels = pool.real.channels
    if kind == "raw":
        count = min(budget // (channels * height * width), len(pool))
        if count < 1:
            raise FredsetError(f"the raw baseline cannot fit one {channels}x{height}x{width} image "
                               f"({channels * height * width:,} bytes) in {budget:,} bytes per class")
        return pool.first(count), None, count * channels * height * width
    sizes: dict[tuple[int, int], bytes] = {}

    def encoded(count: int, quality: int) -> bytes:
        if (count, quality) not in sizes:
            sizes[count, quality] = encode_mosaic(pool.first(count), kind, quality)
        return sizes[count, quality]

    if len(encoded(1, min_quality)) > budget:
        raise FredsetError(f"the {kind} baseline cannot fit one {channels}x{height}x{width} image of class {label} "
                           f"({name}) in {budget:,} bytes per class: it takes {len(encoded(1, min_quality)):,} "
                           f"bytes at quality {min_quality}")
    count = _largest(lambda m: len(encoded(m, min_quality)) <= budget, 1, len(pool))
    quality = _largest(lambda q: len(encoded(count, q)) <= budget, min_quality, MAX_QUALITY)
    data = encoded(count, quality)
    return decode_mosaic(data, count, height, width, channels), quality, len(data)


def build_baseline(real: RealData, kind: str, bytes_per_class: int, *, seed: int = 0,
                   min_quality: int = DEFAULT_MIN_QUALITY) -> Baseline:
    """The ``kind`` baseline ("jpeg", "webp" or "raw") of ``real`` (a train split) at ``bytes_per_class`` bytes.

    Per class: random images of the class, drawn without replacement by :func:`class_generator` (seed, class),
    in that order; as many as fit (``min_quality`` for the codecs), then the best quality for that many. The
    bytes counted are the codec's output for the class's one mosaic picture; ``raw`` stores m = B // (C·H·W)
    images as uint8 with no codec. Returned images are what a receiver decodes, re-normalised with the
    dataset's mean and std. Deterministic for a given (real, kind, bytes_per_class, seed, min_quality).
    """
    if kind not in KINDS:
        raise FredsetError(f"unknown baseline {kind!r}; choose one of {', '.join(KINDS)}")
    if isinstance(bytes_per_class, bool) or not isinstance(bytes_per_class, int) or bytes_per_class < 1:
        raise FredsetError(f"baseline bytes per class must be a positive integer (got {bytes_per_class!r})")
    if isinstance(min_quality, bool) or not isinstance(min_quality, int) or not 1 <= min_quality <= MAX_QUALITY:
        raise FredsetError(f"baseline minimum quality must be an integer from 1 to {MAX_QUALITY} "
                           f"(got {min_quality!r})")
    if kind != "raw" and real.channels not in (1, 3):
        raise FredsetError(f"the {kind} baseline needs 1 or 3 channels; {real.name} has {real.channels} "
                           "(use --baseline raw)")
    if kind != "raw":
        _pillow()  # the missing-Pillow error before any work
    tiles, labels, records = [], [], []
    for label, name in enumerate(real.classes):
        pool = _ClassPool(real, label, seed)
        if len(pool) == 0:
            raise FredsetError(f"dataset {real.name!r}: class {label} ({name!r}) has no images to draw a baseline from")
        pixels, quality, size = _fit_class(pool, kind, bytes_per_class, min_quality, label, repr(name))
        tiles.append(torch.from_numpy(np.ascontiguousarray(pixels)).permute(0, 3, 1, 2))
        labels.append(torch.full((len(pixels),), label, dtype=torch.int64))
        records.append({"label": label, "class": name, "images": len(pixels), "quality": quality, "bytes": size})
    images = normalise(torch.cat(tiles).contiguous(), real.mean, real.std)
    return Baseline(kind=kind, bytes_per_class=bytes_per_class, min_quality=None if kind == "raw" else min_quality,
                    seed=seed, images=images, labels=torch.cat(labels), per_class=records)
