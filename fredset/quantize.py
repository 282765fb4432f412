"""Uniform coefficient codes: a ``bits``-bit integer times a step per (class, channel, frequency).

The step is the largest magnitude of the class's coefficients at that channel and frequency divided by
the largest code, rounded to a float16 value with two fraction bits (the file stores float16; so coarse a
table compresses to about a third, which buys instances at small budgets; docs/ALGORITHM.md, Quantisation); the value of a code is ``step * code``
computed once in float32, which is all a decoder does, so every decoder and the distillation loop get the
same bits (docs/ALGORITHM.md, Quantisation). Distillation optimises through the quantiser with a
straight-through gradient (:func:`fake_quantize`), so what it evaluates is what the file decodes to.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import FredsetError

__all__ = ["BITS", "Quantization", "code_limit", "codes_of", "dequantize", "fake_quantize", "grid_steps"]

BITS = tuple(range(2, 9))  # codes are stored one per byte, so at most 8 bits
FLOAT16_MAX = 65504.0
STEP_FRACTION_BITS = 2  # bits of a step's significand after the leading one


def code_limit(bits: int) -> int:
    """The largest code magnitude: codes are -(2^(b-1) - 1) .. 2^(b-1) - 1, symmetric around zero."""
    if bits not in BITS:
        raise FredsetError(f"bits must be one of {', '.join(map(str, BITS))}, got {bits}")
    return 2 ** (bits - 1) - 1


def _coarse(values: torch.Tensor, rounding) -> torch.Tensor:
    """``values`` rounded (``torch.round``: to nearest even, ``torch.ceil``: up) to :data:`STEP_FRACTION_BITS`
    fraction bits of their significand; 0 stays 0."""
    significand, exponent = torch.frexp(values)  # values = significand * 2^exponent, significand in [0.5, 1)
    scale = 2.0 ** (STEP_FRACTION_BITS + 1)
    return torch.ldexp(rounding(significand * scale) / scale, exponent)


def grid_steps(block: torch.Tensor, bits: int) -> torch.Tensor:
    """Steps [C, k] (float32 holding float16 values) for a class block [n, C, k]: max |x| / limit, rounded to
    the nearest value with :data:`STEP_FRACTION_BITS` fraction bits, but never below max |x| / (limit + 1/2),
    so that the largest value lies at most half a step past the last code (:func:`codes_of` clips it there).
    """
    limit = code_limit(bits)
    magnitude = block.detach().abs().amax(dim=0).float()
    steps = _coarse(magnitude / limit, torch.round)
    least = magnitude / (limit + 0.5)
    steps = torch.where(steps < least, _coarse(least, torch.ceil), steps)
    if bool((steps > FLOAT16_MAX).any()):
        raise FredsetError(f"coefficients up to {float(magnitude.max()):.4g} need a step beyond the float16 "
                           f"range at {bits} bits")
    return steps.half().float()


def codes_of(block: torch.Tensor, steps: torch.Tensor, bits: int) -> torch.Tensor:
    """The nearest codes (ties to even) of ``block`` [n, C, k] on ``steps`` [C, k], clipped; int8.

    Clipped to the whole ``bits``-bit range -2^(b-1) .. 2^(b-1)-1 that a file may hold (FORMAT.md), so every
    file's values map back to its own codes; :func:`grid_steps`' steps never reach -2^(b-1). A zero step
    (every value of that channel and frequency is zero) gets code 0.
    """
    limit = code_limit(bits)
    safe = torch.where(steps > 0, steps, torch.ones_like(steps))
    codes = torch.round(block.detach().float() / safe).clamp_(-limit - 1, limit)
    return torch.where(steps > 0, codes, torch.zeros_like(codes)).to(torch.int8)


def dequantize(codes: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    """``step * code`` in float32, one rounding: exactly what a decoder of the file computes."""
    return steps.float() * codes.float()


class _StraightThrough(torch.autograd.Function):
    """Forward: the quantised values exactly; backward: the gradient of the identity."""

    @staticmethod
    def forward(ctx, block: torch.Tensor, quantized: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return quantized

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return grad, None


def fake_quantize(block: torch.Tensor, bits: int) -> torch.Tensor:
    """``block`` [n, C, k] moved to its grid (steps from its current values), with a straight-through gradient.

    The forward value is bit for bit ``dequantize(codes_of(block, s, bits), s)`` with ``s =
    grid_steps(block, bits)``: what the written file decodes to.
    """
    steps = grid_steps(block, bits).to(block.device)
    quantized = dequantize(codes_of(block, steps, bits), steps)
    return _StraightThrough.apply(block, quantized)


@dataclass(frozen=True, eq=False)
class Quantization:
    """The grid an artifact's coefficients lie on: ``bits`` and per class the steps [C, k] (float16 values).

    An :class:`~fredset.artifact.Artifact` with a quantization holds exactly ``dequantize(codes, steps)``,
    so writing it with ``bits``-bit codes loses nothing.
    """

    bits: int
    steps: list[torch.Tensor]

    def __post_init__(self) -> None:
        code_limit(self.bits)
        for label, steps in enumerate(self.steps):
            if not isinstance(steps, torch.Tensor) or steps.dim() != 2 or steps.dtype != torch.float32:
                raise FredsetError(f"class {label}: quantization steps must be a float32 tensor [C, k]")
            if not bool(torch.isfinite(steps).all()) or bool((steps < 0).any()) \
                    or not torch.equal(steps.half().float(), steps):
                raise FredsetError(f"class {label}: quantization steps must be finite, >= 0 and float16 values")

    @classmethod
    def of(cls, coefficients: list[torch.Tensor], bits: int) -> Quantization:
        """The grid :func:`grid_steps` picks for each class block."""
        return cls(bits, [grid_steps(block, bits).cpu() for block in coefficients])

    def codes(self, label: int, block: torch.Tensor) -> torch.Tensor:
        """Class ``label``'s int8 codes [n, C, k] of ``block`` on this grid."""
        return codes_of(block, self.steps[label].to(block.device), self.bits)

    def apply(self, coefficients: list[torch.Tensor]) -> list[torch.Tensor]:
        """The coefficients moved to this grid (float32, detached)."""
        return [dequantize(self.codes(label, block), self.steps[label].to(block.device))
                for label, block in enumerate(coefficients)]
