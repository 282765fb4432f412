"""Fuzz report for the .fredset reader: what happens when damaged files reach libhdf5.

    python bench/fuzz_report.py [--count 3000] [--per-class 8] [--seed 0] [--timeout 10] [--out bench/out/fuzz_report.json]

A report, not a test. It builds a few valid files (fredset.Artifact + fredset.format.to_bytes), format 1.0
and 2.0, and crafts ``count`` damaged ones from them, deterministically from ``--seed``. Unlike tests/test_fuzz.py,
the SHA-256 in the header is recomputed after every mutation, so the damage gets past the header
check and reaches libhdf5, zstd and the validation code:

- random bit flips, byte overwrites, insertions/deletions, truncations and extensions anywhere in
  the HDF5 part (offset >= 512);
- mutations aimed at HDF5 structure: the superblock, object headers (found with h5py), the B-tree,
  local heap and symbol-table nodes (found by signature) and the link names, with bit flips and
  "interesting" integers (0, -1, 2**31, file size, ...) written over size and address fields;
- bit flips inside the stored data of each dataset;
- the semantic cases of tests/test_fuzz.py (wrong types, shapes, values, frames, links, storage
  kinds, versions) and random mutations of the metadata JSON, masks, offsets and quantization,
  written with h5py as well-formed HDF5;
- ``--per-class`` files of each hostile class of tests/test_hostile_*.py: deep and wide HDF5 trees
  (nested groups; many links, groups or datasets), exotic datatypes (enum, odd precision/offset,
  big-endian, committed), valid but expensive shapes (a k spread over the diagonal of a large image,
  read and decoded, as 1.0 or 2.0), non-finite and huge JSON numbers, control characters and lone
  surrogates in metadata strings, deeply nested provenance, hostile 2.0 content (wrong declared sizes
  of both frames, bitmaps with other than k bits or padding bits, NaN/inf/negative/-0 steps, codes out
  of range or under a zero step, truncated, doubled or non-zstd frames, oversized metadata frames, 1.0
  datasets in a 2.0 file and the reverse); and a few non-regular files read by path (a FIFO, a
  directory, a link to the FIFO, /dev/zero).

Besides the outcome counts it prints, per outcome, the max and median read time and peak-memory
growth, and checks two targets with a PASS/FAIL line each: every refusal of a file under 16 MiB
within 1 s and 256 MiB, and no crash, hang or other exception.

Every file is read by ``fredset.read_file`` in a separate worker process (a pool of persistent
workers, ``--workers`` of them, each reading one file at a time), so that a crash or hang in libhdf5
costs one worker, not the report. Outcomes: ``ok`` (read), ``FredsetError`` (refused, as it should
be), ``other exception`` (a reader bug: another type escaped), ``crash`` (the worker died: signal or
exit code) and ``hang`` (no answer within ``--timeout`` seconds). A worker is replaced after any
outcome other than ok/FredsetError, so libhdf5's global state cannot carry over. The workers also
report how much their peak resident memory grew while reading each file.

Files with a bad outcome are written to ``<out folder>/fuzz_failures/`` for replay
(``python -c "import fredset; fredset.read_file('...')"``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import select
import signal
import struct
import subprocess
import sys
import threading
import time
import traceback
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import machine, write_json

HEADER_SIZE = 512
GOOD = ("ok", "FredsetError")
OUTCOMES = ("ok", "FredsetError", "other exception", "crash", "hang")
LARGE_GROWTH_KIB = 256 * 1024  # report files whose reading grew the peak resident size by more
MODES = {"read": b"r", "decode": b"d", "path": b"p"}  # what a worker does with a case
REFUSAL_SECONDS, REFUSAL_KIB, SMALL_FILE_BYTES = 1.0, 256 * 1024, 16 * 2**20  # the bound on every refusal
VERSIONS = ("python", "platform", "fredset", "h5py", "hdf5", "numpy", "zstandard")  # the report's "versions"


# -- worker --------------------------------------------------------------------------------------

def _proc_status(field: str) -> int:
    try:
        with open("/proc/self/status") as stream:
            return next(int(line.split()[1]) for line in stream if line.startswith(field + ":"))
    except (OSError, StopIteration, ValueError):
        return -1


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as stream:
            stream.write("5")  # the peak resident size (VmHWM) restarts from the current size
        return True
    except OSError:
        return False


def worker_main(memory_limit_mb: int) -> None:
    """Read length-prefixed files from stdin; answer one JSON line each on the original stdout."""
    channel = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)  # anything libraries print goes to stderr, never into the answers
    sys.stdout = sys.stderr
    if memory_limit_mb > 0:
        import resource
        limit = memory_limit_mb * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    import fredset

    reference = _load_reference()
    source = sys.stdin.buffer
    channel.write(b'{"ready": true}\n')
    while True:
        prefix = source.read(8)
        if len(prefix) < 8:
            return
        (size,) = struct.unpack("<Q", prefix)
        mode = source.read(1)  # b"r": read the bytes; b"d": read and decode them; b"p": they are a path
        data = source.read(size)
        can_measure = _reset_peak()
        before = _proc_status("VmRSS")
        start = time.perf_counter()
        artifact: Any = False
        try:
            artifact, _ = fredset.read_file(os.fsdecode(data) if mode == b"p" else data)
            if mode == b"d":
                artifact.decode()
            answer: dict[str, Any] = {"outcome": "ok"}
        except fredset.FredsetError as error:
            answer = {"outcome": "FredsetError", "message": str(error)[:300]}
        except BaseException as error:  # noqa: BLE001 - this is what the report looks for
            answer = {"outcome": "other exception", "type": f"{type(error).__module__}.{type(error).__qualname__}",
                      "message": str(error)[:300],
                      "traceback": "".join(traceback.format_exception(error)[-4:])[-1500:]}
        answer["seconds"] = round(time.perf_counter() - start, 4)
        answer["rss_growth_kib"] = _proc_status("VmHWM") - before if can_measure and before >= 0 else None
        if answer["outcome"] in GOOD:  # timed above: the reference reads afterwards
            answer["reference"] = _reference_verdict(reference, data, mode, artifact)
        channel.write(json.dumps(answer).encode() + b"\n")


def _load_reference() -> Any:
    """spec/reference_decoder.py, the independent reader (numpy, h5py and zstandard only)."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "spec" / "reference_decoder.py"
    spec = importlib.util.spec_from_file_location("reference_decoder", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _reference_verdict(reference: Any, data: bytes, mode: bytes, artifact: Any) -> str:
    """'agree' when the reference decoder refuses what fredset refused (``artifact`` False), or reads the same
    masks and coefficients (and, for cases that decode, the same images to float32 rounding); else what differs."""
    import tempfile

    import numpy as np

    if mode == b"p":
        path, temporary = os.fsdecode(data), None
    else:
        descriptor, temporary = tempfile.mkstemp(suffix=".fredset")
        with os.fdopen(descriptor, "wb") as stream:
            stream.write(data)
        path = temporary
    try:
        try:
            contents = reference.read(path)
        except ValueError as error:
            return "agree" if artifact is False else f"only the reference refuses: {str(error)[:120]}"
        except Exception as error:  # noqa: BLE001 - a reference bug is a disagreement too
            return f"reference raised {type(error).__name__}: {str(error)[:120]}"
        if artifact is False:
            return "only fredset refuses"
        same = np.array_equal(artifact.masks.numpy(), contents.masks) and len(contents.coefficients) == len(
            artifact.coefficients) and all(ours.numpy().tobytes() == theirs.astype("<f4").tobytes()
                                           for ours, theirs in zip(artifact.coefficients, contents.coefficients))
        if not same:
            return "masks or coefficients differ"
        if mode == b"d" and artifact.decoded_bytes <= 2**22:  # the reference decodes densely in float64: small only
            images = reference.inverse_transform(contents)[0]
            ours = artifact.decode().numpy()
            scale = max(1.0, float(np.abs(images).max(initial=0.0)))
            if ours.shape != images.shape or float(np.abs(ours - images).max(initial=0.0)) > 1e-5 * scale:
                return "decoded images differ"
        return "agree"
    finally:
        if temporary is not None:
            os.unlink(temporary)


class Worker:
    """One persistent reader process; replaced after a crash, a hang or an unexpected exception."""

    def __init__(self, log_path: Path, memory_limit_mb: int) -> None:
        self.log_path = log_path
        self.memory_limit_mb = memory_limit_mb
        self.process: subprocess.Popen | None = None
        self.log = open(log_path, "ab")
        self.restarts = -1
        self._buffer = b""

    def start(self) -> None:
        self.stop()
        self.restarts += 1
        self.process = subprocess.Popen([sys.executable, __file__, "--worker", "--memory-limit-mb",
                                         str(self.memory_limit_mb)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log)
        self._buffer = b""
        ready = self._line(300)
        if ready is None or not json.loads(ready).get("ready"):
            raise RuntimeError(f"a worker did not start (see {self.log_path})")

    def stop(self) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                self.process.kill()
            self.process.wait()
            for stream in (self.process.stdin, self.process.stdout):
                try:
                    stream.close()
                except OSError:
                    pass
            self.process = None

    def _line(self, timeout: float) -> bytes | None:
        """The next answer line, or None at end of file or after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        descriptor = self.process.stdout.fileno()
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([descriptor], [], [], left)[0]:
                return None
            chunk = os.read(descriptor, 65536)
            if not chunk:
                return None
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line

    def read(self, data: bytes, timeout: float, mode: str = "read") -> dict[str, Any]:
        if self.process is None:
            self.start()
        log_offset = self.log.tell()
        start = time.monotonic()
        try:
            self.process.stdin.write(struct.pack("<Q", len(data)) + MODES[mode] + data)
            self.process.stdin.flush()
            line = self._line(timeout)
        except (BrokenPipeError, OSError):
            line = None
        if line is not None:
            answer = json.loads(line)
            if answer["outcome"] not in GOOD or (answer.get("rss_growth_kib") or 0) > LARGE_GROWTH_KIB:
                self.stop()
            return answer
        elapsed = time.monotonic() - start
        try:  # end of file before the timeout: the worker is dying; collect its exit status
            code = self.process.wait(timeout=max(timeout - elapsed, 0) + 5) if elapsed < timeout \
                else self.process.poll()
        except subprocess.TimeoutExpired:
            code = None
        self.stop()
        self.log.flush()
        with open(self.log_path, "rb") as log:
            log.seek(log_offset)
            stderr_tail = log.read()[-1500:].decode("utf-8", "replace")
        if code is None:
            return {"outcome": "hang", "seconds": round(elapsed, 2), "stderr_tail": stderr_tail}
        name = signal.Signals(-code).name if code < 0 else None
        return {"outcome": "crash", "returncode": code, "signal": name, "seconds": round(elapsed, 2),
                "stderr_tail": stderr_tail}

    def close(self) -> None:
        self.stop()
        self.log.close()


# -- the valid files and their structure ----------------------------------------------------------

def base_files() -> dict[str, bytes]:
    from fredset.format import to_bytes
    from fredset.format._crafting import build_file, datasets_of, quantized_artifact, random_artifact

    def artifact(channels: int, size: tuple[int, int], k: int, counts: list[int], seed: int):
        return random_artifact(channels, size, k, counts, seed, mean=[0.5] * channels, std=[0.25] * channels)

    zero_step = artifact(1, (5, 7), 6, [2, 3, 1], 5)  # 35 frequencies: padding bits in every bitmap
    zero_step.coefficients[0][:, :, 1] = 0  # class 0's second frequency: step 0, codes 0

    bases = {
        "gray-float32": to_bytes(artifact(1, (8, 8), 6, [2, 3, 1], 0), encoding="float32", level=3),
        "gray-int8": to_bytes(artifact(1, (5, 7), 9, [1, 4], 1), encoding="int8", level=3),
        "rgb-float16": to_bytes(artifact(3, (6, 6), 7, [3, 1, 2, 1], 2), encoding="float16", level=3),
        "rgb-int8-noshuffle": to_bytes(artifact(3, (4, 4), 5, [2, 1, 3], 3), encoding="int8", shuffle=False,
                                       level=3),
    }
    # The same content with the newest HDF5 structures (superblock v3, object header v2 with
    # checksums, compact link storage): another writer could produce these, and libhdf5 parses them
    # with different code.
    for name in ("gray-float32", "rgb-int8-noshuffle"):
        bases[f"{name}-latest"] = build_file(datasets_of(bases[name]), libver="latest")
    # format 2.0 (written with libhdf5's 1.8 structures)
    bases["gray-q4"] = to_bytes(quantized_artifact(zero_step, 4), level=3)
    bases["rgb-q8"] = to_bytes(quantized_artifact(artifact(3, (6, 6), 7, [3, 1, 2, 1], 6), 8), level=3)
    return bases


@dataclass
class Structure:
    """Byte ranges [start, end) of the parts of a valid file worth aiming at."""

    superblock: tuple[int, int]
    object_headers: list[tuple[int, int]]
    group_nodes: list[tuple[int, int]]  # B-tree, local heap, symbol-table node, link names
    data: list[tuple[int, int]]


def structure_of(data: bytes) -> Structure:
    import io

    import h5py

    headers, stored = [], []
    with h5py.File(io.BytesIO(data), "r") as handle:
        root = h5py.h5o.get_info(handle.id).addr + HEADER_SIZE
        headers.append((root, root + 120))
        for name in handle:
            dataset = handle[name]
            info = h5py.h5o.get_info(dataset.id)
            start = info.addr + HEADER_SIZE
            headers.append((start, start + max(info.hdr.space.total, 64)))
            offset = dataset.id.get_offset()
            if offset is not None:
                stored.append((offset, offset + dataset.id.get_storage_size()))
    nodes = []
    signatures = ((b"TREE", 48), (b"HEAP", 32), (b"SNOD", 8 + 40 * 8), (b"OHDR", 64), (b"OCHK", 64),
                  (b"FRHP", 64), (b"FHDB", 64), (b"FHIB", 64), (b"BTHD", 48), (b"BTIN", 48), (b"BTLF", 48),
                  (b"FSHD", 64), (b"FSSE", 64), (b"GCOL", 64))
    for signature, length in signatures:
        position = data.find(signature, HEADER_SIZE)
        while position >= 0:
            nodes.append((position, min(position + length, len(data))))
            position = data.find(signature, position + 1)
    for name in (b"metadata", b"masks", b"coefficient_offsets", b"coefficients", b"quantization", b"data"):
        position = data.find(name, HEADER_SIZE)
        if position >= 0:
            nodes.append((max(position - 8, HEADER_SIZE), position + len(name) + 8))
    superblock = (HEADER_SIZE, HEADER_SIZE + 96 + 40)  # v0 superblock and the root's symbol table entry (v3: 48 bytes)
    return Structure(superblock, headers, nodes, stored)


# -- mutations -----------------------------------------------------------------------------------

def interesting_integer(rng: random.Random, width: int, payload_length: int) -> bytes:
    top = 2 ** (8 * width)
    value = rng.choice([0, 1, 2, 7, 8, 0xFF, top - 1, top - 2, top // 2 - 1, top // 2, payload_length,
                        payload_length + 1, payload_length - 1, payload_length + HEADER_SIZE,
                        rng.randrange(top), rng.randrange(min(top, 4096))]) % top
    return value.to_bytes(width, "little")


def damage(rng: random.Random, data: bytearray, start: int, end: int) -> None:
    """One local mutation inside [start, end) of ``data``."""
    end = min(end, len(data))
    if end <= start:
        return
    position = rng.randrange(start, end)
    choice = rng.random()
    if choice < 0.45:
        for _ in range(rng.randint(1, 3)):
            spot = rng.randrange(start, end)
            data[spot] ^= 1 << rng.randrange(8)
    elif choice < 0.8:
        width = rng.choice([1, 2, 4, 8])
        data[position:position + width] = interesting_integer(rng, width, len(data) - HEADER_SIZE)
    else:
        run = rng.randint(1, 16)
        fill = rng.choice([b"\x00", b"\xff", None])
        data[position:position + run] = fill * run if fill else rng.randbytes(run)


def byte_mutation(rng: random.Random, kind: str, base: bytes, structure: Structure) -> bytes:
    from fredset.format._crafting import with_checksum

    data = bytearray(base)
    if kind == "bit flips":
        for _ in range(rng.randint(1, 4)):
            spot = rng.randrange(HEADER_SIZE, len(data))
            data[spot] ^= 1 << rng.randrange(8)
    elif kind == "byte overwrites":
        for _ in range(rng.randint(1, 3)):
            run = rng.randint(1, 16)
            spot = rng.randrange(HEADER_SIZE, len(data))
            data[spot:spot + run] = rng.randbytes(run) if rng.random() < 0.6 else bytes([rng.choice((0, 255))]) * run
    elif kind == "truncation":
        del data[rng.randrange(HEADER_SIZE, len(data)):]
    elif kind == "extension":
        data += rng.randbytes(rng.randint(1, 4096)) if rng.random() < 0.5 else bytes(rng.randint(1, 4096))
    elif kind == "insert/delete":
        spot = rng.randrange(HEADER_SIZE, len(data))
        if rng.random() < 0.5:
            data[spot:spot] = rng.randbytes(rng.randint(1, 64))
        else:
            del data[spot:spot + rng.randint(1, 64)]
    else:
        regions = {"superblock": [structure.superblock], "object headers": structure.object_headers,
                   "group structure": structure.group_nodes, "stored data": structure.data}[kind]
        for _ in range(rng.randint(1, 2)):
            damage(rng, data, *rng.choice(regions))
    return with_checksum(data)


# h5py-built variants: the semantic cases of tests/test_fuzz.py and random ones

def semantic_cases(bases: dict[str, bytes]) -> list[tuple[str, bytes]]:
    """The hand-written cases of tests/test_fuzz.py, part c (a representative subset)."""
    import h5py
    import numpy as np

    from fredset.format._crafting import (build_file, datasets_of, decompressed, external_storage, frames_of,
                                          metadata_array, raw_zstd_frame, recompress, replace_dataset,
                                          virtual_dataset, with_datasets, with_frames, with_item)
    from fredset.format.codec import encode_block

    gray, int8 = datasets_of(bases["gray-float32"]), datasets_of(bases["gray-int8"])
    document = json.loads(bytes(gray["metadata"]))
    frames = frames_of(gray)
    expected0 = document["instances_per_class"][0] * document["image"]["channels"] * document["k"] * 4

    def meta(**fields: Any) -> Any:
        return metadata_array({**document, **fields})

    def swap(name: str, value: Any) -> dict[str, Any]:
        return with_datasets(gray, **{name: value})

    def frame0(frame: bytes) -> dict[str, Any]:
        return with_frames(gray, [frame] + frames[1:])

    raw0 = decompressed(frames[0])

    def vlen_metadata(handle: h5py.File) -> None:
        del handle["metadata"]
        handle.create_dataset("metadata", data=json.dumps(document), dtype=h5py.string_dtype())

    masks, offsets = gray["masks"], gray["coefficient_offsets"]
    cases = {
        "masks float64": swap("masks", masks.astype("<f8")),
        "masks big-endian": swap("masks", masks.astype(">u4")),
        "masks transposed": swap("masks", np.ascontiguousarray(masks.T)),
        "mask index out of range": swap("masks", with_item(masks, (0, -1), 64)),
        "mask index repeated": swap("masks", with_item(masks, (0, 1), masks[0, 0])),
        "mask indices unsorted": swap("masks", with_item(masks, 2, masks[2, ::-1])),
        "offsets int8": swap("coefficient_offsets", offsets.astype("i1")),
        "offsets not from 0": swap("coefficient_offsets", with_item(offsets, 0, 1)),
        "offsets decreasing": swap("coefficient_offsets", with_item(offsets, 1, offsets[2] + 1)),
        "offsets not ending at the stream length": swap("coefficient_offsets", with_item(offsets, -1, offsets[-1] - 1)),
        "offsets 2**64-1": swap("coefficient_offsets", with_item(offsets, -1, 2**64 - 1)),
        "metadata missing": swap("metadata", None),
        "masks missing": swap("masks", None),
        "coefficients missing": swap("coefficients", None),
        "offsets missing": swap("coefficient_offsets", None),
        "quantization missing": with_datasets(int8, quantization=None),
        "quantization NaN": {**int8, "quantization": with_item(int8["quantization"], (0, 0, 0, 0), np.nan)},
        "extra dataset": swap("extra", np.arange(3)),
        "frame declares one byte more": frame0(recompress(raw0 + b"\0")),
        "small frame declaring 2**40 bytes": frame0(raw_zstd_frame(2**40)),
        "small frame declaring the right size": frame0(raw_zstd_frame(expected0)),
        "frame with trailing bytes": frame0(frames[0] + b"\0\1\2"),
        "frame without content size": frame0(recompress(raw0, content_size=False)),
        "coefficients NaN": frame0(encode_block(np.full(expected0 // 4, np.nan, "<f4"), "float32", True, 3)),
        "instances_per_class huge": swap("metadata", meta(instances_per_class=[2**24] * 3)),
        "metadata unknown field (1.0)": swap("metadata", meta(unknown=1)),
    }
    built = [(f"semantic: {name}", build_file(arrays)) for name, arrays in cases.items()]
    tweaks = {
        "metadata vlen string": vlen_metadata,
        "root attribute": lambda h: h.attrs.__setitem__("x", 1),
        "dataset attribute": lambda h: h["masks"].attrs.__setitem__("x", 1),
        "group": lambda h: h.create_group("g"),
        "soft link": lambda h: h.__setitem__("alias", h5py.SoftLink("/masks")),
        "external link": lambda h: h.__setitem__("ext", h5py.ExternalLink("other.h5", "/x")),
        "chunked": replace_dataset("coefficients", chunks=(16,)),
        "gzip": replace_dataset("masks", compression="gzip"),
        "external storage": external_storage("missing.bin"),
        "virtual dataset": virtual_dataset("other.h5", extra=False),
    }
    built += [(f"semantic: {name}", build_file(gray, tweak=tweak)) for name, tweak in tweaks.items()]
    built.append(("semantic: 1.0 datasets as major version 2", build_file(gray, version=(2, 0))))
    built.append(("semantic: major version 3", build_file(gray, version=(3, 0))))
    newer = {**gray, "future": np.arange(4.0), "metadata": meta(future_field={"x": [1, 2]})}
    built.append(("semantic: minor version 1.7 with extras (should read)", build_file(newer, version=(1, 7))))
    return built + semantic_cases_2(bases)


def semantic_cases_2(bases: dict[str, bytes]) -> list[tuple[str, bytes]]:
    """Hand-written 2.0 cases (tests/test_format_v2.py has them all, with their messages)."""
    import numpy as np

    from fredset.format._crafting import (build_file, build_file_2, data_bytes, datasets_of, document_of,
                                          frame_array, raw_zstd_frame, sections_of, with_datasets)

    arrays = datasets_of(bases["gray-q4"])
    document, sections = document_of(arrays), sections_of(arrays)
    raw, text = data_bytes(sections), json.dumps(document).encode()

    def edited(name: str, index: tuple, value: Any) -> bytes:
        changed = {key: item.copy() for key, item in sections.items()}
        changed[name][index] = value
        return build_file_2(arrays, sections=changed)

    cases = {
        "2.0 data declares one byte more": build_file_2({**arrays, "data": frame_array(raw + b"\0")}),
        "2.0 data declares 2**40": build_file_2({**arrays, "data": np.frombuffer(raw_zstd_frame(2**40), "u1")}),
        "2.0 data without content size": build_file_2({**arrays, "data": frame_array(raw, content_size=False)}),
        "2.0 data not zstd": build_file_2({**arrays, "data": np.frombuffer(raw, "u1")}),
        "2.0 data with a second frame": build_file_2({**arrays, "data": np.concatenate([arrays["data"]] * 2)}),
        "2.0 metadata not zstd": build_file_2(arrays, text),
        "2.0 metadata declares 4 MiB + 1": build_file_2(arrays, raw_zstd_frame(4 * 2**20 + 1)),
        "2.0 metadata with 1.0 coefficients": build_file_2(arrays, {**document, "coefficients": {
            "dtype": "int8", "byte_order": "little", "shuffle": True, "compression": "zstd"}}),
        "2.0 bitmap padding bit": edited("bitmap", (0, 4), sections["bitmap"][0, 4] | 0x80),
        "2.0 bitmap empty row": edited("bitmap", (1, slice(None)), 0),
        "2.0 step NaN": edited("steps", (1, 0, 3), np.nan),
        "2.0 step -0.0": edited("steps", (0, 0, 2), -0.0),
        "2.0 code 8 at 4 bits": edited("codes", (3, 0, 1), 8),
        "2.0 code under a zero step": edited("codes", (0, 0, 1), 1),
        "2.0 with /masks": build_file_2({**arrays, "masks": np.zeros((3, 6), "<u4")}),
        "2.0 without /data": build_file_2(with_datasets(arrays, data=None)),
        "2.0 datasets as major version 1": build_file(arrays, version=(1, 0), libver=("v108", "v108")),
    }
    built = [(f"semantic: {name}", data) for name, data in cases.items()]
    newer = build_file_2({**arrays, "future": np.arange(4.0)}, {**document, "future_field": 1}, version=(2, 3))
    built.append(("semantic: 2.0 code -8 at 4 bits (should read)", edited("codes", (4, 0, 0), -8)))
    built.append(("semantic: minor version 2.3 with extras (should read)", newer))
    return built


def random_semantic(rng: random.Random, arrays: dict[str, Any]) -> bytes:
    """Random values in one dataset of a well-formed file: metadata JSON, masks, offsets, quantization or frames
    (2.0: :func:`random_semantic_2`)."""
    import numpy as np

    from fredset.format._crafting import build_file, frames_of, with_frames

    if "data" in arrays:
        return random_semantic_2(rng, arrays)
    arrays = dict(arrays)
    target = rng.choice(["metadata", "metadata", "masks", "coefficient_offsets", "coefficients"]
                        + (["quantization"] if "quantization" in arrays else []))
    if target == "metadata":
        document = json.loads(bytes(arrays["metadata"]))
        paths = [("k",), ("instances_per_class",), ("image", "channels"), ("image", "height"), ("image", "width"),
                 ("dataset", "classes"), ("normalization", "mean"), ("normalization", "std"),
                 ("coefficients", "dtype"), ("coefficients", "shuffle"), ("format",), ("provenance",)]
        path = rng.choice(paths)
        holder = document
        for key in path[:-1]:
            holder = holder[key]
        holder[path[-1]] = rng.choice([None, True, 0, -1, 1, 2, 3, 2**24, 2**63, 10**30, 1e308, 1.5, "x", [], {},
                                       [1] * rng.randint(0, 5), [[[[1]]]], float("nan"), float("inf")])
        text = json.dumps(document, allow_nan=True)
        if rng.random() < 0.3:
            spot = rng.randrange(len(text))
            text = text[:spot] + rng.choice(["\x00", "NaN", "[" * 5000, "}", "\"", "\\u"]) + text[spot:]
        raw = text.encode("utf-8", "surrogatepass")
        if rng.random() < 0.1:
            raw = raw.replace(b"class", b"\xff\xfe", 1)
        arrays["metadata"] = np.frombuffer(raw, dtype="u1")
    elif target == "coefficients":
        frames = frames_of(arrays)
        label = rng.randrange(len(frames))
        frame = bytearray(frames[label])
        for _ in range(rng.randint(1, 3)):
            frame[rng.randrange(len(frame))] ^= 1 << rng.randrange(8)
        frames[label] = bytes(frame)
        arrays = with_frames(arrays, frames)
    else:
        values = arrays[target].copy()
        flat = values.reshape(-1)
        index = rng.randrange(flat.size)
        if values.dtype.kind == "f":
            flat[index] = rng.choice([np.nan, np.inf, -np.inf, -1.0, 0.0, 3e38, 1e-40])
        else:
            top, old = int(np.iinfo(values.dtype).max), int(flat[index])
            flat[index] = rng.choice([0, 1, (old + 1) % (top + 1), (old - 1) % (top + 1), top])
        arrays[target] = values
    return build_file(arrays)


def random_semantic_2(rng: random.Random, arrays: dict[str, Any]) -> bytes:
    """Random values in a 2.0 file: its metadata document, a mask bitmap, steps or codes (recompressed, the
    sizes right), or bit flips in either frame."""
    import numpy as np

    from fredset.format._crafting import build_file_2, document_of, sections_of

    arrays = dict(arrays)
    target = rng.choice(["metadata", "bitmap", "steps", "codes", "codes", "frame"])
    if target == "metadata":
        document = document_of(arrays)
        path = rng.choice([("k",), ("instances_per_class",), ("image", "channels"), ("image", "width"),
                           ("coefficients", "bits"), ("coefficients", "steps"), ("coefficients",), ("format",)])
        holder = document
        for key in path[:-1]:
            holder = holder[key]
        holder[path[-1]] = rng.choice([None, 0, 1, 2, 3, 4, 8, 9, 2**24, -1, 1.5, "float32", "x", [], {},
                                       {"dtype": "int8"}, float("nan")])
        return build_file_2(arrays, json.dumps(document, allow_nan=True))
    if target == "frame":
        name = rng.choice(["data", "metadata"])
        frame = bytearray(arrays[name].tobytes())
        for _ in range(rng.randint(1, 3)):
            frame[rng.randrange(len(frame))] ^= 1 << rng.randrange(8)
        arrays[name] = np.frombuffer(bytes(frame), dtype="u1")
        return build_file_2(arrays)
    sections = sections_of(arrays)
    flat = sections[target].reshape(-1)
    index = rng.randrange(flat.size)
    if target == "bitmap":
        flat[index] ^= 1 << rng.randrange(8)
    elif target == "steps":
        flat[index] = rng.choice([np.nan, np.inf, -np.inf, -0.0, 0.0, -1.0, 65504.0, 6e-8])
    else:
        flat[index] = rng.choice([0, 1, -1, 7, -7, 8, -8, 127, -128])
    return build_file_2(arrays, sections=sections)


@dataclass
class Case:
    index: int
    base: str
    kind: str
    data: bytes  # the file; for mode "path", the path of a non-regular file
    mode: str = "read"


BYTE_KINDS = {"bit flips": 16, "byte overwrites": 9, "truncation": 5, "extension": 2, "insert/delete": 4,
              "superblock": 12, "object headers": 20, "group structure": 12, "stored data": 6}
H5PY_KINDS = {"random semantic": 14}


def generate(count: int, seed: int) -> list[Case]:
    from fredset.format._crafting import datasets_of

    bases = base_files()
    structures = {name: structure_of(data) for name, data in bases.items()}
    parts = {name: datasets_of(data) for name, data in bases.items()}
    names = sorted(bases)
    cases = [Case(i, "gray-float32", kind, data) for i, (kind, data) in enumerate(semantic_cases(bases))][:count]
    kinds = list(BYTE_KINDS) + list(H5PY_KINDS)
    weights = list(BYTE_KINDS.values()) + list(H5PY_KINDS.values())
    for index in range(len(cases), count):
        rng = random.Random(f"fredset-fuzz:{seed}:{index}")
        base = rng.choice(names)
        kind = rng.choices(kinds, weights)[0]
        if kind == "random semantic":
            data = random_semantic(rng, parts[base])
        else:
            data = byte_mutation(rng, kind, bases[base], structures[base])
        cases.append(Case(index, base, kind, data))
    return cases


# hostile classes (tests/test_hostile_*.py): valid HDF5 and valid headers, content built to be slow,
# large or ambiguous. ``--per-class`` files of each, random parameters from the seed.

CONTROL_CHARACTERS = ["\x00", "\x07", "\x1b[2J", "\x7f", "\x85", "\x9b", "\n", "\r", "\ud800", "\udfff"]
NON_FINITE = ["1e400", "-1e400", "1" + "0" * 400, "-" + "9" * 5000, "NaN", "Infinity", "-Infinity",
              str(2**1024), "[1, {\"x\": 2.5e308}]", str(2**63), str(-2**63 - 1)]
HOSTILE_KINDS = ("deep tree", "wide tree", "exotic datatype", "expensive shape", "non-finite JSON",
                 "control characters", "deep provenance", "2.0 content")


def hostile_file(rng: random.Random, kind: str, parts: dict[str, dict[str, Any]]) -> tuple[bytes, str]:
    """One file of a hostile class, and the worker mode it is read with."""
    from fredset.format import to_bytes
    from fredset.format._crafting import (EXOTIC_TYPES, build_file, diagonal_artifact, extra_objects,
                                          json_with_field, nested_groups, nested_json, retyped,
                                          with_committed_type)

    gray = parts["gray-float32"]
    version = rng.choice([(1, 0), (1, 1)])  # 1.1: a newer minor, where unknown objects are ignored
    document = json.loads(bytes(gray["metadata"]))
    if kind == "deep tree":
        return build_file(gray, tweak=nested_groups(rng.choice([7, 8, 9, 50, 500, 2000])), version=version), "read"
    if kind == "wide tree":
        what = rng.choice(["link", "link", "group", "dataset"])
        count = rng.choice([1000, 1025, 5000, 20000] if what == "link" else [1000, 1025, 3000])
        return build_file(gray, tweak=extra_objects(count, what), version=version,
                          libver=rng.choice([None, "latest"])), "read"
    if kind == "exotic datatype":
        names = sorted(EXOTIC_TYPES) + ["committed type on masks", "committed type on metadata"]
        name = rng.choice(names)
        if name.startswith("committed"):
            return build_file(gray, tweak=with_committed_type(name.split()[-1]), version=version), "read"
        base, dataset, make = EXOTIC_TYPES[name]
        return build_file(parts["gray-int8" if base == "int8" else "gray-float32"], tweak=retyped(dataset, make),
                          version=version), "read"
    if kind == "expensive shape":
        side = rng.choice([256, 512, 1024, 2048])
        counts = [rng.randint(1, 2) for _ in range(rng.randint(1, 2))]
        return to_bytes(diagonal_artifact(side, counts, seed=rng.randrange(1000)), level=1,
                        encoding=rng.choice(["float32", "q4", "q8"])), "decode"
    if kind == "non-finite JSON":
        literal = rng.choice(NON_FINITE)
        if rng.random() < 0.5:
            field = rng.choice(["recommended_lr", "seed", "iterations", "extra"])
            text = json_with_field(document, field, literal)
        else:
            text = json.dumps(document).replace('"mean": [0.5]', f'"mean": [{literal}]', 1)
        return build_file(gray, metadata=text), "read"
    if kind == "control characters":
        char = rng.choice(CONTROL_CHARACTERS)
        where = rng.choice(["name", "class", "license", "citation", "value", "key"])
        if where == "name":
            document["dataset"]["name"] += char
        elif where == "class":
            document["dataset"]["classes"][0] += char
        elif where == "license":
            document["license"] = f"CC0{char}"
        elif where == "citation":
            document["citation"] = f"@misc{{x{char}}}"
        elif where == "value":
            document["provenance"]["hyperparameters"] = {"note": [f"x{char}"]}
        else:
            document["provenance"]["source"] = {f"file{char}.bin": "0" * 64}
        if rng.random() < 0.5:  # escaped (\u001b, \ud800) or raw (a raw lone surrogate is not UTF-8)
            raw = json.dumps(document).encode()
        else:
            raw = json.dumps(document, ensure_ascii=False).encode("utf-8", "surrogatepass")
        return build_file(gray, metadata=raw), "read"
    if kind == "deep provenance":
        levels = rng.choice([10, 30, 62, 63, 64, 65, 100, 900, 5000, 100_000])
        text = json_with_field(document, "deep", nested_json(levels, rng.choice(["list", "object"])))
        return build_file(gray, metadata=text), "read"
    if kind == "2.0 content":
        return hostile_2(rng, parts), "read"
    raise ValueError(f"unknown hostile kind {kind!r}")


def hostile_2(rng: random.Random, parts: dict[str, dict[str, Any]]) -> bytes:
    """A 2.0 file with one thing wrong that only 2.0's rules catch (FORMAT.md section 13), chosen by ``rng``."""
    import numpy as np

    from fredset.format._crafting import (build_file, build_file_2, data_bytes, document_of, frame_array,
                                          raw_zstd_frame, recompress, sections_of)

    name = rng.choice(["gray-q4", "rgb-q8"])
    arrays = parts[name]
    document, sections = document_of(arrays), sections_of(arrays)
    raw = data_bytes(sections)
    what = rng.choice(["data size", "metadata size", "popcount", "padding", "step", "code", "zero step",
                       "frame", "metadata frame", "other datasets"])
    if what == "data size":
        declared = rng.choice([len(raw) - 1, len(raw) + 1, 0, 2**31, 2**40, 2**64 - 2, None])
        if declared == len(raw) - 1:
            frame = recompress(raw[:-1])  # a real frame one byte short
        elif declared == len(raw) + 1:
            frame = recompress(raw + b"\0")  # a real frame one byte long
        else:  # a hand-made frame declaring anything (or nothing), holding a few bytes
            frame = raw_zstd_frame(declared, raw[:rng.randint(0, 64)], last=rng.random() < 0.5)
        return build_file_2({**arrays, "data": np.frombuffer(frame, "u1")})
    if what == "metadata size":
        declared = rng.choice([4 * 2**20, 4 * 2**20 + 1, 2**32, 2**62, None])
        return build_file_2(arrays, raw_zstd_frame(declared, b"{}", last=rng.random() < 0.5))
    if what in ("popcount", "padding"):
        plane = document["image"]["height"] * document["image"]["width"]
        row = rng.randrange(len(sections["bitmap"]))
        bits = np.unpackbits(sections["bitmap"][row], bitorder="little")
        if what == "padding" and len(bits) > plane:
            bits[rng.randrange(plane, len(bits))] = 1
        else:
            spot = rng.randrange(plane)
            bits[spot] ^= 1
        sections["bitmap"][row] = np.packbits(bits, bitorder="little")
    elif what == "step":
        flat = sections["steps"].reshape(-1)
        flat[rng.randrange(flat.size)] = rng.choice([np.nan, -np.nan, np.inf, -np.inf, -0.0, -1e-7, -65504.0])
    elif what == "code":
        bits = document["coefficients"]["bits"]
        flat = sections["codes"].reshape(-1)
        flat[rng.randrange(flat.size)] = rng.choice([2 ** (bits - 1), -(2 ** (bits - 1)) - 1, 127, -128]
                                                    if bits < 8 else [-128, 127])  # at 8 bits: valid extremes
    elif what == "zero step":
        steps = sections["steps"]
        label, channel, index = (rng.randrange(n) for n in steps.shape)
        steps[label, channel, index] = 0
        start = sum(document["instances_per_class"][:label])
        sections["codes"][start, channel, index] = rng.choice([1, -1, 0])
    elif what == "frame":
        frame = arrays["data"].tobytes()
        frame = rng.choice([frame[:rng.randrange(len(frame))], frame + frame, frame + bytes(rng.randint(1, 9)),
                            b"\x50\x2a\x4d\x18\4\0\0\0abcd" + frame, raw,
                            frame_array(raw, content_size=False).tobytes()])
        return build_file_2({**arrays, "data": np.frombuffer(frame, "u1")})
    elif what == "metadata frame":
        text = json.dumps(document).encode()
        frame = rng.choice([text, recompress(text)[:-1], recompress(text) + b"\0", recompress(text) * 2,
                            recompress(text, content_size=False), recompress(text + b" " * (4 * 2**20))])
        return build_file_2(arrays, frame)
    else:
        one = parts["gray-float32"]
        choice = rng.choice(["1.0 in 2.0", "2.0 in 1.0", "both", "1.0 metadata"])
        if choice == "1.0 in 2.0":
            return build_file(one, version=(2, 0), libver=rng.choice([None, ("v108", "v108")]))
        if choice == "2.0 in 1.0":
            return build_file(arrays, version=(1, 0), libver=("v108", "v108"))
        if choice == "both":
            return build_file_2({**arrays, "masks": one["masks"], "coefficients": one["coefficients"]})
        return build_file_2(arrays, bytes(one["metadata"]))
    return build_file_2(arrays, sections=sections)


def hostile_cases(per_class: int, seed: int, start: int) -> list[Case]:
    from fredset.format._crafting import datasets_of

    parts = {name: datasets_of(data) for name, data in base_files().items()}
    cases = []
    for kind in HOSTILE_KINDS:
        for number in range(per_class):
            rng = random.Random(f"fredset-fuzz-hostile:{seed}:{kind}:{number}")
            data, mode = hostile_file(rng, kind, parts)
            cases.append(Case(start + len(cases), "gray-float32", kind, data, mode))
    return cases


def path_cases(folder: Path, start: int) -> list[Case]:
    """Non-regular files, read by path: a FIFO nobody writes to, a directory, a link to the FIFO."""
    folder.mkdir(parents=True, exist_ok=True)
    fifo, directory, link = folder / "fifo.fredset", folder / "directory.fredset", folder / "link-to-fifo.fredset"
    for path in (fifo, link):
        if path.is_symlink() or path.exists():
            path.unlink()
    os.mkfifo(fifo)
    directory.mkdir(exist_ok=True)
    link.symlink_to(fifo.name)
    paths = {"FIFO": fifo, "directory": directory, "symlink to a FIFO": link, "/dev/zero": Path("/dev/zero")}
    return [Case(start + n, "-", f"non-regular: {name}", os.fsencode(path), "path")
            for n, (name, path) in enumerate(paths.items()) if name != "/dev/zero" or path.exists()]


# -- running and reporting -----------------------------------------------------------------------

def run_all(cases: list[Case], workers: int, timeout: float, log_folder: Path,
            memory_limit_mb: int) -> tuple[list[dict[str, Any]], int]:
    results: list[dict[str, Any] | None] = [None] * len(cases)
    queue = iter(range(len(cases)))
    lock = threading.Lock()
    pool = [Worker(log_folder / f"fuzz_worker-{n}.log", memory_limit_mb) for n in range(workers)]
    done = [0]

    def serve(worker: Worker) -> None:
        while True:
            with lock:
                index = next(queue, None)
            if index is None:
                return
            results[index] = worker.read(cases[index].data, timeout, cases[index].mode)
            with lock:
                done[0] += 1
                if done[0] % 500 == 0:
                    print(f"  {done[0]}/{len(cases)} files read", file=sys.stderr, flush=True)

    threads = [threading.Thread(target=serve, args=(worker,)) for worker in pool]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    restarts = sum(max(worker.restarts, 0) for worker in pool)
    for worker in pool:
        worker.close()
    return results, restarts  # type: ignore[return-value]


def table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> str:
    widths = [max(len(str(row[i])) for row in rows + [header]) for i in range(len(header))]
    line = lambda row: "  ".join(str(cell).ljust(width) if i == 0 else str(cell).rjust(width)  # noqa: E731
                                 for i, (cell, width) in enumerate(zip(row, widths)))
    return "\n".join([line(header), line(tuple("-" * w for w in widths))] + [line(row) for row in rows])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=3000, help="mutated files to read (default 3000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the mutations (default 0)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per file before it counts as a hang")
    parser.add_argument("--per-class", type=int, default=8,
                        help="files of each hostile class (deep/wide trees, datatypes, ...; default 8)")
    parser.add_argument("--workers", type=int, default=2, help="reader processes (default 2)")
    parser.add_argument("--memory-limit-mb", type=int, default=4096,
                        help="address-space limit of each worker (0: none; default 4096)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out" / "fuzz_report.json")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    out_folder = args.out.parent
    failures = out_folder / "fuzz_failures"
    out_folder.mkdir(parents=True, exist_ok=True)
    print(f"generating {args.count} mutated files (seed {args.seed})...", file=sys.stderr, flush=True)
    cases = generate(args.count, args.seed)
    print(f"generating {args.per_class} files of each of {len(HOSTILE_KINDS)} hostile classes...",
          file=sys.stderr, flush=True)
    cases += hostile_cases(args.per_class, args.seed, len(cases))
    cases += path_cases(out_folder / "fuzz_paths", len(cases))
    generated = time.perf_counter()
    print(f"reading them with {args.workers} worker processes (timeout {args.timeout:g} s)...",
          file=sys.stderr, flush=True)
    results, restarts = run_all(cases, args.workers, args.timeout, out_folder, args.memory_limit_mb)
    finished = time.perf_counter()

    counts = Counter(result["outcome"] for result in results)
    by_kind: dict[str, Counter] = defaultdict(Counter)
    for case, result in zip(cases, results):
        by_kind[case.kind if not case.kind.startswith("semantic: ") else "semantic cases"][result["outcome"]] += 1

    def example(case: Case, result: dict[str, Any]) -> dict[str, Any]:
        saved = failures / f"{case.index:05d}.fredset"
        if case.mode == "path":
            saved = Path(os.fsdecode(case.data))
        else:
            failures.mkdir(parents=True, exist_ok=True)
            saved.write_bytes(case.data)
        return {"index": case.index, "base": case.base, "kind": case.kind, "file": str(saved), **result}

    others: dict[str, dict[str, Any]] = {}
    crashes: dict[str, dict[str, Any]] = {}
    hangs: list[dict[str, Any]] = []
    large: list[dict[str, Any]] = []
    semantic_ok = []
    for case, result in zip(cases, results):
        outcome = result["outcome"]
        if outcome == "other exception":
            entry = others.setdefault(result["type"], {"count": 0, "example": None})
            entry["count"] += 1
            entry["example"] = entry["example"] or example(case, result)
        elif outcome == "crash":
            key = result["signal"] or f"exit code {result['returncode']}"
            entry = crashes.setdefault(key, {"count": 0, "example": None})
            entry["count"] += 1
            entry["example"] = entry["example"] or example(case, result)
        elif outcome == "hang":
            hangs.append(example(case, result))
        if (result.get("rss_growth_kib") or 0) > LARGE_GROWTH_KIB:
            large.append({"index": case.index, "kind": case.kind, "rss_growth_kib": result["rss_growth_kib"],
                          "outcome": outcome})
        if case.kind.startswith("semantic: ") and (outcome == "ok") != case.kind.endswith("(should read)"):
            semantic_ok.append({"index": case.index, "kind": case.kind, "outcome": outcome})

    rows = [(name, str(counts[name]), f"{100 * counts[name] / max(len(cases), 1):.1f}%") for name in OUTCOMES]
    print()
    versions = machine(*VERSIONS)
    print(f"fuzz report: {len(cases)} files, seed {args.seed}, {args.workers} workers, "
          f"timeout {args.timeout:g} s, HDF5 {versions['hdf5']}, h5py {versions['h5py']}")
    print(table(rows, ("outcome", "count", "percent")))
    print()
    kind_rows = [(kind, *(str(by_kind[kind][name]) for name in OUTCOMES)) for kind in
                 ["semantic cases", *H5PY_KINDS, *BYTE_KINDS, *HOSTILE_KINDS,
                  *sorted(k for k in by_kind if k.startswith("non-regular: "))] if kind in by_kind]
    print(table(kind_rows, ("mutation", *OUTCOMES)))
    if others:
        print("\nother exceptions (reader bugs: only FredsetError may escape):")
        for name, entry in others.items():
            print(f"  {name} x{entry['count']}: e.g. file {entry['example']['index']} ({entry['example']['kind']}): "
                  f"{entry['example']['message'][:160]}")
    if crashes:
        print("\ncrashes (the worker process died):")
        for name, entry in crashes.items():
            tail = entry["example"]["stderr_tail"].strip().splitlines()[-1:] or [""]
            print(f"  {name} x{entry['count']}: e.g. file {entry['example']['index']} ({entry['example']['kind']}) "
                  f"{tail[0][:160]}")
    if hangs:
        print(f"\nhangs (no answer within {args.timeout:g} s): " + ", ".join(
            f"file {h['index']} ({h['kind']})" for h in hangs[:10]))
    if large:
        print(f"\nfiles whose reading grew the peak resident size by more than {LARGE_GROWTH_KIB // 1024} MiB: "
              + ", ".join(f"{e['index']} ({e['rss_growth_kib'] // 1024} MiB, {e['outcome']})" for e in large[:10]))
    if semantic_ok:
        print("\nsemantic cases with an unexpected outcome: "
              + ", ".join(f"{e['kind']} -> {e['outcome']}" for e in semantic_ok))
    growth = [r["rss_growth_kib"] for r in results if r.get("rss_growth_kib") is not None]
    slowest = sorted(((r.get("seconds", 0), c.index, c.kind) for c, r in zip(cases, results)), reverse=True)[:5]
    print(f"\nworker restarts: {restarts}; largest peak-memory growth while reading: "
          f"{max(growth, default=0) / 1024:.1f} MiB; slowest read: {slowest[0][0] if slowest else 0:.3f} s")
    stats = outcome_stats(results)
    print("\ntime and peak-memory growth per outcome (max / median):")
    print(table([(name, str(st["count"]), f"{st['seconds_max']:.3f}", f"{st['seconds_median']:.3f}",
                  f"{st['rss_growth_mib_max']:.1f}", f"{st['rss_growth_mib_median']:.1f}")
                 for name, st in stats.items()],
                ("outcome", "count", "s max", "s median", "MiB max", "MiB median")))
    bounds = check_bounds(cases, results, counts)
    refusal = bounds["refusals_bounded"]
    print(f"\n{'PASS' if refusal['pass'] else 'FAIL'}: every refusal of a file under {SMALL_FILE_BYTES >> 20} MiB "
          f"took under {REFUSAL_SECONDS:g} s and {REFUSAL_KIB >> 10} MiB ({refusal['checked']} refusals checked, "
          f"{len(refusal['violations'])} over)")
    for entry in refusal["violations"][:10]:
        print(f"  file {entry['index']} ({entry['kind']}): {entry['seconds']} s, {entry['rss_growth_kib']} KiB")
    disagreements = [{"index": case.index, "kind": case.kind, "reference": result["reference"]}
                     for case, result in zip(cases, results) if result.get("reference", "agree") != "agree"]
    compared = sum("reference" in result for result in results)
    print(f"{'PASS' if not disagreements else 'FAIL'}: fredset and spec/reference_decoder.py agree on "
          f"{compared - len(disagreements)} of {compared} files ({len(disagreements)} disagreements)")
    for entry in disagreements[:10]:
        print(f"  file {entry['index']} ({entry['kind']}): {entry['reference']}")
    clean = bounds["no_bad_outcomes"]
    print(f"{'PASS' if clean['pass'] else 'FAIL'}: {counts['crash']} crash, {counts['hang']} hang, "
          f"{counts['other exception']} other exception")
    print(f"wall time {finished - started:.1f} s (generating {generated - started:.1f} s, "
          f"reading {finished - generated:.1f} s)")

    report = {
        "settings": {"count": args.count, "seed": args.seed, "timeout_s": args.timeout, "workers": args.workers,
                     "memory_limit_mb": args.memory_limit_mb, "kinds": {**BYTE_KINDS, **H5PY_KINDS},
                     "semantic_cases": sum(c.kind.startswith("semantic: ") for c in cases),
                     "per_class": args.per_class, "path_cases": sum(c.mode == "path" for c in cases)},
        "versions": versions,
        "runtime_s": {"total": round(finished - started, 2), "generate": round(generated - started, 2),
                      "read": round(finished - generated, 2)},
        "counts": {name: counts[name] for name in OUTCOMES},
        "outcome_stats": stats,
        "bounds": bounds,
        "hostile_kinds": list(HOSTILE_KINDS),
        "by_mutation": {kind: dict(counter) for kind, counter in by_kind.items()},
        "other_exceptions": others,
        "crashes": crashes,
        "hangs": hangs,
        "large_allocations": large,
        "semantic_unexpected": semantic_ok,
        "worker_restarts": restarts,
        "max_rss_growth_kib": max(growth, default=None),
        "slowest": [{"seconds": s, "index": i, "kind": k} for s, i, k in slowest],
        "fredset_error_examples": _message_examples(cases, results),
        "reference_compared": compared,
        "reference_disagreements": disagreements,
    }
    write_json(args.out, report)
    print(f"report written to {args.out}")
    return 0


def outcome_stats(results: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per outcome: count, and max / median of the read time and of the peak-memory growth."""
    import statistics

    stats = {}
    for name in OUTCOMES:
        chosen = [r for r in results if r["outcome"] == name]
        seconds = [r.get("seconds", 0.0) for r in chosen]
        growth = [r["rss_growth_kib"] / 1024 for r in chosen if r.get("rss_growth_kib") is not None]
        stats[name] = {"count": len(chosen),
                       "seconds_max": max(seconds, default=0.0),
                       "seconds_median": statistics.median(seconds) if seconds else 0.0,
                       "rss_growth_mib_max": round(max(growth, default=0.0), 2),
                       "rss_growth_mib_median": round(statistics.median(growth), 2) if growth else 0.0}
    return stats


def check_bounds(cases: list[Case], results: list[dict[str, Any]], counts: Counter) -> dict[str, Any]:
    """The targets: every refusal (FredsetError) of a file under 16 MiB within 1 s and 256 MiB of peak
    growth (a refusal that could not be measured counts as over); no crash, hang or other exception."""
    violations, checked = [], 0
    for case, result in zip(cases, results):
        if result["outcome"] != "FredsetError" or (case.mode != "path" and len(case.data) >= SMALL_FILE_BYTES):
            continue
        checked += 1
        growth = result.get("rss_growth_kib")
        if result.get("seconds", 0.0) >= REFUSAL_SECONDS or growth is None or growth >= REFUSAL_KIB:
            violations.append({"index": case.index, "kind": case.kind, "bytes": len(case.data),
                               "seconds": result.get("seconds"), "rss_growth_kib": growth})
    bad = counts["crash"] + counts["hang"] + counts["other exception"]
    return {"refusals_bounded": {"pass": not violations, "checked": checked, "seconds": REFUSAL_SECONDS,
                                 "rss_growth_kib": REFUSAL_KIB, "file_bytes_below": SMALL_FILE_BYTES,
                                 "violations": violations},
            "no_bad_outcomes": {"pass": bad == 0, "crash": counts["crash"], "hang": counts["hang"],
                                "other exception": counts["other exception"]}}


def _message_examples(cases: list[Case], results: list[dict[str, Any]], per_kind: int = 3) -> dict[str, list[str]]:
    """A few distinct FredsetError messages per mutation kind, to show what users would read."""
    examples: dict[str, list[str]] = defaultdict(list)
    for case, result in zip(cases, results):
        message = result.get("message")
        kind = case.kind if not case.kind.startswith("semantic: ") else "semantic cases"
        if result["outcome"] == "FredsetError" and message not in examples[kind] and len(examples[kind]) < per_kind:
            examples[kind].append(message)
    return dict(examples)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        limit = int(sys.argv[3]) if len(sys.argv) > 3 and sys.argv[2] == "--memory-limit-mb" else 0
        worker_main(limit)
    else:
        sys.exit(main())
