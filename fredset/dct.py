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

from .errors import FredsetError


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


#: Each class is decoded in chunks whose intermediates (beyond the output) stay under this many bytes,
#: unless one instance-channel plane needs more (then one plane, or one image row, per chunk).
WORKING_CHUNK_BYTES = 64 * 2**20
#: The default limit on a decode's working memory; readers pass their ``max_decoded_bytes`` instead.
DEFAULT_MAX_WORKING_BYTES = 4 * 2**30


def decode_classes(coefficients: Sequence[torch.Tensor], masks: torch.Tensor,
                   height: int, width: int, *, max_working_bytes: int = DEFAULT_MAX_WORKING_BYTES) -> torch.Tensor:
    """Decode per-class coefficients [n_c, C, k] with per-class masks [K, k] into [sum n_c, C, H, W].

    Equivalent to scattering each class's coefficients into zero H x W planes at its mask and
    applying :func:`idct2`. Two exact ways are used, whichever costs less for a class (:func:`_plan`):
    against its k basis images (k*H*W multiply-adds per plane), or separably on the rows U and
    columns V its mask touches, x = D_H[U]^T G D_W[V] with G the small |U| x |V| plane (|U|*W*(|V|+H)
    per plane; FreD's masks sit at low frequencies, so this is usually 2-5x less).

    Working memory: besides the output, a class's intermediates (basis images, or the planes G and
    G D_W[V], and the rows of D_H and D_W used) are bounded before anything is allocated. Each way
    is decoded in chunks (of image rows for the basis, of planes for the separable way) whose
    intermediates stay under WORKING_CHUNK_BYTES where one row or plane allows; a way whose smallest
    chunk needs more than ``max_working_bytes`` is not used, and if neither fits the decode raises
    FredsetError before allocating anything. With autograd the graph also keeps what backward needs
    (a basis whole, so it counts in full) and the result is assembled with one extra copy.
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
    differentiable = torch.is_grad_enabled() and any(c.requires_grad for c in coefficients)
    in_torch = differentiable or device.type != "cpu" or dtype not in _NUMPY_DTYPES
    itemsize = torch.finfo(dtype).bits // 8 if dtype.is_floating_point else 8
    plans = [_plan(mask, height, width, count * channels, itemsize, max_working_bytes, in_torch, differentiable,
                   label) for label, (mask, count) in enumerate(zip(masks.detach().cpu().numpy(), counts))]
    if differentiable:
        return torch.cat([_decode(block, plan, height, width, None) for block, plan in zip(coefficients, plans)])
    if in_torch:
        output = torch.empty((sum(counts), channels, height, width), dtype=dtype, device=device)
        row = 0
        for block, plan in zip(coefficients, plans):
            _decode(block.detach(), plan, height, width, output[row:row + block.shape[0]])
            row += block.shape[0]
        return output
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
    columns V, each coefficient's row and column among them and its place in the small |U| x |V|
    plane; the cheaper way to decode, its chunk (image rows for the basis, planes for the separable
    way) and the bytes of intermediates that chunk needs."""

    rows: np.ndarray
    cols: np.ndarray
    row_set: np.ndarray
    col_set: np.ndarray
    row_pos: np.ndarray
    col_pos: np.ndarray
    position: np.ndarray
    separable: bool
    chunk: int
    working: int


# Rows of the DCT matrices come from a cache up to this side (a 256 x 256 float64 matrix is 512 KiB);
# beyond it only the rows a mask uses are computed, so a large side never builds its full matrix.
_CACHED_SIDE = 256
# Building a basis costs about 1-3 ns per element and a product's multiply-add about 0.02-0.04 ns
# (measured on 1-1024 planes of 32x32..1024x1024, one BLAS thread), so a basis beyond the caches
# costs as much as this many multiply-adds per element. Small bases keep the plain count (the
# tuned common case: CIFAR-sized masks); there the build is a small part of n*C*k*H*W.
_STREAMED_BASIS_BYTES = 2**20
_STREAMED_BASIS_COST = 64


def _plan(mask: np.ndarray, height: int, width: int, planes: int = 1, itemsize: int = 4,
          limit: int = DEFAULT_MAX_WORKING_BYTES, in_torch: bool = False, differentiable: bool = False,
          label: int = 0) -> _Plan:
    """Index arithmetic in numpy (masks are tiny; this avoids a dozen small tensor operations), and
    the choice of way and chunk from each way's multiply-adds and intermediate bytes.

    Intermediates counted, in bytes (i = itemsize, P = H*W; the rows of D_H and D_W a way uses count
    i + 8 each where a side is above _CACHED_SIDE, for the float64 copy they are computed in):
    basis: D_H[rows] and D_W[cols], k*(H+W)*i, and k*W*i per image row of basis images (all H rows
    with autograd, which keeps the basis), plus n*C*W*i per row of result in torch (copied into the
    output); separable: D_H[U] and D_W[V], (|U|*H + |V|*W)*i, and (|U|*|V| + |U|*W)*i per plane for
    G and G D_W[V], plus H*W*i in torch. Either way's multiply-adds: basis n*C*k*P (plus
    _STREAMED_BASIS_COST*k*P when the basis would not stay in cache), separable n*C*|U|*W*(|V|+H).
    """
    rows, cols = mask // width, mask % width
    row_set, row_pos = _distinct(rows, height)
    col_set, col_pos = _distinct(cols, width)
    k, used_rows, used_cols = len(mask), len(row_set), len(col_set)
    pixels = height * width
    position = row_pos * used_cols + col_pos
    separable_cost = planes * used_rows * width * (used_cols + height)
    basis_cost = planes * k * pixels
    if k * pixels * itemsize > _STREAMED_BASIS_BYTES:
        basis_cost += _STREAMED_BASIS_COST * k * pixels
    row_bytes = itemsize + 8 if height > _CACHED_SIDE or width > _CACHED_SIDE else itemsize
    matrices = (used_rows * height + used_cols * width) * row_bytes
    per_plane = (used_rows * (used_cols + width) + (pixels if in_torch else 0)) * itemsize
    budget = WORKING_CHUNK_BYTES if WORKING_CHUNK_BYTES < limit else limit
    if separable_cost < basis_cost and matrices + planes * per_plane <= budget:  # the common case: one chunk
        return _Plan(rows, cols, row_set, col_set, row_pos, col_pos, position, True, planes,
                     matrices + planes * per_plane)
    fixed = k * (height + width) * row_bytes
    per_row = (k + (planes if in_torch else 0)) * width * itemsize
    smallest_separable = matrices + per_plane
    smallest_basis = fixed + (height if differentiable else 1) * per_row
    if smallest_separable > limit and smallest_basis > limit:
        raise FredsetError(f"decoding class {label} ({height}x{width}, k {k}) needs at least "
                           f"{min(smallest_separable, smallest_basis)} bytes of working memory, more than the "
                           f"{limit}-byte limit (max_decoded_bytes)")
    separable = smallest_basis > limit or (smallest_separable <= limit and separable_cost < basis_cost)
    if separable:
        chunk = max(1, min(planes, (budget - matrices) // max(per_plane, 1)))
        working = matrices + chunk * per_plane
    else:
        chunk = height if differentiable else max(1, min(height, (budget - fixed) // max(per_row, 1)))
        working = fixed + chunk * per_row
    return _Plan(rows, cols, row_set, col_set, row_pos, col_pos, position, separable, chunk, working)


def _distinct(values: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The sorted distinct values in [0, size) and each value's index among them."""
    present = np.zeros(size, dtype=bool)
    present[values] = True
    return np.flatnonzero(present), (np.cumsum(present) - 1)[values]


def _decode(block: Array, plan: _Plan, height: int, width: int, out: Array | None) -> Array:
    decode = _decode_separable if plan.separable else _decode_basis
    return decode(block, plan, height, width, out)


def _decode_basis(block: Array, plan: _Plan, height: int, width: int, out: Array | None) -> Array:
    """One class against the basis images of its mask: [n*C, k] @ [k, H*W], in chunks of image rows."""
    flat = block.reshape(-1, block.shape[-1])
    k = flat.shape[1]
    d_h = _rows(block, height, plan.rows)  # [k, H]: row u of each coefficient
    d_w = _rows(block, width, plan.cols)  # [k, W]
    if out is None:  # autograd: one chunk (the graph keeps the basis anyway)
        basis = (d_h[:, :, None] * d_w[:, None, :]).reshape(k, height * width)
        return (flat @ basis).reshape(*block.shape[:2], height, width)
    target = out.reshape(flat.shape[0], height, width)
    for top in range(0, height, plan.chunk):
        bottom = min(top + plan.chunk, height)
        basis = (d_h[:, top:bottom, None] * d_w[:, None, :]).reshape(k, (bottom - top) * width)
        if isinstance(flat, np.ndarray):  # a strided view BLAS writes in place
            np.matmul(flat, basis, out=target.reshape(flat.shape[0], height * width)[:, top * width:bottom * width])
        else:
            target[:, top:bottom].copy_((flat @ basis).reshape(-1, bottom - top, width))
    return out


def _decode_separable(block: Array, plan: _Plan, height: int, width: int, out: Array | None) -> Array:
    """One class on the rows U and columns V its mask touches: D_H[U]^T @ G @ D_W[V], in chunks of planes."""
    d_h = _rows(block, height, plan.row_set)  # [|U|, H]
    d_w = _rows(block, width, plan.col_set)  # [|V|, W]
    count, channels, k = block.shape
    used_rows, used_cols = len(plan.row_set), len(plan.col_set)
    if out is not None and isinstance(block, np.ndarray) and plan.chunk >= count * channels:  # one chunk
        plane = np.zeros((count, channels, used_rows * used_cols), dtype=block.dtype)
        plane[:, :, plan.position] = block
        return np.matmul(d_h.T, plane.reshape(count, channels, used_rows, used_cols) @ d_w, out=out)
    flat = block.reshape(-1, block.shape[-1])
    planes, k = flat.shape
    used_rows, used_cols = len(plan.row_set), len(plan.col_set)
    target = None if out is None else out.reshape(planes, height, width)
    pieces = []
    for start in range(0, planes, plan.chunk):
        part = flat[start:start + plan.chunk] if plan.chunk < planes else flat
        count = part.shape[0]
        if isinstance(part, np.ndarray):
            plane = np.zeros((count, used_rows * used_cols), dtype=part.dtype)
            plane[:, plan.position] = part
        else:  # scatter keeps autograd's graph
            position = torch.from_numpy(plan.position).to(part.device).expand(count, k)
            plane = part.new_zeros(count, used_rows * used_cols).scatter(1, position, part)
        half = plane.reshape(count, used_rows, used_cols) @ d_w
        if target is None:
            pieces.append(d_h.T @ half)
        elif isinstance(half, np.ndarray):
            np.matmul(d_h.T, half, out=target[start:start + count] if count < planes else target)
        else:
            target[start:start + count].copy_(d_h.T @ half)
    if target is not None:
        return out
    if not pieces:  # no instances
        return block.new_zeros(*block.shape[:2], height, width)
    whole = pieces[0] if len(pieces) == 1 else torch.cat(pieces)
    return whole.reshape(*block.shape[:2], height, width)


def _rows(like: Array, n: int, frequencies: np.ndarray) -> Array:
    """Rows ``frequencies`` of the n-point DCT matrix, [len(frequencies), n], in the kind of array,
    dtype and device of ``like``; from the cached matrix up to _CACHED_SIDE, else computed alone."""
    if isinstance(like, np.ndarray):
        if n <= _CACHED_SIDE:
            return _numpy_matrix(n, like.dtype)[frequencies]
        return _matrix_rows(n, frequencies).astype(like.dtype)
    if n <= _CACHED_SIDE:
        return dct_matrix(n, device=like.device, dtype=like.dtype)[frequencies]
    return torch.from_numpy(_matrix_rows(n, frequencies)).to(device=like.device, dtype=like.dtype)


def _matrix_rows(n: int, frequencies: np.ndarray) -> np.ndarray:
    """Rows of the DCT matrix in float64, computed exactly as :func:`_numpy_matrix` computes them."""
    x = np.arange(n)[None, :]
    rows = math.pi * (2 * x + 1) * frequencies[:, None]
    rows /= 2 * n
    np.cos(rows, out=rows)
    rows *= math.sqrt(2.0 / n)
    rows[frequencies == 0] *= math.sqrt(0.5)
    return rows


_NUMPY_DTYPES = {torch.float32: np.float32, torch.float64: np.float64}
