"""Configuration: YAML files deep-merged over configs/default.yaml, validated by a JSON schema.

The schema lives in workflow/schemas/config.schema.json (one fragment per pipeline section,
referenced by "$ref": "<section>.schema.json"). Validation happens before any work starts and
names the offending key, e.g. "config key 'train.lr': 'fast' is not of type 'number'".
"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Iterable

import yaml



def resource_path(checkout_rel: str, packaged_rel: str) -> Path:
    """A file shipped with the project: from the checkout in the working directory when there is one
    (Snakemake runs there; its configs / schemas win over an installed copy), else the copy inside the
    package (softpick/_resources: links into the source tree, real files in a non-editable install)."""
    local = Path.cwd() / checkout_rel
    if local.exists() and (Path.cwd() / "workflow" / "schemas" / "config.schema.json").exists():
        return local.resolve()
    return (Path(__file__).resolve().parent / "_resources" / packaged_rel).resolve()


REPO_ROOT = Path(__file__).resolve().parents[2]  # the source tree (a non-editable install has none)
SCHEMA_DIR = resource_path("workflow/schemas", "schemas")
DEFAULT_CONFIG = resource_path("configs/default.yaml", "configs/default.yaml")


class ConfigError(ValueError):
    """A configuration key, type or value is wrong; the message names it."""


def deep_merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


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


def load_schema(schema_dir: Path = SCHEMA_DIR) -> dict:
    schema = json.loads((schema_dir / "config.schema.json").read_text())
    return _inline_refs(schema, schema_dir)


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


def validate_config(config: dict) -> dict:
    """Raise ConfigError naming every bad key; return the config unchanged when valid."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(load_schema())
    errors = sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(_describe(e) for e in errors))
    train = config["train"]
    if train["global_batch_size"] % train["micro_batch_size"]:
        raise ConfigError(
            f"config key 'train.global_batch_size' ({train['global_batch_size']}) must be a multiple of "
            f"'train.micro_batch_size' ({train['micro_batch_size']})"
        )
    model = config["model"]
    if model["hidden_size"] % model["num_attention_heads"]:
        raise ConfigError(
            f"config key 'model.hidden_size' ({model['hidden_size']}) must be divisible by "
            f"'model.num_attention_heads' ({model['num_attention_heads']})"
        )
    return config


def parse_override(text: str) -> tuple[list[str], Any]:
    """'train.lr=1e-3' -> (['train', 'lr'], 0.001), values parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    key, value = text.split("=", 1)
    return key.strip().split("."), yaml.safe_load(value)


def load_config(paths: Iterable[str | Path] = (), overrides: Iterable[str] = (), *, base: Path | None = DEFAULT_CONFIG) -> dict:
    """Merge `paths` (in order) over the default config, apply key=value overrides, validate."""
    config: dict = {}
    for path in ([base] if base else []) + [Path(p) for p in paths]:
        if not Path(path).exists():
            raise FileNotFoundError(f"config file {path} does not exist")
        loaded = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping, not {type(loaded).__name__}")
        config = deep_merge(config, loaded)
    for text in overrides:
        keys, value = parse_override(text)
        node = config
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = value
    return validate_config(config)


def run_paths(config: dict, root: Path | str = ".") -> dict[str, Path]:
    """The on-disk layout of one run, shared by the CLI and the Snakefile."""
    root = Path(root)
    run = config["run_name"]
    results = root / "results" / run
    return {
        "results": results,
        "data": results / "data",
        "models": results / "models",
        "eval": results / "eval",
        "quant": results / "quant",
        "analysis": results / "analysis",
        "tables": results / "tables",
        "figures": root / "figures" / run,
        "logs": root / "logs" / run,
    }
