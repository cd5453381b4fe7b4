"""Every stage, by name: what the command line (softpick.cli) and the Snakemake rules (workflow/scripts/stage.py)
run, and the code each one depends on (stage_code, for the rules' `code` inputs)."""
from __future__ import annotations

from pathlib import Path

from . import (analyze, data, dynamics, evaluate, figures, import_model, knockout, launch, mechanism, mechanism_figure,
               passkey, quantize, train, variants_table)
from .base import Stage
from .code import PACKAGE_DIR, code_files

REGISTRY: dict[str, Stage] = {m.STAGE.name: m.STAGE for m in (
    data, import_model, train, launch, evaluate, quantize, analyze, dynamics, knockout, passkey, figures,
    variants_table, mechanism, mechanism_figure)}


def get_stage(name: str) -> Stage:
    if name not in REGISTRY:
        raise ValueError(f"unknown stage {name!r}; expected one of {', '.join(REGISTRY)}")
    return REGISTRY[name]


def stage_for_rule(rule: str) -> Stage:
    """The stage a Snakemake rule runs (the rule's name, but import_model for `import`)."""
    found = [s for s in REGISTRY.values() if s.rule_name == rule]
    if not found:
        raise ValueError(f"rule {rule!r} runs no stage; the stages' rules: "
                         f"{', '.join(s.rule_name for s in REGISTRY.values() if s.rule_name)}")
    return found[0]


def stage_code(name: str, package_dir: str | Path = PACKAGE_DIR, root: str | Path | None = None) -> list[str]:
    """The code files of one stage (softpick.stages.code), relative to root (default: the checkout above
    package_dir's src/), as the rules list them. package_dir: the source tree read (the rules pass the
    working directory's src/softpick)."""
    package_dir = Path(package_dir).resolve()
    root = Path(root if root is not None else package_dir.parents[1]).resolve()
    files = code_files([get_stage(name).module], package_dir)
    return [p.relative_to(root).as_posix() if p.is_relative_to(root) else str(p) for p in files]
