"""Configuration: YAML files deep-merged over configs/default.yaml, validated by a JSON schema.

The schema lives in workflow/schemas/config.schema.json (one fragment per pipeline section,
referenced by "$ref": "<section>.schema.json"). Validation happens before any work starts and
names the offending key, e.g. "config key 'train.lr': 'fast' is not of type 'number'".

YAML: every file and --set value is read with load_yaml, a SafeLoader that refuses a key given twice in
one mapping (PyYAML would keep the last: a second ``train:`` would drop the first's keys); a syntax
error or duplicate is a ConfigError naming the file and line ("dup.yaml:4: invalid YAML: duplicate key
'train' (first given on line 1)"). The Snakefile parses its configfiles again with it (check_yaml_files).

Numbers: PyYAML follows YAML 1.1, where ``1e-3`` (no dot) is a string, while YAML 1.2, JSON and
Python read it as 0.001. Whatever loaded the config (this module, Snakemake's ``configfile:`` /
``--config``, ``--set``), :func:`validate_config` converts a string that parses as a float into
that float where the schema allows a number and not a string, before validating, in place (so the
Snakefile's ``config`` holds the number too). ``"fast"`` stays a string and is reported.

Beyond the schema, :func:`validate_config` checks what the schema cannot express: run_name is one
directory name (not "." / ".."), batch and head divisibility, the quantization group size against the
quantized layers' weight counts, and ``device: cuda`` against this machine (set
``SOFTPICK_SKIP_DEVICE_CHECK=1`` where the Snakefile is parsed on a host without the jobs' GPUs,
e.g. a cluster login node).
"""
from __future__ import annotations

import copy
import json
import math
import os
import re
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


def validate_config(config: dict, *, check_device: bool = True) -> dict:
    """Raise ConfigError naming every bad key; return the config when valid.

    Numeric strings such as "1e-3" become floats in place where the schema asks for a number.
    check_device: reject device 'cuda' when torch sees no CUDA device (the Snakefile: every job
    runs here; the CLI checks it only for the stages that use the device)."""
    schema = load_schema()
    coerce_numbers(config, schema)
    bad = [f"config key '{k}': {v} is not a finite number" for k, v in _non_finite(config, "")]
    if bad:  # YAML's .nan / .inf pass the schema's "number"
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(bad))
    _raise_schema_errors(schema, config)
    _check_run_name(config["run_name"])
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
    kv_heads = model.get("num_key_value_heads")
    if kv_heads is not None and model["num_attention_heads"] % kv_heads:
        raise ConfigError(
            f"config key 'model.num_key_value_heads' ({kv_heads}) must divide "
            f"'model.num_attention_heads' ({model['num_attention_heads']}): each key/value head serves a whole group"
        )
    _check_group_size(config)
    _check_quantize(config["quantize"])  # (method, bits, group_size) each method supports
    if check_device:
        check_device_available(config)
    return config


def _raise_schema_errors(schema: dict, instance: dict) -> None:
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(_describe(e) for e in errors))


def validate_section(name: str, section: Any) -> None:
    """Check one section (e.g. the data section a stage receives) against its schema; ConfigError naming
    the key as '<name>.<key>'."""
    schema = load_schema()["properties"][name]
    _raise_schema_errors({"type": "object", "properties": {name: schema}}, {name: section})


def _non_finite(node: Any, path: str) -> Iterable[tuple[str, float]]:
    """(key path, value) of every NaN / inf float in node (paths as in schema errors: train.betas.0)."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        sub = f"{path}.{key}" if path else str(key)
        if isinstance(value, float) and not math.isfinite(value):
            yield sub, value
        else:
            yield from _non_finite(value, sub)


def _check_run_name(run_name: str) -> None:
    if run_name in (".", "..") or any(sep and sep in run_name for sep in ("/", "\\", os.sep, os.altsep)):
        raise ConfigError(
            f"config key 'run_name': {run_name!r} is not a plain directory name: outputs go to "
            f"results/<run_name>/, which would then be results/ itself or lie outside it (e.g. the committed data/)"
        )


def check_device_available(config: dict) -> None:
    """ConfigError when config 'device' is 'cuda' and torch sees no CUDA device ('auto' falls back to CPU)."""
    if config.get("device") != "cuda" or os.environ.get("SOFTPICK_SKIP_DEVICE_CHECK", "") not in ("", "0"):
        return
    import torch

    if not torch.cuda.is_available():
        raise ConfigError(
            "config key 'device': 'cuda' but torch sees no CUDA device on this machine; set device: cpu or auto "
            "(parsing on a host without the jobs' GPUs, e.g. a cluster login node: SOFTPICK_SKIP_DEVICE_CHECK=1)"
        )


def _vocab_size(config: dict) -> int | None:
    tok = config.get("data", {}).get("tokenizer", {}) or {}
    return tok.get("vocab_size", 8192) if tok.get("kind", "bpe") == "bpe" else None


def _check_group_size(config: dict) -> None:
    """Every weight HQQ quantizes is split into groups of quantize.group_size consecutive weights, so
    each quantized layer's weight count must be a multiple of it (the layers: softpick.quantize.linear_layers
    of the configured model, built on the meta device). The lm_head counts only when quantized and the
    vocabulary size is known before the data stage (a BPE tokenizer)."""
    quant = config.get("quantize", {})
    group = quant.get("group_size")
    if not isinstance(group, int) or isinstance(group, bool) or group < 1:
        return
    import torch

    from .quantize import linear_layers
    from .train import build_model

    lm_head = bool(quant.get("quantize_lm_head", False))
    vocab = _vocab_size(config) if lm_head else None
    bad: dict[str, tuple] = {}
    for variant in config["variants"]:
        with torch.device("meta"):
            model = build_model(config["model"], variant, vocab or 256, config["train"]["seq_len"])
        for name, layer in linear_layers(model, lm_head and vocab is not None):
            if layer.weight.numel() % group:
                bad.setdefault(name.split(".")[-1] if ".layers." in name else name, tuple(layer.weight.shape))
    if bad:
        shapes = ", ".join(f"{n} {list(s)}" for n, s in bad.items())
        raise ConfigError(
            f"config key 'quantize.group_size' ({group}) does not divide the weight count of the quantized "
            f"layers {shapes}: HQQ splits each weight into groups of group_size consecutive values"
        )


def _check_quantize(quant_cfg: dict) -> None:
    from .quantize import quantize_jobs  # the registry of methods and their bit widths

    try:
        quantize_jobs(quant_cfg)
    except ValueError as err:
        raise ConfigError(f"config section 'quantize': {err}") from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader refusing a key given twice in one mapping (PyYAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # '<<: *anchor': its keys may be overridden
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node.start_mark)
            except TypeError:  # an unhashable key: SafeLoader's own error below names it
                continue
            if first is not key_node.start_mark:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first given on line {first.line + 1})", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str, source: str, *, lines: bool = True) -> Any:
    """YAML text -> Python object with SafeLoader, refusing duplicate keys; ConfigError '<source>:<line>: what'
    (without the line when lines is false: a one-line value)."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None and lines else source
        what = " ".join(str(part) for part in (getattr(err, "context", None), getattr(err, "problem", None)) if part) or str(err)
        raise ConfigError(f"{where}: invalid YAML: {what}") from None


def check_yaml_files(paths: Iterable[str | Path]) -> None:
    """Parse each YAML file with load_yaml (duplicate keys, syntax), naming the file and line: for the
    Snakefile, whose configfiles Snakemake reads with a loader that keeps the last of duplicate keys."""
    for path in paths:
        load_yaml(_read_text(path), str(path))


def _read_text(path: str | Path) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"config file {path} is not UTF-8 text ({err.reason} at byte {err.start})") from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """'train.lr=1e-3' -> (['train', 'lr'], 0.001), values parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    key, value = text.split("=", 1)
    keys = key.strip().split(".")
    if not all(keys):
        raise ConfigError(f"override {text!r}: {key.strip()!r} is not a key path like section.key")
    return keys, load_yaml(value, f"override {text!r}", lines=False)


def load_config(paths: Iterable[str | Path] = (), overrides: Iterable[str] = (), *, base: Path | None = DEFAULT_CONFIG) -> dict:
    """Merge `paths` (in order) over the default config, apply key=value overrides, validate (all but
    the device, which softpick.cli.run_stage checks for the stages that use it)."""
    config: dict = {}
    for path in ([base] if base else []) + [Path(p) for p in paths]:
        if not Path(path).exists():
            raise FileNotFoundError(f"config file {path} does not exist")
        loaded = load_yaml(_read_text(path), str(path)) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping, not {type(loaded).__name__}")
        config = deep_merge(config, loaded)
    for text in overrides:
        keys, value = parse_override(text)
        node = config
        for i, k in enumerate(keys[:-1]):
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {text!r}: '{'.'.join(keys[:i + 1])}' is a value, not a section")
        node[keys[-1]] = value
    return validate_config(config, check_device=False)  # run_stage checks it for the stages that use it


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
