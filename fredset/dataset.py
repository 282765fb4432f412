"""FredDataset: a .fredset file decoded once, with a batched inverse DCT, into a ready tensor."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import Dataset, get_worker_info

from .errors import FredsetError
from .files import resolve_device
from .format import DEFAULT_MAX_DECODED_BYTES, DEFAULT_MAX_FILE_BYTES, read_file
from .format.reader import Source


class FredDataset(Dataset):
    """A distilled dataset as a PyTorch Dataset of ``(image, label)`` pairs.

    All instances are decoded at construction on ``device``; nothing stays open afterwards, so on CPU it
    works with any DataLoader, workers included. On CUDA the data already sits on the GPU: use
    :meth:`batches` instead of a DataLoader with workers.

    Args:
        source: path, ``http(s)://`` URL (downloaded once into the cache: :mod:`fredset.remote`), bytes, or
            binary file object of a .fredset file.
        device: where to decode and keep the images: ``None`` means CPU, ``"auto"`` CUDA when available;
            a device asked for by name must exist (:func:`fredset.files.resolve_device`).
        transform: applied to each image tensor in ``__getitem__``.
        target_transform: applied to each integer label in ``__getitem__``.
        pixel_space: serve images in pixel space [0, 1] instead of the normalised space.
        max_file_bytes, max_decoded_bytes: refuse files that would need more than this; the decode's working
            memory (its intermediates, beside the images) is bounded by ``max_decoded_bytes`` as well.
        sha256: the whole file's SHA-256 (hex, as ``sha256sum`` prints it); a file with another is refused.
            A URL with ``sha256`` is cached by that hash (:func:`fredset.format.reader.read_file`).

    Attributes:
        images: float32 [N, C, H, W] on ``device``, class-sorted.
        targets: int64 [N] labels on ``device``.
        classes, class_to_idx: class names and their labels (torchvision convention).
        metadata: the file's metadata document; ``artifact`` and ``info`` hold the rest.
        recommended_lr: training learning rate stored with the data, or None.
    """

    def __init__(self, source: Source, device: torch.device | str | None = None,
                 transform: Callable[[torch.Tensor], Any] | None = None,
                 target_transform: Callable[[int], Any] | None = None, *, pixel_space: bool = False,
                 max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
                 max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES, sha256: str | None = None) -> None:
        self.artifact, self.info = read_file(source, max_file_bytes=max_file_bytes,
                                             max_decoded_bytes=max_decoded_bytes, sha256=sha256)
        self.device = resolve_device(device)
        self.transform = transform
        self.target_transform = target_transform
        self.pixel_space = pixel_space
        try:  # max_decoded_bytes bounds the decode's working memory too, not only its output
            self.images = self.artifact.decode(self.device, pixel_space=pixel_space,
                                               max_working_bytes=max_decoded_bytes)
        except FredsetError as error:
            raise FredsetError(error.problem, self.info.path) from None
        self.targets = self.artifact.labels.to(self.device)
        self.classes = list(self.artifact.classes)
        self.class_to_idx = {name: index for index, name in enumerate(self.classes)}

    @property
    def metadata(self) -> dict[str, Any]:
        return self.info.metadata

    @property
    def recommended_lr(self) -> float | None:
        return self.artifact.provenance.get("recommended_lr")

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        if self.device.type != "cpu" and get_worker_info() is not None:
            raise FredsetError(_WORKERS_ON_DEVICE.format(device=self.device))
        image, target = self.images[index], int(self.targets[index])
        if self.transform is not None:
            image = self.transform(image)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return image, target

    def __getstate__(self) -> dict[str, Any]:
        if self.device.type != "cpu":
            raise FredsetError(_WORKERS_ON_DEVICE.format(device=self.device))
        return self.__dict__.copy()

    def batches(self, batch_size: int, *, shuffle: bool = True, drop_last: bool = False,
                generator: torch.Generator | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One epoch of ``(images, targets)`` batches, indexed on the dataset's device.

        The fast path for full-batch or GPU training: no collation, no copies to the host.
        Per-sample ``transform``/``target_transform`` are not applied here; augment batches yourself.
        ``generator`` (on the dataset's device) makes the order reproducible.
        """
        if batch_size < 1:
            raise FredsetError(f"batch_size must be at least 1, got {batch_size}")
        count = len(self)
        order = (torch.randperm(count, device=self.device, generator=generator) if shuffle
                 else torch.arange(count, device=self.device))
        stop = count - count % batch_size if drop_last else count
        for start in range(0, stop, batch_size):
            index = order[start:start + batch_size]
            yield self.images[index], self.targets[index]

    def __repr__(self) -> str:
        channels, height, width = self.images.shape[1:]
        return (f"FredDataset({self.info.path!r}, {len(self)} images {channels}x{height}x{width}, "
                f"{len(self.classes)} classes, device={self.device})")


_WORKERS_ON_DEVICE = ("this FredDataset lives on {device}; DataLoader workers cannot serve device tensors. "
                      "Use num_workers=0, or dataset.batches(batch_size) for fast on-device batches")
