"""Writing a .fredset file: encode, build the HDF5 container in memory, add the header, rename into place.

"float32", "float16" and "int8" write format 1.0 (byte for byte as before format 2.0 existed); "q2".."q8"
write format 2.0 (low-bit codes, FORMAT.md section 13).
"""

from __future__ import annotations

import ctypes
import functools
import io
import os
import re
from collections.abc import Callable, Mapping

import h5py
import numpy as np

from ..artifact import Artifact
from ..errors import FredsetError
from ..files import write_atomically
from ..quantize import Quantization
from .codec import ENCODINGS, compress_frame, encode_block, quantize_int8
from .codes import pack_masks
from .header import HEADER_SIZE, VERSION_1, VERSION_2, pack_header
from .metadata import BITS_ENCODINGS, MAX_METADATA_BYTES, build_metadata, encode_metadata, validate_metadata

__all__ = ["DEFAULT_LEVEL", "ENCODINGS", "LIBVER_2", "default_encoding", "no_attrs_hint", "save", "save_bytes",
           "to_bytes"]

DEFAULT_LEVEL = 19
LIBVER_2 = ("v108", "v108")  # HDF5 structures of format 2.0: ~950 B less than libhdf5's "earliest" (docs/RESULTS.md)
_LIBHDF5 = re.compile(r"/libhdf5(?!_hl|_serial_hl)[^/]*\.(so|dylib)")  # the C library, not its high-level one


def default_encoding(artifact: Artifact) -> str:
    """``q<bits>`` for an artifact on a quantisation grid (lossless), else ``float32``."""
    return f"q{artifact.quantization.bits}" if artifact.quantization is not None else "float32"


def to_bytes(artifact: Artifact, *, encoding: str | None = None, shuffle: bool = True,
             level: int = DEFAULT_LEVEL) -> bytes:
    """The complete bytes of a .fredset file for ``artifact``: exactly what :func:`save` writes.

    Also available as :func:`save_bytes` (``fredset.save_bytes``). See :func:`save` for the options.
    """
    if encoding is None:
        encoding = default_encoding(artifact)
    if encoding not in ENCODINGS:
        raise FredsetError(f"unknown coefficient encoding {encoding!r}; choose one of {', '.join(ENCODINGS)}")
    if not 1 <= level <= 22:
        raise FredsetError(f"zstd level must be in 1..22, got {level}")
    artifact.validate()
    document = build_metadata(artifact, encoding, shuffle)
    major = 2 if encoding in BITS_ENCODINGS else 1
    validate_metadata(document, "<metadata>", major=major)
    metadata = encode_metadata(document)
    if len(metadata) > MAX_METADATA_BYTES:
        raise FredsetError(f"the metadata takes {len(metadata)} bytes, more than the {MAX_METADATA_BYTES} a "
                           "reader accepts (shorten the provenance)")
    if major == 2:
        return _pack_container(_datasets_2(artifact, BITS_ENCODINGS[encoding], metadata, level), VERSION_2, LIBVER_2,
                               minimized=True)

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
        "metadata": np.frombuffer(metadata, dtype="u1"),
        "masks": artifact.masks.cpu().numpy().astype("<u4"),
        "coefficients": np.frombuffer(b"".join(frames), dtype="u1"),
        "coefficient_offsets": offsets,
    }
    if quantization:
        datasets["quantization"] = np.stack(quantization).astype("<f4")
    return _pack_container(datasets, VERSION_1)


save_bytes = to_bytes  # the top-level name, beside fredset.save, fredset.load and fredset.load_bytes


def _datasets_2(artifact: Artifact, bits: int, metadata: bytes, level: int) -> dict[str, np.ndarray]:
    """/metadata and /data of a 2.0 file: the artifact's own grid when it has ``bits`` bits (lossless), else
    the grid :meth:`Quantization.of` picks (lossy: each value moves to the nearest of its codes)."""
    grid = artifact.quantization
    if grid is None or grid.bits != bits:
        grid = Quantization.of(artifact.coefficients, bits)
    codes = [grid.codes(label, block.detach()).cpu().numpy() for label, block in enumerate(artifact.coefficients)]
    steps = np.stack([steps.detach().cpu().numpy() for steps in grid.steps]).astype("<f2")  # float16 values: exact
    height, width = artifact.image_size
    bitmap = pack_masks(artifact.masks.cpu().numpy(), height * width)
    raw = b"".join((bitmap.tobytes(), steps.tobytes(), np.concatenate(codes).tobytes()))
    return {"metadata": np.frombuffer(compress_frame(metadata, level), dtype="u1"),
            "data": np.frombuffer(compress_frame(raw, level), dtype="u1")}


def _pack_container(datasets: Mapping[str, np.ndarray], version: tuple[int, int],
                    libver: tuple[str, str] | None = None, *, minimized: bool = False) -> bytes:
    """File bytes: ``datasets`` (name -> array, in order) in an HDF5 container behind a fresh header.

    Checks nothing (:func:`to_bytes` checks first). Invalid containers for the fuzz tests and the
    fuzz report are crafted in :mod:`fredset.format._crafting`, not here. ``libver`` None is libhdf5's
    default ("earliest"), which format 1.0 files keep. ``minimized`` (format 2.0; uint8 1-D datasets only):
    object headers without the room libhdf5 keeps for attributes, where :func:`no_attrs_hint` is available.
    """
    buffer = io.BytesIO()
    hint = no_attrs_hint() if minimized else None
    with h5py.File(buffer, "w", userblock_size=HEADER_SIZE, libver=libver) as handle:
        for name, values in datasets.items():
            if not minimized:
                handle.create_dataset(name, data=values)
                continue
            dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
            dcpl.set_obj_track_times(False)
            if hint is not None and hint(dcpl.id, True) < 0:
                raise FredsetError("libhdf5 refused the minimized dataset headers (H5Pset_dset_no_attrs_hint)")
            dataset = h5py.h5d.create(handle.id, name.encode(), h5py.h5t.STD_U8LE,
                                      h5py.h5s.create_simple(values.shape), dcpl=dcpl)
            if values.size:
                dataset.write(h5py.h5s.ALL, h5py.h5s.ALL, np.ascontiguousarray(values, dtype=np.uint8))
    payload = buffer.getbuffer()[HEADER_SIZE:]
    return pack_header(payload, version) + bytes(payload)


@functools.lru_cache(maxsize=1)
def no_attrs_hint() -> Callable[[int, bool], int] | None:
    """libhdf5's ``H5Pset_dset_no_attrs_hint`` (1.10.5 and later), which h5py does not expose, from the very
    library h5py runs on (found in /proc/self/maps, so property list ids are that library's); None where it
    cannot be found (then 2.0 files are valid but 338 bytes larger: docs/RESULTS.md).

    Without it libhdf5 gives every dataset's object header at least 256 bytes, room for attributes that a
    .fredset file must not have.
    """
    if h5py.version.hdf5_version_tuple < (1, 10, 5):
        return None
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            paths = {line.split(None, 5)[5].strip() for line in maps if len(line.split(None, 5)) == 6}
    except OSError:
        return None
    libraries = sorted(path for path in paths if _LIBHDF5.search(path))
    if len(libraries) != 1:
        return None
    try:
        function = ctypes.CDLL(libraries[0]).H5Pset_dset_no_attrs_hint
    except (OSError, AttributeError):
        return None
    function.argtypes, function.restype = [ctypes.c_int64, ctypes.c_bool], ctypes.c_int
    return function


def save(artifact: Artifact, path: str | os.PathLike, *, encoding: str | None = None, shuffle: bool = True,
         level: int = DEFAULT_LEVEL) -> int:
    """Write ``artifact`` to ``path`` atomically; return the file size in bytes.

    encoding: "float32" (lossless), "float16", "int8" (per class, channel and frequency affine), all format
    1.0; or "q2".."q8" (format 2.0: ``b``-bit codes times float16 steps). A "q<b>" of the artifact's own
    quantization (same bits) is lossless; any other moves each value to the nearest code of the grid
    :meth:`fredset.quantize.Quantization.of` picks. None (the default): ``q<bits>`` when the artifact has a
    quantization, else "float32". ``shuffle`` applies to float32 and float16 only; ``level`` is zstd's.
    The file is written to a temporary file in the same folder and renamed into place, so an
    interrupted save never leaves a partial file at ``path``.
    """
    data = to_bytes(artifact, encoding=encoding, shuffle=shuffle, level=level)
    write_atomically(path, data)
    return len(data)
