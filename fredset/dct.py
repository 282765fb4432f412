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
from typing import NamedTuple, TypeVar

import numpy as np
import torch


@functools.lru_cache(maxsize=64)
def _cached_matrix(n: int, device: str, dtype: torch.dtype) -> torch.Tensor:
    return torch.from_numpy(_numpy_matrix(n, np.dtype(np.float64)).copy()).to(device=device, dtype=dtype)


@functools.lru_cache(maxsize=64)
def _numpy_matrix(n: int, dtype: np.dtype) -> np.ndarray:
    """The matrix as a read-only numpy array (numpy: cheaper on first use in a process)."""
    u, x = np.arange(n)[:, None], np.arange(n)[None, :]
    matrix = np.cos(math.pi * (2 * x + 1) * u / (2 * n)) * math.sqrt(2.0 / n)
    matrix[0] *= math.sqrt(0.5)
    matrix = matrix.astype(dtype)
    matrix.setflags(write=False)
    return matrix


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


def decode_classes(coefficients: Sequence[torch.Tensor], masks: torch.Tensor,
                   height: int, width: int) -> torch.Tensor:
    """Decode per-class coefficients [n_c, C, k] with per-class masks [K, k] into [sum n_c, C, H, W].

    Equivalent to scattering each class's coefficients into zero H x W planes at its mask and
    applying :func:`idct2`. Two exact ways are used, whichever needs fewer multiply-adds for a
    class: against its k basis images (k*H*W per plane), or separably on the rows U and columns V
    its mask touches, x = D_H[U]^T G D_W[V] with G the small |U| x |V| plane (|U|*W*(|V|+H) per
    plane; FreD's masks sit at low frequencies, so this is usually 2-5x less).
    Coefficients that require grad, or live on a GPU, give a torch result (differentiable);
    otherwise numpy computes it (see below why).
    """
    if len(coefficients) != masks.shape[0]:
        raise ValueError(f"{len(coefficients)} coefficient blocks for {masks.shape[0]} masks")
    if not coefficients:
        raise ValueError("nothing to decode")
    channels = coefficients[0].shape[1]
    dtype, device = coefficients[0].dtype, coefficients[0].device
    counts = [c.shape[0] for c in coefficients]
    plans = [_plan(mask, height, width) for mask in masks.detach().cpu().numpy()]
    differentiable = torch.is_grad_enabled() and any(c.requires_grad for c in coefficients)
    if differentiable or device.type != "cpu" or dtype not in _NUMPY_DTYPES:
        return torch.cat([_decode(block, plan, height, width, None) for block, plan in zip(coefficients, plans)])
    # CPU without autograd: numpy, single-threaded, into one output numpy allocates. numpy asks for
    # transparent huge pages, which halves the cost of first touching the output, and its small
    # matrix products run on the calling thread; torch's two threads faulting the same huge pages
    # were measured 4-8x slower on a fresh output (bench/format_bench.py, docs/RESULTS.md).
    output = np.empty((sum(counts), channels, height, width), dtype=_NUMPY_DTYPES[dtype])
    row = 0
    for block, plan in zip(coefficients, plans):
        _decode(block.detach().numpy(), plan, height, width, output[row:row + block.shape[0]])
        row += block.shape[0]
    return torch.from_numpy(output)


Array = TypeVar("Array", torch.Tensor, np.ndarray)  # the decode steps work on either


class _Plan(NamedTuple):
    """Where one class's k coefficients sit: row u and column v of each, the distinct rows U and
    columns V, each coefficient's place in the small |U| x |V| plane, and the cheaper way to decode."""

    rows: np.ndarray
    cols: np.ndarray
    row_set: np.ndarray
    col_set: np.ndarray
    position: np.ndarray
    separable: bool


def _plan(mask: np.ndarray, height: int, width: int) -> _Plan:
    """Index arithmetic in numpy: masks are tiny and this avoids a dozen small tensor operations."""
    rows, cols = mask // width, mask % width
    row_set, row_pos = _distinct(rows, height)
    col_set, col_pos = _distinct(cols, width)
    separable = len(row_set) * width * (len(col_set) + height) < len(mask) * height * width
    return _Plan(rows, cols, row_set, col_set, row_pos * len(col_set) + col_pos, separable)


def _distinct(values: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The sorted distinct values in [0, size) and each value's index among them."""
    present = np.zeros(size, dtype=bool)
    present[values] = True
    return np.flatnonzero(present), (np.cumsum(present) - 1)[values]


def _decode(block: Array, plan: _Plan, height: int, width: int, out: Array | None) -> Array:
    decode = _decode_separable if plan.separable else _decode_basis
    return decode(block, plan, height, width, out)


def _decode_basis(block: Array, plan: _Plan, height: int, width: int, out: Array | None) -> Array:
    """One class against the basis images of its mask: [n*C, k] @ [k, H*W]."""
    d_h, d_w = _matrices(block, height, width)
    basis = (d_h[plan.rows][:, :, None] * d_w[plan.cols][:, None, :]).reshape(len(plan.rows), height * width)
    flat = block.reshape(-1, block.shape[-1])
    if out is None:
        return (flat @ basis).reshape(*block.shape[:2], height, width)
    _matmul(flat, basis, out.reshape(flat.shape[0], height * width))
    return out


def _decode_separable(block: Array, plan: _Plan, height: int, width: int, out: Array | None) -> Array:
    """One class on the rows U and columns V its mask touches: D_H[U]^T @ G @ D_W[V]."""
    d_h, d_w = _matrices(block, height, width)
    count, channels, k = block.shape
    used_rows, used_cols = len(plan.row_set), len(plan.col_set)
    if isinstance(block, np.ndarray):
        plane = np.zeros((count, channels, used_rows * used_cols), dtype=block.dtype)
        plane[:, :, plan.position] = block
    else:  # scatter keeps autograd's graph
        position = torch.from_numpy(plan.position).to(block.device).expand(count, channels, k)
        plane = block.new_zeros(count, channels, used_rows * used_cols).scatter(2, position, block)
    half = plane.reshape(count, channels, used_rows, used_cols) @ d_w[plan.col_set]
    return _matmul(d_h[plan.row_set].T, half, out)


def _matrices(block: Array, height: int, width: int) -> tuple[Array, Array]:
    """D_H and D_W in the block's kind of array, dtype and device."""
    if isinstance(block, np.ndarray):
        return _numpy_matrix(height, block.dtype), _numpy_matrix(width, block.dtype)
    return (dct_matrix(height, device=block.device, dtype=block.dtype),
            dct_matrix(width, device=block.device, dtype=block.dtype))


def _matmul(left: Array, right: Array, out: Array | None) -> Array:
    if isinstance(left, np.ndarray):
        return np.matmul(left, right, out=out)
    return torch.matmul(left, right, out=out)


_NUMPY_DTYPES = {torch.float32: np.float32, torch.float64: np.float64}
