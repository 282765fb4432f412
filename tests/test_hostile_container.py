"""Hostile HDF5 containers behind a valid header (the checksum recomputed, so every byte reaches the
structure checks), and hostile paths.

1. time: deep, wide or oddly named structures are refused quickly, before any object is opened;
2. non-regular files (FIFO, directory, device, socket) are refused without blocking;
3. datatypes: only the exact types of FORMAT.md section 2 are read, and fredset and the reference
   decoder agree on every crafted type (both refuse, or both decode the same values);
4. forward compatibility: a newer minor version's unknown objects are ignored, within the limits.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import stat
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import torch

import fredset
from fredset import FredDataset, FredsetError
from fredset.format import to_bytes
from fredset.format import reader, structure
from fredset.format._crafting import (build_file, changed_type, committed_datatype, compact, datasets_of, extra_objects,
                                        hard_link_named, nested_groups, random_artifact, retyped,
                                        with_committed_type)

SPEC = Path(__file__).parents[1] / "spec"


def _module(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


reference = _module("fredset_hostile_reference_decoder", SPEC / "reference_decoder.py")

FLOAT32 = to_bytes(random_artifact(1, (8, 8), 6, [2, 3, 1], 0, mean=[0.1], std=[0.2]),
                   encoding="float32", shuffle=True, level=3)
INT8 = to_bytes(random_artifact(3, (4, 4), 5, [2, 1, 3], 3, mean=[0.1, 0.2, 0.3], std=[0.2, 0.3, 0.4]),
                encoding="int8", shuffle=False, level=3)
ARRAYS = {"float32": datasets_of(FLOAT32), "int8": datasets_of(INT8)}
NEWER = (1, 1)  # a newer minor version than this reader's 1.0


def crafted(tweak: Callable[[h5py.File], None] | None = None, version: tuple[int, int] = (1, 0),
            which: str = "float32", libver: str | None = None) -> bytes:
    return build_file(ARRAYS[which], tweak=tweak, version=version, libver=libver)


def refused(source: Any, *fragments: str, prefix: str = "<bytes>") -> str:
    """The one-line FredsetError message of reading ``source``; it names the source first."""
    with pytest.raises(FredsetError) as info:
        fredset.read_file(source)
    assert type(info.value) is FredsetError
    message = str(info.value)
    assert "\n" not in message and "\r" not in message and message.startswith(f"{prefix}: "), message
    for fragment in fragments:
        assert fragment in message, message
    return message


def timed_refusal(data: bytes, *fragments: str, bound: float = 2.0) -> str:
    start = time.perf_counter()
    message = refused(data, *fragments)
    elapsed = time.perf_counter() - start
    assert elapsed < bound, f"refusing a {len(data)}-byte file took {elapsed:.2f} s: {message}"
    return message


def same_content(first: fredset.Artifact, second: fredset.Artifact) -> bool:
    return (torch.equal(first.masks, second.masks) and first.counts == second.counts
            and all(torch.equal(a, b) for a, b in zip(first.coefficients, second.coefficients)))


# -- 1. time: structure limits, checked in one linear walk before any object is opened ------------

@pytest.mark.parametrize("version, fragment", [((1, 0), "unexpected object /g"),
                                               (NEWER, f"nested more than {structure.MAX_DEPTH} levels deep")])
def test_two_thousand_nested_groups_are_refused_fast(version, fragment):
    data = crafted(nested_groups(2000), version=version)
    assert len(data) > 2_000_000
    timed_refusal(data, fragment)


@pytest.fixture(scope="module")
def twenty_thousand_datasets() -> dict[tuple[int, int], bytes]:
    return {version: crafted(extra_objects(20_000), version=version) for version in ((1, 0), NEWER)}


@pytest.mark.parametrize("version, fragment", [((1, 0), "unexpected object /extra"),
                                               (NEWER, f"more than {structure.MAX_LINKS} links")])
def test_twenty_thousand_extra_datasets_are_refused_fast(twenty_thousand_datasets, version, fragment):
    timed_refusal(twenty_thousand_datasets[version], fragment)


@pytest.mark.parametrize("kind, count, libver", [("group", 5000, None), ("link", 50_000, None),
                                                 ("link", 50_000, "latest"), ("dataset", 3000, "latest")])
def test_wide_structures_are_refused_fast(kind, count, libver):
    # "latest": the root's links sit in a dense index (fractal heap and B-tree), whose sorted
    # iteration would first build a table of all of them; the walk must not
    data = crafted(extra_objects(count, kind), version=NEWER, libver=libver)
    timed_refusal(data, f"more than {structure.MAX_LINKS} links")


def test_the_link_limit_is_exact():
    allowed = structure.MAX_LINKS - 5  # the five datasets of an int8 file count too
    data = crafted(extra_objects(allowed, "group"), version=NEWER, which="int8")
    start = time.perf_counter()
    assert same_content(fredset.load(data), fredset.load(INT8))
    assert time.perf_counter() - start < 2.0
    timed_refusal(crafted(extra_objects(allowed + 1, "group"), version=NEWER, which="int8"),
                  f"more than {structure.MAX_LINKS} links")


def test_many_unknown_datasets_within_the_limit_load_in_linear_time():
    data = crafted(extra_objects(structure.MAX_LINKS - 4), version=NEWER)  # 1020 datasets, each checked
    start = time.perf_counter()
    assert same_content(fredset.load(data), fredset.load(FLOAT32))
    assert time.perf_counter() - start < 2.0


def test_the_depth_limit_is_exact():
    def nest(depth: int) -> Callable[[h5py.File], None]:
        def tweak(handle: h5py.File) -> None:
            nested_groups(depth - 1)(handle)
            handle["/".join(["g"] * (depth - 1))].create_dataset("leaf", data=np.arange(3))
        return tweak

    assert same_content(fredset.load(crafted(nest(structure.MAX_DEPTH), version=NEWER)), fredset.load(FLOAT32))
    timed_refusal(crafted(nest(structure.MAX_DEPTH + 1), version=NEWER), "nested more than")


def test_a_hard_link_cycle_is_walked_once():
    def cycle(handle: h5py.File) -> None:
        group = handle.create_group("g")
        group["up"] = handle["/"]
        group["self"] = group
    assert same_content(fredset.load(crafted(cycle, version=NEWER)), fredset.load(FLOAT32))
    refused(crafted(cycle), "unexpected object /g")


@pytest.mark.parametrize("name", [b"\xff\xfe", "caf\u00e9".encode(), b".hidden", b"..", b"-x", b"a b",
                                  b"new\nline", b"tab\there", b"a" * 65, b"x" * 5000, b"semi;colon"])
@pytest.mark.parametrize("version", [(1, 0), NEWER])
def test_bad_link_names_are_refused(name, version):
    message = refused(crafted(hard_link_named(name), version=version), "link name")
    assert len(message) < 400


def test_a_long_good_name_is_fine_in_a_newer_minor_version():
    name = b"A" + b"z_.-9" * 12 + b"abc"  # 64 characters
    assert len(name) == structure.MAX_NAME_LENGTH
    assert same_content(fredset.load(crafted(hard_link_named(name), version=NEWER)), fredset.load(FLOAT32))


# -- 2. non-regular files ------------------------------------------------------------------------

def _guarded(action: Callable[[], Any], unblock: Callable[[], None] | None = None) -> BaseException | None:
    """Run ``action`` in a thread; fail (after unblocking it) if it does not return within 10 s."""
    outcome: list[BaseException | None] = []

    def target() -> None:
        try:
            action()
            outcome.append(None)
        except BaseException as error:  # noqa: BLE001 - handed to the test
            outcome.append(error)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(10)
    if thread.is_alive():
        if unblock is not None:
            unblock()
        thread.join(5)
        pytest.fail("reading blocked")
    return outcome[0]


def _unblock_fifo(path: Path) -> Callable[[], None]:
    def unblock() -> None:  # a reader blocked in open() wakes when a writer opens, then sees EOF
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass
    return unblock


def _assert_refused(error: BaseException | None, path: Path, kind: str) -> None:
    assert type(error) is FredsetError, error
    message = str(error)
    assert message == f"{path}: not a regular file ({kind})", message


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
@pytest.mark.parametrize("entry", ["load", "read_file", "FredDataset", "inspect"])
def test_a_fifo_is_refused_without_blocking(tmp_path, entry):
    path = tmp_path / "x.fredset"
    os.mkfifo(path)
    if entry == "inspect":
        from click.testing import CliRunner

        from fredset_cli.main import cli
        result: list[Any] = []
        assert _guarded(lambda: result.append(CliRunner().invoke(cli, ["inspect", str(path)])),
                        _unblock_fifo(path)) is None
        assert result[0].exit_code == 2 and "not a regular file (a FIFO)" in result[0].output, result[0].output
        return
    action = {"load": fredset.load, "read_file": fredset.read_file, "FredDataset": FredDataset}[entry]
    for source in (path, str(path)):
        _assert_refused(_guarded(lambda: action(source), _unblock_fifo(path)), path, "a FIFO")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_symlink_to_a_fifo_is_refused(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    link = tmp_path / "x.fredset"
    link.symlink_to(fifo)
    _assert_refused(_guarded(lambda: fredset.load(link), _unblock_fifo(fifo)), link, "a FIFO")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_swapped_in_after_the_check_is_refused(tmp_path, monkeypatch):
    regular = tmp_path / "regular.fredset"
    regular.write_bytes(FLOAT32)
    path = tmp_path / "x.fredset"
    os.mkfifo(path)
    real_stat = os.stat
    # stat answers for a regular file, as if the FIFO replaced it right after the check
    monkeypatch.setattr(reader.os, "stat", lambda target, *a, **k: real_stat(regular if str(target) == str(path)
                                                                              else target, *a, **k))
    _assert_refused(_guarded(lambda: fredset.load(path), _unblock_fifo(path)), path, "a FIFO")


def test_a_directory_is_refused(tmp_path):
    _assert_refused(_guarded(lambda: fredset.load(tmp_path)), tmp_path, "a directory")


@pytest.mark.skipif(not os.path.exists("/dev/null") or not stat.S_ISCHR(os.stat("/dev/null").st_mode),
                    reason="needs /dev/null")
def test_a_device_is_refused():
    for path in (Path("/dev/null"), Path("/dev/zero")):
        if path.exists():
            _assert_refused(_guarded(lambda: FredDataset(path)), path, "a character device")


@pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="needs Unix sockets")
def test_a_socket_is_refused():
    with tempfile.TemporaryDirectory(dir="/tmp" if os.path.isdir("/tmp") else None) as folder:
        path = Path(folder) / "s.fredset"  # short: socket paths are limited to ~100 bytes
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
            server.bind(str(path))
            server.listen(1)
            _assert_refused(_guarded(lambda: fredset.load(path)), path, "a socket")


def test_a_regular_file_still_loads(tmp_path):
    path = tmp_path / "x.fredset"
    path.write_bytes(FLOAT32)
    assert same_content(fredset.load(path), fredset.load(FLOAT32))
    with open(path, "rb") as stream:  # an open stream is read as it is
        assert same_content(fredset.load(stream), fredset.load(FLOAT32))


# -- 3. datatypes: exact, and the same answer as the reference decoder ----------------------------

def _enum(original: h5py.h5t.TypeID) -> h5py.h5t.TypeID:
    enum = h5py.h5t.enum_create(original.copy())
    enum.enum_insert(b"zero", 0)
    return enum


def _precision(bits: int, offset: int, pad: tuple[int, int] | None = None):
    def change(new: Any) -> None:
        new.set_precision(bits)
        new.set_offset(offset)
        if pad is not None:
            new.set_pad(*pad)
    return changed_type(change)


def _fixed(type_id: h5py.h5t.TypeID) -> Callable[[h5py.h5t.TypeID], h5py.h5t.TypeID]:
    return lambda original: type_id.copy()


def _float_fields(*fields: int):
    def change(new: Any) -> None:
        new.set_fields(*fields)
    return changed_type(change)


PAD_ONE, PAD_ZERO = h5py.h5t.PAD_ONE, h5py.h5t.PAD_ZERO
# (file, dataset, how the type changes); the stored bytes stay those of the valid file
TYPE_VARIANTS: dict[str, tuple[str, str, Callable[[h5py.h5t.TypeID], h5py.h5t.TypeID]]] = {
    "masks enum": ("float32", "masks", _enum),
    "masks 16 bits at offset 8": ("float32", "masks", _precision(16, 8)),
    "masks 31 bits at offset 1, low pad one": ("float32", "masks", _precision(31, 1, (PAD_ONE, PAD_ZERO))),
    "masks 24 bits, high pad one": ("float32", "masks", _precision(24, 0, (PAD_ZERO, PAD_ONE))),
    "masks full precision, pad one": ("float32", "masks", changed_type(lambda t: t.set_pad(PAD_ONE, PAD_ONE))),
    "masks signed": ("float32", "masks", changed_type(lambda t: t.set_sign(h5py.h5t.SGN_2))),
    "masks big-endian": ("float32", "masks", changed_type(lambda t: t.set_order(h5py.h5t.ORDER_BE))),
    "masks bitfield": ("float32", "masks", _fixed(h5py.h5t.STD_B32LE)),
    "masks opaque": ("float32", "masks", _fixed(h5py.h5t.create(h5py.h5t.OPAQUE, 4))),
    "masks float32": ("float32", "masks", _fixed(h5py.h5t.IEEE_F32LE)),
    "metadata enum": ("float32", "metadata", _enum),
    "metadata 7 bits": ("float32", "metadata", _precision(7, 0)),
    "metadata 4 bits at offset 4": ("float32", "metadata", _precision(4, 4)),
    "metadata signed": ("float32", "metadata", changed_type(lambda t: t.set_sign(h5py.h5t.SGN_2))),
    "metadata bitfield": ("float32", "metadata", _fixed(h5py.h5t.STD_B8LE)),
    "metadata opaque": ("float32", "metadata", _fixed(h5py.h5t.create(h5py.h5t.OPAQUE, 1))),
    "coefficients enum": ("float32", "coefficients", _enum),
    "coefficients 7 bits at offset 1": ("float32", "coefficients", _precision(7, 1)),
    "coefficients signed": ("int8", "coefficients", changed_type(lambda t: t.set_sign(h5py.h5t.SGN_2))),
    "offsets enum": ("float32", "coefficient_offsets", _enum),
    "offsets 32 bits": ("float32", "coefficient_offsets", _precision(32, 0)),
    "offsets 56 bits at offset 8": ("float32", "coefficient_offsets", _precision(56, 8)),
    "offsets signed": ("float32", "coefficient_offsets", changed_type(lambda t: t.set_sign(h5py.h5t.SGN_2))),
    "quantization exponent bias 126": ("int8", "quantization", changed_type(lambda t: t.set_ebias(126))),
    "quantization no implied bit": ("int8", "quantization", changed_type(lambda t: t.set_norm(h5py.h5t.NORM_NONE))),
    "quantization short mantissa": ("int8", "quantization", _float_fields(31, 23, 8, 1, 22)),
    "quantization moved sign": ("int8", "quantization", _float_fields(0, 24, 7, 1, 23)),
    "quantization 31 bits at offset 1": ("int8", "quantization", changed_type(
        lambda t: (t.set_fields(30, 22, 8, 0, 22), t.set_precision(31), t.set_offset(1)))),
    "quantization internal pad one": ("int8", "quantization", changed_type(lambda t: t.set_inpad(PAD_ONE))),
    "quantization big-endian": ("int8", "quantization", changed_type(lambda t: t.set_order(h5py.h5t.ORDER_BE))),
    "quantization uint32": ("int8", "quantization", _fixed(h5py.h5t.STD_U32LE)),
    "quantization enum": ("int8", "quantization", lambda original: _enum(h5py.h5t.STD_U32LE)),
}
# variants both readers must accept, with the valid file's values
ACCEPTED_VARIANTS: dict[str, tuple[str, str, Callable[[h5py.h5t.TypeID], h5py.h5t.TypeID]]] = {
    "masks rewritten with its own type": ("float32", "masks", changed_type(lambda t: None)),
    "metadata big-endian (1 byte: no change)": ("float32", "metadata", _fixed(h5py.h5t.STD_U8BE)),
    "coefficients big-endian (1 byte: no change)": ("int8", "coefficients", _fixed(h5py.h5t.STD_U8BE)),
    "quantization rewritten as IEEE_F32LE": ("int8", "quantization", _fixed(h5py.h5t.IEEE_F32LE)),
}


def _both_readers(data: bytes, tmp_path: Path) -> tuple[Any, Any]:
    """What fredset and the reference decoder make of ``data``: the result, or the error."""
    path = tmp_path / "crafted.fredset"
    path.write_bytes(data)
    try:
        ours: Any = fredset.read_file(path)[0]
    except FredsetError as error:
        ours = error
    try:
        theirs: Any = reference.read(str(path))
    except ValueError as error:
        theirs = error
    return ours, theirs


def _agree(ours: Any, theirs: Any) -> None:
    if isinstance(ours, FredsetError) or isinstance(theirs, ValueError):
        assert isinstance(ours, FredsetError) and isinstance(theirs, ValueError), (ours, theirs)
        return
    assert np.array_equal(ours.masks.numpy(), theirs.masks)
    assert len(ours.coefficients) == len(theirs.coefficients)
    for mine, other in zip(ours.coefficients, theirs.coefficients):
        assert mine.numpy().tobytes() == other.tobytes()


@pytest.mark.parametrize("case", sorted(TYPE_VARIANTS))
@pytest.mark.parametrize("version", [(1, 0), NEWER])
def test_a_crafted_datatype_is_refused_by_both_readers(tmp_path, case, version):
    which, name, make = TYPE_VARIANTS[case]
    data = crafted(retyped(name, make), version=version, which=which)
    ours, theirs = _both_readers(data, tmp_path)
    assert type(ours) is FredsetError, f"fredset read {case}"
    message = str(ours)
    assert "\n" not in message and message.startswith(str(tmp_path / "crafted.fredset") + ": ")
    assert f"/{name} has the wrong HDF5 datatype" in message, message
    assert isinstance(theirs, ValueError), f"the reference decoder read {case}"


@pytest.mark.parametrize("case", sorted(ACCEPTED_VARIANTS))
def test_an_equivalent_datatype_is_read_alike_by_both_readers(tmp_path, case):
    which, name, make = ACCEPTED_VARIANTS[case]
    ours, theirs = _both_readers(crafted(retyped(name, make), which=which), tmp_path)
    _agree(ours, theirs)
    assert not isinstance(ours, FredsetError), ours
    assert same_content(ours, fredset.load(FLOAT32 if which == "float32" else INT8))


@pytest.mark.parametrize("version", [(1, 0), NEWER])
def test_a_committed_datatype_on_a_known_dataset_is_refused_by_both(tmp_path, version):
    ours, theirs = _both_readers(crafted(with_committed_type("masks"), version=version), tmp_path)
    assert type(ours) is FredsetError and isinstance(theirs, ValueError), (ours, theirs)
    if version == NEWER:  # the committed type itself is an ignored unknown object; its use is not
        assert "/masks has the wrong HDF5 datatype (a committed (named) datatype)" in str(ours)


def test_the_readers_agree_on_every_crafted_file(tmp_path):
    """The differential oracle over all variants, compact layouts and raw-byte rewrites included:
    where fredset reads a file the reference decoder reads the same values, and where one refuses,
    both refuse."""
    cases: list[bytes] = [FLOAT32, INT8]
    for which, name, make in list(TYPE_VARIANTS.values()) + list(ACCEPTED_VARIANTS.values()):
        cases.append(crafted(retyped(name, make), which=which))
        cases.append(crafted(lambda h, name=name, make=make: (retyped(name, make)(h), compact(name)(h)),
                             which=which, version=NEWER))
    for which, arrays in ARRAYS.items():
        for name in arrays:
            cases.append(crafted(compact(name), which=which))
    for data in cases:
        _agree(*_both_readers(data, tmp_path))


def test_the_type_check_runs_before_any_data_is_read(monkeypatch):
    data = crafted(retyped("masks", _precision(16, 8)))
    monkeypatch.setattr(reader, "read_dataset", lambda *a, **k: pytest.fail("data read before the type check"))
    refused(data, "/masks has the wrong HDF5 datatype (precision 16, not 32)")


# -- 4. forward compatibility: a newer minor version's unknown objects ----------------------------

def test_a_committed_datatype_in_a_newer_minor_version_is_ignored(tmp_path):
    data = crafted(committed_datatype("t", "f4"), version=NEWER)
    artifact, info = fredset.read_file(data)
    assert info.format_version == "1.1" and same_content(artifact, fredset.load(FLOAT32))
    _agree(*_both_readers(data, tmp_path))
    refused(crafted(committed_datatype("t", "f4")), "unexpected object /t")  # 1.0 stays strict


def test_unknown_objects_of_every_kind_are_ignored_in_a_newer_minor_version(tmp_path):
    def future(handle: h5py.File) -> None:
        group = handle.create_group("future")
        group["type"] = np.dtype("<i8")
        group.create_dataset("table", data=np.arange(6, dtype="<f8").reshape(2, 3))
        group.attrs["note"] = "from 1.1"
        inner = group.create_group("inner")
        inner["again"] = handle["future/table"]  # a second hard link to an unknown dataset
        inner["enum"] = h5py.enum_dtype({"a": 0, "b": 1}, basetype="u1")
        handle["shared"] = group  # the group reached twice
        handle["compound_type"] = np.dtype([("x", "<f4"), ("y", "<u2")])
    data = crafted(future, version=NEWER)
    assert same_content(fredset.load(data), fredset.load(FLOAT32))
    _agree(*_both_readers(data, tmp_path))
    refused(crafted(future), "unexpected object /")


def test_a_known_name_must_still_be_a_dataset_in_a_newer_minor_version():
    def masks_as_type(handle: h5py.File) -> None:
        del handle["masks"]
        handle["masks"] = np.dtype("<u4")
    refused(crafted(masks_as_type, version=NEWER), "/masks must be a dataset")
    refused(crafted(lambda h: (h.__delitem__("masks"), h.create_group("masks")), version=NEWER),
            "/masks must be a dataset")


def test_unknown_objects_count_against_the_limits():
    def types(count: int) -> Callable[[h5py.File], None]:
        def tweak(handle: h5py.File) -> None:
            for index in range(count):
                handle[f"t{index}"] = np.dtype("f4")
        return tweak
    timed_refusal(crafted(types(structure.MAX_LINKS), version=NEWER), f"more than {structure.MAX_LINKS} links")
    assert same_content(fredset.load(crafted(types(structure.MAX_LINKS - 4), version=NEWER)), fredset.load(FLOAT32))
    refused(crafted(nested_groups(structure.MAX_DEPTH + 1, "future"), version=NEWER), "nested more than")


def test_a_soft_link_is_still_refused_in_a_newer_minor_version():
    refused(crafted(lambda h: h.create_group("future").__setitem__("alias", h5py.SoftLink("/masks")),
                    version=NEWER), "/future/alias is a soft link")
    refused(crafted(lambda h: h.__setitem__("ext", h5py.ExternalLink("other.h5", "/x")), version=NEWER),
            "/ext is an external link")


def test_metadata_of_a_newer_minor_version_may_add_fields():
    document = json.loads(bytes(ARRAYS["float32"]["metadata"]))
    document["future_field"] = [1, 2]
    data = build_file(ARRAYS["float32"], metadata=document, version=NEWER, tweak=committed_datatype("t", "f4"))
    assert same_content(fredset.load(data), fredset.load(FLOAT32))


# -- format 2.0: the same limits over libhdf5's 1.8 structures (links in the object header, then dense) ---

TWO = to_bytes(random_artifact(1, (5, 7), 6, [2, 3, 1], 9, mean=[0.1], std=[0.2]), encoding="q4", level=3)


@pytest.mark.parametrize("version", [(2, 0), (2, 1)])
@pytest.mark.parametrize("count,what,fragment", [
    (20_000, "link", "more than 1024 links"), (3000, "group", ""), (1025, "dataset", "")])
def test_wide_2_0_trees_are_refused_quickly(version, count, what, fragment):
    """Past 8 links libhdf5's 1.8 structures keep a group's links in a fractal heap and a B-tree: another code
    path than 1.0's symbol tables, under the same limits. A 2.0 file of minor 0 refuses the first extra object,
    a newer minor the link past 1024."""
    data = build_file(datasets_of(TWO), tweak=extra_objects(count, what), version=version, libver=("v108", "v108"))
    message = timed_refusal(data, *([] if version == (2, 0) else [fragment]))
    if version == (2, 0):
        assert "unexpected object" in message


@pytest.mark.parametrize("depth", [9, 2000])
def test_deep_2_0_trees_are_refused_quickly(depth):
    data = build_file(datasets_of(TWO), tweak=nested_groups(depth), version=(2, 1), libver=("v108", "v108"))
    timed_refusal(data, "nested more than 8 levels deep")


def test_a_2_1_file_with_a_few_unknown_objects_is_read():
    data = build_file(datasets_of(TWO), tweak=extra_objects(50, "group"), version=(2, 1), libver=("v108", "v108"))
    assert fredset.load(data).counts == [2, 3, 1]
