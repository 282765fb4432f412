"""Common corruptions of a test set (docs/ALGORITHM.md, Corruption robustness): the 15 families of Hendrycks &
Dietterich (ICLR 2019) with the severity constants of their CIFAR-10-C script, written in torch, batched, on
float images in pixel space ([0, 1], ``[N, C, H, W]``, C = 1 or 3), and the published CIFAR-10-C arrays.

Why not the ``imagecorruptions`` package (1.1.2, the pip release of the ImageNet-C code): it refuses images under
32 px (Fashion-MNIST's 28 px), returns three channels for a grey image, uses the ImageNet-C (224 px) constants, not
CIFAR-10-C's (Gaussian noise sigma 0.08-0.38 against 0.04-0.10), draws from numpy's global RNG, reads six frost
photographs shipped in the package, and does not run on this project's stack: it imports ``pkg_resources`` (gone
from setuptools 81 on), its fog uses ``np.float_`` (gone in NumPy 2) and its glass blur passes ``multichannel`` to
scikit-image (gone in 0.19). It would also pull in OpenCV and scikit-image.

What this module does instead, family by family (c = the CIFAR-10-C constant of the severity):

- noise: ``gaussian_noise`` x + N(0, c²); ``shot_noise`` Poisson(c·x)/c; ``impulse_noise`` salt and pepper on a
  fraction c of the values (each channel value on its own, as scikit-image's ``random_noise`` does).
- blur: ``defocus_blur`` a disk of radius c₀ smoothed by a 3x3 Gaussian of sigma c₁; ``glass_blur`` Gaussian
  blur, quantisation to 8 bits, local pixel moves, blur again (the moves copy ``x[h+dy, w+dx]`` into ``x[h, w]``:
  the published script's "swap" on an RGB array assigns through numpy views, so the data were made with copies);
  ``motion_blur`` a one-sided line kernel of 2⌈r⌉+1 taps with Gaussian weights at a random angle in [-45°, 45°]
  (ImageMagick's MotionBlurImage, which the original calls through Wand, written as shifts with edge replication);
  ``zoom_blur`` the mean of the image and its bilinear zooms about the centre.
- weather: ``snow`` a thresholded, zoomed Gaussian layer streaked by the motion blur at -135°..-45°, added with
  its 180° rotation over a brightened image; ``frost`` c₀·x + c₁·texture, the texture SYNTHESISED (see below);
  ``fog`` a diamond-square plasma fractal added and the range renormalised; ``brightness`` +c on the HSV value.
- digital: ``contrast`` (x - channel mean)·c + mean; ``elastic_transform`` a random affine of three points plus a
  Gaussian-smoothed displacement field, bilinear, reflected borders; ``pixelate`` Pillow's BOX resampling down to
  ⌊size·c⌋ and back (its coefficients, computed here); ``jpeg_compression`` Pillow JPEG at quality c.

Sizes: the constants are the 32-px ones. At another size every spatial parameter is multiplied by
s = min(H, W)/32: blur sigmas and radii (defocus, glass, motion, snow streaks), glass blur's move distance (at
least 1 px), snow's zoom (flake size), frost's crystal sizes; fog's fractal always spans the image (its map is
the next power of two at or above the size), elastic's constants are fractions of the size in the original, and
zoom and pixelate are ratios, so these scale by themselves. Noise amplitudes, brightness, contrast, JPEG quality
and blending weights are not spatial and stay as they are.

Grey images (C = 1) take the RGB definition on their one channel: brightness's HSV value of a grey pixel is the
pixel itself (so it is min(x + c, 1)); snow's grey conversion is the identity; frost's texture is the luminance of
its RGB tint; JPEG is Pillow's greyscale JPEG.

Deviations from CIFAR-10-C, which make those two families' numbers not comparable with the published ones:
``frost`` has no photographs (the original crops one of six frost photos): its texture is a plasma-fractal haze
plus short bright Gaussian "needles" at random angles, tinted pale blue (mean about 0.47; the photos 0.4-0.8);
``motion_blur`` (and snow's streaks) use the line kernel above instead of ImageMagick itself. Outputs are floats
clipped to [0, 1], not rounded to uint8 as the published arrays are (JPEG and glass blur quantise internally).

Determinism: every random draw comes from a ``torch.Generator`` seeded from (seed, family, severity, block),
blocks of :data:`BLOCK` images; nothing reads the global RNGs, so the result depends neither on the order in which
families are corrupted nor on anything drawn before.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import pathlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .data.realdata import RealData
from .data.statistics import normalise
from .errors import FredsetError

__all__ = ["BLOCK", "FAMILIES", "GROUPS", "SEVERITIES", "CorruptedTests", "corrupt", "load_corrupted_test",
           "parse_families", "parse_severities", "to_pixels"]

GROUPS: dict[str, tuple[str, ...]] = {
    "noise": ("gaussian_noise", "shot_noise", "impulse_noise"),
    "blur": ("defocus_blur", "glass_blur", "motion_blur", "zoom_blur"),
    "weather": ("snow", "frost", "fog", "brightness"),
    "digital": ("contrast", "elastic_transform", "pixelate", "jpeg_compression"),
}
FAMILIES: tuple[str, ...] = tuple(name for names in GROUPS.values() for name in names)
"""The 15 families in CIFAR-10-C's order (also the names of its ``.npy`` files)."""
SEVERITIES = (1, 2, 3, 4, 5)
BLOCK = 1000
"""Images corrupted with one generator: image i's draws depend on (seed, family, severity, i // BLOCK)."""
MIN_SIZE = 8
REFERENCE_SIZE = 32

# CIFAR-10-C constants (Hendrycks & Dietterich, make_cifar_c.py), severities 1..5.
GAUSSIAN_NOISE = (0.04, 0.06, 0.08, 0.09, 0.10)                      # sigma
SHOT_NOISE = (500, 250, 100, 75, 50)                                  # photons per unit intensity
IMPULSE_NOISE = (0.01, 0.02, 0.03, 0.05, 0.07)                       # fraction of values flipped
DEFOCUS_BLUR = ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1))   # disk radius, anti-alias sigma
GLASS_BLUR = ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2))  # sigma, max move, passes
MOTION_BLUR = ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5))           # radius, sigma
ZOOM_BLUR = (0.06, 0.11, 0.15, 0.20, 0.25)  # largest zoom - 1, zooms 1.00, 1.01, ...: what the script's
# np.arange(1, 1.06 / 1.11 / 1.16 / 1.21 / 1.26, 0.01) gives (float rounding keeps 1.06 and 1.11, not 1.16 ...)
SNOW = ((0.1, 0.2, 1, 0.6, 8, 3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9), (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
        (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85), (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8))
# loc, scale, zoom, threshold, streak radius, streak sigma, image weight
FROST = ((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45))  # image weight, texture weight
FOG = ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75))         # amount, fractal decay
BRIGHTNESS = (0.05, 0.1, 0.15, 0.2, 0.3)                              # added to the HSV value
CONTRAST = (0.75, 0.5, 0.4, 0.3, 0.15)                                # factor on the deviation from the mean
ELASTIC = ((0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05), (0.1, 0.03, 0.03))
# displacement alpha, displacement sigma, affine jitter: fractions of the image size
PIXELATE = (0.95, 0.9, 0.85, 0.75, 0.65)                              # size factor
JPEG_QUALITY = (80, 65, 58, 50, 40)

FROST_TINT = (0.80, 0.90, 1.00)       # pale blue, roughly the channel ratios of the original's photos
LUMA = (0.299, 0.587, 0.114)          # grey conversion (ITU-R 601, as OpenCV's RGB2GRAY)


# ----------------------------------------------------------------------------------------------- options

def parse_families(text: str) -> tuple[str, ...]:
    """``all`` or comma-separated family names (canonical order, duplicates dropped); a FredsetError (one line
    listing the valid names) for anything else."""
    names = [name.strip().lower().replace("-", "_") for name in str(text).split(",") if name.strip()]
    if names == ["all"]:
        return FAMILIES
    unknown = [name for name in names if name not in FAMILIES]
    if unknown or not names:
        shown = f"unknown corruption {unknown[0]!r}" if unknown else "no corruption named"
        raise FredsetError(f"{shown}: give 'all' or comma-separated names of {', '.join(FAMILIES)}")
    return tuple(name for name in FAMILIES if name in names)


def parse_severities(text: str | int) -> tuple[int, ...]:
    """``1``..``5`` or ``all`` (1..5, whose accuracies are then averaged per family)."""
    value = str(text).strip().lower()
    if value == "all":
        return SEVERITIES
    if value not in {str(s) for s in SEVERITIES}:
        raise FredsetError(f"--severity must be 1, 2, 3, 4, 5 or all (got {text!r})")
    return (int(value),)


# ----------------------------------------------------------------------------------------------- helpers

def _generator(seed: int, family: str, severity: int, block: int) -> torch.Generator:
    """A generator seeded from a hash of its key: independent draws per family, severity and block."""
    digest = hashlib.sha256(f"fredset.corruptions:{seed}:{family}:{severity}:{block}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2 ** 63 - 1))


def _uniform(shape: Sequence[int], low: float, high: float, g: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(tuple(shape), generator=g)


def _pad_index(size: int, pad: int, mode: str) -> torch.Tensor:
    """Indices of a 1-D signal padded by ``pad`` on each side: ``nearest`` (edge repeated), ``symmetric``
    (d c b a | a b c d, scipy's and scikit-image's 'reflect'), ``reflect101`` (c b | a b c d, OpenCV's default);
    any ``pad``, also wider than the signal."""
    index = torch.arange(-pad, size + pad)
    if mode == "nearest" or size == 1:
        return index.clamp(0, size - 1)
    if mode == "symmetric":
        folded = index.remainder(2 * size)
        return torch.where(folded < size, folded, 2 * size - 1 - folded)
    folded = index.remainder(2 * size - 2)
    return torch.where(folded < size, folded, 2 * size - 2 - folded)


def _pad(x: torch.Tensor, pad: int, mode: str) -> torch.Tensor:
    return x.index_select(2, _pad_index(x.shape[2], pad, mode)).index_select(3, _pad_index(x.shape[3], pad, mode))


def _gaussian_taps(sigma: float, radius: int) -> torch.Tensor:
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    taps = torch.exp(-offsets ** 2 / (2 * sigma ** 2))
    return (taps / taps.sum()).float()


def _gaussian_blur(x: torch.Tensor, sigma: float, *, truncate: float = 4.0, mode: str = "nearest") -> torch.Tensor:
    """scikit-image's ``filters.gaussian``: separable, radius int(truncate·sigma + 0.5), per channel."""
    radius = int(truncate * sigma + 0.5)
    if sigma <= 0 or radius == 0:
        return x
    taps = _gaussian_taps(sigma, radius)
    channels = x.shape[1]
    padded = _pad(x, radius, mode)
    out = F.conv2d(padded, taps.view(1, 1, -1, 1).repeat(channels, 1, 1, 1), groups=channels)
    return F.conv2d(out, taps.view(1, 1, 1, -1).repeat(channels, 1, 1, 1), groups=channels)


def _filter(x: torch.Tensor, kernel: torch.Tensor, mode: str = "reflect101") -> torch.Tensor:
    """Correlation with an odd square ``kernel``, same size out, borders by ``mode`` (OpenCV's filter2D)."""
    radius = kernel.shape[-1] // 2
    channels = x.shape[1]
    weight = kernel.view(1, 1, *kernel.shape).repeat(channels, 1, 1, 1)
    return F.conv2d(_pad(x, radius, mode), weight, groups=channels)


def _shift(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    """``out[n, :, h, w] = x[n, :, h + dy[n], w + dx[n]]`` with edge replication (per-image integer shifts)."""
    n, channels, height, width = x.shape
    rows = (torch.arange(height).view(1, -1) + dy.view(-1, 1)).clamp(0, height - 1)
    cols = (torch.arange(width).view(1, -1) + dx.view(-1, 1)).clamp(0, width - 1)
    out = x.gather(2, rows.view(n, 1, height, 1).expand(n, channels, height, width))
    return out.gather(3, cols.view(n, 1, 1, width).expand(n, channels, height, width))


def _motion_blur(x: torch.Tensor, radius: float, sigma: float, angles: torch.Tensor) -> torch.Tensor:
    """ImageMagick's motion blur: 2⌈radius⌉+1 taps i = 0.. with weights exp(-i²/2σ²), tap i at offset
    (⌈i·cos a - ½⌉, ⌈i·sin a - ½⌉) (x right, y down), one angle a (degrees) per image, edges replicated."""
    width = 2 * math.ceil(radius) + 1
    taps = torch.exp(-torch.arange(width, dtype=torch.float64) ** 2 / (2 * sigma ** 2))
    taps = (taps / taps.sum()).float()
    radians = torch.deg2rad(angles.double())
    out = torch.zeros_like(x)
    for i in range(width):
        dx = torch.ceil(i * torch.cos(radians) - 0.5).long()
        dy = torch.ceil(i * torch.sin(radians) - 0.5).long()
        out += taps[i] * _shift(x, dy, dx)
    return out


def _centre_grid(height: int, width: int) -> torch.Tensor:
    """grid_sample coordinates (align_corners=True) of every pixel, ``[1, H, W, 2]`` as (x, y)."""
    ys = torch.linspace(-1, 1, height) if height > 1 else torch.zeros(1)
    xs = torch.linspace(-1, 1, width) if width > 1 else torch.zeros(1)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((grid_x, grid_y), dim=-1).unsqueeze(0)


def _plasma(n: int, height: int, width: int, decay: float, g: torch.Generator) -> torch.Tensor:
    """``[n, 1, H, W]`` diamond-square fractals in [0, 1], one per image, on a square map of the next power of two
    at or above the size, cropped (so the coarsest structure spans the image at any size). At each halving of
    the step the random amplitude is divided by ``decay``: larger decay, smoother fog."""
    size = 1 << max(1, math.ceil(math.log2(max(height, width))))
    grid = torch.zeros(n, size, size)
    step, wibble = size, 100.0

    def noisy(total: torch.Tensor) -> torch.Tensor:
        return total / 4 + wibble * _uniform(total.shape, -wibble, wibble, g)

    while step >= 2:
        half = step // 2
        corners = grid[:, 0::step, 0::step]
        square = corners + corners.roll(-1, dims=1)
        square = square + square.roll(-1, dims=2)
        grid[:, half::step, half::step] = noisy(square)          # centres of the squares
        centres = grid[:, half::step, half::step]
        corners = grid[:, 0::step, 0::step]
        grid[:, 0::step, half::step] = noisy(centres + centres.roll(1, dims=1) + corners + corners.roll(-1, dims=2))
        grid[:, half::step, 0::step] = noisy(centres + centres.roll(1, dims=2) + corners + corners.roll(-1, dims=1))
        step //= 2
        wibble /= decay
    grid = grid[:, :height, :width]
    low = grid.amin(dim=(1, 2), keepdim=True)
    high = grid.amax(dim=(1, 2), keepdim=True)
    return ((grid - low) / (high - low).clamp_min(1e-12)).unsqueeze(1)


def _grey(x: torch.Tensor) -> torch.Tensor:
    """``[N, 1, H, W]`` luminance (the channel itself for a grey image)."""
    if x.shape[1] == 1:
        return x
    return (x * torch.tensor(LUMA).view(1, 3, 1, 1)).sum(dim=1, keepdim=True)


def _tint(texture: torch.Tensor, channels: int) -> torch.Tensor:
    tint = torch.tensor(FROST_TINT)
    if channels == 1:
        return texture * float((tint * torch.tensor(LUMA)).sum())
    return texture * tint.view(1, 3, 1, 1)


def _box_matrix(size_in: int, size_out: int) -> torch.Tensor:
    """``[out, in]`` weights of Pillow's BOX resampling along one axis (its coefficient rule: a box of half-width
    ½·max(in/out, 1) input pixels about each output centre, on input pixel centres, normalised)."""
    scale = size_in / size_out
    filterscale = max(scale, 1.0)
    support = 0.5 * filterscale
    matrix = torch.zeros(size_out, size_in, dtype=torch.float64)
    for out in range(size_out):
        centre = (out + 0.5) * scale
        low = max(int(centre - support + 0.5), 0)
        high = min(int(centre + support + 0.5), size_in)
        for index in range(low, high):
            position = (index - centre + 0.5) / filterscale
            if -0.5 < position <= 0.5:
                matrix[out, index] = 1.0
        total = matrix[out].sum()
        if total > 0:
            matrix[out] /= total
    return matrix.float()


def _resize_box(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    rows = _box_matrix(x.shape[2], height)
    cols = _box_matrix(x.shape[3], width)
    return torch.einsum("oh,nchw,pw->ncop", rows, x, cols)


# ----------------------------------------------------------------------------------------------- families
# Each takes a float block [n, C, H, W] in [0, 1] (its own copy), the severity, the block's generator and the
# spatial scale s = min(H, W) / 32, and returns the corrupted block (clipped by the caller).

def _gaussian_noise(x: torch.Tensor, severity: int, g: torch.Generator, s: float) -> torch.Tensor:
    return x + GAUSSIAN_NOISE[severity - 1] * torch.randn(x.shape, generator=g)


def _shot_noise(x: torch.Tensor, severity: int, g: torch.Generator, s: float) -> torch.Tensor:
    photons = SHOT_NOISE[severity - 1]
    return torch.poisson(x * photons, generator=g) / photons


def _impulse_noise(x: torch.Tensor, severity: int, g: torch.Generator, s: float) -> torch.Tensor:
    flipped = torch.rand(x.shape, generator=g) < IMPULSE_NOISE[severity - 1]
    salt = torch.rand(x.shape, generator=g) < 0.5
    return torch.where(flipped, salt.to(x.dtype), x)


def _defocus_blur(x: torch.Tensor, severity: int, g: torch.Generator, s: float) -> torch.Tensor:
    radius, alias = (value * s for value in DEFOCUS_BLUR[severity - 1])
    reach = math.ceil(radius)
    offsets = torch.arange(-reach, reach + 1, dtype=torch.float64)
    disk = ((offsets.view(-1, 1) ** 2 + offsets.view(1, -1) ** 2) <= radius ** 2).double()
    disk /= disk.sum()
    half = max(1, round(s))                            # the original's 3x3 anti-aliasing window at 32 px
    gauss = _gaussian_taps(alias, half).double()
    smooth = torch.outer(gauss, gauss).view(1, 1, 2 * half + 1, 2 * half + 1)
    kernel = F.conv2d(disk.view(1, 1, *disk.shape), smooth, padding=2 * half)[0, 0]   # full convolution
    return _filter(x, (kernel / kernel.sum()).float())


def _glass_blur(x: torch.Tensor, severity: int, g: torch.Generator, s: float) -> torch.Tensor:
    sigma, reach, passes = GLASS_BLUR[severity - 1]
    sigma *= s
    reach = max(1, round(reach * s))
    x = torch.floor(_gaussian_blur(x, sigma).clamp(0, 1) * 255) / 255     # np.uint8(... * 255) truncates
    n, _, height, width = x.shape
    rows = torch.arange(n)
    heights, widths = range(height - reach, reach, -1), range(width - reach, reach, -1)
    for _ in range(passes):
        moves = torch.randint(-reach, reach, (len(heights), len(widths), 2, n), generator=g)
        for a, h in enumerate(heights):
            for b, w in enumerate(widths):
                dy, dx = moves[a, b]
                x[:, :, h, w] = x[rows, :, h + dy, w + dx]
    return _gaussian_blur(x, sigma)


def _motion(x: torch.Tensor, severity: int, g: torch.Generator, s: float) -> torch.Tensor:
    radius, sigma = MOTION_BLUR[severity - 1]
    return _motion_blur(x, radius * s, sigma * s, _uniform((x.shape[0],), -45, 45, g))


def _zoom_blur(x: torch.Tensor, severity: int, g: torch.Generator, s: float) -> torch.Tensor:
    steps = round(ZOOM_BLUR[severity - 1] * 100)
    grid = _centre_grid(x.shape[2], x.shape[3]).expand(x.shape[0], -1, -1, -1)
    out = x.clone()
    for step in range(steps + 1):
        zoom = 1 + step / 100
        out += F.grid_sample(x, grid / zoom, mode="bilinear", padding_mode="border", align_corners=True)
    return out / (steps + 2)


def _snow(x: torch.Tensor, severity: int, g: torch.Generator, s: float) -> torch.Tensor:
    loc, scale, zoom, threshold, radius, sigma, weight = SNOW[severity - 1]
    n, _, height, width = x.shape
    zoom *= s
    field = loc + scale * torch.randn(n, 1, math.ceil(height / zoom), math.ceil(width / zoom), generator=g)
    layer = F.interpolate(field, size=(height, width), mode="bilinear", align_corners=True)  # flakes ~ zoom px
    layer = torch.where(layer < threshold, torch.zeros(()), layer).clamp(0, 1)
    layer = _motion_blur(layer, radius * s, sigma * s, _uniform((n,), -135, -45, g))
    brightened = torch.maximum(x, _grey(x) * 1.5 + 0.5)
    x = weight * x + (1 - weight) * brightened
    return x + layer + layer.flip(2, 3)


def _frost_texture(n: int, height: int, width: int, g: torch.Generator, s: float) -> torch.Tensor:
    """``[n, 1, H, W]`` in [0, 1]: a plasma haze (0.30-0.55) plus short bright needles of ice (at 32 px:
    1.5-6 px long, Gaussian cross-section of sigma 0.45 px, peak 0.35-0.7), 20 per 32x32 px at random positions
    and angles (the same picture at any size): points every half pixel along each needle, splatted bilinearly,
    then blurred. Mean about 0.47, std 0.12."""
    texture = 0.30 + 0.25 * _plasma(n, height, width, 2.0, g)
    count = max(2, round(20 * height * width / (REFERENCE_SIZE * s) ** 2))   # the same picture at any size
    centre_y = _uniform((n, count, 1), 0, height - 1, g)
    centre_x = _uniform((n, count, 1), 0, width - 1, g)
    angle = _uniform((n, count, 1), 0, math.pi, g)
    length = _uniform((n, count, 1), 1.5 * s, 6 * s, g)
    level = _uniform((n, count, 1), 0.35, 0.7, g)
    thickness = 0.45 * s
    samples = math.ceil(12 * s) + 1                    # up to 6·s px at half-pixel spacing
    along = torch.linspace(-0.5, 0.5, samples).view(1, 1, -1) * length
    ys = (centre_y + along * torch.sin(angle)).reshape(n, -1)
    xs = (centre_x + along * torch.cos(angle)).reshape(n, -1)
    # a line of mass density level·sqrt(2π)·sigma per px blurred by a Gaussian of sigma peaks at ``level``
    mass = (level * math.sqrt(2 * math.pi) * thickness * length / (samples - 1)).expand(-1, -1, samples)
    mass = mass.reshape(n, -1)
    canvas = torch.zeros(n, height * width)
    top, left = ys.floor(), xs.floor()
    for row, weight_y in ((top, 1 - (ys - top)), (top + 1, ys - top)):
        for col, weight_x in ((left, 1 - (xs - left)), (left + 1, xs - left)):
            inside = (row >= 0) & (row < height) & (col >= 0) & (col < width)
            index = (row.clamp(0, height - 1) * width + col.clamp(0, width - 1)).long()
            canvas.scatter_add_(1, index, torch.where(inside, mass * weight_y * weight_x, torch.zeros(())))
    needles = _gaussian_blur(canvas.view(n, 1, height, width), thickness, mode="nearest")
    return (texture + needles).clamp(0, 1)


def _frost(x: torch.Tensor, severity: int, g: torch.Generator, s: float) -> torch.Tensor:
    image_weight, frost_weight = FROST[severity - 1]
    texture = _frost_texture(x.shape[0], x.shape[2], x.shape[3], g, s)
    return image_weight * x + frost_weight * _tint(texture, x.shape[1])


def _fog(x: torch.Tensor, severity: int, g: torch.Generator, s: float) -> torch.Tensor:
    amount, decay = FOG[severity - 1]
    peak = x.amax(dim=(1, 2, 3), keepdim=True)
    x = x + amount * _plasma(x.shape[0], x.shape[2], x.shape[3], decay, g)
    return x * peak / (peak + amount)


def _brightness(x: torch.Tensor, severity: int, g: torch.Generator, s: float) -> torch.Tensor:
    # In HSV with hue and saturation fixed every channel is proportional to the value V = max over channels,
    # so V -> min(V + c, 1) scales the pixel by V'/V (a black pixel, S = 0, becomes grey V').
    value = x.amax(dim=1, keepdim=True)
    lifted = (value + BRIGHTNESS[severity - 1]).clamp(max=1)
    return torch.where(value > 0, x * lifted / value.clamp_min(1e-12), lifted.expand_as(x))


def _contrast(x: torch.Tensor, severity: int, g: torch.Generator, s: float) -> torch.Tensor:
    mean = x.mean(dim=(2, 3), keepdim=True)
    return (x - mean) * CONTRAST[severity - 1] + mean


def _elastic_transform(x: torch.Tensor, severity: int, g: torch.Generator, s: float) -> torch.Tensor:
    n, _, height, width = x.shape
    size = min(height, width)
    alpha, sigma, jitter = (value * size for value in ELASTIC[severity - 1])
    cx, cy, half = float(width // 2), float(height // 2), float(size // 3)
    source = torch.tensor([[cx + half, cy + half], [cx + half, cy - half], [cx - half, cy - half]])
    moved = source + _uniform((n, 3, 2), -jitter, jitter, g)
    # warpAffine samples the source at M^-1(p), M mapping source -> moved: solve for the map moved -> source
    inverse = torch.linalg.solve(torch.cat((moved, torch.ones(n, 3, 1)), dim=2).double(), source.double()).float()
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32),
                            indexing="ij")
    px, py = xs.expand(n, -1, -1), ys.expand(n, -1, -1)
    if alpha > 0:
        fields = _uniform((n, 2, height, width), -1, 1, g)
        fields = _gaussian_blur(fields, sigma, truncate=3.0, mode="symmetric") * alpha
        px, py = px + fields[:, 0], py + fields[:, 1]
    points = torch.stack((px, py, torch.ones_like(px)), dim=-1)                  # [n, H, W, 3]
    mapped = torch.einsum("nhwk,nkj->nhwj", points, inverse)                     # (x, y) in the source
    grid = torch.stack((2 * mapped[..., 0] / max(width - 1, 1) - 1, 2 * mapped[..., 1] / max(height - 1, 1) - 1),
                       dim=-1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=True)


def _pixelate(x: torch.Tensor, severity: int, g: torch.Generator, s: float) -> torch.Tensor:
    factor = PIXELATE[severity - 1]
    height, width = x.shape[2], x.shape[3]
    small = _resize_box(x, max(1, int(height * factor)), max(1, int(width * factor)))
    return _resize_box(small, height, width)


def _pillow():
    try:
        from PIL import Image
    except ImportError:
        raise FredsetError("the jpeg_compression corruption needs Pillow, which is not installed: "
                           "pip install 'fredset[images]'") from None
    return Image


def _jpeg_compression(x: torch.Tensor, severity: int, g: torch.Generator, s: float) -> torch.Tensor:
    Image = _pillow()
    quality = JPEG_QUALITY[severity - 1]
    pixels = (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    out = np.empty_like(pixels)
    for index, image in enumerate(pixels):
        buffer = io.BytesIO()
        Image.fromarray(image[..., 0] if image.shape[2] == 1 else image).save(buffer, "JPEG", quality=quality)
        buffer.seek(0)
        with Image.open(buffer) as decoded:
            out[index] = np.asarray(decoded.convert("L" if image.shape[2] == 1 else "RGB")).reshape(image.shape)
    return torch.from_numpy(out).permute(0, 3, 1, 2).float() / 255


_FAMILY: dict[str, Callable[[torch.Tensor, int, torch.Generator, float], torch.Tensor]] = {
    "gaussian_noise": _gaussian_noise, "shot_noise": _shot_noise, "impulse_noise": _impulse_noise,
    "defocus_blur": _defocus_blur, "glass_blur": _glass_blur, "motion_blur": _motion, "zoom_blur": _zoom_blur,
    "snow": _snow, "frost": _frost, "fog": _fog, "brightness": _brightness,
    "contrast": _contrast, "elastic_transform": _elastic_transform, "pixelate": _pixelate,
    "jpeg_compression": _jpeg_compression,
}
RANDOM_FAMILIES = frozenset({"gaussian_noise", "shot_noise", "impulse_noise", "glass_blur", "motion_blur", "snow",
                             "frost", "fog", "elastic_transform"})
"""The families that draw random numbers (the others are functions of the image alone)."""


def corrupt(images: torch.Tensor, family: str, severity: int, *, seed: int = 0) -> torch.Tensor:
    """A corrupted float32 copy of ``images`` (pixel space, [0, 1], ``[N, C, H, W]``, C 1 or 3, at least 8 px),
    clipped to [0, 1]; the same (images, family, severity, seed) always give the same result."""
    if family not in _FAMILY:
        raise FredsetError(f"unknown corruption {family!r}: give one of {', '.join(FAMILIES)}")
    if severity not in SEVERITIES:
        raise FredsetError(f"corruption severity must be 1..5 (got {severity!r})")
    if images.ndim != 4 or images.shape[1] not in (1, 3) or min(images.shape[2:]) < MIN_SIZE:
        raise FredsetError(f"corruptions take images [N, 1 or 3, H, W] of at least {MIN_SIZE} px, "
                           f"got {list(images.shape)}")
    images = images.detach().to("cpu", torch.float32)
    scale = min(images.shape[2:]) / REFERENCE_SIZE
    out = torch.empty_like(images)
    for block, start in enumerate(range(0, len(images), BLOCK)):
        part = images[start:start + BLOCK].clamp(0, 1)
        generator = _generator(int(seed), family, int(severity), block)
        out[start:start + BLOCK] = _FAMILY[family](part.clone(), int(severity), generator, scale).clamp_(0, 1)
    return out


# ----------------------------------------------------------------------------------------------- test sets

def to_pixels(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Normalised images back to pixel space: clamp(x·std + mean, 0, 1)."""
    shape = (1, -1, 1, 1)
    return (images.float() * torch.tensor(std, dtype=torch.float32).view(shape)
            + torch.tensor(mean, dtype=torch.float32).view(shape)).clamp_(0, 1)


def _npy(path: pathlib.Path, what: str) -> np.ndarray:
    if not path.is_file():
        raise FredsetError(f"no {what} file {path.name} (the CIFAR-10-C layout: DIR/<corruption>.npy and "
                           "DIR/labels.npy)", path)
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise FredsetError(f"cannot read .npy file ({str(error).splitlines()[0] if str(error) else 'invalid'})",
                           path) from None


def _check_corrupted(array: np.ndarray, path: pathlib.Path, test: RealData) -> None:
    count, channels, (height, width) = len(test), test.channels, test.image_size
    expected = [5 * count, height, width, channels]
    shapes_ok = (array.ndim == 4 and list(array.shape) == expected) or (
        channels == 1 and array.ndim == 3 and list(array.shape) == expected[:3])
    if array.dtype != np.uint8 or not shapes_ok:
        raise FredsetError(f"expected uint8 {expected} (severities 1..5 of the {count} {test.name} test images, "
                           f"channels last), found {array.dtype} {list(array.shape)}", path)


def load_corrupted_test(directory: str | os.PathLike, test: RealData, family: str,
                        severity: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(normalised images, labels) of one family and severity of published CIFAR-10-C arrays:
    ``DIR/<family>.npy`` uint8 ``[5N, H, W, C]`` (severities 1..5 in blocks of N, the test set's size) and
    ``DIR/labels.npy`` (``[5N]`` or ``[N]``), normalised with the test set's statistics."""
    directory = pathlib.Path(directory)
    if family not in FAMILIES or severity not in SEVERITIES:
        raise FredsetError(f"no corruption {family!r} at severity {severity!r}")
    path = directory / f"{family}.npy"
    array = _npy(path, "corruption")
    _check_corrupted(array, path, test)
    count = len(test)
    block = np.array(array[(severity - 1) * count:severity * count])   # a writable copy of the memory map
    images = torch.from_numpy(block.reshape(count, *test.image_size, test.channels)).permute(0, 3, 1, 2)
    return normalise(images, test.mean, test.std), _labels(directory, test, severity)


def _labels(directory: pathlib.Path, test: RealData, severity: int) -> torch.Tensor:
    path = directory / "labels.npy"
    labels = _npy(path, "labels")
    count = len(test)
    if labels.ndim != 1 or labels.dtype.kind not in "ui" or len(labels) not in (count, 5 * count):
        raise FredsetError(f"expected integer labels [{5 * count}] (or [{count}]), found {labels.dtype} "
                           f"{list(labels.shape)}", path)
    if len(labels) == 5 * count:
        labels = labels[(severity - 1) * count:severity * count]
    labels = np.asarray(labels).astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= test.num_classes):
        raise FredsetError(f"labels outside 0..{test.num_classes - 1} (the classes of {test.name})", path)
    return torch.from_numpy(labels)


class CorruptedTests:
    """The corrupted copies of a test set, one (family, severity) at a time, for
    :func:`fredset.evaluate.evaluate`: generated from the test images (un-normalised, corrupted, re-normalised),
    or read from published CIFAR-10-C arrays in ``directory``. Only one copy is in memory at a time.

    Iterating yields ``(family, severity, images, labels)``; the arrays of a directory are checked (names, shapes)
    when the object is made, so a wrong directory fails before any training.
    """

    def __init__(self, test: RealData, families: Sequence[str] = FAMILIES, severities: Sequence[int] = (5,), *,
                 seed: int = 0, directory: str | os.PathLike | None = None) -> None:
        self.test = test
        self.families = tuple(families)
        self.severities = tuple(severities)
        self.seed = int(seed)
        self.directory = pathlib.Path(directory) if directory is not None else None
        if not self.families or any(f not in FAMILIES for f in self.families):
            raise FredsetError(f"corruptions must be among {', '.join(FAMILIES)}")
        if not self.severities or any(s not in SEVERITIES for s in self.severities):
            raise FredsetError("corruption severities must be among 1..5")
        if self.directory is not None:
            if not self.directory.is_dir():
                raise FredsetError("no such directory (--corrupted-test: the CIFAR-10-C .npy files)", self.directory)
            for family in self.families:
                path = self.directory / f"{family}.npy"
                _check_corrupted(_npy(path, "corruption"), path, test)
            _labels(self.directory, test, self.severities[0])
        elif test.channels not in (1, 3) or min(test.image_size) < MIN_SIZE:
            raise FredsetError(f"the corruptions take 1- or 3-channel images of at least {MIN_SIZE} px; the test set "
                               f"{test.name} has {test.channels}x{test.image_size[0]}x{test.image_size[1]}")

    def __iter__(self) -> Iterator[tuple[str, int, torch.Tensor, torch.Tensor]]:
        pixels = to_pixels(self.test.images, self.test.mean, self.test.std) if self.directory is None else None
        for family in self.families:
            for severity in self.severities:
                if pixels is None:
                    images, labels = load_corrupted_test(self.directory, self.test, family, severity)
                else:
                    images = normalise(corrupt(pixels, family, severity, seed=self.seed), self.test.mean,
                                       self.test.std)
                    labels = self.test.labels
                yield family, severity, images, labels

    def describe(self) -> dict[str, Any]:
        """What the report says about where the corrupted images came from."""
        if self.directory is not None:
            return {"source": "directory", "directory": str(self.directory),
                    "layout": "CIFAR-10-C: <family>.npy uint8 [5N, H, W, C], labels.npy"}
        height, width = self.test.image_size
        return {"source": "generated", "generator": "fredset.corruptions", "seed": self.seed,
                "constants": "CIFAR-10-C (make_cifar_c.py, 32 px)",
                "image_size": [height, width], "spatial_scale": round(min(height, width) / REFERENCE_SIZE, 4),
                "deviations": {"frost": "synthetic texture (no photographs)",
                               "motion_blur": "line kernel (ImageMagick's rule) instead of ImageMagick",
                               "snow": "streaks with the same line kernel"}}

