"""Writing a .fredset file: encode, build the HDF5 container in memory, add the header, rename into place."""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Callable, Mapping

import h5py
import numpy as np

from ..artifact import Artifact
from ..errors import FredsetError
from .codec import ENCODINGS, encode_block, quantize_int8
from .header import HEADER_SIZE, VERSION, pack_header
from .metadata import build_metadata, encode_metadata, validate_metadata

DEFAULT_LEVEL = 19


def to_bytes(artifact: Artifact, *, encoding: str = "float32", shuffle: bool = True,
             level: int = DEFAULT_LEVEL) -> bytes:
    """The complete bytes of a .fredset file for ``artifact``."""
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
    return pack_container(datasets)


def pack_container(datasets: Mapping[str, np.ndarray], *, version: tuple[int, int] = VERSION,
                   libver: str | None = None, edit: Callable[[h5py.File], None] | None = None) -> bytes:
    """File bytes: ``datasets`` (name -> array, in order) in an HDF5 container behind a fresh header.

    Checks nothing: :func:`to_bytes` builds valid files with it, and the tests and the fuzz report
    build invalid ones (``edit`` changes the open HDF5 file before the header is computed).
    """
    buffer = io.BytesIO()
    with h5py.File(buffer, "w", userblock_size=HEADER_SIZE, libver=libver) as handle:
        for name, values in datasets.items():
            handle.create_dataset(name, data=values)
        if edit is not None:
            edit(handle)
    payload = buffer.getbuffer()[HEADER_SIZE:]
    return pack_header(payload, version) + bytes(payload)


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


def write_atomically(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to a temporary sibling of ``path``, flush it to disk, then rename it over ``path``."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    try:
        descriptor, temporary = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    except OSError as error:
        raise FredsetError(f"cannot write here ({error.strerror or error})", path) from None
    try:
        with os.fdopen(descriptor, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        if isinstance(error, OSError):
            raise FredsetError(f"cannot write file ({error.strerror or error})", path) from None
        raise
