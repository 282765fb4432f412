"""The metadata JSON document: built from an Artifact, validated against metadata.schema.json."""

from __future__ import annotations

import copy
import datetime
import functools
import json
import os
import re
from importlib import resources
from typing import Any

from ..artifact import Artifact
from ..errors import FredsetError
from ..version import __version__

MAX_METADATA_BYTES = 4 * 2**20
TRANSFORM = "dct-ii-orthonormal"


@functools.lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    """The metadata JSON Schema (spec/metadata.schema.json), as shipped with the package."""
    return json.loads(resources.files(__package__).joinpath("metadata.schema.json").read_text("utf-8"))


def validate_metadata(document: Any, path: str, *, strict: bool = True) -> None:
    """Raise FredsetError naming the first schema violation (``strict=False`` ignores unknown fields).

    Interprets the keywords metadata.schema.json uses (type, const, enum, required, properties,
    additionalProperties, items, min/maxItems, uniqueItems, minimum, maximum, exclusiveMinimum,
    min/maxLength, pattern); the tests check it agrees with the jsonschema package. A full JSON
    Schema library would cost this read path ~0.1 s of import time and four dependencies.
    """
    problem = _violation(schema(), document, strict)
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
                   "exclusiveMinimum", "minLength", "maxLength", "pattern"}


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
        if "pattern" in rule and not re.search(rule["pattern"], value):
            return where, f"{_show(value)} does not match {rule['pattern']!r}"
    return None


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


def build_metadata(artifact: Artifact, encoding: str, shuffle: bool) -> dict[str, Any]:
    height, width = artifact.image_size
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
        "coefficients": {"dtype": encoding, "byte_order": "little", "shuffle": bool(shuffle),
                         "compression": "zstd"},
        "provenance": provenance,
        "license": artifact.license,
        "citation": artifact.citation,
    }


def encode_metadata(document: dict[str, Any]) -> bytes:
    """Canonical UTF-8 JSON: sorted keys, no insignificant white space."""
    try:
        return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as error:
        raise FredsetError(f"metadata is not JSON-serialisable: {error}") from None


def decode_metadata(raw: bytes, path: str, *, strict: bool) -> dict[str, Any]:
    if len(raw) > MAX_METADATA_BYTES:
        raise FredsetError(f"metadata is {len(raw)} bytes, more than the {MAX_METADATA_BYTES} allowed", path)
    try:
        document = json.loads(raw.decode("utf-8"), parse_constant=_refuse_constant,
                              object_pairs_hook=_refuse_duplicate_keys)
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise FredsetError(f"metadata is not valid UTF-8 JSON ({str(error)[:120]})", path) from None
    validate_metadata(document, path, strict=strict)
    # JSON Schema counts 64.0 as an integer; sizes are used as shapes, so make them ints.
    image = document["image"]
    for key in ("channels", "height", "width"):
        image[key] = int(image[key])
    document["k"] = int(document["k"])
    document["instances_per_class"] = [int(n) for n in document["instances_per_class"]]
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


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")
