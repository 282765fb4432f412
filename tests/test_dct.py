import numpy as np
import pytest
import scipy.fft
import torch

from fredset.dct import dct2, dct_matrix, decode_classes, idct2, masked_dct2


def scatter_and_invert(coefficients, masks, height, width):
    """The definition: scatter each class's coefficients into zero planes, inverse DCT (scipy, float64)."""
    decoded = []
    for block, mask in zip(coefficients, masks):
        plane = np.zeros((block.shape[0], block.shape[1], height * width))
        plane[..., mask.numpy()] = block.double().numpy()
        decoded.append(scipy.fft.idctn(plane.reshape(*plane.shape[:2], height, width), axes=(-2, -1), norm="ortho"))
    return torch.from_numpy(np.concatenate(decoded))


def test_matrix_is_orthonormal():
    for n in (1, 2, 7, 28, 32):
        d = dct_matrix(n, dtype=torch.float64)
        assert torch.allclose(d @ d.T, torch.eye(n, dtype=torch.float64), atol=1e-12)


@pytest.mark.parametrize("shape", [(2, 3, 8, 8), (5, 28, 28), (1, 1, 16, 24), (3, 7, 5)])
def test_dct2_matches_scipy_and_inverts(shape):
    x = torch.randn(*shape, dtype=torch.float64)
    expected = scipy.fft.dctn(x.numpy(), axes=(-2, -1), norm="ortho")
    assert np.allclose(dct2(x).numpy(), expected, atol=1e-12)
    assert torch.allclose(idct2(dct2(x)), x, atol=1e-12)
    assert np.allclose(idct2(x).numpy(), scipy.fft.idctn(x.numpy(), axes=(-2, -1), norm="ortho"), atol=1e-12)


def test_masked_dct2_picks_flat_indices():
    x = torch.randn(2, 3, 6, 9, dtype=torch.float64)
    mask = torch.tensor([0, 5, 9, 40, 53])
    assert torch.equal(masked_dct2(x, mask), dct2(x).flatten(-2)[..., mask])


@pytest.mark.parametrize("height,width,k,low", [(32, 32, 64, True), (32, 32, 64, False), (16, 24, 8, True),
                                                 (16, 24, 3, False), (28, 28, 700, False), (5, 3, 15, True)])
def test_decode_classes_equals_scatter_then_inverse(height, width, k, low, monkeypatch):
    """Both decoding paths (separable for compact masks, basis images otherwise) are exact."""
    generator = torch.Generator().manual_seed(k)
    counts = [3, 1, 5]
    coefficients = [torch.randn(n, 2, k, dtype=torch.float64, generator=generator) for n in counts]
    if low:
        masks = torch.stack([torch.arange(k)] * 3)
    else:
        masks = torch.stack([torch.randperm(height * width, generator=generator)[:k].sort().values
                             for _ in counts])
    expected = scatter_and_invert(coefficients, masks, height, width)
    assert torch.allclose(decode_classes(coefficients, masks, height, width), expected, atol=1e-12)
    # and with autograd on (separate code path without a preallocated output)
    leaves = [c.clone().requires_grad_() for c in coefficients]
    decoded = decode_classes(leaves, masks, height, width)
    assert torch.allclose(decoded.detach(), expected, atol=1e-12)
    decoded.square().sum().backward()
    assert all(leaf.grad is not None and leaf.grad.shape == leaf.shape for leaf in leaves)


def test_both_paths_are_exercised(monkeypatch):
    import fredset.dct as dct

    calls = {"_decode_separable": 0, "_decode_basis": 0}

    def spy(name):
        original = getattr(dct, name)

        def counted(*args):
            calls[name] += 1
            return original(*args)
        return counted

    for name in calls:
        monkeypatch.setattr(dct, name, spy(name))
    block = [torch.randn(2, 1, 4)]
    dct.decode_classes(block, torch.tensor([[0, 1, 32, 33]]), 32, 32)  # 2 rows x 2 columns: separable
    dct.decode_classes(block, torch.tensor([[0, 300, 700, 1000]]), 32, 32)  # spread out: basis images
    assert calls == {"_decode_separable": 1, "_decode_basis": 1}


def test_decode_gradient_is_correct():
    coefficients = [torch.randn(2, 1, 4, dtype=torch.float64, requires_grad=True)]
    masks = torch.tensor([[0, 3, 7, 12]])
    assert torch.autograd.gradcheck(lambda c: decode_classes([c], masks, 4, 5), coefficients)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_decode_on_cuda_matches_cpu():
    coefficients = [torch.randn(n, 3, 64) for n in (16, 9)]
    masks = torch.stack([torch.randperm(1024)[:64].sort().values for _ in range(2)])
    cpu = decode_classes(coefficients, masks, 32, 32)
    gpu = decode_classes([c.cuda() for c in coefficients], masks.cuda(), 32, 32)
    assert gpu.is_cuda and torch.allclose(gpu.cpu(), cpu, atol=1e-5)
