"""The HDF5 structure of a .fredset container (spec/FORMAT.md section 2): the walk over its links with its
limits, and the exact datatype and storage of each known dataset, checked before any data is read."""

from __future__ import annotations

import re
from typing import Any

import h5py
import numpy as np

from ..errors import FredsetError

__all__ = ["DATASETS", "DATASETS_2", "DATASETS_OF", "MAX_DEPTH", "MAX_LINKS", "MAX_NAME_LENGTH", "checked_datasets",
           "read_dataset", "short_error"]

# name -> (stored dtype, number of dimensions); quantization only with int8 coefficients. The HDF5
# datatype must be exactly the standard type of that dtype (see _type_problem).
DATASETS = {
    "metadata": (np.dtype("u1"), 1),
    "masks": (np.dtype("<u4"), 2),
    "coefficients": (np.dtype("u1"), 1),
    "coefficient_offsets": (np.dtype("<u8"), 1),
    "quantization": (np.dtype("<f4"), 4),
}
# format 2.0: /metadata is a zstd frame of the JSON, /data one zstd frame of the masks, steps and codes
DATASETS_2 = {
    "metadata": (np.dtype("u1"), 1),
    "data": (np.dtype("u1"), 1),
}
DATASETS_OF = {1: DATASETS, 2: DATASETS_2}  # format major -> its datasets
_ANY_DATASET = {**DATASETS, **DATASETS_2}
_ALLOWED_LAYOUTS = (h5py.h5d.CONTIGUOUS, h5py.h5d.COMPACT)

# Limits of the HDF5 structure (FORMAT.md section 2), checked while walking the links and before
# any object is opened: the walk stops at the first link that breaks one, so refusing costs at most
# MAX_LINKS visits whatever the file holds.
MAX_LINKS = 1024  # links in all groups together, the five datasets' included
MAX_DEPTH = 8  # names in a path: /a is depth 1, /a/b/c depth 3
MAX_NAME_LENGTH = 64
_LINK_NAME = re.compile(rb"[A-Za-z0-9_][A-Za-z0-9_.-]{0,%d}\Z" % (MAX_NAME_LENGTH - 1))
_LINK_KINDS = {h5py.h5l.TYPE_SOFT: "a soft link", h5py.h5l.TYPE_EXTERNAL: "an external link"}


def checked_datasets(handle: h5py.File, path: str, newer_minor: bool, major: int = 1
                     ) -> dict[str, h5py.h5d.DatasetID]:
    """The known top-level datasets of a format-``major`` file, after checking every link and object; reads no
    data.

    First the links are walked (bounded: see _walk), then each dataset is opened once: the known
    ones must have their exact type, rank and safe storage; unknown datasets of a newer minor
    version are not read, but must still be stored safely; unknown groups and committed datatypes
    of a newer minor version are ignored.
    """
    if not newer_minor and h5py.h5a.get_num_attrs(handle.id):
        raise FredsetError("unexpected attributes on the root group", path)
    found = {}
    known_datasets = DATASETS_OF[major]
    for name in _walk(handle, path, newer_minor, major):
        known = name in known_datasets
        kind = h5py.h5o.get_info(handle.id, name.encode()).type
        if kind != h5py.h5o.TYPE_DATASET:
            if known:
                raise FredsetError(f"/{name} must be a dataset", path)
            continue  # a newer minor version's group or committed datatype: ignored, not opened
        dataset = h5py.h5d.open(handle.id, name.encode())
        if known:
            _check_expected(dataset, name, path, known_datasets)
        _check_storage(dataset, name, handle, path, newer_minor)
        if known:
            found[name] = dataset
    return found


def _walk(handle: h5py.File, path: str, newer_minor: bool, major: int) -> list[str]:
    """The paths (without the leading /) of all hard links, after checking the links themselves.

    One pass of libhdf5's link visit (linear; each group is entered once, however many links reach
    it), stopped at the first link that breaks a rule: more than MAX_LINKS links, a name outside
    _LINK_NAME, a path deeper than MAX_DEPTH, a repeated path, a soft, external or user-defined
    link, or, for a file of the same or an older minor version, anything but the datasets of format
    ``major``. Nothing is opened here.
    """
    known = DATASETS_OF[major]
    names: list[str] = []
    seen: set[bytes] = set()
    problems: list[str] = []  # raising inside a libhdf5 callback is not safe: stop the visit instead

    def visit(name: bytes, info: Any) -> int | None:
        if len(seen) >= MAX_LINKS:
            problems.append(f"the HDF5 content has more than {MAX_LINKS} links")
            return 1
        parts = name.split(b"/")
        bad = next((part for part in parts if not _LINK_NAME.match(part)), None)
        if bad is not None:
            problems.append(f"link name {_shown_name(bad)} is not allowed (names are 1 to {MAX_NAME_LENGTH} "
                            "characters from A-Z a-z 0-9 _ . -, not starting with . or -)")
            return 1
        text = name.decode("ascii")
        if len(parts) > MAX_DEPTH:
            problems.append(f"/{'/'.join(text.split('/')[:MAX_DEPTH + 1])}... is nested more than {MAX_DEPTH} "
                            "levels deep")
            return 1
        if name in seen:
            problems.append(f"/{text} is linked twice under the same name")
            return 1
        seen.add(name)
        if info.type != h5py.h5l.TYPE_HARD:
            kind = _LINK_KINDS.get(info.type, "a user-defined link")
            problems.append(f"/{text} is {kind}; only plain (hard-linked) datasets are allowed")
            return 1
        if not newer_minor and text not in known:
            other = next((m for m, table in DATASETS_OF.items() if m != major and text in table), None)
            problems.append(f"unexpected object /{text}"
                            + (f" (a dataset of format {other}.x, not {major}.x)" if other is not None else ""))
            return 1
        names.append(text)
        return None

    # native order: libhdf5 walks each group's index as stored; any other order first builds and
    # sorts a table of all the group's links, which costs ~1 s for 300 000 links before a visit
    handle.id.links.visit(visit, info=True, order=h5py.h5.ITER_NATIVE)
    if problems:
        raise FredsetError(problems[0], path)
    return names


def _shown_name(name: bytes) -> str:
    return ascii(name[:MAX_NAME_LENGTH + 1])[1:] + ("..." if len(name) > MAX_NAME_LENGTH + 1 else "")


def _check_storage(dataset: h5py.h5d.DatasetID, name: str, handle: h5py.File, path: str,
                   newer_minor: bool) -> None:
    type_id = dataset.get_type()
    if type_id.get_class() not in (h5py.h5t.INTEGER, h5py.h5t.FLOAT):
        raise FredsetError(f"/{name} has HDF5 type class {_TYPE_CLASSES.get(type_id.get_class(), 'unknown')}; "
                           "only plain numeric datasets are allowed", path)
    plist = dataset.get_create_plist()
    if plist.get_layout() not in _ALLOWED_LAYOUTS or plist.get_external_count():
        raise FredsetError(f"/{name} must be stored contiguously inside the file "
                           "(no chunked, external or virtual storage)", path)
    if plist.get_nfilters():
        raise FredsetError(f"/{name} must not use HDF5 filters", path)
    if not newer_minor and h5py.h5a.get_num_attrs(dataset):
        raise FredsetError(f"unexpected attributes on /{name}", path)
    declared = dataset.get_space().get_simple_extent_npoints() * type_id.get_size()
    stored = dataset.get_storage_size()
    if declared != stored or declared > handle.id.get_filesize():
        raise FredsetError(f"/{name} declares {declared} bytes but stores {stored}", path)


_TYPE_CLASSES = {getattr(h5py.h5t, key): key.lower() for key in (
    "INTEGER", "FLOAT", "TIME", "STRING", "BITFIELD", "OPAQUE", "COMPOUND", "REFERENCE", "ENUM", "VLEN", "ARRAY")}
_ORDERS = {h5py.h5t.ORDER_LE: "little-endian", h5py.h5t.ORDER_BE: "big-endian"}


def _type_problem(type_id: h5py.h5t.TypeID, expected: np.dtype) -> str | None:
    """How an HDF5 datatype differs from the standard little-endian type of ``expected``, or None.

    Every property that libhdf5 uses to convert values is compared, so that the raw bytes this
    reader takes from the file mean exactly what libhdf5 (and so other readers) would decode.
    """
    size = expected.itemsize
    type_class = type_id.get_class()
    want_class = h5py.h5t.FLOAT if expected.kind == "f" else h5py.h5t.INTEGER
    if type_class != want_class:
        return f"type class {_TYPE_CLASSES.get(type_class, 'unknown')}"
    if type_id.committed():
        return "a committed (named) datatype"
    checks = [("size", type_id.get_size(), size), ("precision", type_id.get_precision(), 8 * size),
              ("bit offset", type_id.get_offset(), 0), ("padding", type_id.get_pad(), (h5py.h5t.PAD_ZERO,) * 2)]
    if type_class == h5py.h5t.INTEGER:
        checks.append(("sign", type_id.get_sign(), h5py.h5t.SGN_NONE))
    else:  # IEEE 754 binary32: sign bit 31, exponent bits 23..30 with bias 127, 23 mantissa bits
        checks += [("bit fields", type_id.get_fields(), (31, 23, 8, 0, 23)),
                   ("exponent bias", type_id.get_ebias(), 127),
                   ("normalization", type_id.get_norm(), h5py.h5t.NORM_IMPLIED),
                   ("internal padding", type_id.get_inpad(), h5py.h5t.PAD_ZERO)]
    for what, got, want in checks:
        if got != want:
            return f"{what} {got}, not {want}"
    order = type_id.get_order()
    if order != h5py.h5t.ORDER_LE and not (size == 1 and order == h5py.h5t.ORDER_BE):
        return f"byte order {_ORDERS.get(order, order)}"  # the order of a 1-byte type changes nothing
    return None


def _check_expected(dataset: h5py.h5d.DatasetID, name: str, path: str, known: dict[str, Any]) -> None:
    expected_dtype, ndim = known[name]
    problem = _type_problem(dataset.get_type(), expected_dtype)
    if problem is not None:
        raise FredsetError(f"/{name} has the wrong HDF5 datatype ({problem}); it must be "
                           f"{_describe(expected_dtype)}", path)
    space = dataset.get_space()
    rank = space.get_simple_extent_ndims() if space.get_simple_extent_type() == h5py.h5s.SIMPLE else 0
    if rank != ndim:
        raise FredsetError(f"/{name} has {rank} dimensions, expected {ndim}", path)


def _describe(dtype: np.dtype) -> str:
    bits = 8 * dtype.itemsize
    if dtype.kind == "f":
        return f"H5T_IEEE_F{bits}LE (float{bits}, little-endian)"
    return f"H5T_STD_U{bits}LE (uint{bits}" + (", little-endian)" if bits > 8 else ")")


def read_dataset(dataset: h5py.h5d.DatasetID, name: str, data: bytes, path: str,
          shape: tuple[int | None, ...]) -> np.ndarray:
    """A checked dataset's values; a contiguous one as a read-only view of the file's verified bytes.

    The view saves a copy through libhdf5 (0.6 ms for 1 MB); it is exact because _check_expected
    allowed only the exact standard datatype and _check_storage only unfiltered contiguous or
    compact storage of the declared size.
    """
    got = dataset.shape
    if len(got) != len(shape) or any(want is not None and size != want for size, want in zip(got, shape)):
        expected = "x".join("n" if s is None else str(s) for s in shape)
        raise FredsetError(f"/{name} has shape {got}, expected {expected}", path)
    dtype = _ANY_DATASET[name][0]
    count = int(np.prod(got, dtype=np.int64))
    start = dataset.get_offset()  # absolute byte offset of contiguous data; None when compact
    if start is None:
        values = np.empty(got, dtype=dtype)
        if count:
            dataset.read(h5py.h5s.ALL, h5py.h5s.ALL, values)
        return values
    if start + count * dtype.itemsize > len(data):
        raise FredsetError(f"/{name} lies outside the file", path)
    return np.frombuffer(data, dtype=dtype, count=count, offset=start).reshape(got)


def short_error(error: Exception) -> str:
    text = " ".join(str(error).split())
    return text[:160] + ("..." if len(text) > 160 else "")
