"""Normalisation: per-channel statistics of a split, and the normalised float32 copy of its images."""

from __future__ import annotations

import torch


def channel_statistics(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) std of uint8 or [0, 1] float images; a constant channel gets std 1."""
    channels = images.shape[1]
    flat = images.transpose(0, 1).reshape(channels, -1)
    scale = 255.0 if images.dtype == torch.uint8 else 1.0
    # Chunked float64 sums: exact enough for any size, no full float64 copy.
    total = torch.zeros(channels, dtype=torch.float64)
    squares = torch.zeros(channels, dtype=torch.float64)
    step = 1 << 22
    for start in range(0, flat.shape[1], step):
        chunk = flat[:, start:start + step].to(torch.float64)
        total += chunk.sum(dim=1)
        squares += (chunk * chunk).sum(dim=1)
    count = flat.shape[1]
    mean = total / count
    var = (squares / count - mean * mean).clamp_min(0)
    std = var.sqrt() / scale
    mean = mean / scale
    return (tuple(float(m) for m in mean),
            tuple(float(s) if s > 1e-12 else 1.0 for s in std))


def normalise(images: torch.Tensor, mean, std) -> torch.Tensor:
    """float32 ``(images / 255 - mean) / std`` (``images`` uint8, or float in [0, 1]) for the whole split."""
    shape = (1, -1, 1, 1)
    out = torch.empty(images.shape, dtype=torch.float32)   # contiguous [N, C, H, W], one conversion pass
    out.copy_(images)
    if images.dtype == torch.uint8:
        out.div_(255.0)
    out.sub_(torch.tensor(mean, dtype=torch.float32).view(shape))
    out.div_(torch.tensor(std, dtype=torch.float32).view(shape))
    return out
