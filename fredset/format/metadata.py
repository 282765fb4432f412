"""The metadata JSON document: built from an Artifact, validated against metadata.schema.json (format 1.x) or
metadata-2.schema.json (format 2.x; they differ only in ``coefficients``)."""

from __future__ import annotations

import copy
import datetime
import functools
import json
import math
import os
import re
import sys
from importlib import resources
from typing import Any

from ..artifact import Artifact
from ..errors import FredsetError
from ..quantize import BITS
from ..version import __version__

MAX_METADATA_BYTES = 4 * 2**20
TRANSFORM = "dct-ii-orthonormal"
MAX_DEPTH = 64  # nesting levels of arrays and objects, the top-level object being level 1 (FORMAT.md section 3)
MAX_NUMBER = sys.float_info.max  # every number must be a finite binary64 value: |x| <= MAX_NUMBER
_MAX_INTEGER = int(MAX_NUMBER)  # 309 digits
# Characters no metadata string (value or key) may hold: C0 controls other than TAB, LF and CR, DEL, C1
# controls, and surrogates (JSON's \ud800 escapes, unpaired; paired ones decode to one character).
# Names and other short fields refuse TAB, LF and CR too (the schema's "not" patterns).
_FORBIDDEN = re.compile("[\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f\\x7f-\\x9f\\ud800-\\udfff]")


SCHEMA_FILES = {1: "metadata.schema.json", 2: "metadata-2.schema.json"}  # format major -> its schema
BITS_ENCODINGS = {f"q{bits}": bits for bits in BITS}  # format 2.0's encodings -> bits of the codes


@functools.lru_cache(maxsize=None)
def schema(major: int = 1) -> dict[str, Any]:
    """The metadata JSON Schema of format ``major`` (spec/metadata.schema.json or spec/metadata-2.schema.json),
    as shipped with the package."""
    return json.loads(resources.files(__package__).joinpath(SCHEMA_FILES[major]).read_text("utf-8"))


def validate_metadata(document: Any, path: str, *, strict: bool = True, major: int = 1) -> None:
    """Raise FredsetError naming the first schema violation (``strict=False`` ignores unknown fields).

    Interprets the keywords metadata.schema.json uses (type, const, enum, required, properties,
    additionalProperties, items, min/maxItems, uniqueItems, minimum, maximum, exclusiveMinimum,
    min/maxLength, pattern, not); the tests check it agrees with the jsonschema package. A full JSON
    Schema library would cost this read path ~0.1 s of import time and four dependencies. Patterns
    are ECMA-262 regular expressions, as JSON Schema says: ``$`` matches only at the very end, not
    before a final newline as Python's does (see :func:`_pattern`).

    Checks only the schema: :func:`decode_metadata` and :func:`encode_metadata` also apply the
    rules no schema keyword states (:func:`check_values`: depth, characters, number range).
    """
    problem = _violation(schema(major), document, strict)
    if problem is not None:
        where, message = problem
        raise FredsetError(f"invalid metadata at {'/'.join(where) or '(top level)'}: {message}", path)


_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "integer": lambda v: (isinstance(v, int) and not isinstance(v, bool))
    or (isinstance(v, float) and v.is_integer()),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
}
_KNOWN_KEYWORDS = {"$schema", "$id", "title", "description", "type", "const", "enum", "required", "properties",
                   "additionalProperties", "items", "minItems", "maxItems", "uniqueItems", "minimum", "maximum",
                   "exclusiveMinimum", "minLength", "maxLength", "pattern", "not"}


def _violation(rule: dict[str, Any], value: Any, strict: bool, where: tuple[str, ...] = ()
               ) -> tuple[tuple[str, ...], str] | None:
    unknown = set(rule) - _KNOWN_KEYWORDS
    if unknown:  # the schema grew a keyword this interpreter does not know: fail loudly, never silently
        raise RuntimeError(f"metadata schema uses unsupported keywords {sorted(unknown)}")
    types = rule.get("type")
    if types is not None:
        names = [types] if isinstance(types, str) else types
        if not any(_TYPES[name](value) for name in names):
            return where, f"{_show(value)} is not of type {' or '.join(names)}"
    if "const" in rule and not _same(value, rule["const"]):
        return where, f"{_show(value)} must be {rule['const']!r}"
    if "enum" in rule and not any(_same(value, option) for option in rule["enum"]):
        return where, f"{_show(value)} is not one of {rule['enum']}"
    if "not" in rule and _violation(rule["not"], value, strict, where) is None:
        refused = rule["not"]
        return where, f"{_show(value)} {refused.get('description') or 'must not match ' + json.dumps(refused)}"
    if isinstance(value, dict):
        for name in rule.get("required", ()):
            if name not in value:
                return where, f"{name!r} is a required property"
        properties = rule.get("properties", {})
        for name, item in value.items():
            if name in properties:
                found = _violation(properties[name], item, strict, where + (name,))
                if found:
                    return found
            elif strict and rule.get("additionalProperties") is False:
                return where, f"unexpected property {name!r}"
    if isinstance(value, list):
        if len(value) < rule.get("minItems", 0) or len(value) > rule.get("maxItems", len(value)):
            return where, f"array of {len(value)} items is outside {rule.get('minItems', 0)}.." \
                          f"{rule.get('maxItems', 'any')}"
        if rule.get("uniqueItems") and len({json.dumps(v, sort_keys=True) for v in value}) != len(value):
            return where, "items are not unique"
        if "items" in rule:
            for index, item in enumerate(value):
                found = _violation(rule["items"], item, strict, where + (str(index),))
                if found:
                    return found
    if _TYPES["number"](value):
        if "minimum" in rule and value < rule["minimum"]:
            return where, f"{_show(value)} is less than the minimum {rule['minimum']}"
        if "maximum" in rule and value > rule["maximum"]:
            return where, f"{_show(value)} is more than the maximum {rule['maximum']}"
        if "exclusiveMinimum" in rule and value <= rule["exclusiveMinimum"]:
            return where, f"{_show(value)} must be more than {rule['exclusiveMinimum']}"
    if isinstance(value, str):
        if not rule.get("minLength", 0) <= len(value) <= rule.get("maxLength", len(value)):
            return where, f"string of length {len(value)} is outside {rule.get('minLength', 0)}.." \
                          f"{rule.get('maxLength', 'any')}"
        if "pattern" in rule and not _pattern(rule["pattern"]).search(value):
            return where, f"{_show(value)} does not match {rule['pattern']!r}"
    return None


@functools.lru_cache(maxsize=None)
def _pattern(ecma: str) -> re.Pattern[str]:
    """An ECMA-262 pattern (as JSON Schema patterns are) as a Python regular expression.

    The constructs the schema uses mean the same in both, except ``$``: ECMA-262 (without the m
    flag) matches it only at the end of the string, Python also before a final newline, which
    would let ``"2024-01-01T00:00:00Z\\n"`` pass ``^...Z$``; here it becomes ``\\Z``. Constructs
    whose meaning differs in other ways (``.``, ``\\d``, ``\\w``, ``\\s``, ``\\b``) are refused loudly
    rather than interpreted differently.
    """
    out, index, in_class = [], 0, False
    while index < len(ecma):
        char = ecma[index]
        if char == "\\":
            escape = ecma[index:index + 2]
            if escape[1:] in tuple("dDwWsSbB"):
                raise RuntimeError(f"metadata schema pattern {ecma!r} uses {escape}, which this interpreter "
                                   "does not translate")
            out.append(escape)
            index += 2
            continue
        if in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
            if ecma[index + 1:index + 2] == "]" or ecma[index + 1:index + 3] == "^]":
                raise RuntimeError(f"metadata schema pattern {ecma!r} has an empty class, which ECMA-262 and "
                                   "Python read differently")
        elif char == ".":
            raise RuntimeError(f"metadata schema pattern {ecma!r} uses '.', which this interpreter does not translate")
        elif char == "$":
            char = "\\Z"
        out.append(char)
        index += 1
    return re.compile("".join(out))


def _same(value: Any, expected: Any) -> bool:
    """JSON equality: 1 == 1.0, but True is not 1."""
    if isinstance(value, bool) or isinstance(expected, bool):
        return type(value) is type(expected) and value == expected
    return value == expected


def _show(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, (dict, list)) else type(value).__name__
    return text if len(text) <= 60 else text[:60] + "..."


def creation_time() -> str:
    """UTC now, or SOURCE_DATE_EPOCH when set (reproducible builds)."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    moment = (datetime.datetime.fromtimestamp(int(epoch), datetime.timezone.utc) if epoch
              else datetime.datetime.now(datetime.timezone.utc))
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def check_values(document: Any, path: str | None = None, *, depth: int = 1, where: tuple[str, ...] = ()) -> None:
    """Raise FredsetError unless ``document`` keeps the rules of FORMAT.md section 3 that the schema cannot state.

    Arrays and objects nest at most :data:`MAX_DEPTH` levels (``document`` is at level ``depth``); no
    string, value or key, holds a character of :data:`_FORBIDDEN`; every number is a finite binary64
    value. Iterative, so a deep document cannot exhaust the stack; raises for the first problem it meets.
    """
    pending = [(document, depth, where)]
    while pending:
        value, level, at = pending.pop()
        if isinstance(value, (dict, list, tuple)):
            if level > MAX_DEPTH:
                raise FredsetError(f"invalid metadata at {_where(at)}: nested deeper than "
                                   f"the {MAX_DEPTH} levels allowed", path)
            if isinstance(value, dict):
                for key, item in value.items():
                    if isinstance(key, str):
                        _check_string(key, at, path, "key ")
                    pending.append((item, level + 1, at + (str(key),)))
            else:
                pending.extend((item, level + 1, at + (str(index),)) for index, item in enumerate(value))
        elif isinstance(value, str):
            _check_string(value, at, path)
        elif isinstance(value, float) and not math.isfinite(value) \
                or isinstance(value, int) and not isinstance(value, bool) and abs(value) > _MAX_INTEGER:
            raise FredsetError(f"invalid metadata at {_where(at)}: {_show_number(value)} is "
                               "not a finite binary64 number", path)


def _check_string(text: str, where: tuple[str, ...], path: str | None, what: str = "") -> None:
    found = _FORBIDDEN.search(text)
    if found:
        char = ord(found.group())
        kind = "an unpaired surrogate" if 0xD800 <= char <= 0xDFFF else "the control character"
        raise FredsetError(f"invalid metadata at {_where(where)}: {what}{_show(text)} holds "
                           f"{kind} U+{char:04X}", path)


def _where(where: tuple[str, ...]) -> str:
    """A location in the document, shortened when it is deep or its keys are long."""
    shown = [key if len(key) <= 40 else key[:40] + "..." for key in where]
    if len(shown) > 8:
        shown = shown[:4] + [f"...({len(shown) - 6} levels)..."] + shown[-2:]
    return "/".join(shown) or "(top level)"


def _show_number(value: float | int) -> str:
    if isinstance(value, float) or abs(value) < 10**60:
        return str(value)
    return f"an integer of {value.bit_length()} bits"


def build_metadata(artifact: Artifact, encoding: str, shuffle: bool) -> dict[str, Any]:
    """The document for ``artifact`` written with ``encoding``: a 1.0 one for float32/float16/int8, a 2.0 one
    (``coefficients`` = bits, steps, compression) for q2..q8, where ``shuffle`` does not apply."""
    height, width = artifact.image_size
    check_values(artifact.provenance, depth=2, where=("provenance",))  # before deepcopy recurses into it
    provenance = copy.deepcopy(artifact.provenance)
    provenance.setdefault("library", {"name": "fredset", "version": __version__})
    provenance.setdefault("created", creation_time())
    dataset: dict[str, Any] = {"name": artifact.dataset, "classes": list(artifact.classes)}
    if artifact.dataset_license is not None:
        dataset["license"] = artifact.dataset_license
    return {
        "format": "fredset",
        "dataset": dataset,
        "image": {"channels": artifact.channels, "height": height, "width": width},
        "normalization": {"mean": list(artifact.mean), "std": list(artifact.std)},
        "transform": TRANSFORM,
        "k": artifact.k,
        "instances_per_class": artifact.counts,
        "coefficients": ({"bits": BITS_ENCODINGS[encoding], "steps": "float16", "compression": "zstd"}
                         if encoding in BITS_ENCODINGS else
                         {"dtype": encoding, "byte_order": "little", "shuffle": bool(shuffle), "compression": "zstd"}),
        "provenance": provenance,
        "license": artifact.license,
        "citation": artifact.citation,
    }


def encode_metadata(document: dict[str, Any]) -> bytes:
    """Canonical UTF-8 JSON: sorted keys, no insignificant white space; refuses what a reader refuses."""
    check_values(document)
    try:
        return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as error:
        raise FredsetError(f"metadata is not JSON-serialisable: {error}") from None


def decode_metadata(raw: bytes, path: str, *, strict: bool, major: int = 1) -> dict[str, Any]:
    """The validated document of a format-``major`` file: FORMAT.md section 3 and the schema of that major."""
    if len(raw) > MAX_METADATA_BYTES:
        raise FredsetError(f"metadata is {len(raw)} bytes, more than the {MAX_METADATA_BYTES} allowed", path)
    try:
        document = json.loads(raw.decode("utf-8"), parse_constant=_refuse_constant, parse_float=_finite_float,
                              parse_int=_finite_integer, object_pairs_hook=_refuse_duplicate_keys)
    except _Refused as error:
        raise FredsetError(f"invalid metadata: {error}", path) from None
    except RecursionError:  # json nests one Python call per level: far deeper than MAX_DEPTH
        raise FredsetError(f"invalid metadata: nested deeper than the {MAX_DEPTH} levels allowed", path) from None
    except (UnicodeDecodeError, ValueError) as error:
        raise FredsetError(f"metadata is not valid UTF-8 JSON ({str(error)[:120]})", path) from None
    check_values(document, path)
    validate_metadata(document, path, strict=strict, major=major)
    # JSON Schema counts 64.0 as an integer; sizes are used as shapes, so make them ints.
    image = document["image"]
    for key in ("channels", "height", "width"):
        image[key] = int(image[key])
    document["k"] = int(document["k"])
    document["instances_per_class"] = [int(n) for n in document["instances_per_class"]]
    if major == 2:
        document["coefficients"]["bits"] = int(document["coefficients"]["bits"])
    channels = image["channels"]
    for name in ("mean", "std"):
        if len(document["normalization"][name]) != channels:
            raise FredsetError(f"invalid metadata: normalization.{name} has "
                               f"{len(document['normalization'][name])} values for {channels} channels", path)
    if len(document["instances_per_class"]) != len(document["dataset"]["classes"]):
        raise FredsetError("invalid metadata: instances_per_class and dataset.classes differ in length", path)
    if document["k"] > document["image"]["height"] * document["image"]["width"]:
        raise FredsetError("invalid metadata: k is larger than height*width", path)
    return document


def _refuse_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document = dict(pairs)
    if len(document) != len(pairs):
        seen: set[str] = set()
        duplicate = next(key for key, _ in pairs if key in seen or seen.add(key))
        raise ValueError(f"duplicate key {duplicate!r}")
    return document


class _Refused(ValueError):
    """A number the JSON parser read but FORMAT.md refuses."""


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400 overflows binary64 to infinity
        raise _Refused(f"number {_literal(text)} is not a finite binary64 number")
    return value


def _finite_integer(text: str) -> int:
    # The length check comes first: converting thousands of digits to an int costs quadratic time.
    value = int(text) if len(text.lstrip("-")) <= len(str(_MAX_INTEGER)) else None
    if value is None or abs(value) > _MAX_INTEGER:
        raise _Refused(f"integer {_literal(text)} is not a finite binary64 number (|n| <= {MAX_NUMBER:.17g})")
    return value


def _literal(text: str) -> str:
    return text if len(text) <= 24 else f"{text[:16]}... ({len(text)} characters)"
