"""Where a file's bytes go (``fredset inspect``): the header, the HDF5 container, each dataset, and in format
2.x the three sections of /data, for files :func:`fredset.format.read_file` has already accepted."""

from __future__ import annotations

import io
from typing import Any

import h5py
import zstandard

from ..errors import FredsetError
from .codec import decompress_frame
from .codes import section_sizes
from .header import HEADER_SIZE, parse_header
from .reader import DEFAULT_MAX_FILE_BYTES, FileInfo, Source, _read_bytes
from .structure import short_error
from .writer import DEFAULT_LEVEL

__all__ = ["ESTIMATE_LEVEL_ABOVE", "file_layout"]

ESTIMATE_LEVEL_ABOVE = 8 * 2**20  # larger /data sections are compressed at level 3 for the estimate (speed)


def file_layout(source: Source, info: FileInfo, *, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
                sha256: str | None = None) -> dict[str, Any]:
    """The byte layout of the file ``info`` describes, read again from ``source`` (its SHA-256 must still be
    ``info.sha256``, so what is shown is the file that was validated). ``sha256`` as given to ``read_file``
    (a URL is read from the same cache entry, without a new download).

    Keys: ``file``, ``header`` (512), ``hdf5_container`` (file - header - stored dataset bytes), ``datasets``
    (name -> stored bytes, in the order of their data in the file), ``metadata_json`` (bytes of the JSON,
    decompressed in 2.x),
    ``per_class`` (file / K), ``bits_per_coefficient`` (8 x code bytes / (N*C*k); 1.x: /coefficients, 2.x: the
    codes' estimated share), and in 2.x ``data_sections``: for the masks, steps and codes their uncompressed
    bytes and an estimate of their share of the /data frame (each section compressed alone at
    ``estimate_level``, the shares scaled to the frame's real size; the writer's level is not recorded).
    """
    data, path = _read_bytes(source, max_file_bytes, sha256)
    header = parse_header(data, path)
    if header.sha256.hex() != info.sha256:
        raise FredsetError("the file changed while it was being inspected (its SHA-256 differs)", path)
    try:
        with h5py.File(io.BytesIO(data), "r") as handle:
            found = []
            for name in handle:  # top-level links only; a validated file has no more than 1024
                if h5py.h5o.get_info(handle.id, name.encode()).type == h5py.h5o.TYPE_DATASET:
                    dataset = h5py.h5d.open(handle.id, name.encode())
                    found.append((dataset.get_offset() or 0, name, int(dataset.get_storage_size())))
            stored = {name: size for _, name, size in sorted(found)}  # in file order (compact ones first)
            frames = {name: bytes(handle[name][()]) for name in ("metadata", "data") if name in stored} \
                if header.major == 2 else {}
    except Exception as error:  # the reader accepted these bytes; this is only a safety net
        raise FredsetError(f"malformed HDF5 content ({type(error).__name__}: {short_error(error)})", path) from None

    metadata = info.metadata
    image = metadata["image"]
    counts, channels, k = metadata["instances_per_class"], image["channels"], metadata["k"]
    coefficients = sum(counts) * channels * k
    layout: dict[str, Any] = {
        "file": len(data), "header": HEADER_SIZE, "hdf5_container": len(data) - HEADER_SIZE - sum(stored.values()),
        "datasets": stored, "metadata_json": stored.get("metadata", 0),
        "per_class": round(len(data) / len(counts), 1),
    }
    code_bytes = stored.get("coefficients", 0)
    if header.major == 2:
        layout["metadata_json"] = len(decompress_frame(frames["metadata"], "/metadata", path))
        raw = decompress_frame(frames["data"], "/data", path)
        sizes = section_sizes(counts, channels, image["height"] * image["width"], k)
        level = DEFAULT_LEVEL if len(raw) <= ESTIMATE_LEVEL_ABOVE else 3
        compressor = zstandard.ZstdCompressor(level=level)
        alone, start = [], 0
        for size in sizes:
            alone.append(len(compressor.compress(raw[start:start + size])))
            start += size
        frame = len(frames["data"])
        shares = [round(frame * part / sum(alone)) for part in alone]
        layout["data_sections"] = {
            "estimate_level": level,
            **{name: {"bytes": size, "compressed_estimate": share}
               for name, size, share in zip(("masks", "steps", "codes"), sizes, shares)},
        }
        code_bytes = shares[2]
    layout["bits_per_coefficient"] = round(8 * code_bytes / coefficients, 3)
    return layout
