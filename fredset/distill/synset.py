"""What distillation learns: FreD's frequency parameterisation (EVR mask, reference-scale
coefficients) and the pixel baseline, behind one small SynSet interface."""

from __future__ import annotations

import math
from typing import Any

import torch

from ..artifact import Artifact
from ..dct import dct2, decode_classes
from ..errors import FredsetError
from ..quantize import Quantization, fake_quantize


def reference_weights(height: int, width: int, *, device: torch.device | str | None = None) -> torch.Tensor:
    """w_u * w_v with w_0 = 2, else 1 ([H, W]).

    The reference ranks variances of *unnormalised* DCT-II coefficients, which weights the DC term
    x4 and the first row/column x2 relative to the orthonormal transform (docs/ALGORITHM.md, EVR mask);
    multiplying orthonormal variances by these weights reproduces its ranking.
    """
    w_h = torch.ones(height, device=device)
    w_w = torch.ones(width, device=device)
    w_h[0] = 2.0
    w_w[0] = 2.0
    return w_h[:, None] * w_w[None, :]


def evr_mask(coefficients: torch.Tensor, k: int, *, reference_ranking: bool = True) -> torch.Tensor:
    """The k frequencies of largest explained-variance ratio, as sorted flat indices [k] (int64).

    ``coefficients`` are orthonormal DCT coefficients [n, C, H, W] of one class (n >= 2). As in
    FreD: average over channels, take each frequency's variance over the n samples divided by the
    total variance (diag(cov)/trace(cov)), keep the top k. Ties go to the lower index.
    """
    n, _, height, width = coefficients.shape
    if n < 2:
        raise ValueError("the EVR mask needs at least 2 samples (one gives no variance)")
    if not 1 <= k <= height * width:
        raise ValueError(f"k must be in 1..{height * width}, got {k}")
    plane = coefficients.double().mean(dim=1)
    variance = plane.var(dim=0, unbiased=True)
    if reference_ranking:
        variance = variance * reference_weights(height, width, device=variance.device).double()
    ratio = (variance / variance.sum().clamp_min(torch.finfo(torch.float64).tiny)).flatten()
    order = torch.sort(ratio, descending=True, stable=True).indices
    return order[:k].sort().values


# -- budget ---------------------------------------------------------------------------------

def default_k(height: int, width: int) -> int:
    """k with FreD's CIFAR-10 ratio k / (H*W) = 1/16 (64 at 32x32, 49 at 28x28)."""
    return max(1, round(height * width / 16))


def instances_per_class(ipc: float, height: int, width: int, k: int, class_size: int | None = None) -> int:
    """n = floor(ipc * H*W / k): the instances a storage budget of ipc images per class buys
    (docs/ALGORITHM.md, FreD parameterisation).

    FredsetError when n < 2 (one sample has no variance for the EVR mask) or n exceeds the class.
    """
    if ipc <= 0:
        raise FredsetError(f"--ipc must be positive, got {ipc}")
    if not 1 <= k <= height * width:
        raise FredsetError(f"--k must be in 1..{height * width} for {height}x{width} images, got {k}")
    count = math.floor(ipc * height * width / k + 1e-9)
    if count < 2:
        raise FredsetError(f"--ipc {ipc:g} with --k {k} gives {count} instance(s) per class "
                           f"(floor(ipc*{height * width}/k)); FreD needs at least 2: lower --k or raise --ipc")
    if class_size is not None and count > class_size:
        raise FredsetError(f"--ipc {ipc:g} with --k {k} needs {count} instances per class, "
                           f"but a class has only {class_size} images")
    return count


# -- parameterisations ----------------------------------------------------------------------

def reference_scale(masks: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """S = delta_u * delta_v at each masked frequency ([K, k]), with delta_0 = 2*sqrt(N), delta_u>0 = sqrt(2N).

    The reference uses the unnormalised DCT-II (scipy norm=None), whose coefficients are S times the
    orthonormal ones. Optimising P = S * F_ortho with SGD at learning rate lr is exactly the
    reference's SGD on its coefficients (each frequency effectively at lr / S^2 on F_ortho), so
    the published lr_freq values transfer while files keep orthonormal coefficients.
    """
    def delta(size: int) -> torch.Tensor:
        values = torch.full((size,), math.sqrt(2.0 * size), dtype=torch.float64, device=masks.device)
        values[0] = 2.0 * math.sqrt(size)
        return values

    rows, cols = torch.div(masks, width, rounding_mode="floor"), masks % width
    return delta(height)[rows] * delta(width)[cols]


class SynSet(torch.nn.Module):
    """What distillation optimises: images decoded from parameters, with fixed class-sorted labels."""

    counts: list[int]

    def decode(self) -> torch.Tensor:  # pragma: no cover - interface
        """All synthetic images [N, C, H, W] (normalised space), differentiable in the parameters."""
        raise NotImplementedError

    def decode_class(self, label: int) -> torch.Tensor:  # pragma: no cover - interface
        """Class ``label``'s images [n_c, C, H, W], differentiable, with a graph of their own."""
        raise NotImplementedError

    def class_parameters(self, label: int) -> list[tuple[torch.nn.Parameter, slice]]:  # pragma: no cover
        """The parameters (and their rows) that class ``label``'s images depend on, and no other class's do."""
        raise NotImplementedError

    @property
    def labels(self) -> torch.Tensor:
        return torch.repeat_interleave(torch.arange(len(self.counts)), torch.tensor(self.counts))

    def to_artifact(self, **fields: Any) -> Artifact:  # pragma: no cover - interface
        raise NotImplementedError


class FrequencySynSet(SynSet):
    """FreD: per class, n instances of k coefficients per channel at the class's EVR mask.

    Parameters are ``scaled[c]`` [n, C, k] = reference_scale * orthonormal coefficients (see
    :func:`reference_scale`); masks are fixed buffers. With ``bits``, every decode goes through the
    file's quantiser (:func:`fredset.quantize.fake_quantize`, straight-through gradient), so the images the
    objective sees are bit for bit those the written file decodes to (docs/ALGORITHM.md, Quantisation).
    """

    def __init__(self, coefficients: list[torch.Tensor], masks: torch.Tensor, image_size: tuple[int, int],
                 bits: int | None = None) -> None:
        super().__init__()
        self.image_size = tuple(image_size)
        self.bits = bits
        self.counts = [int(c.shape[0]) for c in coefficients]
        self.register_buffer("masks", masks.clone())
        self.register_buffer("scales", reference_scale(masks, *image_size))  # float64: exact factors
        self.scaled = torch.nn.ParameterList(
            torch.nn.Parameter((block.detach().double() * self.scales[label].to(block.device)).float())
            for label, block in enumerate(coefficients))

    def unquantized(self) -> list[torch.Tensor]:
        """Orthonormal coefficients per class [n_c, C, k] (differentiable), before any quantiser."""
        return [block / self.scales[label].to(block.dtype) for label, block in enumerate(self.scaled)]

    def coefficients(self) -> list[torch.Tensor]:
        """The coefficients the images decode from: on the quantisation grid when ``bits`` is set."""
        blocks = self.unquantized()
        if self.bits is not None:
            blocks = [fake_quantize(block, self.bits) for block in blocks]
        return blocks

    def decode(self) -> torch.Tensor:
        return decode_classes(self.coefficients(), self.masks, *self.image_size)

    def class_parameters(self, label: int) -> list[tuple[torch.nn.Parameter, slice]]:
        return [(self.scaled[label], slice(None))]

    def decode_class(self, label: int) -> torch.Tensor:
        block = self.scaled[label] / self.scales[label].to(self.scaled[label].dtype)
        if self.bits is not None:
            block = fake_quantize(block, self.bits)
        return decode_classes([block], self.masks[label:label + 1], *self.image_size)

    def to_artifact(self, **fields: Any) -> Artifact:
        coefficients = [c.detach().float().cpu().contiguous() for c in self.unquantized()]
        quantization = None
        if self.bits is not None:  # the same grid and values as fake_quantize's forward pass
            quantization = Quantization.of(coefficients, self.bits)
            coefficients = quantization.apply(coefficients)
        return Artifact(coefficients=coefficients, masks=self.masks.cpu(), image_size=self.image_size,
                        quantization=quantization, **fields)


class PixelSynSet(SynSet):
    """The baseline at equal budget: ipc images per class optimised directly in pixel (normalised) space.

    Exported losslessly as a .fredset with the full mask (k = H*W, the orthonormal DCT is invertible).
    """

    def __init__(self, images: list[torch.Tensor]) -> None:
        super().__init__()
        self.counts = [int(block.shape[0]) for block in images]
        self.image_size = tuple(images[0].shape[-2:])
        self.images = torch.nn.Parameter(torch.cat([block.detach().float() for block in images]))

    def decode(self) -> torch.Tensor:
        return self.images

    def decode_class(self, label: int) -> torch.Tensor:
        start = sum(self.counts[:label])
        return self.images[start:start + self.counts[label]]

    def class_parameters(self, label: int) -> list[tuple[torch.nn.Parameter, slice]]:
        start = sum(self.counts[:label])
        return [(self.images, slice(start, start + self.counts[label]))]

    def to_artifact(self, **fields: Any) -> Artifact:
        height, width = self.image_size
        spectrum = dct2(self.images.detach().double().cpu()).flatten(-2).float()
        blocks = list(torch.split(spectrum, self.counts))
        masks = torch.arange(height * width).expand(len(self.counts), -1).contiguous()
        return Artifact(coefficients=[b.contiguous() for b in blocks], masks=masks, image_size=self.image_size,
                        **fields)


def init_frequency_synset(real: Any, ipc: float | None, k: int, *, generator: torch.Generator,
                          mask_source: str = "init", instances: int | None = None, bits: int | None = None,
                          device: torch.device | str = "cpu") -> FrequencySynSet:
    """FreD initialisation: per class n random real images, their DCT, the EVR mask
    (docs/ALGORITHM.md, FreD parameterisation and EVR mask).

    n is ``instances`` when given, else what ``ipc`` buys. ``mask_source`` "init" ranks frequencies on the n
    sampled images (the reference), "class" on the whole class. ``bits``: decode through that quantiser.
    """
    if mask_source not in ("init", "class"):
        raise FredsetError(f"--mask-source must be 'init' or 'class', got {mask_source!r}")
    height, width = real.image_size
    smallest = min(len(index) for index in real.class_indices())
    if instances is None:
        count = instances_per_class(ipc, height, width, k, smallest)
    elif not 2 <= instances <= smallest:
        raise FredsetError(f"--instances must be in 2..{smallest} (the smallest class), got {instances}")
    else:
        count = instances
    coefficients, masks = [], []
    for label in range(real.num_classes):
        spectrum = dct2(real.sample(label, count, generator=generator).double())
        source = spectrum if mask_source == "init" else dct2(real.images[real.class_indices()[label]].double())
        mask = evr_mask(source, k)
        masks.append(mask)
        coefficients.append(spectrum.flatten(-2)[..., mask].float())
    return FrequencySynSet(coefficients, torch.stack(masks), (height, width), bits=bits).to(device)


def init_pixel_synset(real: Any, ipc: float, *, generator: torch.Generator,
                      device: torch.device | str = "cpu") -> PixelSynSet:
    """ipc random real images per class (ipc must be a whole number here)."""
    if ipc != int(ipc) or ipc < 1:
        raise FredsetError(f"--ipc must be a whole number >= 1 for the pixel parameterization, got {ipc:g}")
    return PixelSynSet([real.sample(label, int(ipc), generator=generator)
                        for label in range(real.num_classes)]).to(device)
