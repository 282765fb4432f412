"""The reader's schema check agrees with a full JSON Schema implementation on metadata.schema.json (format 1.x)
and metadata-2.schema.json (format 2.x), and the schemas, the writer and FORMAT.md's field tables agree."""

import copy
import json
import re
from importlib import resources
from pathlib import Path

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fredset import FredsetError, __version__
from fredset.format import read_file, to_bytes
from fredset.format.metadata import build_metadata, schema, validate_metadata

from conftest import make_artifact

SPEC_SCHEMA = Path(__file__).parents[1] / "spec" / "metadata.schema.json"
SPEC_SCHEMAS = {1: SPEC_SCHEMA, 2: SPEC_SCHEMA.with_name("metadata-2.schema.json")}


def open_schema(node):
    """What a reader of a newer minor version applies: unknown properties allowed."""
    if isinstance(node, dict):
        return {k: open_schema(v) for k, v in node.items() if not (k == "additionalProperties" and v is False)}
    if isinstance(node, list):
        return [open_schema(v) for v in node]
    return node


STRICT = jsonschema.Draft202012Validator(schema())
RELAXED = jsonschema.Draft202012Validator(open_schema(schema()))
VALID = build_metadata(make_artifact(counts=(2, 3), channels=3, k=5, license="MIT"), "int8", True)
STRICT_2 = jsonschema.Draft202012Validator(schema(2))
RELAXED_2 = jsonschema.Draft202012Validator(open_schema(schema(2)))
VALID_2 = build_metadata(make_artifact(counts=(2, 3), channels=3, k=5, license="MIT"), "q4", True)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8) | st.sampled_from(["fredset", "float32", "int8", "little", "zstd",
                                             "dct-ii-orthonormal", "2026-01-01T00:00:00Z"]),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=8)


def paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from paths(value, prefix + (key,))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from paths(value, prefix + (index,))


ALL_PATHS = list(paths(VALID))[1:]
ALL_PATHS_2 = list(paths(VALID_2))[1:]


@st.composite
def mutated_documents(draw, valid=VALID, all_paths=ALL_PATHS):
    document = copy.deepcopy(valid)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(all_paths))
        parent = document
        try:
            for key in path[:-1]:
                parent = parent[key]
            action = draw(st.sampled_from(["replace", "delete", "add"]))
            if action == "replace":
                parent[path[-1]] = draw(json_values)
            elif action == "delete" and isinstance(parent, dict):
                parent.pop(path[-1], None)
            elif isinstance(parent, dict):
                parent[draw(st.text(min_size=1, max_size=6))] = draw(json_values)
        except (KeyError, IndexError, TypeError):
            pass  # an earlier mutation removed this path
    return document


def accepts(document, strict, major=1):
    try:
        validate_metadata(document, "x", strict=strict, major=major)
        return True
    except FredsetError:
        return False


@pytest.mark.parametrize("major", [1, 2])
def test_spec_schema_is_the_shipped_schema(major):
    """spec/metadata.schema.json and spec/metadata-2.schema.json are normative (FORMAT.md) and the reader
    validates against the packaged copies: each must be one file, a symlink to the packaged one (or, where
    symlinks are not checked out, the same bytes). A divergent copy in either place fails here."""
    spec_schema = SPEC_SCHEMAS[major]
    packaged = Path(str(resources.files("fredset.format").joinpath(spec_schema.name)))
    assert packaged.is_file() and not packaged.is_symlink()
    assert spec_schema.resolve() == packaged.resolve() or spec_schema.read_bytes() == packaged.read_bytes()
    assert json.loads(packaged.read_text("utf-8")) == schema(major)
    jsonschema.Draft202012Validator.check_schema(schema(major))
    assert schema(major)["$id"] == f"urn:fredset:metadata:{major}.0"


def test_the_schemas_differ_only_in_coefficients():
    """metadata-2.schema.json is metadata.schema.json with another coefficients object (and its own $id, title
    and description): every other rule of FORMAT.md section 3 is the same in both versions."""
    one, two = copy.deepcopy(schema(1)), copy.deepcopy(schema(2))
    for document in (one, two):
        for key in ("$id", "title", "description"):
            document.pop(key)
    assert one["properties"].pop("coefficients") != two["properties"].pop("coefficients")
    assert one == two
    coefficients = schema(2)["properties"]["coefficients"]
    assert coefficients["additionalProperties"] is False and set(coefficients["required"]) == {"bits", "steps",
                                                                                                "compression"}


def closed_objects(rule, value, where=()):
    """(path, documented properties, written keys) of each closed object (additionalProperties false) of value."""
    if not isinstance(value, dict):
        return
    if rule.get("additionalProperties") is False:
        yield where, set(rule.get("properties", {})), set(value)
    for key, item in value.items():
        if key in rule.get("properties", {}):
            yield from closed_objects(rule["properties"][key], item, where + (key,))


@pytest.mark.parametrize("encoding", ["float32", "q4"])
def test_writer_and_schema_name_the_same_fields(encoding):
    """A file written with every optional field set (format 1.0 and 2.0): its stored document validates against
    the strict schema of its version, each closed object holds exactly the properties the schema documents (no
    undocumented field written, no documented field the writer cannot write), and the writer fills in
    provenance's required fields."""
    artifact = make_artifact(counts=(2, 3), channels=3, k=5, license="CC-BY-4.0", citation="@misc{x, title={x}}",
                             dataset_license="MIT", provenance={"objective": "dm", "seed": 1})
    document, major = read_file(to_bytes(artifact, encoding=encoding))[1].metadata, 2 if encoding == "q4" else 1
    (STRICT_2 if major == 2 else STRICT).validate(document)
    assert not (STRICT if major == 2 else STRICT_2).is_valid(document)  # each version's document is its own
    closed = list(closed_objects(schema(major), document))
    assert sorted(where for where, _, _ in closed) == [(), ("coefficients",), ("dataset",), ("image",),
                                                       ("normalization",)]
    for where, documented, written in closed:
        assert written == documented, f"{'/'.join(where) or 'top level'}: written {sorted(written)}, " \
                                      f"documented {sorted(documented)}"
    assert set(schema(major)["required"]) < set(document)  # license and citation are optional
    assert document["provenance"]["library"] == {"name": "fredset", "version": __version__}
    assert document["provenance"]["objective"] == "dm" and document["provenance"]["seed"] == 1


def _table_fields(text: str, heading: str) -> set[str]:
    table = text[text.index(heading):].split("\n\n")[0].splitlines()[2:]
    listed, previous = set(), ""
    for row in table:
        for name in re.findall(r"`([^`]+)`", row.split("|")[1]):
            name = previous.rsplit(".", 1)[0] + name if name.startswith(".") else name
            listed.add(name)
            previous = name
    return listed


def _schema_fields(major: int) -> set[str]:
    expected = set()
    for name, rule in schema(major)["properties"].items():
        if rule.get("additionalProperties") is False:
            expected |= {f"{name}.{child}" for child in rule["properties"]}
        else:
            expected.add(name)
    return expected


def test_format_md_field_table_lists_the_schema_fields():
    """The field table of spec/FORMAT.md section 3 names every field of the 1.0 schema's closed objects, and no
    other; with the coefficients rows of section 13.2's table instead of its own, those of the 2.0 schema."""
    text = (SPEC_SCHEMA.parent / "FORMAT.md").read_text("utf-8")
    one, two = _table_fields(text, "| field | meaning |"), _table_fields(text, "| 2.0 field | meaning |")
    assert one == _schema_fields(1)
    assert all(name.startswith("coefficients.") for name in two)
    assert {name for name in one if not name.startswith("coefficients.")} | two == _schema_fields(2)


def test_valid_document_passes():
    assert accepts(VALID, strict=True) and STRICT.is_valid(VALID)


@settings(max_examples=1500, deadline=None, derandomize=True)
@given(mutated_documents())
def test_agrees_with_jsonschema(document):
    assert accepts(document, strict=True) == STRICT.is_valid(document)
    assert accepts(document, strict=False) == RELAXED.is_valid(document)


@settings(max_examples=600, deadline=None, derandomize=True)
@given(mutated_documents(VALID_2, ALL_PATHS_2))
def test_agrees_with_jsonschema_2(document):
    assert accepts(document, strict=True, major=2) == STRICT_2.is_valid(document)
    assert accepts(document, strict=False, major=2) == RELAXED_2.is_valid(document)


@pytest.mark.parametrize("mutate,where", [
    (lambda d: d["image"].update(channels=0), "image/channels"),
    (lambda d: d.pop("k"), "'k' is a required property"),
    (lambda d: d["coefficients"].update(dtype="bfloat16"), "coefficients/dtype"),
    (lambda d: d.update(surprise=1), "unexpected property 'surprise'"),
    (lambda d: d["normalization"]["std"].__setitem__(0, 0), "normalization/std/0"),
])
def test_messages_point_at_the_problem(mutate, where):
    document = copy.deepcopy(VALID)
    mutate(document)
    with pytest.raises(FredsetError, match=where):
        validate_metadata(document, "file.fredset")


@pytest.mark.parametrize("mutate,where", [
    (lambda d: d["coefficients"].update(bits=9), "coefficients/bits: 9 is more than the maximum 8"),
    (lambda d: d["coefficients"].update(bits=1), "coefficients/bits: 1 is less than the minimum 2"),
    (lambda d: d["coefficients"].update(bits=4.5), "coefficients/bits: 4.5 is not of type integer"),
    (lambda d: d["coefficients"].update(steps="float32"), "coefficients/steps"),
    (lambda d: d["coefficients"].update(shuffle=True), "unexpected property 'shuffle'"),
    (lambda d: d["coefficients"].pop("bits"), "'bits' is a required property"),
    (lambda d: d.update(coefficients=copy.deepcopy(VALID["coefficients"])), "'bits' is a required property"),
])
def test_messages_point_at_the_problem_2(mutate, where):
    document = copy.deepcopy(VALID_2)
    mutate(document)
    with pytest.raises(FredsetError, match=where):
        validate_metadata(document, "file.fredset", major=2)
    assert not STRICT_2.is_valid(document)
