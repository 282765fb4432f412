"""fredset and the independent reference decoder (spec/reference_decoder.py) agree on a corpus of
crafted files: the spec vectors, the fuzz report's mutations and hostile classes (fixed seed, modest
count). Where both read a file they decode the same masks, labels and coefficients (bit for bit) and
the same images (to float32 rounding: the reference works in float64, fredset in float32, the same
tolerance as tests/test_spec_vectors.py); where one refuses, both refuse (FredsetError / ValueError,
never another exception)."""

from __future__ import annotations

import json
import random
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import fredset
from fredset import FredDataset, FredsetError

from conftest import load_module

ROOT = Path(__file__).resolve().parents[1]
VECTORS = ROOT / "spec" / "vectors"
SEED, MUTATIONS, PER_CLASS = 0, 400, 3
PER_CLASS_2 = 30  # files of the "2.0 content" class: its rules are all new
# hostile classes that stay cheap to build and to decode in float64 (the report runs the big ones);
# the metadata classes are enumerated below instead, at and beyond each limit
HOSTILE = ("deep tree", "exotic datatype", "2.0 content")

reference = load_module("fredset_agreement_reference_decoder", ROOT / "spec" / "reference_decoder.py")
sys.path.insert(0, str(ROOT / "bench"))  # fuzz_report imports its neighbour common.py
fuzz_report = load_module("fredset_agreement_fuzz_report", ROOT / "bench" / "fuzz_report.py")


def _corpus() -> list[tuple[str, bytes]]:
    from fredset.format import to_bytes
    from fredset.format._crafting import datasets_of, diagonal_artifact

    cases = [(f"vector {path.stem}", path.read_bytes()) for path in sorted(VECTORS.glob("*.fredset"))]
    cases += [(f"{case.index} {case.kind}", case.data) for case in fuzz_report.generate(MUTATIONS, SEED)]
    parts = {name: datasets_of(data) for name, data in fuzz_report.base_files().items()}
    for kind in HOSTILE:
        for number in range(PER_CLASS_2 if kind == "2.0 content" else PER_CLASS):
            rng = random.Random(f"fredset-agreement:{SEED}:{kind}:{number}")
            cases.append((f"{kind} {number}", fuzz_report.hostile_file(rng, kind, parts)[0]))
    cases.append(("expensive shape 64", to_bytes(diagonal_artifact(64, (2, 1), channels=2), level=1)))
    cases.append(("expensive shape 64 q3", to_bytes(diagonal_artifact(64, (2, 1), channels=2), encoding="q3",
                                                    level=1)))
    return cases


def _metadata_texts(document: dict) -> list[tuple[str, str]]:
    """(name, JSON text): ``document`` with one of FORMAT.md section 3's rules at or beyond its limit."""
    from fredset.format._crafting import json_with_field, nested_json

    cases = []
    for literal in ("1e400", "1" + "0" * 400, str(2**1024), "NaN", "-Infinity", "-" + "9" * 5000, "2.5e308",
                    str(2**63), "1e-400"):
        cases.append((f"number {literal[:12]} in provenance", json_with_field(document, "extra", literal)))
        cases.append((f"number {literal[:12]} in mean",
                      json.dumps(document).replace('"mean": [0.5]', f'"mean": [{literal}]', 1)))
    for levels in (62, 63, 900, 5000):
        for kind in ("list", "object"):
            cases.append((f"provenance nested {levels} {kind}",
                          json_with_field(document, "deep", nested_json(levels, kind))))
    for char in fuzz_report.CONTROL_CHARACTERS + ["\t", "\u00e9"]:
        for where in ("license", "dataset name"):
            changed = json.loads(json.dumps(document))
            if where == "license":
                changed["license"] = f"CC0{char}"
            else:
                changed["dataset"]["name"] += char
            cases.append((f"{where} with {char!r}", json.dumps(changed)))
    late = json.loads(json.dumps(document))
    late["provenance"]["created"] += "\n"  # Python's "$" would match before it; JSON Schema's does not
    cases.append(("created with a trailing newline", json.dumps(late)))
    return cases


def _metadata_cases() -> list[tuple[str, bytes]]:
    """(name, file): FORMAT.md section 3's rules at and beyond their limits, which both readers must apply, in a
    1.0 file and (every third case) inside a 2.0 file's compressed /metadata."""
    from fredset.format._crafting import build_file, build_file_2, datasets_of, document_of

    bases = fuzz_report.base_files()
    gray, two = datasets_of(bases["gray-float32"]), datasets_of(bases["gray-q4"])
    cases = [(name, build_file(gray, metadata=text)) for name, text in _metadata_texts(document_of(gray))]
    cases += [(f"2.0 {name}", build_file_2(two, text)) for name, text in _metadata_texts(document_of(two))[::3]]
    return cases


CORPUS = _corpus()


def _fredset(path: Path) -> Any:
    """(masks, labels, coefficients, images) as numpy, or the FredsetError."""
    try:
        artifact = fredset.load(path)
        images = artifact.decode().numpy()
        dataset_images = FredDataset(path).images.numpy()
    except FredsetError as error:
        return error
    assert np.array_equal(images, dataset_images), "FredDataset.images differs from Artifact.decode()"
    return (artifact.masks.numpy(), artifact.labels.numpy(), [c.numpy() for c in artifact.coefficients], images)


def _reference(path: Path) -> Any:
    try:
        contents = reference.read(str(path))
        images, labels, _ = reference.inverse_transform(contents)
    except ValueError as error:
        return error
    return contents.masks, labels, contents.coefficients, images


def _disagreement(ours: Any, theirs: Any) -> str | None:
    if isinstance(ours, FredsetError) or isinstance(theirs, ValueError):
        if isinstance(ours, FredsetError) and isinstance(theirs, ValueError):
            return None
        return f"fredset: {ours if isinstance(ours, Exception) else 'read'}; " \
               f"reference: {theirs if isinstance(theirs, Exception) else 'read'}"
    masks, labels, coefficients, images = ours
    ref_masks, ref_labels, ref_coefficients, ref_images = theirs
    if not np.array_equal(masks, ref_masks) or not np.array_equal(labels, ref_labels):
        return "masks or labels differ"
    if len(coefficients) != len(ref_coefficients) or any(
            a.dtype != np.float32 or a.tobytes() != b.tobytes() for a, b in zip(coefficients, ref_coefficients)):
        return "coefficients differ"
    if images.shape != ref_images.shape:
        return f"image shapes differ: {images.shape} vs {ref_images.shape}"
    scale = max(1.0, float(np.abs(ref_images).max(initial=0.0)))
    error = float(np.abs(images.astype(np.float64) - ref_images).max(initial=0.0))
    return None if error <= 1e-5 * scale else f"images differ by {error:.3g} (scale {scale:.3g})"


def _params() -> list[Any]:
    params = []
    for name, data in CORPUS:
        params.append(pytest.param(data, id=name))
    for name, data in _metadata_cases():
        params.append(pytest.param(data, id=f"metadata: {name}"))
    return params


def _reference_bytes(data: bytes) -> Any:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "case.fredset"
        path.write_bytes(data)
        return _reference(path)


def test_the_corpus_covers_reads_and_refusals():
    assert len(CORPUS) > MUTATIONS
    outcomes = [isinstance(_reference_bytes(data), ValueError) for _, data in CORPUS[:40]]
    assert any(outcomes) and not all(outcomes)


@pytest.mark.parametrize("data", _params())
def test_fredset_and_the_reference_decoder_agree(tmp_path, data):
    path = tmp_path / "case.fredset"
    path.write_bytes(data)
    problem = _disagreement(_fredset(path), _reference(path))
    assert problem is None, problem


def test_inspect_prints_one_line_or_a_report_for_every_file_of_the_corpus(tmp_path):
    """Over the whole corpus: exit 0 with strict JSON, or exit 2 with exactly one line on stderr; never a
    traceback (click's runner keeps stderr apart from stdout)."""
    from click.testing import CliRunner

    from fredset_cli.main import cli

    def strict(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")

    runner = CliRunner()
    cases = CORPUS + _metadata_cases()
    for index, (name, data) in enumerate(cases):
        path = tmp_path / f"case{index}.fredset"
        path.write_bytes(data)
        result = runner.invoke(cli, ["inspect", str(path), "--json"])
        assert result.exception is None or isinstance(result.exception, SystemExit), (name, result.exception)
        if result.exit_code == 0:
            json.loads(result.stdout, parse_constant=strict)
        else:
            assert result.exit_code == 2 and result.stdout == "", name
            assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: "), (name, result.stderr)
