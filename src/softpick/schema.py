"""The config's JSON schema: workflow/schemas/config.schema.json with one fragment per pipeline section
("$ref": "<section>.schema.json"), the registries' names filled in as enums ("x-enum-from": a name of
REGISTRIES: the attention kinds and backends, the quantization methods and their bit widths, the evaluation
tasks, the data sources; no hand-kept list beside the code's), and
validation against it naming the offending key. softpick.config validates whole configs with it; a stage
checks the section it receives (validate_section: the data stage's data section)."""
from __future__ import annotations

import importlib
import json
import re
from pathlib import Path
from typing import Any, Callable

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


def _imported(module: str, name: str) -> Any:
    """`name` of the softpick module `module`, imported by its dotted name rather than by an import statement:
    an enum only validates (no result depends on it), and softpick.stages.code follows import statements, so
    the registries' modules stay out of the code inputs of the stages that validate a config (the data stage,
    which checks its section, does not rerun when an attention kind or a quantizer changes)."""
    return getattr(importlib.import_module(module), name)


def _data_sources() -> tuple[list, list[str]]:
    sources = _imported("softpick.data.sources", "SOURCES")
    return list(sources), [s.describe() for s in sources.values()]


def _attention_kinds() -> tuple[list, list[str]]:
    kinds = _imported("softpick.attention.kinds", "REGISTRY")
    return list(kinds), [f"{name}: {kind.formula}" for name, kind in kinds.items()]


def _attention_backends() -> tuple[list, list[str]]:
    return list(_imported("softpick.attention", "BACKENDS")), []


def _quantize_methods() -> tuple[list, list[str]]:
    methods = _imported("softpick.quantize", "METHODS")
    return list(methods), [f"{name} ({'/'.join(map(str, m.bits))} bits{', calibrated' if m.calibrated else ''}): {m.description}"
                           for name, m in methods.items()]


def _quantize_bits() -> tuple[list, list[str]]:
    methods = _imported("softpick.quantize", "METHODS")
    return sorted({b for m in methods.values() for b in m.bits}, reverse=True), []


def _evaluate_tasks() -> tuple[list, list[str]]:
    return list(_imported("softpick.evaluate", "TASKS")), []


# "x-enum-from" name -> () -> (the registry's names, one description line per name or none)
REGISTRIES: dict[str, Callable[[], tuple[list, list[str]]]] = {
    "data.sources": _data_sources,            # softpick.data.sources.SOURCES
    "attention.kinds": _attention_kinds,      # softpick.attention.kinds.REGISTRY
    "attention.backends": _attention_backends,  # softpick.attention.BACKENDS
    "quantize.methods": _quantize_methods,    # softpick.quantize.METHODS
    "quantize.bits": _quantize_bits,          # the bit widths some method of softpick.quantize.METHODS supports
    "evaluate.tasks": _evaluate_tasks,        # softpick.evaluate.TASKS
}


def _registry(name: str) -> tuple[list, list[str]]:
    """(names, description lines) of a registry a schema node names with "x-enum-from"."""
    if name not in REGISTRIES:
        raise ValueError(f"schema: unknown registry {name!r} in x-enum-from (known: {', '.join(REGISTRIES)})")
    return REGISTRIES[name]()


def _fill_enums(node: Any) -> Any:
    """Give every schema node with "x-enum-from": "<registry>" the registry's names as its enum (and their
    descriptions after its own), so the schema lists what the code implements."""
    if isinstance(node, dict):
        if "x-enum-from" in node:
            if "enum" in node:
                raise ValueError(f"schema: a node with x-enum-from {node['x-enum-from']!r} lists an enum of its own")
            names, described = _registry(node["x-enum-from"])
            node["enum"] = names
            if described:
                node["description"] = f"{node.get('description', '')} {'; '.join(described)}".strip()
        for value in node.values():
            _fill_enums(value)
    elif isinstance(node, list):
        for value in node:
            _fill_enums(value)
    return node


def _inlined(schema_dir: Path) -> dict:
    return _inline_refs(json.loads((schema_dir / "config.schema.json").read_text()), schema_dir)


def load_schema(schema_dir: Path = SCHEMA_DIR) -> dict:
    """config.schema.json with its fragments inlined and the registries' enums filled in."""
    return _fill_enums(_inlined(schema_dir))


def section_schema(name: str, schema_dir: Path = SCHEMA_DIR) -> dict:
    """The schema of one section, with the enums of its own registries filled in (only theirs)."""
    return _fill_enums(_inlined(schema_dir)["properties"][name])


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
    raise_schema_errors({"type": "object", "properties": {name: section_schema(name)}}, {name: section})
