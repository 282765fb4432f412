"""FreD's parameterisation: budget, EVR mask (reference definition), optimisation geometry."""

import numpy as np
import pytest
import scipy.fft
import torch

from fredset import FredsetError
from fredset.dct import dct2, decode_classes
from fredset.distill.synset import (FrequencySynSet, PixelSynSet, default_k, evr_mask, instances_per_class,
                                    reference_scale)


def reference_evr_mask(images: np.ndarray, k: int) -> set[int]:
    """The reference definition: unnormalised DCT, mean over channels, diag(cov)/trace(cov), top k."""
    spectrum = scipy.fft.dctn(images, type=2, norm=None, axes=(-2, -1)).mean(axis=1)
    flat = spectrum.reshape(len(images), -1)
    centred = flat - flat.mean(axis=0)
    covariance = centred.T @ centred / (len(images) - 1)
    ratio = np.diag(covariance) / np.trace(covariance)
    return set(np.argsort(-ratio, kind="stable")[:k].tolist())


@pytest.mark.parametrize("shape,k", [((12, 1, 28, 28), 64), ((16, 3, 32, 32), 64), ((5, 2, 8, 6), 7)])
def test_evr_mask_matches_the_reference_definition(shape, k):
    images = torch.randn(*shape, generator=torch.Generator().manual_seed(k), dtype=torch.float64).cumsum(-1)
    mask = evr_mask(dct2(images), k)
    assert mask.tolist() == sorted(mask.tolist()) and len(set(mask.tolist())) == k
    assert set(mask.tolist()) == reference_evr_mask(images.numpy(), k)


def test_evr_weighting_favours_dc_x4_and_first_row_x2():
    """Orthonormal variances: DC 1.0, (0,1) 1.5, (1,1) 2.5. On the reference's unnormalised scale the
    DC counts x4 (4.0) and the first row x2 (3.0), so the ranking becomes DC, (0,1), (1,1)."""
    n, size = 64, 4
    generator = torch.Generator().manual_seed(0)
    spectrum = torch.zeros(n, 1, size, size, dtype=torch.float64)
    unit = torch.randn(n, generator=generator, dtype=torch.float64)
    unit = (unit - unit.mean()) / unit.std()
    for (u, v), variance in {(0, 0): 1.0, (0, 1): 1.5, (1, 1): 2.5}.items():
        spectrum[:, 0, u, v] = unit.roll(u * 7 + v * 3) * variance ** 0.5
    assert evr_mask(spectrum, 1, reference_ranking=False).tolist() == [1 * size + 1]
    assert evr_mask(spectrum, 1).tolist() == [0]
    assert evr_mask(spectrum, 2).tolist() == [0, 1]
    images = scipy.fft.idctn(spectrum.numpy(), norm="ortho", axes=(-2, -1))
    assert reference_evr_mask(images, 2) == {0, 1}


def test_budget():
    assert instances_per_class(1, 28, 28, 64) == 12 and instances_per_class(1, 32, 32, 64) == 16
    assert instances_per_class(10, 32, 32, 64) == 160 and instances_per_class(50, 32, 32, 64) == 800
    assert default_k(28, 28) == 49 and default_k(32, 32) == 64
    with pytest.raises(FredsetError, match="at least 2"):
        instances_per_class(1, 28, 28, 400)
    with pytest.raises(FredsetError, match="only 5 images"):
        instances_per_class(1, 28, 28, 64, class_size=5)
    with pytest.raises(FredsetError, match="--k"):
        instances_per_class(1, 28, 28, 0)


def test_reference_scale_values():
    scale = reference_scale(torch.tensor([[0, 1, 33, 32]]), 32, 32)
    assert torch.allclose(scale, torch.tensor([[128.0, 64 * 2**0.5, 64.0, 64 * 2**0.5]], dtype=torch.float64))
    expected = torch.tensor([[112.0, 56 * 2**0.5, 56.0]], dtype=torch.float64)
    assert torch.allclose(reference_scale(torch.tensor([[0, 1, 29]]), 28, 28), expected)


def unnormalised_dct_matrix(n: int) -> torch.Tensor:
    """scipy norm=None DCT-II: X_k = 2 sum x_n cos(pi k (2n+1) / 2N)."""
    u = torch.arange(n, dtype=torch.float64)[:, None]
    x = torch.arange(n, dtype=torch.float64)[None, :]
    return 2 * torch.cos(torch.pi * (2 * x + 1) * u / (2 * n))


def test_optimising_scaled_coefficients_is_the_reference_sgd():
    """SGD (lr, momentum) on FrequencySynSet's parameters follows, step for step, the reference's SGD
    on unnormalised-DCT coefficients F decoded by the exact inverse of that transform."""
    height, width, k = 8, 6, 5
    generator = torch.Generator().manual_seed(0)
    masks = torch.stack([torch.randperm(height * width, generator=generator)[:k].sort().values for _ in range(2)])
    start = [torch.randn(3, 2, k, generator=generator, dtype=torch.float64) for _ in range(2)]
    target = torch.randn(6, 2, height, width, generator=generator, dtype=torch.float64)

    def loss_of(images):
        return ((images - target) ** 2).sum() + images.pow(4).sum() * 0.01

    ours = FrequencySynSet([c.float() for c in start], masks, (height, width)).double()
    ours_optimizer = torch.optim.SGD(ours.parameters(), lr=3.0, momentum=0.5)

    d_h, d_w = unnormalised_dct_matrix(height), unnormalised_dct_matrix(width)
    inverse_h, inverse_w = torch.linalg.inv(d_h), torch.linalg.inv(d_w)
    reference = [torch.nn.Parameter(p.detach().clone()) for p in ours.scaled]  # the same starting point
    reference_optimizer = torch.optim.SGD(reference, lr=3.0, momentum=0.5)

    def reference_decode():
        planes = []
        for block, mask in zip(reference, masks):
            plane = torch.zeros(block.shape[0], block.shape[1], height * width, dtype=torch.float64)
            plane = plane.scatter(2, mask.expand(block.shape[0], block.shape[1], k), block)
            planes.append(inverse_h @ plane.view(*plane.shape[:2], height, width) @ inverse_w.T)
        return torch.cat(planes)

    for _ in range(5):
        for optimizer, decode in ((ours_optimizer, ours.decode), (reference_optimizer, reference_decode)):
            optimizer.zero_grad()
            loss_of(decode()).backward()
            optimizer.step()
        assert torch.allclose(ours.decode(), reference_decode(), atol=1e-9, rtol=1e-9)
        for mine, theirs in zip(ours.scaled, reference):
            assert torch.allclose(mine, theirs, atol=1e-9, rtol=1e-9)


def test_synsets_export_what_they_decode():
    generator = torch.Generator().manual_seed(1)
    coefficients = [torch.randn(n, 1, 4, generator=generator) for n in (2, 3)]
    masks = torch.tensor([[0, 1, 5, 9], [0, 2, 3, 15]])
    synset = FrequencySynSet(coefficients, masks, (4, 4))
    assert synset.labels.tolist() == [0, 0, 1, 1, 1]
    fields = dict(classes=["a", "b"], mean=(0.5,), std=(0.5,), dataset="toy")
    artifact = synset.to_artifact(**fields)
    assert torch.allclose(artifact.decode(), synset.decode().detach(), atol=1e-6)
    assert torch.allclose(artifact.decode(), decode_classes(coefficients, masks, 4, 4), atol=1e-6)
    pixels = PixelSynSet([torch.randn(2, 1, 4, 4, generator=generator), torch.randn(2, 1, 4, 4, generator=generator)])
    exported = pixels.to_artifact(**fields)
    assert exported.k == 16 and torch.allclose(exported.decode(), pixels.decode().detach(), atol=1e-5)
