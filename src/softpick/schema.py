"""The config's JSON schema: workflow/schemas/config.schema.json with one fragment per pipeline section
("$ref": "<section>.schema.json"), the registries' names filled in as enums ("x-enum-from"), and
validation against it naming the offending key. softpick.config validates whole configs with it; a stage
checks the section it receives (validate_section: the data stage's data section)."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from .errors import ConfigError

# read at run time besides the modules (softpick.stages.code): the schema and its fragments
PACKAGE_FILES = ("_resources/schemas/*.json",)


def resource_path(checkout_rel: str, packaged_rel: str) -> Path:
    """A file shipped with the project: from the checkout in the working directory when there is one
    (Snakemake runs there; its configs / schemas win over an installed copy), else the copy inside the
    package (softpick/_resources: links into the source tree, real files in a non-editable install)."""
    local = Path.cwd() / checkout_rel
    if local.exists() and (Path.cwd() / "workflow" / "schemas" / "config.schema.json").exists():
        return local.resolve()
    return (Path(__file__).resolve().parent / "_resources" / packaged_rel).resolve()


SCHEMA_DIR = resource_path("workflow/schemas", "schemas")


def _inline_refs(node: Any, schema_dir: Path) -> Any:
    if isinstance(node, dict):
        if "$ref" in node and not node["$ref"].startswith("#"):
            path = schema_dir / node["$ref"]
            if not path.exists():
                raise FileNotFoundError(f"schema fragment {path} referenced by config.schema.json is missing")
            return _inline_refs(json.loads(path.read_text()), schema_dir)
        return {k: _inline_refs(v, schema_dir) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline_refs(v, schema_dir) for v in node]
    return node


def _registry(name: str) -> tuple[list[str], str]:
    """(names, one description line per name) of a registry a schema node names with "x-enum-from"."""
    if name == "data.sources":
        from .data.sources import SOURCES

        return list(SOURCES), "; ".join(s.describe() for s in SOURCES.values())
    raise ValueError(f"schema: unknown registry {name!r} in x-enum-from")


def _fill_enums(node: Any) -> Any:
    """Give every schema node with "x-enum-from": "<registry>" the registry's names as its enum (and their
    descriptions after its own), so the schema lists what the code implements."""
    if isinstance(node, dict):
        if "x-enum-from" in node:
            names, described = _registry(node["x-enum-from"])
            node["enum"] = names
            node["description"] = f"{node.get('description', '')} {described}".strip()
        for value in node.values():
            _fill_enums(value)
    elif isinstance(node, list):
        for value in node:
            _fill_enums(value)
    return node


def load_schema(schema_dir: Path = SCHEMA_DIR) -> dict:
    """config.schema.json with its fragments inlined and the registries' enums filled in."""
    schema = json.loads((schema_dir / "config.schema.json").read_text())
    return _fill_enums(_inline_refs(schema, schema_dir))


def _describe(error) -> str:
    where = ".".join(str(p) for p in error.absolute_path) or "<top level>"
    if error.validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        allowed = ", ".join(sorted(error.schema.get("properties", {})))
        keys = ", ".join(f"'{where + '.' if error.absolute_path else ''}{k}'" for k in extra)
        return f"unknown config key {keys} (allowed here: {allowed})"
    if error.validator == "required":
        return f"config section '{where}' is missing a key: {error.message}"
    return f"config key '{where}': {error.message}"


# A YAML 1.2 / JSON float written without a dot, which YAML 1.1 (PyYAML) leaves a string: 1e-3, 5E+4, -2e10
_FLOAT_TEXT = re.compile(r"^[-+]?(\d+(\.\d*)?|\.\d+)[eE][-+]?\d+$")


def _types(schema: dict) -> set:
    t = schema.get("type", ())
    types = {t} if isinstance(t, str) else set(t)
    for branch in schema.get("anyOf", []) + schema.get("oneOf", []):
        types |= _types(branch)
    return types


def coerce_numbers(node: Any, schema: dict) -> Any:
    """Replace, in place, strings like "1e-3" by floats where `schema` takes a number but no string."""
    if isinstance(node, dict):
        props = schema.get("properties", {})
        for key, value in node.items():
            sub = props.get(key, schema.get("additionalProperties"))
            if isinstance(sub, dict):
                node[key] = coerce_numbers(value, sub)
    elif isinstance(node, list) and isinstance(schema.get("items"), dict):
        node[:] = [coerce_numbers(v, schema["items"]) for v in node]
    elif isinstance(node, str) and _FLOAT_TEXT.match(node.strip()):
        types = _types(schema)
        if "number" in types and "string" not in types:
            return float(node)
    return node


def raise_schema_errors(schema: dict, instance: dict) -> None:
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(_describe(e) for e in errors))


def validate_section(name: str, section: Any) -> None:
    """Check one section (e.g. the data section a stage receives) against its schema; ConfigError naming
    the key as '<name>.<key>'."""
    schema = load_schema()["properties"][name]
    raise_schema_errors({"type": "object", "properties": {name: schema}}, {name: section})
