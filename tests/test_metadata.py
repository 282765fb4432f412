"""The reader's schema check agrees with a full JSON Schema implementation on metadata.schema.json."""

import copy
import json
from pathlib import Path

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fredset import FredsetError
from fredset.format.metadata import build_metadata, schema, validate_metadata

from conftest import make_artifact

SPEC_SCHEMA = Path(__file__).parents[1] / "spec" / "metadata.schema.json"


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


@st.composite
def mutated_documents(draw):
    document = copy.deepcopy(VALID)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(ALL_PATHS))
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


def accepts(document, strict):
    try:
        validate_metadata(document, "x", strict=strict)
        return True
    except FredsetError:
        return False


def test_spec_schema_is_the_shipped_schema():
    assert json.loads(SPEC_SCHEMA.read_text()) == schema()
    jsonschema.Draft202012Validator.check_schema(schema())


def test_valid_document_passes():
    assert accepts(VALID, strict=True) and STRICT.is_valid(VALID)


@settings(max_examples=1500, deadline=None, derandomize=True)
@given(mutated_documents())
def test_agrees_with_jsonschema(document):
    assert accepts(document, strict=True) == STRICT.is_valid(document)
    assert accepts(document, strict=False) == RELAXED.is_valid(document)


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
