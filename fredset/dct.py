"""Orthonormal 2-D DCT-II in matrix form, batched, on any device.

For an N-point signal the orthonormal DCT-II matrix is
    D[u, x] = a(u) * cos(pi * (2x + 1) * u / (2N)),  a(0) = sqrt(1/N), a(u>0) = sqrt(2/N),
so D is orthogonal (D^-1 = D^T). For an H x W plane X = D_H x D_W^T and x = D_H^T X D_W.
This equals scipy.fft.dctn(x, type=2, norm="ortho").
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import torch

# Largest IDCT basis block built at once while decoding (bytes); bounds memory for large images.
_BASIS_BLOCK_BYTES = 64 * 2**20


@functools.lru_cache(maxsize=64)
def _cached_matrix(n: int, device: str, dtype: torch.dtype) -> torch.Tensor:
    u = torch.arange(n, dtype=torch.float64).unsqueeze(1)
    x = torch.arange(n, dtype=torch.float64).unsqueeze(0)
    matrix = torch.cos(math.pi * (2 * x + 1) * u / (2 * n)) * math.sqrt(2.0 / n)
    matrix[0] *= math.sqrt(0.5)
    return matrix.to(device=device, dtype=dtype)


def dct_matrix(n: int, *, device: torch.device | str | None = None,
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The orthonormal DCT-II matrix [n, n] (rows are frequencies); cached per device and dtype."""
    if n < 1:
        raise ValueError(f"DCT size must be positive, got {n}")
    return _cached_matrix(int(n), str(torch.device(device or "cpu")), dtype)


def dct2(images: torch.Tensor) -> torch.Tensor:
    """Orthonormal 2-D DCT-II over the last two dimensions of a [..., H, W] tensor."""
    d_h = dct_matrix(images.shape[-2], device=images.device, dtype=images.dtype)
    d_w = dct_matrix(images.shape[-1], device=images.device, dtype=images.dtype)
    return d_h @ images @ d_w.T


def idct2(coefficients: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`dct2` over the last two dimensions."""
    d_h = dct_matrix(coefficients.shape[-2], device=coefficients.device, dtype=coefficients.dtype)
    d_w = dct_matrix(coefficients.shape[-1], device=coefficients.device, dtype=coefficients.dtype)
    return d_h.T @ coefficients @ d_w


def masked_dct2(images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The coefficients of [..., H, W] images at the flat frequency indices ``mask`` [k] -> [..., k]."""
    return dct2(images).flatten(-2)[..., mask]


def idct_basis(masks: torch.Tensor, height: int, width: int, *,
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Basis images of the frequencies in ``masks`` [..., k] -> [..., k, H*W].

    Flat index p = u*W + v selects frequency (u, v); its basis image is outer(D_H[u], D_W[v]),
    so a masked plane decodes as ``coefficients @ basis``.
    """
    d_h = dct_matrix(height, device=masks.device, dtype=dtype)
    d_w = dct_matrix(width, device=masks.device, dtype=dtype)
    rows, cols = torch.div(masks, width, rounding_mode="floor"), masks % width
    return (d_h[rows].unsqueeze(-1) * d_w[cols].unsqueeze(-2)).flatten(-2)


def decode_classes(coefficients: Sequence[torch.Tensor], masks: torch.Tensor,
                   height: int, width: int) -> torch.Tensor:
    """Decode per-class coefficients [n_c, C, k] with per-class masks [K, k] into [sum n_c, C, H, W].

    Equivalent to scattering each class's coefficients into zero H x W planes at its mask and
    applying :func:`idct2`. Two exact ways are used, whichever needs fewer multiply-adds for a
    block of classes: against each class's k basis images (k*H*W per plane), or separably on the
    rows U and columns V the mask touches, x = D_H[U]^T G D_W[V] with G the small |U| x |V| plane
    (|U|*W*(|V|+H) per plane; FreD's masks sit at low frequencies, so this is usually 2-5x less).
    Without autograd the products write straight into one output tensor; coefficients that
    require grad give a differentiable result.
    """
    if len(coefficients) != masks.shape[0]:
        raise ValueError(f"{len(coefficients)} coefficient blocks for {masks.shape[0]} masks")
    if not coefficients:
        raise ValueError("nothing to decode")
    channels, k = coefficients[0].shape[1:]
    dtype, device = coefficients[0].dtype, coefficients[0].device
    counts = [c.shape[0] for c in coefficients]
    block = max(1, _BASIS_BLOCK_BYTES // (k * height * width * dtype.itemsize))
    differentiable = torch.is_grad_enabled() and any(c.requires_grad for c in coefficients)
    output = None if differentiable else torch.empty(sum(counts), channels, height, width,
                                                     dtype=dtype, device=device)
    pieces, row = [], 0
    for start in range(0, len(coefficients), block):
        group = list(coefficients[start:start + block])
        group_masks = masks[start:start + len(group)]
        rows = torch.div(group_masks, width, rounding_mode="floor")
        cols = group_masks % width
        used_rows = int(_distinct_per_row(rows).max())
        used_cols = int(_distinct_per_row(cols).max())
        separable = used_rows * width * (used_cols + height) < k * height * width
        for coefficient_block, class_rows, class_cols in zip(group, rows, cols):
            target = None if output is None else output[row:row + coefficient_block.shape[0]]
            decode = _decode_separable if separable else _decode_basis
            decoded = decode(coefficient_block, class_rows, class_cols, height, width, target)
            pieces.append(decoded)
            row += coefficient_block.shape[0]
    return output if output is not None else torch.cat(pieces)


def _distinct_per_row(values: torch.Tensor) -> torch.Tensor:
    """Number of distinct values in each row of a 2-D integer tensor."""
    ordered = values.sort(dim=1).values
    return 1 + (ordered[:, 1:] != ordered[:, :-1]).sum(dim=1)


def _decode_basis(block: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, height: int, width: int,
                  out: torch.Tensor | None) -> torch.Tensor:
    """One class against the basis images of its mask: [n*C, k] @ [k, H*W]."""
    d_h = dct_matrix(height, device=block.device, dtype=block.dtype)
    d_w = dct_matrix(width, device=block.device, dtype=block.dtype)
    basis = (d_h[rows].unsqueeze(-1) * d_w[cols].unsqueeze(-2)).flatten(-2)
    flat = block.reshape(-1, block.shape[-1])
    if out is None:
        return (flat @ basis).view(*block.shape[:2], height, width)
    torch.mm(flat, basis, out=out.view(flat.shape[0], height * width))
    return out


def _decode_separable(block: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, height: int, width: int,
                      out: torch.Tensor | None) -> torch.Tensor:
    """One class on the rows U and columns V its mask touches: D_H[U]^T @ G @ D_W[V]."""
    d_h = dct_matrix(height, device=block.device, dtype=block.dtype)
    d_w = dct_matrix(width, device=block.device, dtype=block.dtype)
    row_set, row_pos = torch.unique(rows, return_inverse=True)
    col_set, col_pos = torch.unique(cols, return_inverse=True)
    count, channels, k = block.shape
    position = (row_pos * len(col_set) + col_pos).expand(count, channels, k)
    plane = block.new_zeros(count, channels, len(row_set) * len(col_set)).scatter(2, position, block)
    half = plane.view(count, channels, len(row_set), len(col_set)) @ d_w[col_set]
    return torch.matmul(d_h[row_set].T, half, out=out)
