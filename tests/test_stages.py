"""The stage registry (softpick.stages), the command line built from it, the code each stage runs derived
from its imports (softpick.stages.code) against what the Snakemake rules declare, and the import graph."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import softpick
from softpick import cli
from softpick.stages.code import closure, code_files, find_cycle, import_graph
from softpick.stages.registry import REGISTRY, stage_code, stage_for_rule

REPO = Path(__file__).resolve().parents[1]
# rules that run no stage: the second corpus (a script of scripts/), the multi-process train job's
# config file, the default target
NOT_STAGES = {"large_corpus": "scripts/build_large_corpus.py", "train_config": "a YAML file", "all": "the target"}


def rules() -> dict[str, str]:
    """rule name -> its text, from the Snakefile and workflow/rules/*.smk."""
    found = {}
    for path in [REPO / "Snakefile", *sorted((REPO / "workflow" / "rules").glob("*.smk"))]:
        text = path.read_text()
        heads = list(re.finditer(r"^(\s*)rule (\w+):", text, re.M))
        for head, nxt in zip(heads, heads[1:] + [None]):
            body = text[head.end(): nxt.start() if nxt else len(text)]
            found.setdefault(head.group(2), "")
            found[head.group(2)] += body  # train: one rule per process count
    return found


# ----------------------------------------------------------------------------- the registry and the rules
def test_registry_is_complete_against_the_rules():
    """Every rule that is not a helper runs one stage of the registry through workflow/scripts/stage.py
    (the multi-process train rule: `softpick launch`), with the stage's derived code as input; every stage
    but the command-line-only ones has its rule."""
    found = rules()
    assert set(NOT_STAGES) <= set(found)
    for rule, body in found.items():
        if rule in NOT_STAGES:
            assert "code(" not in body, rule
            continue
        stage = stage_for_rule(rule)
        assert f'code=code("{stage.name}")' in body, (rule, stage.name)
        assert '"../scripts/stage.py"' in body, rule
        if rule == "train":
            assert "-m softpick launch --config" in body  # train.gpus > 1: the launcher, then `softpick train`
    with_rules = {s.rule_name for s in REGISTRY.values() if not s.cli_only}
    assert with_rules == set(found) - set(NOT_STAGES)
    assert [s.name for s in REGISTRY.values() if s.cli_only] == ["launch"]
    assert stage_for_rule("import_model").name == "import"
    with pytest.raises(ValueError, match="rule 'large_corpus' runs no stage"):
        stage_for_rule("large_corpus")


def test_quantize_rule_has_its_own_file():
    assert "rule quantize:" in (REPO / "workflow" / "rules" / "quantize.smk").read_text()
    assert "rule quantize:" not in (REPO / "workflow" / "rules" / "evaluate.smk").read_text()
    assert 'include: "workflow/rules/quantize.smk"' in (REPO / "Snakefile").read_text()


def test_stage_declarations():
    for name, stage in REGISTRY.items():
        assert stage.name == name and stage.help and stage.module.startswith("softpick.stages.")
        assert set(stage.sections) <= set(softpick.config.load_config()) | {"models_from"}, name
    assert REGISTRY["quantize"].quantized and not REGISTRY["evaluate"].quantized
    assert not REGISTRY["figures"].variant and REGISTRY["mechanism"].variant and not REGISTRY["mechanism"].device


# ----------------------------------------------------------------------------- the command line
def _exit(argv, capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    out = capsys.readouterr()
    return exit_.value.code, out.out, out.err


def test_help_lists_every_stage(capsys):
    code, out, _ = _exit(["--help"], capsys)
    assert code == 0
    for name, stage in REGISTRY.items():
        assert re.search(rf"^    {name}\s", out, re.M), name
        code, stage_help, _ = _exit([name, "--help"], capsys)
        assert code == 0 and stage_help.startswith(f"usage: softpick {name}") and "--config" in stage_help
        assert ("--variant" in stage_help) == stage.variant and ("--bits" in stage_help) == stage.quantized
    launch_help = _exit(["launch", "--help"], capsys)[1]
    assert "--operational" in launch_help and "--dry-run" in launch_help


def test_version():
    proc = subprocess.run([sys.executable, "-m", "softpick", "--version"], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    assert proc.returncode == 0 and proc.stdout.strip() == f"softpick {softpick.__version__}", proc.stderr


@pytest.mark.parametrize("argv, message", [
    (["trian"], "argument STAGE: invalid choice: 'trian' (choose from 'data', 'import', 'train'"),
    (["evaluate", "--variant", "softpick", "--bogus"], "unrecognized arguments: --bogus"),
    (["figures", "--variant", "softpick"], "unrecognized arguments: --variant softpick"),
    (["launch", "--variant", "softpick", "--gpus", "two"], "argument --gpus: invalid int value: 'two'"),
    ([], "the following arguments are required: STAGE"),
])
def test_bad_stage_or_option_is_named(argv, message, capsys):
    code, _, err = _exit(argv, capsys)
    assert code == 2 and message in err, err


def test_bad_variant_and_job_are_named(capsys):
    assert cli.main(["mechanism", "--variant", "gated"]) == 2  # a kind the config does not run
    assert "softpick mechanism: error: --variant must be one of config 'variants'" in capsys.readouterr().err
    assert cli.main(["quantize", "--variant", "softpick", "--method", "gptq", "--bits", "4"]) == 2
    assert "must be one of the config's quantize jobs" in capsys.readouterr().err


def test_stage_prints_what_it_wrote(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    rc = cli.main(["data", "--set", "data.max_documents=6", "--set", "data.val_documents=2", "--set",
                   "data.val_fraction=null", "--set", "data.tokenizer.vocab_size=300"])
    out, err = capsys.readouterr()
    assert rc == 0, err[-3000:]
    wrote = {line.removeprefix("wrote ") for line in out.splitlines() if line.startswith("wrote ")}
    data = Path("results", "tiny", "data")
    assert {str(data / f) for f in ("manifest.json", "tokens_train.npy", "tokens_val.npy", "val_docs.jsonl",
                                    "tokenizer/tokenizer.json")} <= wrote
    assert all(Path(p).is_file() for p in wrote)


# ----------------------------------------------------------------------------- derived code
def test_derived_code_follows_the_imports():
    train, evaluate, data = (set(stage_code(s)) for s in ("train", "evaluate", "data"))
    lib = "src/softpick"
    assert {f"{lib}/train.py", f"{lib}/checkpoint.py", f"{lib}/model.py", f"{lib}/attention/triton/kernels.py",
            f"{lib}/attention/triton/ops.py", f"{lib}/stages/train.py"} <= train
    kinds = {f"{lib}/attention/kinds/{p.name}" for p in (REPO / lib / "attention" / "kinds").glob("*.py")}
    assert kinds <= train
    assert not any("lm_eval_tasks" in p or "/quantize/" in p or p.endswith("cli.py") for p in train)
    tasks = {f"{lib}/lm_eval_tasks/{p.name}" for p in (REPO / lib / "lm_eval_tasks").iterdir() if p.suffix in (".yaml", ".py")}
    assert tasks and tasks <= evaluate and f"{lib}/attention/triton/kernels.py" in evaluate
    assert f"{lib}/train.py" not in evaluate
    data_package = {f"{lib}/{p.relative_to(REPO / lib).as_posix()}" for p in (REPO / lib / "data").rglob("*.py")}
    schemas = {f"workflow/schemas/{p.name}" for p in (REPO / "workflow" / "schemas").glob("*.json")}
    assert data_package | schemas | {f"{lib}/stages/data.py", f"{lib}/schema.py"} <= data  # it validates its section
    assert not any(p.endswith(("model.py", "train.py", "evaluate.py")) or "/attention/" in p or "/quantize/" in p
                   for p in data), data
    assert tasks <= set(stage_code("quantize")) and f"{lib}/quantize/gptq.py" in stage_code("quantize")
    # the figure modules softpick.figures.registry imports by name (PACKAGE_FILES), and what they import
    figures = set(stage_code("figures"))
    assert {f"{lib}/figures/{p.name}" for p in (REPO / lib / "figures").glob("*.py")} <= figures
    assert f"{lib}/attention/kinds/softpick.py" in figures and f"{lib}/model.py" not in figures
    assert all((REPO / p).is_file() for s in REGISTRY for p in stage_code(s))


def _package(root: Path, files: dict[str, str]) -> Path:
    pkg = root / "softpick"
    for name, text in {"__init__.py": "from . import top\n", **files}.items():
        (pkg / name).parent.mkdir(parents=True, exist_ok=True)
        (pkg / name).write_text(text)
    return pkg


def test_walker_rules_on_a_small_package(tmp_path):
    """Function-level and absolute imports count, `if TYPE_CHECKING:` ones do not; a subpackage's __init__
    counts for what imports it, not for its own modules; softpick/__init__.py and PACKAGE_FILES."""
    pkg = _package(tmp_path, {
        "top.py": "",
        "a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import hidden\n"
                "def f():\n    import softpick.b\n    from .sub import c\n",
        "b.py": "PACKAGE_FILES = ('data/*.yaml',)\n",
        "hidden.py": "",
        "sub/__init__.py": "from . import c, d\n",
        "sub/c.py": "from .d import x\n",
        "sub/d.py": "x = 1\n",
        "data/t.yaml": "a: 1\n",
    })
    rel = lambda files: sorted(p.relative_to(pkg.resolve()).as_posix() for p in files)  # noqa: E731
    assert rel(code_files(["softpick.a"], pkg)) == ["a.py", "b.py", "data/t.yaml", "sub/__init__.py", "sub/c.py",
                                                    "sub/d.py"]
    assert rel(code_files(["softpick.sub.d"], pkg)) == ["sub/d.py"]  # not its own package's __init__
    (pkg / "b.py").write_text("PACKAGE_FILES = ('data/*.json',)\n")
    with pytest.raises(ValueError, match=r"b\.py: PACKAGE_FILES glob 'data/\*\.json' matches nothing"):
        code_files(["softpick.a"], pkg)
    with pytest.raises(ValueError, match="no module softpick.nope"):
        code_files(["softpick.nope"], pkg)


def test_cycle_finder_sees_a_planted_cycle(tmp_path):
    pkg = _package(tmp_path, {"top.py": "from .x import f\n", "x.py": "from .y import g\ndef f(): pass\n",
                              "y.py": "def g():\n    from .x import f\n"})
    assert find_cycle(import_graph(pkg, top_level_only=True)) is None
    assert find_cycle(import_graph(pkg)) == ["softpick.x", "softpick.y", "softpick.x"]
    (pkg / "y.py").write_text("from .top import f\ndef g(): pass\n")
    assert find_cycle(import_graph(pkg, top_level_only=True)) == ["softpick.top", "softpick.x", "softpick.y",
                                                                    "softpick.top"]


def test_no_import_cycle():
    """No module-level import cycle in src/softpick, and none of the ones there were through function-level
    imports: config / train / tracking, cli / mechanism, quantize.rtn / quantize.activation, model / hf_export."""
    assert find_cycle(import_graph(top_level_only=True)) is None
    graph = import_graph()
    for a, b in (("config", "train"), ("config", "tracking"), ("cli", "mechanism"), ("quantize.rtn", "quantize.activation"),
                 ("model", "hf_export"), ("config", "quantize"), ("evaluate", "config"), ("checkpoint", "stages.registry"),
                 ("config", "data")):
        a, b = f"softpick.{a}", f"softpick.{b}"
        assert not (b in closure({a}, graph) and a in closure({b}, graph)), (a, b)
    assert "softpick.train" not in closure({"softpick.config"}, graph)


# ----------------------------------------------------------------------------- Snakemake, on a finished DAG
def _snakemake(work: Path, *args: str) -> str:
    cmd = [sys.executable, "-m", "snakemake", "--cores", "1", "--configfile", "configs/test.yaml", *args]
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def _jobs(output: str) -> set[str]:
    if "Nothing to be done" in output:
        return set()
    table = output[output.index("Job stats:"):].split("total")[0]
    return {line.split()[0] for line in table.splitlines()[3:] if line.strip()}


def _set_mtime(path: Path, t: float) -> None:
    os.utime(path, (t, t))


def _dry_run_jobs(output: str) -> list[tuple[str, list[str], list[str]]]:
    """(rule, inputs, outputs) of every job a dry run lists."""
    jobs = []
    for block in re.split(r"^(?:local)?rule (?=\w+:$)", output, flags=re.M)[1:]:
        fields = dict(re.findall(r"^    (input|output): (.*)$", block, re.M))
        jobs.append((block.split(":")[0], *(fields.get(k, "").split(", ") if fields.get(k) else [] for k in ("input", "output"))))
    return jobs


@pytest.fixture(scope="module")
def finished_dag(tmp_path_factory):
    """configs/test.yaml's DAG in a scratch copy: its jobs (a forced dry run), then every output present and
    newer than every input (empty files: nothing runs)."""
    work = tmp_path_factory.mktemp("dag")
    for name in ("Snakefile", "workflow", "configs", "data"):
        os.symlink(REPO / name, work / name)
    shutil.copytree(REPO / "src", work / "src", ignore=shutil.ignore_patterns("__pycache__"))
    t = time.time()
    for path in (work / "src").rglob("*"):
        _set_mtime(path, t - 100)
    jobs = _dry_run_jobs(_snakemake(work, "-n", "--forceall"))
    for out in (o for _, _, outputs in jobs for o in outputs):
        (work / out).parent.mkdir(parents=True, exist_ok=True)
        (work / out).touch()
        _set_mtime(work / out, t)
    return work, t, jobs


@pytest.mark.slow
def test_rules_declare_the_derived_code(finished_dag):
    work, _, jobs = finished_dag
    seen = set()
    for rule, inputs, outputs in jobs:
        declared = {p for p in inputs if p.startswith("src/")}
        if rule in NOT_STAGES:
            assert not declared, rule
            continue
        assert declared == set(stage_code(stage_for_rule(rule).name, work / "src" / "softpick")), (rule, outputs)
        seen.add(rule)
    assert seen == {"data", "train", "evaluate", "quantize", "analyze", "dynamics", "knockout", "passkey", "figures",
                    "variants_table", "mechanism", "mechanism_figure"}


@pytest.mark.slow
def test_editing_a_kernel_or_a_task_file_reruns_exactly_its_dependents(finished_dag):
    work, t, _ = finished_dag
    assert _jobs(_snakemake(work, "-n")) == set()
    kernels = work / "src" / "softpick" / "attention" / "triton" / "kernels.py"
    _set_mtime(kernels, t + 100)
    assert _jobs(_snakemake(work, "-n")) == {"train", "evaluate", "quantize", "analyze", "dynamics", "knockout",
                                             "passkey", "mechanism", "mechanism_figure", "figures", "variants_table",
                                             "all"}
    _set_mtime(kernels, t - 100)
    task = work / "src" / "softpick" / "lm_eval_tasks" / "arc_easy.yaml"
    _set_mtime(task, t + 100)
    assert _jobs(_snakemake(work, "-n")) == {"evaluate", "quantize", "figures", "all"}
    _set_mtime(task, t - 100)
