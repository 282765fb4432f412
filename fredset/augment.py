"""DSA: differentiable siamese augmentation, with explicit randomness.

FreD (like DC, DM and MTT before it) augments real and synthetic images with the DSA strategy
``color_crop_cutout_flip_scale_rotate`` (docs/ALGORITHM.md, DSA): each call picks ONE family uniformly
for the whole batch, then draws that family's random values. Every transformation is differentiable
with respect to the images, so gradients reach the synthetic images.

Differences from the reference implementation, on purpose:

- Randomness comes only from the ``torch.Generator`` passed in; the global RNG is never read or
  reseeded (the reference reseeds it from the wall clock, which makes runs irreproducible).
- Siamese use (the same transformation for real and synthetic batches, DC/DM distillation) goes
  through an explicit :class:`AugmentParams` object: ``sample(..., siamese=True)`` draws one value
  set (tensors of shape [1]) and :meth:`DSA.apply` applies it to batches of any size.
- Everything is vectorised over the batch and runs on the images' device.
- ``align_corners`` (used by scale and rotate) is an explicit option; the reference uses
  different values in different objectives (docs/ALGORITHM.md, DSA).

Values stored per family (each a tensor of shape [1] when siamese, [batch_size] otherwise):

========  ==========================================================================================
color     ``brightness``, ``saturation``, ``contrast``: u ~ U[0, 1) each (float32)
crop      ``dy`` (rows), ``dx`` (columns): integer shifts in [-pad, pad], pad = int(crop_pad*size+0.5);
          output[i, j] = input[i + dy, j + dx], 0 where that falls outside (int64)
cutout    ``cy``, ``cx``: centre of the square, cy in [0, H + 1 - side % 2) (int64); the square
          covers rows cy - side//2 .. cy - side//2 + side - 1 (same for columns), clipped
flip      ``flip``: whether to flip horizontally, probability 0.5 (bool)
scale     ``sx``, ``sy``: factors ~ U[1/scale, scale] (float32)
rotate    ``degrees``: angle ~ U[-rotate, rotate] (float32)
========  ==========================================================================================
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .errors import FredsetError

__all__ = ["STRATEGY", "FAMILIES", "AugmentParams", "DSA", "parse_strategy"]

STRATEGY = "color_crop_cutout_flip_scale_rotate"
FAMILIES = ("color", "crop", "cutout", "flip", "scale", "rotate")
_NONE = "none"


def parse_strategy(strategy: str) -> list[str]:
    """The families of a DSA strategy string, in order: ``"color_crop"`` -> ``["color", "crop"]``.

    ``"none"`` (any case) or ``""`` means no augmentation and gives ``[]``. An unknown or empty
    family name raises :class:`FredsetError`.
    """
    if not isinstance(strategy, str):
        raise FredsetError(f"DSA strategy must be a string, got {type(strategy).__name__}")
    text = strategy.strip()
    if text == "" or text.lower() == _NONE:
        return []
    families = text.split("_")
    for name in families:
        if name not in FAMILIES:
            raise FredsetError(f"unknown DSA family {name!r} in strategy {strategy!r} "
                               f"(known: {', '.join(FAMILIES)}, or 'none')")
    return families


@dataclass
class AugmentParams:
    """One sampled transformation: the family and its random values.

    ``values`` maps names to tensors of shape [1] (siamese: shared by every image of any batch) or
    [batch_size] (one per sample); see the module docstring for the names per family. ``family`` is
    ``"none"`` (with no values) when the strategy is empty.
    """

    family: str
    values: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def siamese(self) -> bool:
        """True when every value has shape [1], i.e. the transform is shared by the whole batch."""
        return all(value.shape == (1,) for value in self.values.values())

    def to(self, device: torch.device | str) -> "AugmentParams":
        """A copy with its values on ``device``."""
        return AugmentParams(self.family, {key: value.to(device) for key, value in self.values.items()})

    def rows(self, rows: slice) -> "AugmentParams":
        """The draw for the images ``rows`` of the batch a per-sample draw was made for (a rank's share of a
        split batch); per-sample transforms act on each image alone, so applying this to those images equals
        taking their rows of the whole batch's result."""
        return AugmentParams(self.family, {key: value[rows] for key, value in self.values.items()})


class DSA:
    """Differentiable siamese augmentation (one family per call, chosen uniformly).

    Siamese use (DC/DM)::

        dsa = DSA()
        params = dsa.sample(1, (32, 32), generator=generator, siamese=True)
        real_aug, syn_aug = dsa.apply(real, params), dsa.apply(syn, params)

    Independent per sample (TM, expert and evaluation training)::

        augmented = dsa(images, generator=generator)
    """

    def __init__(self, strategy: str = STRATEGY, *, scale: float = 1.2, rotate: float = 15.0,
                 crop_pad: float = 0.125, cutout: float = 0.5, brightness: float = 1.0,
                 saturation: float = 2.0, contrast: float = 0.5, align_corners: bool = False) -> None:
        self.strategy = strategy
        self.families = parse_strategy(strategy)
        if not scale >= 1.0:
            raise FredsetError(f"DSA scale must be >= 1, got {scale}")
        if not rotate >= 0.0:
            raise FredsetError(f"DSA rotate must be >= 0 degrees, got {rotate}")
        if not 0.0 <= crop_pad < 1.0:
            raise FredsetError(f"DSA crop_pad must be in [0, 1), got {crop_pad}")
        if not 0.0 <= cutout <= 1.0:
            raise FredsetError(f"DSA cutout must be in [0, 1], got {cutout}")
        for name, value in (("brightness", brightness), ("saturation", saturation), ("contrast", contrast)):
            if not value >= 0.0:
                raise FredsetError(f"DSA {name} must be >= 0, got {value}")
        self.scale = float(scale)
        self.rotate = float(rotate)
        self.crop_pad = float(crop_pad)
        self.cutout = float(cutout)
        self.brightness = float(brightness)
        self.saturation = float(saturation)
        self.contrast = float(contrast)
        self.align_corners = bool(align_corners)

    def __repr__(self) -> str:
        return (f"DSA({self.strategy!r}, scale={self.scale}, rotate={self.rotate}, crop_pad={self.crop_pad}, "
                f"cutout={self.cutout}, brightness={self.brightness}, saturation={self.saturation}, "
                f"contrast={self.contrast}, align_corners={self.align_corners})")

    # ------------------------------------------------------------------ sampling

    def crop_shift(self, size: int) -> int:
        """The largest shift of the crop family along an axis of ``size`` pixels."""
        return int(self.crop_pad * size + 0.5)

    def cutout_side(self, size: int) -> int:
        """The side of the cutout square along an axis of ``size`` pixels."""
        return int(self.cutout * size + 0.5)

    def sample(self, batch_size: int, image_size: tuple[int, int], *, generator: torch.Generator,
               siamese: bool, device: torch.device | str | None = None) -> AugmentParams:
        """Draw one transformation: a family chosen uniformly, then its values.

        Only ``generator`` is used (draws happen on its device; the values are then moved to
        ``device`` if given). ``siamese=True`` draws one value set (shape [1]) to apply to every
        image of any batch; otherwise one per sample (shape [batch_size]).
        """
        if not isinstance(generator, torch.Generator):
            raise FredsetError("DSA.sample needs an explicit torch.Generator (the global RNG is never used)")
        height, width = (int(s) for s in image_size)
        if height < 1 or width < 1:
            raise FredsetError(f"image size must be positive, got {tuple(image_size)}")
        if not self.families:
            return AugmentParams(_NONE, {})
        n = 1 if siamese else int(batch_size)
        if n < 1:
            raise FredsetError(f"batch size must be positive, got {batch_size}")
        gdev = generator.device
        if len(self.families) == 1:
            family = self.families[0]
        else:  # .item() synchronises once on CUDA; unavoidable, the family decides which code runs
            index = torch.randint(0, len(self.families), (1,), generator=generator, device=gdev)
            family = self.families[int(index.item())]

        def uniform() -> torch.Tensor:
            return torch.rand(n, generator=generator, device=gdev)

        def integers(low: int, high: int) -> torch.Tensor:  # [low, high)
            return torch.randint(low, high, (n,), generator=generator, device=gdev)

        if family == "color":
            values = {"brightness": uniform(), "saturation": uniform(), "contrast": uniform()}
        elif family == "crop":
            pad_h, pad_w = self.crop_shift(height), self.crop_shift(width)
            values = {"dy": integers(-pad_h, pad_h + 1), "dx": integers(-pad_w, pad_w + 1)}
        elif family == "cutout":
            side_h, side_w = self.cutout_side(height), self.cutout_side(width)
            values = {"cy": integers(0, height + 1 - side_h % 2), "cx": integers(0, width + 1 - side_w % 2)}
        elif family == "flip":
            values = {"flip": uniform() < 0.5}
        elif family == "scale":
            low = 1.0 / self.scale
            values = {"sx": uniform() * (self.scale - low) + low, "sy": uniform() * (self.scale - low) + low}
        else:  # rotate
            values = {"degrees": (uniform() - 0.5) * (2.0 * self.rotate)}
        params = AugmentParams(family, values)
        if device is not None and torch.device(device) != gdev:
            params = params.to(device)
        return params

    # ------------------------------------------------------------------ applying

    def apply(self, images: torch.Tensor, params: AugmentParams) -> torch.Tensor:
        """Apply a sampled transformation to ``images`` [B, C, H, W]; differentiable w.r.t. images.

        Siamese params (values of shape [1]) apply to batches of any size; per-sample params only
        to batches of their size.
        """
        if images.dim() != 4:
            raise FredsetError(f"DSA expects images [B, C, H, W], got shape {tuple(images.shape)}")
        family = params.family
        if family == _NONE:
            return images
        batch = images.shape[0]
        values = {}
        for key, value in params.values.items():
            if value.dim() != 1 or value.shape[0] not in (1, batch):
                raise FredsetError(f"DSA {family} value {key!r} has shape {tuple(value.shape)}, "
                                   f"which does not fit a batch of {batch} (needs [1] or [{batch}])")
            values[key] = value.to(images.device)
        apply = _APPLY.get(family)
        if apply is None:
            raise FredsetError(f"unknown DSA family {family!r} in augmentation parameters")
        return apply(self, images, values)

    def __call__(self, images: torch.Tensor, *, generator: torch.Generator, siamese: bool = False) -> torch.Tensor:
        """Sample a transformation for ``images`` from ``generator`` and apply it."""
        if not self.families:
            return images
        params = self.sample(images.shape[0], tuple(images.shape[-2:]), generator=generator, siamese=siamese)
        return self.apply(images, params)

    # ------------------------------------------------------------------ the families

    def _color(self, x: torch.Tensor, v: dict[str, torch.Tensor]) -> torch.Tensor:
        # brightness, saturation, contrast in sequence:
        #   x1 = x + beta                             beta = (u_b - 0.5) * brightness
        #   x2 = (x1 - mean_c x1) * s + mean_c x1     s = u_s * saturation  (mean over channels)
        #   x3 = (x2 - mean x2) * c + mean x2         c = u_c + contrast    (mean over C, H, W)
        # Saturation keeps the channel mean, so mean x2 = mean x + beta, and the three collapse into
        #   x3 = c*s * x + c*(1-s) * mean_c x + (1-c) * mean x + beta
        # (equal up to rounding; faster forward+backward than three passes, docs/RESULTS.md).
        def per_image(u: torch.Tensor) -> torch.Tensor:
            return u.to(x.dtype).view(-1, 1, 1, 1)

        beta = (per_image(v["brightness"]) - 0.5) * self.brightness
        s = per_image(v["saturation"]) * self.saturation
        c = per_image(v["contrast"]) + self.contrast
        offset = x.mean(dim=(1, 2, 3), keepdim=True) * (1.0 - c) + beta
        if x.shape[1] == 1:  # mean over one channel is the image itself: saturation does nothing
            return torch.addcmul(offset, x, c)
        channel_mean = x.mean(dim=1, keepdim=True)
        return torch.addcmul(torch.addcmul(offset, channel_mean, c * (1.0 - s)), x, c * s)

    def _crop(self, x: torch.Tensor, v: dict[str, torch.Tensor]) -> torch.Tensor:
        # output[i, j] = x[i + dy, j + dx], 0 where that falls outside: one gather over the flattened
        # plane with clamped indices, then a validity mask (cheaper than padding and two gathers)
        batch, channels, height, width = x.shape
        n = v["dy"].shape[0]
        rows = torch.arange(height, device=x.device).view(1, height) + v["dy"].view(-1, 1)  # [n, H]
        cols = torch.arange(width, device=x.device).view(1, width) + v["dx"].view(-1, 1)  # [n, W]
        valid = ((rows >= 0) & (rows < height)).unsqueeze(2) & ((cols >= 0) & (cols < width)).unsqueeze(1)
        index = rows.clamp(0, height - 1).unsqueeze(2) * width + cols.clamp(0, width - 1).unsqueeze(1)
        index = index.view(n, 1, height * width).expand(batch, channels, height * width)
        out = torch.gather(x.reshape(batch, channels, height * width), 2, index)
        return out.view(batch, channels, height, width) * valid.unsqueeze(1).to(x.dtype)

    def _cutout(self, x: torch.Tensor, v: dict[str, torch.Tensor]) -> torch.Tensor:
        _, _, height, width = x.shape
        side_h, side_w = self.cutout_side(height), self.cutout_side(width)
        top = (v["cy"] - side_h // 2).view(-1, 1)
        left = (v["cx"] - side_w // 2).view(-1, 1)
        rows = torch.arange(height, device=x.device).view(1, height)
        cols = torch.arange(width, device=x.device).view(1, width)
        in_rows = (rows >= top) & (rows < top + side_h)  # [n, H]
        in_cols = (cols >= left) & (cols < left + side_w)  # [n, W]
        keep = ~(in_rows.unsqueeze(2) & in_cols.unsqueeze(1))  # [n, H, W]
        # a product, not torch.where: faster forward+backward; equal for finite images
        return x * keep.unsqueeze(1).to(x.dtype)

    def _flip(self, x: torch.Tensor, v: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.where(v["flip"].view(-1, 1, 1, 1), x.flip(3), x)

    def _affine(self, x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        grid_batch = theta.shape[0]
        grid = F.affine_grid(theta, [grid_batch, *x.shape[1:]], align_corners=self.align_corners)
        if grid_batch != batch:  # siamese: one grid for the whole batch
            grid = grid.expand(batch, *grid.shape[1:])
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=self.align_corners)

    def _scale(self, x: torch.Tensor, v: dict[str, torch.Tensor]) -> torch.Tensor:
        sx = v["sx"].to(x.dtype)
        sy = v["sy"].to(x.dtype)
        zero = torch.zeros_like(sx)
        theta = torch.stack([torch.stack([sx, zero, zero], 1), torch.stack([zero, sy, zero], 1)], 1)
        return self._affine(x, theta)

    def _rotate(self, x: torch.Tensor, v: dict[str, torch.Tensor]) -> torch.Tensor:
        angle = v["degrees"].to(x.dtype) * (math.pi / 180.0)
        cos, sin = torch.cos(angle), torch.sin(angle)
        zero = torch.zeros_like(angle)
        theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
        return self._affine(x, theta)


_APPLY = {
    "color": DSA._color,
    "crop": DSA._crop,
    "cutout": DSA._cutout,
    "flip": DSA._flip,
    "scale": DSA._scale,
    "rotate": DSA._rotate,
}
