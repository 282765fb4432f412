"""The in-memory distilled dataset: per-class frequency masks and sparse DCT coefficients.

An :class:`Artifact` is what the format module reads and writes and what distillation produces.
Coefficients are orthonormal DCT-II coefficients of images in the dataset's normalised space.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .dct import DEFAULT_MAX_WORKING_BYTES, decode_classes
from .errors import FredsetError
from .quantize import Quantization

# Generous structural limits: they keep a hostile file from asking for absurd shapes.
MAX_CLASSES = 100_000
MAX_CHANNELS = 64
MAX_SIDE = 4096


@dataclass(eq=False)
class Artifact:
    """A distilled dataset in frequency form.

    Attributes:
        coefficients: one float32 tensor [n_c, C, k] per class, in class order.
        masks: int64 [K, k]; row c holds class c's k flat indices (u*W + v) into the H x W
            frequency plane, strictly increasing. Shared by all instances and channels of the class.
        classes: class names, index = label.
        image_size: (H, W).
        mean, std: per-channel normalisation; decoded values are (pixel - mean) / std.
        dataset: name of the source dataset.
        provenance: how the data was made (objective, budget, hyper-parameters, seed, ...).
        license, citation: optional free text carried with the file (licence of this data, how to cite).
        dataset_license: licence of the source dataset, when known.
        quantization: the grid the coefficients lie on (bits and per-class steps), when they were made
            for low-bit codes; the writer then stores those codes losslessly.
    """

    coefficients: list[torch.Tensor]
    masks: torch.Tensor
    classes: list[str]
    image_size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    dataset: str
    provenance: dict[str, Any] = field(default_factory=dict)
    license: str | None = None
    citation: str | None = None
    dataset_license: str | None = None
    quantization: Quantization | None = None

    def __post_init__(self) -> None:
        self.coefficients = list(self.coefficients)
        self.classes = [str(c) for c in self.classes]
        self.image_size = tuple(int(s) for s in self.image_size)  # type: ignore[assignment]
        self.mean = tuple(float(m) for m in self.mean)
        self.std = tuple(float(s) for s in self.std)
        self.validate()

    # -- derived facts -------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> int:
        return int(self.coefficients[0].shape[1])

    @property
    def k(self) -> int:
        return int(self.masks.shape[1])

    @property
    def counts(self) -> list[int]:
        """Instances per class."""
        return [int(c.shape[0]) for c in self.coefficients]

    @property
    def num_instances(self) -> int:
        return sum(self.counts)

    @property
    def labels(self) -> torch.Tensor:
        """Hard labels, class-sorted: counts[0] x 0, then counts[1] x 1, ..."""
        return torch.from_numpy(np.repeat(np.arange(self.num_classes), self.counts))

    @property
    def decoded_bytes(self) -> int:
        """Bytes of the decoded images as float32."""
        height, width = self.image_size
        return self.num_instances * self.channels * height * width * 4

    # -- behaviour -----------------------------------------------------------------------
    def decode(self, device: torch.device | str | None = None, *, pixel_space: bool = False,
               max_working_bytes: int = DEFAULT_MAX_WORKING_BYTES) -> torch.Tensor:
        """All images [N, C, H, W] float32 on ``device``, class-sorted like :attr:`labels`.

        Normalised space by default; ``pixel_space=True`` maps to [0, 1] with x*std + mean, clamped.
        Besides the output, the inverse DCT's intermediates stay under ``max_working_bytes`` (and,
        where one image plane allows, under :data:`fredset.dct.WORKING_CHUNK_BYTES`); a decode that
        cannot is refused with :class:`FredsetError` before anything is allocated
        (:func:`fredset.dct.decode_classes`). FredDataset passes its ``max_decoded_bytes``.
        """
        device = torch.device(device or "cpu")
        coefficients = [c.to(device=device, dtype=torch.float32) for c in self.coefficients]
        images = decode_classes(coefficients, self.masks.to(device), *self.image_size,
                                max_working_bytes=max_working_bytes)
        if pixel_space:
            images = to_pixel_space(images, self.mean, self.std, inplace=True)  # fresh: no second copy
        return images

    def pixel_range(self) -> dict[str, float | None]:
        """The decoded pixel values before any clamping: ``min``, ``max`` (None where a file's mean or std
        takes them beyond the float64 range) and ``outside`` (the fraction of values outside [0, 1]). Real
        images stay in [0, 1] up to the ringing of the dropped frequencies; distilled ones may not, which a
        quantiser, a PNG or a network without normalisation feels."""
        pixels = to_pixel_space(self.decode().double(), self.mean, self.std, inplace=True, clamp=False)
        outside = torch.count_nonzero((pixels < 0) | (pixels > 1)).item() / max(1, pixels.numel())
        low, high = float(pixels.min()), float(pixels.max())
        return {"min": low if math.isfinite(low) else None, "max": high if math.isfinite(high) else None,
                "outside": outside}

    def validate(self) -> None:
        """Raise :class:`FredsetError` unless every field is consistent."""
        height, width = self.image_size if len(self.image_size) == 2 else (0, 0)
        if len(self.image_size) != 2 or not (1 <= height <= MAX_SIDE and 1 <= width <= MAX_SIDE):
            raise FredsetError(f"image_size must be (H, W) with 1..{MAX_SIDE}, got {self.image_size}")
        if not 1 <= len(self.classes) <= MAX_CLASSES:
            raise FredsetError(f"need 1..{MAX_CLASSES} classes, got {len(self.classes)}")
        if len(set(self.classes)) != len(self.classes):
            raise FredsetError("class names must be unique")
        if len(self.coefficients) != len(self.classes):
            raise FredsetError(f"{len(self.coefficients)} coefficient tensors for {len(self.classes)} classes")
        if not isinstance(self.masks, torch.Tensor) or self.masks.dim() != 2 \
                or self.masks.shape[0] != len(self.classes) or self.masks.dtype != torch.int64:
            raise FredsetError(f"masks must be an int64 tensor [{len(self.classes)}, k]")
        k = self.masks.shape[1]
        if not 1 <= k <= height * width:
            raise FredsetError(f"k must be in 1..{height * width} (H*W), got {k}")
        validate_masks(self.masks, height * width)
        channels = None
        for label, block in enumerate(self.coefficients):
            if not isinstance(block, torch.Tensor) or block.dtype != torch.float32 or block.dim() != 3:
                raise FredsetError(f"class {label}: coefficients must be a float32 tensor [n, C, k]")
            channels = channels or block.shape[1]
            if block.shape[0] < 1 or block.shape[1:] != (channels, k):
                raise FredsetError(f"class {label}: coefficients have shape {tuple(block.shape)}, "
                                   f"expected [n >= 1, {channels}, {k}]")
            if not all_finite(_numpy(block)):
                raise FredsetError(f"class {label}: coefficients hold NaN or infinity")
        if not 1 <= channels <= MAX_CHANNELS:
            raise FredsetError(f"channels must be in 1..{MAX_CHANNELS}, got {channels}")
        for name, values in (("mean", self.mean), ("std", self.std)):
            if len(values) != channels or not all(math.isfinite(v) for v in values):
                raise FredsetError(f"{name} must hold {channels} finite numbers, got {list(values)}")
        if min(self.std) <= 0:
            raise FredsetError(f"std must be positive, got {list(self.std)}")
        if not isinstance(self.dataset, str) or not self.dataset:
            raise FredsetError("dataset name must be a non-empty string")
        if self.quantization is not None:
            self._validate_quantization(channels, k)

    def _validate_quantization(self, channels: int, k: int) -> None:
        grid = self.quantization
        if not isinstance(grid, Quantization) or len(grid.steps) != len(self.classes):
            raise FredsetError(f"quantization must be a Quantization with steps for {len(self.classes)} classes")
        for label, steps in enumerate(grid.steps):
            if tuple(steps.shape) != (channels, k):
                raise FredsetError(f"class {label}: quantization steps have shape {tuple(steps.shape)}, "
                                   f"expected [{channels}, {k}]")
        for label, (block, exact) in enumerate(zip(self.coefficients, grid.apply(self.coefficients))):
            if not torch.equal(exact, block.detach().float()):
                raise FredsetError(f"class {label}: coefficients are not on their {grid.bits}-bit quantization grid")


def validate_masks(masks: torch.Tensor | np.ndarray, plane_size: int) -> None:
    """Each row strictly increasing (so sorted and unique) and inside [0, plane_size)."""
    masks = _numpy(masks)
    if masks.size == 0:
        raise FredsetError("masks are empty")
    if int(masks.min()) < 0 or int(masks.max()) >= plane_size:
        raise FredsetError(f"mask index out of range 0..{plane_size - 1}")
    if masks.shape[1] > 1 and not bool((masks[:, 1:] > masks[:, :-1]).all()):
        raise FredsetError("mask indices must be strictly increasing within each class (sorted, no repeats)")


def all_finite(values: np.ndarray) -> bool:
    """No NaN or infinity; exact for float32 and float16, whose float64 sum cannot overflow."""
    with np.errstate(all="ignore"):
        return math.isfinite(values.sum(dtype=np.float64))


def _numpy(values: torch.Tensor | np.ndarray) -> np.ndarray:
    """Checks run in numpy: in a fresh process each first torch operation costs far more than numpy's
    (docs/RESULTS.md, load time)."""
    return values if isinstance(values, np.ndarray) else values.detach().cpu().numpy()


def to_pixel_space(images: torch.Tensor, mean: Sequence[float], std: Sequence[float], *,
                   inplace: bool = False, clamp: bool = True) -> torch.Tensor:
    """Map normalised images [N, C, H, W] to pixel values, clamped to [0, 1] unless ``clamp=False``
    (overwriting them if ``inplace``)."""
    shape = (1, -1, 1, 1)
    mean_t = torch.tensor(mean, dtype=images.dtype, device=images.device).view(shape)
    std_t = torch.tensor(std, dtype=images.dtype, device=images.device).view(shape)
    pixels = (images.mul_(std_t) if inplace else images * std_t).add_(mean_t)
    return pixels.clamp_(0.0, 1.0) if clamp else pixels
