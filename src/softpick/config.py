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
import math
import os
from pathlib import Path
from typing import Any, Iterable

import yaml

from .errors import ConfigError
from .schema import coerce_numbers, load_schema, raise_schema_errors, resource_path, validate_section  # noqa: F401



REPO_ROOT = Path(__file__).resolve().parents[2]  # the source tree (a non-editable install has none)
DEFAULT_CONFIG = resource_path("configs/default.yaml", "configs/default.yaml")


def deep_merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


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
    raise_schema_errors(schema, config)
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
    _check_eval_length(config)
    _check_quantize(config)  # group size against the layers; (method, bits, group_size) each method supports
    if check_device:
        check_device_available(config)
    return config


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


def _check_eval_length(config: dict) -> None:
    """The evaluation's context window may not exceed the training sequence length: the model never saw
    positions past train.seq_len (its max_position_embeddings)."""
    max_length, seq_len = config["eval"]["max_length"], config["train"]["seq_len"]
    if max_length > seq_len:
        raise ConfigError(
            f"config key 'eval.max_length' ({max_length}) must not exceed 'train.seq_len' ({seq_len}): "
            f"the model is trained on (and sized for) sequences of train.seq_len tokens"
        )


def _check_quantize(config: dict) -> None:
    """The quantization checks (softpick.quantize): the group size against the quantized layers, and
    (method, bits, group_size) each configured method supports."""
    from .quantize import check_group_size, quantize_jobs

    try:
        check_group_size(config)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    try:
        quantize_jobs(config["quantize"])
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
