"""Shared helpers: small artifacts built from seeded random images."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from fredset import Artifact
from fredset.dct import masked_dct2
from fredset_cli.main import cli


def make_artifact(counts=(3, 3), channels: int = 1, size=(8, 8), k: int = 6, seed: int = 0,
                  low_frequency: bool = False, **fields) -> Artifact:
    """Coefficients = masked DCT of random images; masks random (or the k lowest flat indices)."""
    generator = torch.Generator().manual_seed(seed)
    height, width = size
    coefficients, masks = [], []
    for count in counts:
        mask = (torch.arange(k) if low_frequency
                else torch.randperm(height * width, generator=generator)[:k].sort().values)
        images = torch.randn(count, channels, height, width, generator=generator)
        coefficients.append(masked_dct2(images, mask).contiguous())
        masks.append(mask)
    defaults = dict(classes=[f"class-{i}" for i in range(len(counts))], image_size=size,
                    mean=(0.5,) * channels, std=(0.25,) * channels, dataset="synthetic",
                    provenance={"objective": "dm", "seed": seed, "budget": {"ipc": 1}})
    defaults.update(fields)
    return Artifact(coefficients=coefficients, masks=torch.stack(masks), **defaults)


@pytest.fixture
def artifact() -> Artifact:
    return make_artifact(counts=(4, 2, 3), channels=3, size=(8, 10), k=7)


def load_module(name: str, path: Path):
    """A module from a file outside the package (spec/reference_decoder.py, bench scripts), registered in
    sys.modules under ``name`` (dataclasses look their module up there)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def run_cli(*args):
    """``fredset ARGS`` through click's test runner (arguments stringified)."""
    return CliRunner().invoke(cli, [str(a) for a in args])


def one_line_error(result) -> str:
    """The one ``error:`` line a refused command prints (exit status 2, no traceback)."""
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.output, result.output
    return lines[0]
