"""A small JSON Schema validator for the schemas in tests/schemas/ (the subset of draft 2020-12 they use).

Why not the ``jsonschema`` package: it would be the test suite's only reason for four more packages (one of them
compiled Rust), and the schemas here need a dozen keywords. The schemas stay standard JSON Schema, so
``python -m jsonschema`` or any other validator can check wangpctl's output against them too; an unknown keyword
fails loudly here instead of being ignored, so this subset cannot silently accept what a full validator rejects.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

__all__ = ["SCHEMAS", "SchemaError", "load_schema", "validate"]

SCHEMAS = Path(__file__).resolve().parent / "schemas"
_TYPES = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
    "null": type(None),
}
_ANNOTATIONS = {"$schema", "$id", "$defs", "title", "description", "$comment", "examples"}
_KEYWORDS = _ANNOTATIONS | {
    "type", "properties", "required", "additionalProperties", "items", "enum", "const", "minimum", "maximum",
    "anyOf", "oneOf", "$ref", "pattern", "minItems", "minLength",
}  # fmt: skip


class SchemaError(AssertionError):
    """The document does not match; the message names the JSON path."""


def load_schema(name: str) -> dict[str, Any]:
    schema = json.loads((SCHEMAS / f"{name}.json").read_text())
    schema["__file__"] = f"{name}.json"
    return schema


def _is_type(value: Any, name: str) -> bool:
    if name == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if name == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, _TYPES[name])


def _resolve(ref: str, root: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    file, _, pointer = ref.partition("#")
    document = load_schema(file.removesuffix(".json")) if file else root
    node: Any = document
    for part in [p for p in pointer.split("/") if p]:
        node = node[part]
    return node, document


def validate(value: Any, schema: dict[str, Any], root: dict[str, Any] | None = None, path: str = "$") -> None:
    """Raise SchemaError at the first mismatch."""
    root = root or schema
    unknown = set(schema) - _KEYWORDS - {"__file__"}
    if unknown:
        raise ValueError(f"{root.get('__file__')}: keyword(s) {sorted(unknown)} not supported by jsonschema_lite")
    if "$ref" in schema:
        target, document = _resolve(schema["$ref"], root)
        validate(value, target, document, path)
    if "type" in schema:
        names = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_is_type(value, name) for name in names):
            raise SchemaError(f"{path}: expected {'/'.join(names)}, got {json.dumps(value)[:80]}")
    if "enum" in schema and value not in schema["enum"]:
        raise SchemaError(f"{path}: {value!r} not one of {schema['enum']}")
    if "const" in schema and value != schema["const"]:
        raise SchemaError(f"{path}: expected {schema['const']!r}, got {value!r}")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            raise SchemaError(f"{path}: {value} < minimum {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            raise SchemaError(f"{path}: {value} > maximum {schema['maximum']}")
    if isinstance(value, str):
        if "pattern" in schema and not re.search(schema["pattern"], value):
            raise SchemaError(f"{path}: {value!r} does not match {schema['pattern']}")
        if len(value) < schema.get("minLength", 0):
            raise SchemaError(f"{path}: shorter than {schema['minLength']}")
    if isinstance(value, dict):
        for key in schema.get("required", []):
            if key not in value:
                raise SchemaError(f"{path}: missing required key {key!r}")
        properties = schema.get("properties", {})
        for key, item in value.items():
            if key in properties:
                validate(item, properties[key], root, f"{path}.{key}")
            elif schema.get("additionalProperties") is False:
                raise SchemaError(f"{path}: unexpected key {key!r}")
            elif isinstance(schema.get("additionalProperties"), dict):
                validate(item, schema["additionalProperties"], root, f"{path}.{key}")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            raise SchemaError(f"{path}: fewer than {schema['minItems']} items")
        if "items" in schema:
            for index, item in enumerate(value):
                validate(item, schema["items"], root, f"{path}[{index}]")
    for keyword, needed in (("anyOf", None), ("oneOf", 1)):
        if keyword in schema:
            passed = 0
            errors = []
            for option in schema[keyword]:
                try:
                    validate(value, option, root, path)
                    passed += 1
                except SchemaError as exc:
                    errors.append(str(exc))
            if passed == 0 or (needed is not None and passed != needed):
                raise SchemaError(f"{path}: {keyword} matched {passed} option(s): " + "; ".join(errors)[:500])
