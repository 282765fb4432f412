"""Writing a .fredset file: encode, build the HDF5 container in memory, add the header, rename into place."""

from __future__ import annotations

import io
import os
from collections.abc import Mapping

import h5py
import numpy as np

from ..artifact import Artifact
from ..errors import FredsetError
from ..files import write_atomically
from .codec import ENCODINGS, encode_block, quantize_int8
from .header import HEADER_SIZE, pack_header
from .metadata import build_metadata, encode_metadata, validate_metadata

DEFAULT_LEVEL = 19


def to_bytes(artifact: Artifact, *, encoding: str = "float32", shuffle: bool = True,
             level: int = DEFAULT_LEVEL) -> bytes:
    """The complete bytes of a .fredset file for ``artifact``: exactly what :func:`save` writes.

    Also available as :func:`save_bytes` (``fredset.save_bytes``).
    """
    if encoding not in ENCODINGS:
        raise FredsetError(f"unknown coefficient encoding {encoding!r}; choose one of {', '.join(ENCODINGS)}")
    if not 1 <= level <= 22:
        raise FredsetError(f"zstd level must be in 1..22, got {level}")
    artifact.validate()
    document = build_metadata(artifact, encoding, shuffle)
    validate_metadata(document, "<metadata>")

    frames, quantization = [], []
    for label, block in enumerate(artifact.coefficients):
        values = block.detach().cpu().numpy()
        if encoding == "int8":
            values, scale, offset = quantize_int8(values)
            quantization.append(np.stack([scale, offset]))
        elif encoding == "float16" and np.abs(values).max() > np.finfo(np.float16).max:
            raise FredsetError(f"class {label}: coefficients exceed the float16 range; use float32")
        frames.append(encode_block(values, encoding, shuffle, level))
    offsets = np.cumsum([0] + [len(f) for f in frames], dtype="<u8")

    datasets = {
        "metadata": np.frombuffer(encode_metadata(document), dtype="u1"),
        "masks": artifact.masks.cpu().numpy().astype("<u4"),
        "coefficients": np.frombuffer(b"".join(frames), dtype="u1"),
        "coefficient_offsets": offsets,
    }
    if quantization:
        datasets["quantization"] = np.stack(quantization).astype("<f4")
    return _pack_container(datasets)


save_bytes = to_bytes  # the top-level name, beside fredset.save, fredset.load and fredset.load_bytes


def _pack_container(datasets: Mapping[str, np.ndarray]) -> bytes:
    """File bytes: ``datasets`` (name -> array, in order) in an HDF5 container behind a fresh header.

    Checks nothing (:func:`to_bytes` checks first). Invalid containers for the fuzz tests and the
    fuzz report are crafted in :mod:`fredset.format._crafting`, not here.
    """
    buffer = io.BytesIO()
    with h5py.File(buffer, "w", userblock_size=HEADER_SIZE) as handle:
        for name, values in datasets.items():
            handle.create_dataset(name, data=values)
    payload = buffer.getbuffer()[HEADER_SIZE:]
    return pack_header(payload) + bytes(payload)


def save(artifact: Artifact, path: str | os.PathLike, *, encoding: str = "float32", shuffle: bool = True,
         level: int = DEFAULT_LEVEL) -> int:
    """Write ``artifact`` to ``path`` atomically; return the file size in bytes.

    encoding: "float32" (lossless), "float16", or "int8" (per class, channel and frequency affine).
    The file is written to a temporary file in the same folder and renamed into place, so an
    interrupted save never leaves a partial file at ``path``.
    """
    data = to_bytes(artifact, encoding=encoding, shuffle=shuffle, level=level)
    write_atomically(path, data)
    return len(data)

