"""Hostile metadata: every bad file is one one-line FredsetError, `fredset inspect` never crashes on it.

Classes (spec/FORMAT.md section 3): numbers that are not finite binary64 values, nesting deeper than
64 levels, control characters and unpaired surrogates in strings, ECMA-262 pattern semantics; and
the report and the error line stay one safe line each for any value the metadata may legally hold.
Files are crafted with fredset.format._crafting.build_file (a valid header and checksum, so every
byte reaches the metadata checks).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fredset
from fredset import FredsetError
from fredset.errors import printable
from fredset.format import to_bytes
from fredset.format._crafting import build_file, datasets_of
from fredset.format.metadata import MAX_DEPTH, _pattern, _violation, validate_metadata
from fredset_cli.main import cli

from conftest import make_artifact

ARRAYS = datasets_of(to_bytes(make_artifact(counts=(2, 3)), level=1))
DOCUMENT = json.loads(bytes(ARRAYS["metadata"]))
INT8_ARRAYS = datasets_of(to_bytes(make_artifact(counts=(2, 3)), encoding="int8", level=1))


def document(**changes: Any) -> dict[str, Any]:
    """A copy of the valid document; keys like ``provenance__seed`` set nested fields."""
    copy = json.loads(json.dumps(DOCUMENT))
    for key, value in changes.items():
        *parents, last = key.split("__")
        target = copy
        for parent in parents:
            target = target[parent]
        target[last] = value
    return copy


def with_raw(field: str, literal: str) -> str:
    """The valid document as JSON text with ``"provenance"`` gaining ``field: literal`` (any JSON text)."""
    text = json.dumps(DOCUMENT)
    marker = '"provenance": {'
    assert marker in text
    return text.replace(marker, f'{marker}"{field}": {literal}, ', 1)


def craft(tmp_path: Path, metadata: dict[str, Any] | str, name: str = "hostile.fredset",
          arrays: dict[str, Any] | None = None) -> Path:
    path = tmp_path / name
    path.write_bytes(build_file(ARRAYS if arrays is None else arrays, metadata=metadata))
    return path


def refused_one_line(path: Path, *words: str) -> str:
    """The file is refused by the library with one printable line naming the path, and by the CLI too."""
    with pytest.raises(FredsetError) as caught:
        fredset.load(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and message.isprintable(), message
    assert "malformed HDF5" not in message, message
    for word in words:
        assert word in message, message
    for args in (["inspect", str(path)], ["inspect", "--json", str(path)]):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 2, (result.output, result.exception)
        assert result.stdout == "" and "Traceback" not in result.stderr
        lines = result.stderr.splitlines()  # splitlines also breaks at \x1c-\x1e, \x85, \u2028...
        assert len(lines) == 1 and lines[0] == f"error: {message}", result.stderr
    return message


def strict_json(text: str) -> Any:
    def refuse(name: str) -> None:
        raise AssertionError(f"{name} is not JSON")
    return json.loads(text, parse_constant=refuse)


# -- 1. numbers: finite binary64 only, refused at parse time ---------------------------------------

@pytest.mark.parametrize("field,literal", [
    ("recommended_lr", "1" + "0" * 400),  # an int: OverflowError in the report before
    ("recommended_lr", "1e400"),  # parsed as inf: `inspect --json` printed Infinity
    ("recommended_lr", "-1e400"),
    ("seed", "-" + "9" * 5000),  # beyond Python's int-digits limit too
    ("extra", str(int(sys.float_info.max) + 2**971)),  # 309 digits, rounds to infinity
    ("extra", "[1, {\"x\": 2.5e308}]"),
])
def test_non_finite_numbers_are_refused(tmp_path, field, literal):
    refused_one_line(craft(tmp_path, with_raw(field, literal)), "finite binary64")


def test_huge_normalization_is_refused_not_malformed(tmp_path):
    text = json.dumps(DOCUMENT).replace('"mean": [0.5]', '"mean": [1' + "0" * 400 + "]")
    assert text != json.dumps(DOCUMENT)
    refused_one_line(craft(tmp_path, text), "finite binary64")


def test_the_largest_numbers_are_read_and_reported(tmp_path):
    biggest = int(sys.float_info.max)
    path = craft(tmp_path, document(provenance__recommended_lr=10**308, provenance__seed=-biggest,
                                    provenance__iterations=biggest, provenance__budget={"ipc": 1.7976931348623157e308},
                                    normalization={"mean": [-1.7976931348623157e308], "std": [5e-324]}))
    artifact = fredset.load(path)
    assert artifact.provenance["seed"] == -biggest and artifact.mean == (-sys.float_info.max,)
    text = CliRunner().invoke(cli, ["inspect", str(path)])
    assert text.exit_code == 0 and text.stderr == "", text.output
    assert "recommended lr  1e+308" in text.stdout
    as_json = CliRunner().invoke(cli, ["inspect", "--json", str(path)])
    assert as_json.exit_code == 0
    assert strict_json(as_json.stdout)["provenance"]["iterations"] == biggest
    assert strict_json(as_json.stdout)["pixel_range"] == {"min": -sys.float_info.max, "max": -sys.float_info.max,
                                                          "outside": 1.0}  # x * 5e-324 - max, in float64
    huge_std = craft(tmp_path, document(normalization={"mean": [0.5], "std": [1.7976931348623157e308]}), "wide.fredset")
    report = CliRunner().invoke(cli, ["inspect", "--json", str(huge_std)])
    assert report.exit_code == 0 and strict_json(report.stdout)["pixel_range"]["max"] is None  # beyond float64


# -- 2. strings: no control characters, no unpaired surrogates -------------------------------------

NAMES = {  # one-line fields: no C0 or C1 control at all (the schema's "not" patterns)
    "dataset name": lambda s: document(dataset__name=f"mnist{s}"),
    "class name": lambda s: document(dataset__classes=[f"cat{s}", "dog"]),
    "library version": lambda s: document(provenance__library={"name": "fredset", "version": f"1.0{s}"}),
    "objective": lambda s: document(provenance__objective=f"dm{s}"),
}
ANYWHERE = {  # any string or key: no C0 except TAB/LF/CR, no DEL, no C1, no unpaired surrogate
    **NAMES,
    "licence": lambda s: document(license=f"CC0{s}"),
    "citation": lambda s: document(citation=f"@misc{{x{s}}}"),
    "data licence": lambda s: document(dataset__license=f"MIT{s}"),
    "provenance value": lambda s: document(provenance__hyperparameters={"note": [f"x{s}"]}),
    "provenance key": lambda s: document(provenance__source={f"file{s}.bin": "0" * 64}),
}


@pytest.mark.parametrize("where", sorted(ANYWHERE))
@pytest.mark.parametrize("char", ["\x00", "\x07", "\x1b[2J\x1b[31m", "\x7f", "\x85", "\x9b", "\ud800", "\udfff"])
def test_control_characters_and_lone_surrogates_are_refused(tmp_path, where, char):
    message = refused_one_line(craft(tmp_path, ANYWHERE[where](char)), "invalid metadata")
    assert "\x1b" not in message


@pytest.mark.parametrize("where", sorted(NAMES))
@pytest.mark.parametrize("char", ["\n", "\r", "\t", "\nerror: forged second line"])
def test_line_breaks_in_names_are_refused(tmp_path, where, char):
    refused_one_line(craft(tmp_path, NAMES[where](char)), "control character")


def test_line_breaks_in_free_text_are_read_and_shown_on_one_line(tmp_path):
    path = craft(tmp_path, document(license="line one\r\nline two", citation="@misc{x,\n\ttitle={y}\n}",
                                    dataset__license="MIT\n",
                                    provenance__hyperparameters={"note": "a\nb", "buffer": {
                                        "fingerprint": "f\n" * 20, "experts": {"a\nb": 1}, "dataset": "x\ty"}}))
    artifact = fredset.load(path)
    assert artifact.citation == "@misc{x,\n\ttitle={y}\n}"
    plain = CliRunner().invoke(cli, ["inspect", str(path)])
    assert plain.exit_code == 0 and plain.stderr == ""
    reference = CliRunner().invoke(cli, ["inspect", str(craft(tmp_path, DOCUMENT, "clean.fredset"))])
    # the same lines as a clean file, plus the licences, citation and expert-buffer line
    assert len(plain.stdout.splitlines()) == len(reference.stdout.splitlines()) + 4, plain.stdout
    assert all(line.isprintable() for line in plain.stdout.splitlines())
    assert "fingerprint " + "f\\n" * 8 + "..." in plain.stdout  # 16 characters, then escaped


def test_unusual_but_legal_text_is_reported_safely(tmp_path):
    # printable non-ASCII is fine everywhere; invisible or bidi characters are legal but shown escaped
    names = ["猫", "ü\u202eevil", "emoji \U0001F600", "zero\u200bwidth", "sep\u2028arator"]
    path = craft(tmp_path, document(dataset__name="\u202edata\u2029set"))
    result = CliRunner().invoke(cli, ["inspect", str(path)])
    assert result.exit_code == 0 and result.stderr == ""
    assert all(line.isprintable() for line in result.stdout.splitlines())
    assert "\\u202edata\\u2029set" in result.stdout
    artifact = fredset.load(to_bytes(make_artifact(counts=(1,) * 5, classes=names)))
    assert artifact.classes == names  # a surrogate pair escape decodes to one legal character
    paired = json.dumps(document(dataset__classes=["\U0001F600", "dog"]))  # ensure_ascii: "\ud83d\ude00"
    assert "\\ud83d\\ude00" in paired
    assert fredset.load(craft(tmp_path, paired, "paired.fredset")).classes[0] == "\U0001F600"


def test_report_on_an_ascii_terminal(tmp_path):
    path = craft(tmp_path, document(dataset__classes=["猫", "chien"]))
    result = CliRunner(charset="ascii").invoke(cli, ["inspect", str(path)])
    assert result.exit_code == 0 and "\\u732b" in result.stdout, (result.output, result.exception)


def test_created_with_a_trailing_newline_is_refused(tmp_path):
    refused_one_line(craft(tmp_path, document(provenance__created="2024-01-02T03:04:05Z\n")), "created")
    # and the interpreter reads patterns as ECMA-262 does, whatever maxLength says
    assert _violation({"pattern": "^[0-9]{2}Z$"}, "12Z\n", True) is not None
    assert _violation({"pattern": "^[0-9]{2}Z$"}, "12Z", True) is None
    assert _pattern("a$|b[$]").search("b$") and not _pattern("a$").search("a\n")
    with pytest.raises(RuntimeError):
        _pattern("^\\d+$")


def test_error_messages_escape_what_they_quote():
    error = FredsetError("class \x1b[31mred\x1b[0m\nforged line \ud800\x85", "dir/new\nline\udcff.fredset")
    assert str(error).isprintable() and len(str(error).splitlines()) == 1
    assert str(error) == "dir/new\\nline\\udcff.fredset: class \\x1b[31mred\\x1b[0m\\nforged line \\ud800\\x85"
    assert error.path == "dir/new\nline\udcff.fredset"  # the path as given, for programs
    assert printable(printable("a\nb")) == "a\\nb" and printable("日本 ok") == "日本 ok"
    with pytest.raises(FredsetError) as caught:
        validate_metadata(document(dataset__name="x\n\x1b"), "file.fredset")
    assert str(caught.value).isprintable() and "dataset/name" in str(caught.value)


def test_bad_path_names_give_one_line(tmp_path):
    path = tmp_path / "new\nline\x1b[31m.fredset"
    path.write_bytes(b"not a fredset file")
    result = CliRunner().invoke(cli, ["inspect", str(path)])
    assert result.exit_code == 2 and len(result.stderr.splitlines()) == 1 and "\x1b" not in result.stderr


# -- 3. numpy warnings do not add lines for a refused file -----------------------------------------

def overflowing_int8(tmp_path: Path) -> Path:
    arrays = dict(INT8_ARRAYS)
    quantization = arrays["quantization"].copy()
    quantization[:, 0] = 3e38  # finite scales, but scale * 127 overflows float32 to infinity
    arrays["quantization"] = quantization
    return craft(tmp_path, DOCUMENT | {"coefficients": {**DOCUMENT["coefficients"], "dtype": "int8"}},
                 "overflow.fredset", arrays)


def test_overflowing_dequantisation_is_refused_with_one_line(tmp_path):
    path = overflowing_int8(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        refused_one_line(path, "NaN or infinity")


def test_overflowing_dequantisation_in_a_real_process(tmp_path):
    """A subprocess, so the warnings reach stderr as they would for a user (pytest records them)."""
    path = overflowing_int8(tmp_path)
    result = subprocess.run([sys.executable, "-W", "always", "-m", "fredset_cli.main", "inspect", str(path)],
                            capture_output=True, text=True, timeout=120, cwd=Path(__file__).parents[1])
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [f"error: {path}: class 0: coefficients hold NaN or infinity"]


# -- 4. nesting depth: every file that loads also saves ---------------------------------------------

def nested(levels: int) -> str:
    return "[" * levels + "]" * levels


def test_deep_nesting_is_refused(tmp_path):
    # provenance is level 2, so its field "deep" holds levels 3...
    for levels in (MAX_DEPTH - 1, 900, 5000):
        refused_one_line(craft(tmp_path, with_raw("deep", nested(levels))), f"deeper than the {MAX_DEPTH} levels")


def test_nesting_at_the_limit_loads_and_saves(tmp_path):
    path = craft(tmp_path, with_raw("deep", nested(MAX_DEPTH - 2)))
    artifact = fredset.load(path)
    fredset.save(artifact, tmp_path / "again.fredset", level=1)
    assert fredset.load(tmp_path / "again.fredset").provenance["deep"] == artifact.provenance["deep"]


@pytest.mark.parametrize("provenance,words", [
    ({"deep": json.loads(nested(900))}, "deeper than"),
    ({"lr": math.inf}, "finite binary64"),
    ({"seed": 10**400}, "finite binary64"),
    ({"note": "\x1b[31m"}, "control character"),
    ({"note\ud800": 1}, "unpaired surrogate"),
])
def test_the_writer_refuses_what_the_reader_refuses(tmp_path, provenance, words):
    target = tmp_path / "out.fredset"
    with pytest.raises(FredsetError, match=words) as caught:
        fredset.save(make_artifact(provenance=provenance), target)
    assert str(caught.value).isprintable() and not target.exists()


@pytest.mark.parametrize("classes", [["a\nb", "c"], ["a", "\x1b[2J"], ["\ud800", "b"]])
def test_the_writer_refuses_bad_class_names(tmp_path, classes):
    with pytest.raises(FredsetError) as caught:
        fredset.save(make_artifact(counts=(1, 1), classes=classes), tmp_path / "out.fredset")
    assert str(caught.value).isprintable()


JSON_TEXT = st.text(st.characters(codec="utf-8") | st.sampled_from("\n\t\r\x1b\x7f\x85\ud800"), max_size=6)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.sampled_from([10**308, 10**309, -(10**400)])
    | st.floats() | JSON_TEXT,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(JSON_TEXT, children, max_size=3)
    | children.map(lambda value: nest(value, 40)), max_leaves=12)


def nest(value: Any, levels: int) -> Any:
    for _ in range(levels):
        value = [value]
    return value


@settings(max_examples=150, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(provenance=st.dictionaries(JSON_TEXT, JSON, max_size=4))
def test_what_saves_loads_and_saves_again(provenance):
    artifact = make_artifact(counts=(1, 2), provenance=provenance)
    try:
        data = to_bytes(artifact, level=1)
    except FredsetError as error:
        assert str(error).isprintable()
        return
    loaded = fredset.load(data)
    assert to_bytes(loaded, level=1) == data  # the same document, so the same bytes
