"""Checksums of the files a split is read from.

Every file read is hashed (SHA-256, :func:`fredset.files.sha256_file`) into the ``files`` map of a RealData's
``source`` provenance. A file of a named dataset whose name the registry knows
(:data:`fredset.data.registry.KNOWN_FILES`) must match one of its published digests; any file may also be
checked against a ``SHA256SUMS`` file in its folder or a folder above it (the option for user data and for
files the registry does not know).
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Iterable, Mapping

from ..errors import FredsetError
from ..files import file_digest, sha256_file
from .registry import KnownDigest

_NAMES = {"sha256": "SHA-256", "md5": "MD5"}


def check_known(path: pathlib.Path, sha256: str, known: tuple[KnownDigest, ...], label: str) -> None:
    """FredsetError (one line: the file, the expected and the actual digests) unless the file matches one of
    ``known``; ``sha256`` is its SHA-256, an MD5 is computed only when no SHA-256 matched and an MD5 is known."""
    if any(entry.algorithm == "sha256" and entry.digest == sha256 for entry in known):
        return
    actual = {"sha256": sha256}
    if any(entry.algorithm == "md5" for entry in known):
        actual["md5"] = file_digest(path, "md5")
        if any(entry.algorithm == "md5" and entry.digest == actual["md5"] for entry in known):
            return
    expected = " or ".join(f"{_NAMES[entry.algorithm]} {entry.digest} ({entry.source})" for entry in known)
    found = ", ".join(f"{_NAMES[algorithm]} {digest}" for algorithm, digest in actual.items())
    raise FredsetError(f"not the published {label} file {path.name}: expected {expected}; found {found}", path)


def read_sums(path: pathlib.Path) -> dict[str, str]:
    """``{file name: sha256}`` of a ``SHA256SUMS`` file (``sha256sum`` output; ``#`` comments allowed)."""
    sums = {}
    for number, line in enumerate(path.read_text("utf-8", errors="replace").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(maxsplit=1)
        if len(parts) != 2 or len(parts[0]) != 64 or any(c not in "0123456789abcdefABCDEF" for c in parts[0]):
            raise FredsetError(f"line {number} is not 'SHA256  FILENAME'", path)
        sums[parts[1].lstrip("*").strip().removeprefix("./")] = parts[0].lower()
    return sums


def file_hashes(paths: Iterable[str | os.PathLike], base: pathlib.Path,
                known: Mapping[str, tuple[KnownDigest, ...]] | None = None, label: str = "") -> dict[str, str]:
    """``{name relative to base: sha256}`` of every file (directories are skipped). A file whose name is in
    ``known`` must match one of its digests (see :func:`check_known`; ``label`` names the dataset); every file
    is verified against any ``SHA256SUMS`` in its folder or a folder above it up to ``base`` (names relative
    to that SHA256SUMS). A mismatch is a FredsetError."""
    base = pathlib.Path(base)
    sums_cache: dict[pathlib.Path, dict[str, str] | None] = {}
    hashes: dict[str, str] = {}
    for path in paths:
        path = pathlib.Path(path)
        if path.is_dir():
            continue
        digest = sha256_file(path)
        try:
            key = path.relative_to(base).as_posix()
        except ValueError:
            key = path.name
        hashes[key] = digest
        if known and path.name in known:
            check_known(path, digest, known[path.name], label)
        folder = path.parent
        while True:
            if folder not in sums_cache:
                sums_file = folder / "SHA256SUMS"
                sums_cache[folder] = read_sums(sums_file) if sums_file.is_file() else None
            sums = sums_cache[folder]
            if sums is not None:
                expected = sums.get(path.relative_to(folder).as_posix())
                if expected is not None and expected != digest:
                    raise FredsetError(f"SHA-256 {digest} does not match {expected} in {folder / 'SHA256SUMS'}",
                                       path)
            if folder == base or folder.parent == folder or base not in folder.parents:
                break
            folder = folder.parent
    return hashes
