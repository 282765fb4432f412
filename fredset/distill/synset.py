"""The frequency parameterisation of FreD: the explained-variance (EVR) mask."""

from __future__ import annotations

import torch


def reference_weights(height: int, width: int, *, device: torch.device | str | None = None) -> torch.Tensor:
    """w_u * w_v with w_0 = 2, else 1 ([H, W]).

    The reference ranks variances of *unnormalised* DCT-II coefficients, which weights the DC term
    x4 and the first row/column x2 relative to the orthonormal transform (fact sheet section 3);
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
