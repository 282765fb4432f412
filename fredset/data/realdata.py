"""A whole split of a real dataset in memory, normalised, with per-class access."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..errors import FredsetError


@dataclass(eq=False)
class RealData:
    """A whole split in memory.

    ``images`` are float32 ``[N, C, H, W]`` normalised with ``mean``/``std`` (per channel, applied to pixel
    values in [0, 1]); ``labels`` are int64 ``[N]`` indexing ``classes``. ``source`` records provenance:
    ``{"dataset": name, "split": ..., "files": {filename: sha256hex, ...}, "root": str, ...}``.

    ``class_indices()`` is computed once and cached: replace ``labels`` by a new RealData rather than
    mutating it in place.
    """

    name: str
    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: dict
    license: str | None = None
    _class_indices: list[torch.Tensor] | None = field(default=None, init=False, repr=False)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.images.shape[2]), int(self.images.shape[3])

    @property
    def split(self) -> str | None:
        return self.source.get("split")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __repr__(self) -> str:
        return (f"RealData(name={self.name!r}, split={self.split!r}, images={list(self.images.shape)}, "
                f"num_classes={self.num_classes}, mean={self.mean}, std={self.std})")

    def class_indices(self) -> list[torch.Tensor]:
        """Per class, the int64 indices of its samples in ascending order (computed once, then cached)."""
        if self._class_indices is None:
            labels = self.labels.reshape(-1).to(torch.int64)
            order = torch.argsort(labels, stable=True)
            counts = torch.bincount(labels, minlength=self.num_classes)
            if counts.numel() > self.num_classes:
                raise FredsetError(f"dataset {self.name!r}: label {int(labels.max())} is outside the "
                                   f"{self.num_classes} classes")
            self._class_indices = list(torch.split(order, counts.tolist()))
        return self._class_indices

    def sample(self, label: int, count: int, *, generator: torch.Generator) -> torch.Tensor:
        """``count`` random images of class ``label``, drawn with ``generator`` only: without replacement when
        ``count`` <= the class size, else with replacement. Returns a new ``[count, C, H, W]`` tensor."""
        chosen = self.sample_indices(label, count, generator=generator)
        return self.images[chosen.to(self.images.device)]

    def sample_indices(self, label: int, count: int, *, generator: torch.Generator) -> torch.Tensor:
        """The indices (into ``images``) of the images :meth:`sample` returns, with the same draws from
        ``generator``: a rank of a distributed run replays the draws of classes it does not own this way
        without gathering their images (fredset.distributed)."""
        if not isinstance(generator, torch.Generator):
            raise FredsetError("RealData.sample needs a torch.Generator (generator=...)")
        label, count = int(label), int(count)
        if not 0 <= label < self.num_classes:
            raise FredsetError(f"dataset {self.name!r}: no class {label} (it has {self.num_classes})")
        if count < 0:
            raise FredsetError(f"dataset {self.name!r}: cannot sample {count} images")
        indices = self.class_indices()[label]
        size = int(indices.numel())
        if size == 0 and count > 0:
            raise FredsetError(f"dataset {self.name!r}: class {label} ({self.classes[label]!r}) has no images")
        if count <= size:
            picks = torch.randperm(size, generator=generator, device=generator.device)[:count]
        else:
            picks = torch.randint(size, (count,), generator=generator, device=generator.device)
        return indices[picks.to(indices.device)]


def hold_out(real: RealData, per_class: int, *, seed: int = 0) -> tuple[RealData, RealData]:
    """``(rest, validation)``: ``per_class`` random images of every class held out of ``real`` (a training
    split), for tuning on data the test set never sees. The draw depends only on ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    held = []
    for label, indices in enumerate(real.class_indices()):
        if not 1 <= per_class < len(indices):
            raise FredsetError(f"dataset {real.name!r}: cannot hold out {per_class} of the {len(indices)} images "
                               f"of class {label}")
        held.append(indices[torch.randperm(len(indices), generator=generator)[:per_class]])
    chosen = torch.zeros(len(real), dtype=torch.bool)
    chosen[torch.cat(held)] = True

    def part(mask: torch.Tensor, split: str) -> RealData:
        return RealData(real.name, real.images[mask], real.labels[mask], list(real.classes), real.mean, real.std,
                        {**real.source, "split": split, "held_out": {"per_class": per_class, "seed": seed}},
                        real.license)

    base = real.split or "train"
    return part(~chosen, f"{base} minus validation"), part(chosen, f"validation from {base}")
