#!/usr/bin/env python3
"""Generate the golden test vectors of spec/vectors/ (see spec/vectors/README.md).

    python spec/make_vectors.py [--out DIR]        # default: spec/vectors next to this file

Deterministic: every random number comes from numpy's legacy RandomState (a frozen stream) with a
fixed seed, SOURCE_DATE_EPOCH is forced to a constant while writing (it sets provenance.created),
coefficients are rounded to multiples of 2^-12 (so last-bit differences in floating-point
libraries cannot change them), and the .npz files are written with fixed zip timestamps. The
.fredset bytes still depend on the libhdf5 and libzstd versions (and on fredset's version, which
is stored in the metadata); each vector records them in provenance.toolchain.

For each vector NAME it writes NAME.fredset and NAME.expected.npz holding
    coefficients  float32 [N, C, k]  the stored values (after up-casting / de-quantisation / step x code)
    images        float32 [N, C, H, W]  their decode, computed in float64, then rounded
    labels        int64 [N]
and the negative vectors: bad-checksum.fredset, a valid 1.0 file with one payload bit flipped;
bad-q3-padding.fredset, a 2.0 file whose mask bitmap sets a padding bit; bad-q4-size.fredset, a 2.0 file
whose /data frame declares (and holds) one byte more than the metadata implies. Each must be refused.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import zipfile
from pathlib import Path

import h5py
import numpy as np
import torch
import zstandard

import fredset
from fredset.dct import masked_dct2
from fredset.format import to_bytes
from fredset.format.codec import quantize_int8
from fredset.format.header import HEADER_SIZE, pack_header
from fredset.quantize import Quantization

SOURCE_DATE_EPOCH = "1767225600"  # 2026-01-01T00:00:00Z
GRID = 2.0 ** -12  # coefficients are rounded to this grid before storing
GRAY = dict(mean=[0.2860], std=[0.3530])
RGB = dict(mean=[0.4914, 0.4822, 0.4465], std=[0.2470, 0.2435, 0.2616])

# name, channels, (H, W), instances per class, k, encoding, shuffle, mask kind, seed, classes
VECTORS = [
    dict(name="gray28-float32", channels=1, size=(28, 28), counts=[2, 2, 2], k=16, encoding="float32",
         shuffle=True, masks="random", seed=1, classes=["circle", "square", "stripe"], full_metadata=True),
    dict(name="rgb32-float16", channels=3, size=(32, 32), counts=[2, 2, 2], k=24, encoding="float16",
         shuffle=True, masks="low", seed=2, classes=["red", "green", "blue"]),
    dict(name="gray28-unequal-float32-noshuffle", channels=1, size=(28, 28), counts=[2, 5, 3], k=12,
         encoding="float32", shuffle=False, masks="random", seed=3, classes=["a", "b", "c"]),
    dict(name="rgb32-unequal-int8", channels=3, size=(32, 32), counts=[2, 1, 3], k=16, encoding="int8",
         shuffle=True, masks="random", seed=4, classes=["cat", "dog", "frog"]),
    dict(name="gray16x24-float32", channels=1, size=(16, 24), counts=[3, 2], k=20, encoding="float32",
         shuffle=True, masks="edges", seed=5, classes=["ciel", "forêt"]),
    # format 2.0
    dict(name="gray28-q4", channels=1, size=(28, 28), counts=[2, 2, 2], k=16, encoding="q4",
         shuffle=True, masks="random", seed=6, classes=["circle", "square", "stripe"]),
    dict(name="rgb32-q8", channels=3, size=(32, 32), counts=[3, 1, 2], k=24, encoding="q8",
         shuffle=True, masks="low", seed=7, classes=["red", "green", "blue"]),
    dict(name="gray15x13-q3", channels=1, size=(15, 13), counts=[3, 1], k=10, encoding="q3",
         shuffle=True, masks="edges", seed=8, classes=["ciel", "forêt"], extremes=True),
]
BAD_CHECKSUM = "bad-checksum"
BAD_SOURCE = "gray28-float32"
BAD_PADDING, BAD_PADDING_SOURCE = "bad-q3-padding", "gray15x13-q3"
BAD_SIZE, BAD_SIZE_SOURCE = "bad-q4-size", "gray28-q4"


def smooth_images(rs: np.random.RandomState, count: int, channels: int, height: int, width: int) -> np.ndarray:
    """Pixel images in [0, 1]: a gradient plus three Gaussian blobs per channel, float64."""
    y = np.arange(height)[:, None] / height
    x = np.arange(width)[None, :] / width
    images = np.empty((count, channels, height, width))
    for index in np.ndindex(count, channels):
        plane = 0.3 + 0.2 * rs.uniform(-1, 1) * y + 0.2 * rs.uniform(-1, 1) * x
        for _ in range(3):
            cy, cx, sigma, amplitude = rs.uniform(0, 1), rs.uniform(0, 1), rs.uniform(0.08, 0.3), rs.uniform(-0.4, 0.6)
            plane = plane + amplitude * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * sigma ** 2))
        images[index] = np.clip(plane, 0, 1)
    return images


def make_mask(rs: np.random.RandomState, kind: str, k: int, height: int, width: int) -> np.ndarray:
    """k strictly increasing flat indices u*W + v into the H x W frequency plane."""
    plane = height * width
    if kind == "low":  # the k lowest frequencies by u + v, ties broken by u
        order = sorted(range(plane), key=lambda p: (p // width + p % width, p // width))
        return np.sort(np.array(order[:k]))
    if kind == "edges":  # random, but always the first and last index and the far corners of the plane
        fixed = {0, width - 1, (height - 1) * width, plane - 1}
        rest = rs.choice(np.array(sorted(set(range(plane)) - fixed)), k - len(fixed), replace=False)
        return np.sort(np.concatenate([np.array(sorted(fixed)), rest]))
    return np.sort(rs.choice(plane, k, replace=False))


def stored_values(values: np.ndarray, encoding: str) -> np.ndarray:
    """What a reader gets back for float32 ``values`` [n, C, k] stored with ``encoding`` (for q<b>, values
    already on their grid come back unchanged)."""
    if encoding == "float32" or encoding.startswith("q"):
        return values.copy()
    if encoding == "float16":
        return values.astype("<f2").astype(np.float32)
    codes, scale, offset = quantize_int8(values)  # the rule the writer applies (FORMAT.md)
    return (offset + scale * codes.astype(np.float32)).astype(np.float32)  # binary32: product, then sum


def dct_matrix(n: int) -> np.ndarray:
    u, x = np.arange(n)[:, None], np.arange(n)[None, :]
    matrix = np.sqrt(2.0 / n) * np.cos(np.pi * (2 * x + 1) * u / (2 * n))
    matrix[0] = np.sqrt(1.0 / n)
    return matrix


def decode64(coefficients: np.ndarray, mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """Scatter [n, C, k] into zero H x W planes at ``mask`` and apply the inverse DCT, in float64."""
    plane = np.zeros(coefficients.shape[:2] + (height * width,))
    plane[..., mask] = coefficients.astype(np.float64)
    plane = plane.reshape(coefficients.shape[:2] + (height, width))
    return dct_matrix(height).T @ plane @ dct_matrix(width)


def toolchain() -> dict[str, str]:
    return {"libhdf5": h5py.version.hdf5_version, "h5py": h5py.version.version,
            "libzstd": ".".join(map(str, zstandard.ZSTD_VERSION))}


def build(spec: dict) -> tuple[bytes, dict[str, np.ndarray]]:
    rs = np.random.RandomState(spec["seed"])
    channels, (height, width), k = spec["channels"], spec["size"], spec["k"]
    norm = GRAY if channels == 1 else RGB
    mean, std = np.array(norm["mean"])[:, None, None], np.array(norm["std"])[:, None, None]
    masks, coefficients = [], []
    for count in spec["counts"]:
        mask = make_mask(rs, spec["masks"], k, height, width)
        images = (smooth_images(rs, count, channels, height, width) - mean) / std
        values = masked_dct2(torch.from_numpy(images), torch.from_numpy(mask.astype(np.int64))).numpy()
        masks.append(mask.astype(np.int64))
        coefficients.append((np.round(values / GRID) * GRID).astype(np.float32))

    plane_floats = channels * height * width
    provenance: dict = {"toolchain": toolchain()}
    extra: dict = {}
    if spec.get("full_metadata"):
        provenance.update(objective="dm", parameterization="freq",
                          budget={"ipc": round(max(spec["counts"]) * channels * k / plane_floats, 6)},
                          hyperparameters={"lr_freq": 1000.0, "batch_real": 256}, seed=spec["seed"],
                          iterations=0, recommended_lr=0.01,
                          source={"note": "synthetic smooth images from spec/make_vectors.py"},
                          evaluation=None)
        extra = dict(license="CC0-1.0", citation="@misc{fredset-spec-vector, title={fredset test vector}}",
                     dataset_license="CC0-1.0")
    if spec["encoding"].startswith("q"):
        coefficients, extra["quantization"] = on_grid(coefficients, int(spec["encoding"][1:]), spec.get("extremes"))
    artifact = fredset.Artifact(
        coefficients=[torch.from_numpy(c) for c in coefficients], masks=torch.from_numpy(np.stack(masks)),
        classes=spec["classes"], image_size=(height, width), mean=norm["mean"], std=norm["std"],
        dataset=f"synthetic-{'gray' if channels == 1 else 'rgb'}", provenance=provenance, **extra)
    data = to_bytes(artifact, encoding=spec["encoding"], shuffle=spec["shuffle"])

    stored = [stored_values(c, spec["encoding"]) for c in coefficients]
    expected = {
        "images": np.concatenate([decode64(c, m, height, width) for c, m in zip(stored, masks)]).astype(np.float32),
        "labels": np.repeat(np.arange(len(spec["counts"]), dtype=np.int64), spec["counts"]),
        "coefficients": np.concatenate(stored),
    }
    # Sanity check against the library: it must read back exactly the stored values.
    read_back = fredset.read_file(data)[0].coefficients
    assert all(np.array_equal(a.numpy().view(np.uint32), b.view(np.uint32)) for a, b in zip(read_back, stored))
    return data, expected


def on_grid(coefficients: list[np.ndarray], bits: int, extremes: bool) -> tuple[list[np.ndarray], Quantization]:
    """The coefficients moved to their ``bits``-bit grid (FORMAT.md 13.6's steps, codes the nearest), and the
    grid. ``extremes``: class 0's frequency 1 is 0 everywhere (step 0, codes 0) and class
    1's first value is code -2^(b-1), the one code writers do not produce but readers must accept."""
    if extremes:
        coefficients[0][:, :, 1] = 0
    grid = Quantization.of([torch.from_numpy(c) for c in coefficients], bits)
    values = [v.numpy() for v in grid.apply([torch.from_numpy(c) for c in coefficients])]
    if extremes:
        values[1][0, 0, 0] = np.float32(-(2 ** (bits - 1))) * grid.steps[1][0, 0].numpy()
    return values, grid


def rebuilt_2(data: bytes, edit) -> bytes:
    """A 2.0 file's bytes with /data's content replaced by ``edit(content)`` (recompressed at level 19, with its
    size) and the HDF5 container and header rebuilt as the writer builds them."""
    with h5py.File(io.BytesIO(data), "r") as handle:
        arrays = {name: handle[name][()] for name in ("metadata", "data")}
    content = edit(bytearray(zstandard.ZstdDecompressor().decompress(arrays["data"].tobytes())))
    arrays["data"] = np.frombuffer(zstandard.ZstdCompressor(level=19, write_content_size=True).compress(bytes(content)),
                                   dtype="u1")
    buffer = io.BytesIO()
    with h5py.File(buffer, "w", userblock_size=HEADER_SIZE, libver=("v108", "v108")) as handle:
        for name, values in arrays.items():
            handle.create_dataset(name, data=values)
    payload = buffer.getvalue()[HEADER_SIZE:]
    return pack_header(payload, (2, 0)) + payload


def set_padding_bit(content: bytearray) -> bytearray:
    """Class 0's mask bitmap (15 x 13 = 195 frequencies: 25 bytes, 5 padding bits) gains bit 195."""
    content[195 // 8] |= 1 << (195 % 8)
    return content


def flip_one_bit(data: bytes) -> bytes:
    """Flip the case bit of one letter of the dataset name inside the metadata JSON: the file stays
    structurally valid, so only the SHA-256 can tell."""
    where = data.index(b'"name":"synthetic-gray"', 512) + len(b'"name":"')
    return data[:where] + bytes([data[where] ^ 0x20]) + data[where + 1:]


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Like numpy.savez, but with fixed zip timestamps so the bytes are reproducible."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, array in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.ascontiguousarray(array), allow_pickle=False)
            archive.writestr(zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0)), buffer.getvalue())


@contextlib.contextmanager
def fixed_creation_time():
    previous = os.environ.get("SOURCE_DATE_EPOCH")
    os.environ["SOURCE_DATE_EPOCH"] = SOURCE_DATE_EPOCH
    try:
        yield
    finally:
        if previous is None:
            del os.environ["SOURCE_DATE_EPOCH"]
        else:
            os.environ["SOURCE_DATE_EPOCH"] = previous


def generate(out: str | os.PathLike) -> list[Path]:
    """Write every vector into ``out``; return the paths written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    with fixed_creation_time():
        for spec in VECTORS:
            data, expected = build(spec)
            (out / f"{spec['name']}.fredset").write_bytes(data)
            write_npz(out / f"{spec['name']}.expected.npz", expected)
            written += [out / f"{spec['name']}.fredset", out / f"{spec['name']}.expected.npz"]
            bad = {BAD_SOURCE: (BAD_CHECKSUM, flip_one_bit),
                   BAD_PADDING_SOURCE: (BAD_PADDING, lambda d: rebuilt_2(d, set_padding_bit)),
                   BAD_SIZE_SOURCE: (BAD_SIZE, lambda d: rebuilt_2(d, lambda content: content + b"\0"))}
            if spec["name"] in bad:
                name, make = bad[spec["name"]]
                (out / f"{name}.fredset").write_bytes(make(data))
                written.append(out / f"{name}.fredset")
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=Path(__file__).resolve().parent / "vectors", help="output folder")
    for path in generate(parser.parse_args().out):
        print(f"{path.stat().st_size:7d}  {path}")


if __name__ == "__main__":
    main()
