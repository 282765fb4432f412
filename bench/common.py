"""What every benchmark script records about the machine, and how it writes its JSON (shared by the bench
scripts, next to timing.py).

Only the standard library is imported here: bench/fuzz_report.py's worker processes import this module
before they limit their address space, so torch, h5py and the rest are imported when a fact is asked for.
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _torch():
    import torch

    return torch


def _cuda_device() -> str | None:
    torch = _torch()
    return torch.cuda.get_device_name() if torch.cuda.is_available() else None


def _version(module: str, attribute: str = "__version__") -> Callable[[], str]:
    def read() -> str:
        value: Any = __import__(module)
        for name in attribute.split("."):
            value = getattr(value, name)
        return value
    return read


FACTS: dict[str, Callable[[], Any]] = {
    "python": platform.python_version,
    "platform": platform.platform,
    "machine": platform.machine,
    "cpus": os.cpu_count,
    "threads": lambda: _torch().get_num_threads(),
    "cuda": _cuda_device,
    "torch": _version("torch"),
    "fredset": _version("fredset"),
    "kornia": _version("kornia"),
    "numpy": _version("numpy"),
    "zstandard": _version("zstandard"),
    "h5py": _version("h5py", "version.version"),
    "hdf5": _version("h5py", "version.hdf5_version"),
}


def machine(*facts: str) -> dict[str, Any]:
    """The named facts (keys of FACTS) in the order given, e.g. ``machine("torch", "threads", "cpus")``.

    Each script asks for the same facts, in the same order, as its reports have always held.
    """
    return {fact: FACTS[fact]() for fact in facts}


def write_json(path: Path, data: Any) -> None:
    """``data`` as indented JSON (anything else, such as a Path, as its str) at ``path``, folders made."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
