"""Remote code beside an exported model, as custom models on the Hugging Face Hub ship it.

`save_remote_code(model_dir)` writes the modeling code into the model directory and adds `auto_map`
to its config.json, so that in a process without this project

    AutoModelForCausalLM.from_pretrained(model_dir, trust_remote_code=True)

loads the model. The files are generated from this package's source at export time (never a kept
copy): softpick.model and every module it imports relatively, followed recursively (the attention
dispatch, the reference, the fused torch path and any attention kind added later), each written as
one flat module (softpick.attention.reference -> softpick_attention_reference.py) with its relative
imports rewritten to the flat names. transformers copies relatively imported files along with the
modeling file. The Triton kernels stay out: their imports become `raise ImportError(...)`, which the
dispatch already treats as "Triton not available" (the torch path runs).
"""
from __future__ import annotations

import ast
import json
from importlib.util import find_spec
from pathlib import Path

from .atomic import write_bytes_atomic

ROOT_MODULE = "softpick.model"
MODELING_FILE = "modeling_softpick"  # the transformers convention: modeling_<name>.py
EXCLUDED = ("softpick.attention.triton",)  # CUDA kernels: installed package only
AUTO_MAP = {"AutoConfig": f"{MODELING_FILE}.SoftpickConfig",
            "AutoModelForCausalLM": f"{MODELING_FILE}.SoftpickForCausalLM"}


def flat_name(module: str) -> str:
    return MODELING_FILE if module == ROOT_MODULE else module.replace(".", "_")


def _source(module: str) -> tuple[Path, bool]:
    spec = find_spec(module)
    if spec is None or spec.origin is None:
        raise ImportError(f"cannot export {module}: not found")
    return Path(spec.origin), spec.submodule_search_locations is not None


def _excluded(module: str) -> bool:
    return any(module == e or module.startswith(e + ".") for e in EXCLUDED)


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str | None:
    """The absolute module a `from ... import` names (None for imports outside the softpick package)."""
    if node.level == 0:
        return node.module if node.module and node.module.split(".")[0] == "softpick" else None
    parts = module.split(".") if is_package else module.split(".")[:-1]
    base = parts[: len(parts) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imported_modules(node: ast.ImportFrom, target: str) -> list[tuple[str, str | None]]:
    """[(module, alias)] a statement binds as modules: `from . import x as y` binds the submodule x."""
    if node.module is not None or node.level == 0:
        return []
    return [(f"{target}.{a.name}", a.asname) for a in node.names if find_spec(f"{target}.{a.name}") is not None]


def _rewrite(node: ast.ImportFrom, target: str) -> str:
    if _excluded(target):
        return f"raise ImportError({target + ' is not exported with the model; install softpick for it'!r})"
    names = ", ".join(a.name + (f" as {a.asname}" if a.asname else "") for a in node.names)
    submodules = _imported_modules(node, target)
    if submodules:
        if any(_excluded(m) for m, _ in submodules):
            return f"raise ImportError({submodules[0][0] + ' is not exported with the model'!r})"
        # transformers copies only the files named in `from .<file> import ...`: name each one that way,
        # then bind the module itself
        return "\n".join(f"from .{flat_name(m)} import __name__ as _{flat_name(m)}_name\n"
                         f"from . import {flat_name(m)} as {alias or m.rsplit('.', 1)[1]}" for m, alias in submodules)
    return f"from .{flat_name(target)} import {names}"


def flatten_module(module: str) -> tuple[str, list[str]]:
    """(the module's source with softpick imports rewritten to flat names, the softpick modules it needs)."""
    path, is_package = _source(module)
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    needed: list[str] = []
    edits = []
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "softpick" for a in node.names):
            raise ValueError(f"{path}:{node.lineno}: `import softpick...` cannot be exported; use a relative import")
        if not isinstance(node, ast.ImportFrom):
            continue
        target = _absolute(node, module, is_package)
        if target is None:
            continue
        deps = [m for m, _ in _imported_modules(node, target)] or [target]
        needed += [m for m in deps if not _excluded(m)]
        edits.append((node.lineno, node.end_lineno, node.col_offset, _rewrite(node, target)))
    for start, end, col, new in sorted(edits, reverse=True):
        first = lines[start - 1]
        if first[:col].strip():
            raise ValueError(f"{path}:{start}: an import after other code on one line cannot be exported")
        lines[start - 1:end] = [first[:col] + new.replace("\n", "\n" + first[:col]) + "\n"]
    header = f"# Generated from {module} by softpick.hf_export at export time; do not edit.\n"
    return header + "".join(lines), needed


def remote_code_files() -> dict[str, str]:
    """{file name: source} of softpick.model and everything it imports from the package."""
    files: dict[str, str] = {}
    todo, seen = [ROOT_MODULE], set()
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        text, needed = flatten_module(module)
        files[flat_name(module) + ".py"] = text
        todo += needed
    return files


def save_remote_code(model_dir: str | Path) -> list[str]:
    """Write the flat modeling modules into model_dir and `auto_map` into its config.json; returns the files."""
    model_dir = Path(model_dir)
    config_path = model_dir / "config.json"
    if not config_path.exists():
        raise FileNotFoundError(f"{config_path} is missing: save_pretrained the model first")
    files = remote_code_files()
    for name, text in files.items():
        write_bytes_atomic(model_dir / name, text.encode("utf-8"))
    config = json.loads(config_path.read_text())
    config["auto_map"] = AUTO_MAP
    write_bytes_atomic(config_path, (json.dumps(config, indent=2, sort_keys=True) + "\n").encode("utf-8"))
    return sorted(files)
