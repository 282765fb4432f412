"""The fixed 512-byte header in the HDF5 user block: magic, version, payload length, SHA-256.

It is checked in plain Python before libhdf5 sees a byte, so a corrupted file never reaches it.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from ..errors import FredsetError

MAGIC = b"\x89FRD\r\n\x1a\n"
HEADER_SIZE = 512  # also the HDF5 user block size
VERSION_1 = (1, 0)  # float32, float16 and int8 coefficients, one zstd frame per class
VERSION_2 = (2, 0)  # low-bit codes: mask bitmaps, float16 steps and int8 codes in one zstd frame
VERSION = VERSION_2  # the newest version this fredset writes
NEWEST_MINOR = {1: VERSION_1[1], 2: VERSION_2[1]}  # major -> the newest minor this fredset knows
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_LAYOUT = struct.Struct("<8sHHIQ32s")  # magic, major, minor, header size, payload length, sha256


@dataclass(frozen=True)
class Header:
    major: int
    minor: int
    payload_length: int
    sha256: bytes

    @property
    def version(self) -> str:
        return f"{self.major}.{self.minor}"

    @property
    def newer_minor(self) -> bool:
        """A minor version newer than this fredset knows: unknown additions are ignored (FORMAT.md section 8)."""
        return self.minor > NEWEST_MINOR[self.major]


def pack_header(payload: bytes | memoryview, version: tuple[int, int]) -> bytes:
    """The header for ``payload`` (the file's bytes after the header), declaring ``version`` (major, minor)."""
    digest = hashlib.sha256(payload).digest()
    fixed = _LAYOUT.pack(MAGIC, version[0], version[1], HEADER_SIZE, len(payload), digest)
    return fixed + bytes(HEADER_SIZE - len(fixed))


def parse_header(data: bytes, path: str) -> Header:
    """Check magic, version, length and checksum of a whole file's bytes; raise FredsetError if any fails."""
    if len(data) < HEADER_SIZE:
        if not data.startswith(MAGIC[: len(data)]) or len(data) < len(MAGIC):
            raise FredsetError("not a fredset file (no fredset header)", path)
        raise FredsetError(f"file is truncated: {len(data)} bytes, shorter than the {HEADER_SIZE}-byte header", path)
    magic, major, minor, header_size, payload_length, digest = _LAYOUT.unpack_from(data)
    if magic != MAGIC:
        if data[:8] == HDF5_SIGNATURE:
            raise FredsetError("an HDF5 file but not a fredset file (no fredset header)", path)
        raise FredsetError("not a fredset file (no fredset header)", path)
    if major not in NEWEST_MINOR:
        known = " and ".join(f"{known}.x" for known in NEWEST_MINOR)
        raise FredsetError(f"format version {major}.{minor} is not supported; this fredset reads "
                           f"versions {known} (upgrade fredset to read newer files)", path)
    if header_size != HEADER_SIZE:
        raise FredsetError(f"corrupt header: header size {header_size}, expected {HEADER_SIZE}", path)
    if any(data[_LAYOUT.size:HEADER_SIZE]):
        raise FredsetError("corrupt header: reserved bytes are not zero", path)
    actual = len(data) - HEADER_SIZE
    if actual < payload_length:
        raise FredsetError(f"file is truncated: header declares {payload_length + HEADER_SIZE} bytes, "
                           f"found {len(data)}", path)
    if actual > payload_length:
        raise FredsetError(f"file has {actual - payload_length} unexpected bytes after its declared end", path)
    if hashlib.sha256(memoryview(data)[HEADER_SIZE:]).digest() != digest:
        raise FredsetError("checksum mismatch: the file is corrupt (SHA-256 of the payload differs "
                           "from the header)", path)
    if data[HEADER_SIZE:HEADER_SIZE + len(HDF5_SIGNATURE)] != HDF5_SIGNATURE:
        raise FredsetError(f"no HDF5 superblock at byte {HEADER_SIZE}", path)
    return Header(major, minor, payload_length, digest)
