#!/usr/bin/env python
"""Write dvc.yaml from configs/: one DVC stage per run, whose command is that run's Snakemake DAG.

    python scripts/dvc_stages.py           # rewrite dvc.yaml
    python scripts/dvc_stages.py --check   # exit 1 (with a diff) when dvc.yaml differs from what it would write

DVC versions and shares whole runs (`dvc repro small`, `dvc pull small`, `dvc push`, `dvc status`, hashes in
dvc.lock); Snakemake stays the DAG inside a run and decides which of its jobs rerun. Every config file in
configs/ is one stage named after its run_name:

- cmd: `snakemake --cores all` with the config files the config's header names in its usage line
  (`#   snakemake --cores all --configfile configs/small.yaml configs/small-variants.yaml`: layered over
  small.yaml), else the file alone; configs/default.yaml (the tiny run) needs none.
- deps: configs/default.yaml and those files, the code (Snakefile, workflow/, src/softpick/), the corpus files
  the data stage reads (softpick.data.corpus_files, as the Snakefile) and the offline tasks (data/tasks/).
  data/corpus-large/corpus.jsonl.xz (not in git) is the out of its own stage, so `dvc repro small` builds
  it first and `dvc pull --with-deps small` fetches it.
- outs: results/<run> and figures/<run>, all `persist: true` (DVC must not delete them before the command:
  Snakemake reruns only what changed, and resumes training from the checkpoints .dvcignore keeps out).

A published run (git tracks some of its files, as results/small and figures/small) cannot have a cached out
that holds git-tracked files (DVC refuses them). Its two directories are split along git: every file of the
run's DAG (`snakemake --summary`) and every file git tracks under them is labelled git (tracked, or not
ignored by .gitignore) or DVC (ignored); a directory whose files share one label is one out, a mixed one is
split into its entries. Git's outs get `cache: false` (git stores and shares the bytes, dvc.lock still
hashes them, `dvc status` reports their edits); DVC's are cached and pushed. A saved model or tokenizer
directory (model.safetensors / tokenizer.json) holds files the DAG does not list (generated modeling code,
tokenizer files, manifest.json, snapshots/) and is never split: one holding git-tracked files is an error.
"""
from __future__ import annotations

import argparse
import difflib
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
DEFAULT = "configs/default.yaml"
CODE = ["Snakefile", "workflow", "src/softpick"]
TASKS = "data/tasks"
LARGE_CORPUS = "data/corpus-large/corpus.jsonl.xz"  # workflow/rules/data.smk: rule large_corpus
LARGE_CORPUS_STAGE = "corpus-large"
# a save_pretrained directory: more files than the DAG declares, loaded (and verified) as a whole
ATOMIC_MARKERS = ("model.safetensors", "tokenizer.json")
HEADER = ("# Written by scripts/dvc_stages.py from configs/*.yaml (do not edit: rerun the script; "
          "tests/test_dvc_stages.py checks it).\n# One stage per run: its Snakemake DAG, deps = configs + code + corpus, "
          "outs = results/<run>, figures/<run>.\n")
USAGE = re.compile(r"^#\s+snakemake\s.*?--configfile\s+(?P<files>[^\\#]+)")


class StageError(ValueError):
    """A config or the repository's git state that no consistent dvc.yaml can be written for."""


def config_files(path: str, root: Path = REPO) -> list[str]:
    """The --configfile list of a config's run: its header's usage line, else the file alone."""
    if path == DEFAULT:
        return []
    for line in (root / path).read_text().splitlines():
        if not line.startswith("#"):
            break
        if "--configfile" not in line:
            continue
        match = USAGE.match(line)
        files = match.group("files").split() if match else []
        if not files or not all(re.fullmatch(r"configs/[\w.-]+\.ya?ml", f) for f in files):
            raise StageError(f"{path}: cannot read the config files from its usage line {line!r} "
                             "(expected '#   snakemake ... --configfile configs/a.yaml [configs/b.yaml ...]')")
        if files[-1] != path:
            raise StageError(f"{path}: its usage line {line!r} must end with the file itself")
        missing = [f for f in files if not (root / f).is_file()]
        if missing:
            raise StageError(f"{path}: its usage line names {', '.join(missing)}, which does not exist")
        return files
    return [path]


def run_config(files: list[str], root: Path = REPO) -> dict:
    from softpick.config import load_config

    return load_config([root / f for f in files], base=root / DEFAULT)


def corpus_deps(config: dict, root: Path = REPO) -> list[str]:
    from softpick.data import corpus_files

    cwd = os.getcwd()
    os.chdir(root)  # corpus_files shows paths relative to the working directory
    try:
        paths = corpus_files(config["data"])
    finally:
        os.chdir(cwd)
    outside = [p for p in paths if Path(p).is_absolute()]
    if outside:
        raise StageError(f"config key 'data': corpus {outside[0]} is outside the repository; DVC stages "
                         "track files inside it")
    return paths


def git_lines(root: Path, *args: str, stdin: str | None = None) -> list[str]:
    proc = subprocess.run(["git", *args], cwd=root, input=stdin, capture_output=True, text=True)
    if proc.returncode not in (0, 1):  # check-ignore exits 1 when nothing is ignored
        raise StageError(f"git {' '.join(args)} failed: {proc.stderr.strip()}")
    return [line for line in proc.stdout.splitlines() if line]


def dag_files(files: list[str], root: Path = REPO) -> list[str]:
    """Every output file of the run's Snakemake DAG (no job runs)."""
    cmd = [sys.executable, "-m", "snakemake", "--summary", "--nolock", "--cores", "1"]
    if files:
        cmd += ["--configfile", *files]
    env = {**os.environ, "SOFTPICK_SKIP_DEVICE_CHECK": "1",  # a GPU run's DAG, listed on any machine
           "PYTHONPATH": os.pathsep.join([str(root / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise StageError(f"snakemake --summary {' '.join(files)} failed:\n{proc.stderr[-3000:]}")
    lines = proc.stdout.splitlines()
    return [line.split("\t")[0] for line in lines[1:] if line.strip()]


def split_outs(roots: list[str], labels: dict[str, bool], atomic: set[str]) -> list[tuple[str, bool]]:
    """Outs covering `roots`: (path, git?) with one label each; `labels` maps file -> tracked by git."""
    for d in sorted(atomic):
        in_git = sorted(f for f, git in labels.items() if git and f.startswith(d + "/"))
        if in_git:
            raise StageError(f"{d} is one saved directory for DVC but git tracks {', '.join(in_git)}: "
                             "untrack them (git rm --cached) and let .gitignore ignore them")

    def visit(path: str) -> list[tuple[str, bool]]:
        if path in labels:
            return [(path, labels[path])]
        under = {f: git for f, git in labels.items() if f.startswith(path + "/")}
        kinds = set(under.values())
        if len(kinds) == 1 or path in atomic:
            return [(path, kinds.pop())]
        children = sorted({path + "/" + f[len(path) + 1:].split("/")[0] for f in under})
        return [out for child in children for out in visit(child)]

    return [out for root in roots if any(f.startswith(root + "/") for f in labels) for out in visit(root)]


def run_outs(run: str, files: list[str], root: Path = REPO) -> list[tuple[str, bool]]:
    """(path, git?) outs of a run: its two directories, split along git when git tracks files in them."""
    roots = [f"results/{run}", f"figures/{run}"]
    tracked = set(git_lines(root, "ls-files", "--", *roots))
    if not tracked:
        return [(r, False) for r in roots]
    produced = [f for f in dag_files(files, root) if f.startswith(tuple(r + "/" for r in roots))]
    untracked = sorted(set(produced) - tracked)
    ignored = set(git_lines(root, "check-ignore", "--stdin", stdin="\n".join(untracked) + "\n")) if untracked else set()
    labels = {f: f not in ignored for f in sorted(tracked | set(produced))}
    atomic = {f.rsplit("/", 1)[0] for f in produced if f.rsplit("/", 1)[-1] in ATOMIC_MARKERS}
    return split_outs(roots, labels, atomic)


def out_entry(path: str, git: bool) -> dict:
    return {path: {"cache": False, "persist": True} if git else {"persist": True}}


def config_paths(root: Path = REPO) -> list[str]:
    """configs/default.yaml first, then the others by name."""
    others = sorted(p.relative_to(root).as_posix() for p in (root / "configs").glob("*.yaml"))
    return [DEFAULT] + [p for p in others if p != DEFAULT]


def stages(root: Path = REPO) -> dict:
    found: dict[str, tuple[str, list[str], dict]] = {}  # run -> (config path, its --configfile list, config)
    for path in config_paths(root):
        files = config_files(path, root)
        config = run_config(files, root)
        run = config["run_name"]
        if run in found:
            raise StageError(f"config key 'run_name': {path} and {found[run][0]} both name the run {run!r}")
        found[run] = (path, files, config)
    runs: dict[str, dict] = {}
    for run, (path, files, config) in found.items():
        cmd = "snakemake --cores all" + (" --configfile " + " ".join(files) if files else "")
        deps = [DEFAULT, *files, *CODE, *corpus_deps(config, root), TASKS]
        runs[run] = {"cmd": cmd, "deps": list(dict.fromkeys(deps)),
                     "outs": [out_entry(p, git) for p, git in run_outs(run, files, root)]}
    if LARGE_CORPUS_STAGE in runs:
        raise StageError(f"config key 'run_name': {LARGE_CORPUS_STAGE!r} is the stage of {LARGE_CORPUS}")
    corpus = {}
    if any(LARGE_CORPUS in s["deps"] for s in runs.values()):
        corpus[LARGE_CORPUS_STAGE] = {"cmd": f"snakemake --cores 1 {LARGE_CORPUS}",
                                      "deps": ["scripts/build_large_corpus.py"],
                                      "outs": [out_entry(LARGE_CORPUS, False)]}
    return {"stages": {**corpus, **runs}}


def render(root: Path = REPO) -> str:
    return HEADER + yaml.safe_dump(stages(root), sort_keys=False, width=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare with dvc.yaml instead of writing it")
    args = parser.parse_args(argv)
    try:
        text = render()
    except StageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    target = REPO / "dvc.yaml"
    if args.check:
        current = target.read_text() if target.exists() else ""
        if current != text:
            sys.stdout.writelines(difflib.unified_diff(current.splitlines(True), text.splitlines(True),
                                                       "dvc.yaml", "scripts/dvc_stages.py"))
            return 1
        return 0
    target.write_text(text)
    print(f"wrote {target.relative_to(REPO)}: {len(yaml.safe_load(text)['stages'])} stages")
    return 0


if __name__ == "__main__":
    sys.exit(main())
