"""Realistic artifacts for the benchmarks: FreD initialisations (DCT of images + EVR mask).

- Fashion-MNIST-shaped: real Fashion-MNIST training images (../shared/data/fashion-mnist).
- CIFAR-10-shaped: no CIFAR data is available here, so images are synthetic Gaussian random fields
  with the 1/f amplitude spectrum of natural images and correlated colour channels, normalised;
  their DCT coefficients have the heavy low-frequency concentration of real photographs.
"""

from __future__ import annotations

import math

import torch

import fredset
from fredset import Artifact
from fredset.data import load_dataset
from fredset.dct import dct2
from fredset.distill.synset import evr_mask

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _freq_artifact(images_per_class: list[torch.Tensor], k: int, classes: list[str], mean, std,
                   dataset: str, provenance: dict) -> Artifact:
    coefficients, masks = [], []
    for images in images_per_class:
        spectrum = dct2(images)
        mask = evr_mask(spectrum, k)
        masks.append(mask)
        coefficients.append(spectrum.flatten(-2)[..., mask].contiguous())
    height, width = images_per_class[0].shape[-2:]
    return Artifact(coefficients=coefficients, masks=torch.stack(masks), classes=classes,
                    image_size=(height, width), mean=mean, std=std, dataset=dataset, provenance=provenance)


def fashion_mnist_artifact(per_class: int, k: int = 64, seed: int = 0) -> Artifact:
    """FreD initialisation from real Fashion-MNIST images (random ``per_class`` per class)."""
    real = load_dataset("fashion-mnist")  # found as fredset finds it (--data-root order, ../shared/data, ...)
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for label, index in enumerate(real.class_indices()):
        chosen.append(real.images[index[torch.randperm(len(index), generator=generator)[:per_class]]])
    return _freq_artifact(chosen, k, list(real.classes), real.mean, real.std, "fashion-mnist",
                          {"objective": None, "parameterization": "freq", "seed": seed,
                           "note": "FreD initialisation (real images), benchmark artifact"})


def natural_images(count: int, size: int, generator: torch.Generator, slope: float = 1.0) -> torch.Tensor:
    """[count, 3, size, size] random fields with amplitude ~ 1/f^slope, correlated RGB, ~zero mean, unit std."""
    fy = torch.fft.fftfreq(size).abs()[:, None]
    fx = torch.fft.rfftfreq(size)[None, :]
    amplitude = 1.0 / torch.clamp(torch.sqrt(fy**2 + fx**2), min=1.0 / size) ** slope
    fields = []
    for _ in range(2):  # luminance and one chroma field
        phase = torch.rand(count, size, fx.shape[1], generator=generator) * 2 * math.pi
        noise = torch.randn(count, size, fx.shape[1], generator=generator)
        fields.append(torch.fft.irfft2(amplitude * noise * torch.exp(1j * phase), s=(size, size)))
    luminance, chroma = fields
    mix = torch.tensor([[1.0, 0.35], [1.0, 0.0], [1.0, -0.35]])
    images = torch.einsum("cf,fnhw->nchw", mix, torch.stack([luminance, chroma]))
    images = images - images.mean(dim=(2, 3), keepdim=True)
    return images / images.std(dim=(1, 2, 3), keepdim=True)


def cifar10_shaped_artifact(per_class: int = 160, k: int = 64, seed: int = 0) -> Artifact:
    """CIFAR-10-shaped FreD initialisation: 10 classes x ``per_class`` x 3x32x32 (ipc 10, k 64 -> 160)."""
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for label in range(10):
        offset = torch.randn(1, 3, 1, 1, generator=generator) * 0.5
        chosen.append(natural_images(per_class, 32, generator, slope=0.9 + 0.04 * label) + offset)
    return _freq_artifact(chosen, k, CIFAR10_CLASSES, (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010),
                          "cifar10-shaped-synthetic",
                          {"objective": None, "parameterization": "freq", "seed": seed,
                           "note": "synthetic 1/f images shaped like CIFAR-10, benchmark artifact"})


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Write a FreD initialisation (DCT of real images, EVR mask).")
    parser.add_argument("dataset", choices=["fashion-mnist", "cifar10-shaped"])
    parser.add_argument("--per-class", type=int, default=12)
    parser.add_argument("--k", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--encoding", default="float32", choices=["float32", "float16", "int8"])
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    build = fashion_mnist_artifact if args.dataset == "fashion-mnist" else cifar10_shaped_artifact
    artifact = build(args.per_class, k=args.k, seed=args.seed)
    size = fredset.save(artifact, args.out, encoding=args.encoding)
    print(f"wrote {args.out}: {artifact.num_instances} instances, {size:,} bytes")


if __name__ == "__main__":
    main()
