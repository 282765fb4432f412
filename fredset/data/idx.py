"""The IDX format of MNIST and Fashion-MNIST (optionally gzipped), read without torchvision."""

from __future__ import annotations

import gzip
import os

import numpy as np

from ..errors import FredsetError

_TYPES = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
          0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """The array stored in an IDX file (``.gz`` is decompressed), in native byte order."""
    path = os.fspath(path)
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as stream:
            raw = stream.read()
    except FileNotFoundError:
        raise FredsetError("no such file", path) from None
    except (OSError, EOFError) as error:
        raise FredsetError(f"cannot read IDX file ({error})", path) from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _TYPES or raw[3] == 0:
        raise FredsetError("not an IDX file (bad magic number)", path)
    dtype, ndim = _TYPES[raw[2]], raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    start = 4 + 4 * ndim
    if len(raw) != start + int(np.prod(shape)) * dtype.itemsize:
        raise FredsetError(f"IDX file size does not match its shape {shape}", path)
    return np.frombuffer(raw, dtype=dtype, offset=start).reshape(shape).astype(dtype.newbyteorder("="))
