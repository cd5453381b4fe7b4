"""The code each stage runs, derived from its imports (what the Snakemake rules list as `code` inputs).

A stage's code is its stage module plus every softpick module it imports, transitively: every import
statement is read with ast (module level and inside functions; `if TYPE_CHECKING:` blocks are skipped),
relative and absolute softpick imports alike, and the package __init__ of every subpackage on the way
(Python runs it), except the packages holding the importing module itself (stages/__init__.py, the
registry, imports every stage module: each stage would depend on all of them). softpick/__init__.py itself is left out: every module imports it (it holds the version
and the transformers registration), so listing it would make each of its edits rerun the whole DAG.
Besides its imports, a module lists the other package files it reads at run time in a module-level
tuple PACKAGE_FILES of globs relative to the package directory (evaluate.py: the lm-eval task YAMLs;
figures/registry.py: the figure modules it imports by name, which are then followed like imports);
those of every module in the closure count, with symlinks resolved.

    python -c "from softpick.stages.registry import stage_code; print(stage_code('train'))"

This module imports nothing of softpick (softpick.checkpoint fingerprints the train stage's code with it).
"""
from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

PACKAGE = "softpick"
PACKAGE_DIR = Path(__file__).resolve().parents[1]


def module_files(package_dir: Path = PACKAGE_DIR) -> dict[str, Path]:
    """Dotted module name -> source file of every module of the package (packages: their __init__.py)."""
    package_dir = Path(package_dir)
    found = {}
    for path in sorted(package_dir.rglob("*.py")):
        rel = path.relative_to(package_dir)
        if "__pycache__" in rel.parts or not all(part.isidentifier() for part in rel.parts[:-1]):
            continue
        parts = list(rel.with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join([PACKAGE, *parts])] = path
    return found


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _statements(tree: ast.Module, top_level_only: bool):
    """Import statements that run: all of them, or only those at module level (not in a def / class body)."""
    todo = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            todo.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
            continue
        if top_level_only and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            continue
        todo.extend(ast.iter_child_nodes(node))


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module name of a (possibly relative) `from X import ...`."""
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


@lru_cache(maxsize=4096)
def _parse(path: str, mtime_ns: int, size: int) -> ast.Module:
    return ast.parse(Path(path).read_text(encoding="utf-8"), filename=path)


def parse(path: Path) -> ast.Module:
    """The file's syntax tree (cached per file version)."""
    st = path.stat()
    return _parse(str(path), st.st_mtime_ns, st.st_size)


def imported_modules(module: str, files: dict[str, Path], *, top_level_only: bool = False) -> set[str]:
    """The softpick modules `module` imports (with the subpackages on the way, except its own packages)."""
    path = files[module]
    tree = parse(path)
    is_package = path.name == "__init__.py"
    names = set()
    for node in _statements(tree, top_level_only):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
            continue
        target = _resolve(module, is_package, node)
        names.add(target)
        names.update(f"{target}.{alias.name}" for alias in node.names)  # `from pkg import submodule`
    parts = module.split(".")
    containers = {".".join(parts[:i]) for i in range(1, len(parts) + 1)}  # module and its own packages
    found = set()
    for name in names:
        parts = name.split(".")
        if parts[0] != PACKAGE:
            continue
        for i in range(2, len(parts) + 1):  # each subpackage on the way runs its __init__
            prefix = ".".join(parts[:i])
            if prefix in files and prefix not in containers:
                found.add(prefix)
    return found


def import_graph(package_dir: Path = PACKAGE_DIR, *, top_level_only: bool = False) -> dict[str, set[str]]:
    """module -> the softpick modules it imports (top_level_only: only imports that run when it is imported)."""
    files = module_files(package_dir)
    return {m: imported_modules(m, files, top_level_only=top_level_only) for m in files}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle [a, b, ..., a] of the graph, or None."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def closure(modules: set[str] | list[str], graph: dict[str, set[str]]) -> set[str]:
    """modules and everything they import, transitively."""
    seen, todo = set(), list(modules)
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo.extend(graph.get(m, ()))
    return seen


def package_files(path: Path) -> tuple[str, ...]:
    """The module-level PACKAGE_FILES tuple of globs of a module (() when it has none)."""
    for node in parse(path).body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        if any(isinstance(t, ast.Name) and t.id == "PACKAGE_FILES" for t in targets):
            value = ast.literal_eval(node.value)
            if not (isinstance(value, tuple) and all(isinstance(v, str) for v in value)):
                raise ValueError(f"{path}: PACKAGE_FILES must be a tuple of glob strings, got {value!r}")
            return value
    return ()


def code_files(modules: list[str], package_dir: Path = PACKAGE_DIR) -> list[Path]:
    """Source files of `modules` and their imports, plus the package files they declare, sorted, resolved."""
    package_dir = Path(package_dir)
    files = module_files(package_dir)
    unknown = [m for m in modules if m not in files]
    if unknown:
        raise ValueError(f"no module {', '.join(unknown)} under {package_dir}")
    graph = import_graph(package_dir)
    by_file = {path.resolve(): module for module, path in files.items()}
    out: set[Path] = set()
    todo, seen = set(modules), set()
    while todo:  # the closure, grown by the modules PACKAGE_FILES names
        new = closure(todo, graph) - seen - {PACKAGE}
        seen |= new
        todo = set()
        for module in new:
            out.add(files[module].resolve())
            for pattern in package_files(files[module]):
                matched = [p.resolve() for p in sorted(package_dir.glob(pattern)) if p.is_file()]
                if not matched:
                    raise ValueError(f"{files[module]}: PACKAGE_FILES glob {pattern!r} matches nothing under {package_dir}")
                out.update(matched)
                todo |= {by_file[p] for p in matched if p in by_file} - seen
    return sorted(out)
