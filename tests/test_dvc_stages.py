"""scripts/dvc_stages.py: the committed dvc.yaml is what it writes from configs/ (one stage per config, named
after its run), a published run is split along git without a cached out holding git-tracked files, and bad
configs or git states are clear errors."""
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("dvc_stages", REPO / "scripts" / "dvc_stages.py")
dvc_stages = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(dvc_stages)


def committed() -> dict:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def test_committed_dvc_yaml_is_generated():
    """Edit a config (or add one) and dvc.yaml must be rewritten: python scripts/dvc_stages.py."""
    proc = subprocess.run([sys.executable, "scripts/dvc_stages.py", "--check"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, f"dvc.yaml is stale: run python scripts/dvc_stages.py\n{proc.stdout}{proc.stderr}"


def test_every_config_has_its_stage_and_every_stage_its_config():
    stages = committed()
    run_stages = {name: s for name, s in stages.items() if name != dvc_stages.LARGE_CORPUS_STAGE}
    configs = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "configs").glob("*.yaml"))
    # each config is the last --configfile of exactly one stage (configs/default.yaml: the stage without one)
    lasts = sorted(s["cmd"].split()[-1] if "--configfile" in s["cmd"] else dvc_stages.DEFAULT for s in run_stages.values())
    assert lasts == configs
    for name, stage in run_stages.items():
        files = stage["cmd"].split("--configfile")[1].split() if "--configfile" in stage["cmd"] else []
        config = dvc_stages.run_config(files)
        assert config["run_name"] == name
        assert stage["deps"][:len(files) + 1] == [dvc_stages.DEFAULT, *files]
        assert {"Snakefile", "workflow", "src/softpick", "data/tasks"} <= set(stage["deps"])
        outs = [next(iter(o)) for o in stage["outs"]]
        assert all(o.startswith((f"results/{name}", f"figures/{name}")) for o in outs), outs
        assert all(o[next(iter(o))]["persist"] for o in stage["outs"])  # dvc repro must not delete a run
    assert run_stages["tiny"]["cmd"] == "snakemake --cores all"
    assert run_stages["small-variants"]["cmd"].endswith("--configfile configs/small.yaml configs/small-variants.yaml")
    assert "data/corpus-large/corpus.jsonl.xz" in run_stages["small"]["deps"]
    assert "data/corpus/corpus.jsonl.xz" in run_stages["e2e-test"]["deps"]
    # the large corpus comes from the Snakemake rule that builds it
    smk = (REPO / "workflow" / "rules" / "data.smk").read_text()
    assert f'LARGE_CORPUS = "{dvc_stages.LARGE_CORPUS}"' in smk


def test_cached_outs_hold_no_git_tracked_file_and_git_files_are_outs():
    """DVC refuses a cached out that git tracks files in; every git-tracked file of a run is in an out."""
    stages = committed()
    outs = {next(iter(o)): o[next(iter(o))] for s in stages.values() for o in s["outs"]}
    tracked = subprocess.run(["git", "ls-files", "--", "results", "figures"], cwd=REPO, capture_output=True,
                             text=True, check=True).stdout.split()
    cached = [p for p, o in outs.items() if o.get("cache", True)]
    assert [f for f in tracked for p in cached if f == p or f.startswith(p + "/")] == []
    runs = {name for name in stages}
    for f in tracked:
        if f.split("/")[1] in runs:
            assert any(f == p or f.startswith(p + "/") for p in outs), f
    assert outs["figures/small"] == {"cache": False, "persist": True}
    assert outs["results/small/models/softpick"] == {"persist": True}  # the saved model: DVC's
    assert outs["results/small/data/manifest.json"] == {"cache": False, "persist": True}
    assert outs["results/small/data/tokens_train.npy"] == {"persist": True}


def test_split_outs_groups_by_label_and_keeps_saved_directories_whole():
    labels = {"results/r/eval/a.json": True, "results/r/eval/b.json": True, "results/r/data/manifest.json": True,
              "results/r/data/tokens.npy": False, "results/r/data/tokenizer/tokenizer.json": False,
              "results/r/models/v/model.safetensors": False, "results/r/models/v/config.json": False,
              "results/r/models/v.train_log.jsonl": True, "figures/r/f.png": True}
    atomic = {"results/r/models/v", "results/r/data/tokenizer"}
    outs = dvc_stages.split_outs(["results/r", "figures/r"], labels, atomic)
    assert outs == [("results/r/data/manifest.json", True), ("results/r/data/tokenizer", False),
                    ("results/r/data/tokens.npy", False), ("results/r/eval", True),
                    ("results/r/models/v", False), ("results/r/models/v.train_log.jsonl", True), ("figures/r", True)]
    # one label: the whole directory
    assert dvc_stages.split_outs(["results/r"], {"results/r/a/b": False, "results/r/c": False}, set()) == [("results/r", False)]
    # a saved directory never splits: git-tracked files in it are an error naming them
    labels["results/r/models/v/train_summary.json"] = True
    with pytest.raises(dvc_stages.StageError, match="results/r/models/v/train_summary.json.*git rm --cached"):
        dvc_stages.split_outs(["results/r"], labels, atomic)


def _configs(tmp_path: Path, **files: str) -> Path:
    (tmp_path / "configs").mkdir()
    for name, text in files.items():
        (tmp_path / "configs" / f"{name}.yaml").write_text(text)
    return tmp_path


def test_config_files_come_from_the_usage_line(tmp_path):
    root = _configs(tmp_path, base="run_name: base\n",
                    layer="# Over base:\n#   snakemake --cores all --configfile configs/base.yaml configs/layer.yaml \\\n"
                          "#       --until analyze\nrun_name: layer\n",
                    alone="# no usage line\nrun_name: alone\n")
    assert dvc_stages.config_files("configs/layer.yaml", root) == ["configs/base.yaml", "configs/layer.yaml"]
    assert dvc_stages.config_files("configs/alone.yaml", root) == ["configs/alone.yaml"]
    assert dvc_stages.config_files(dvc_stages.DEFAULT, root) == []


@pytest.mark.parametrize("usage, message", [
    ("#   snakemake --cores all --configfile configs/other.yaml\n", "must end with the file itself"),
    ("#   snakemake --cores all --configfile configs/gone.yaml configs/bad.yaml\n", "configs/gone.yaml, which does not exist"),
    ("#   snakemake --cores all --configfile=configs/bad.yaml\n", "cannot read the config files"),
])
def test_bad_usage_line_names_the_file(tmp_path, usage, message):
    root = _configs(tmp_path, other="run_name: other\n", bad=usage + "run_name: bad\n")
    with pytest.raises(dvc_stages.StageError, match=f"configs/bad.yaml: .*{message}"):
        dvc_stages.config_files("configs/bad.yaml", root)


def test_check_mode_reports_a_stale_dvc_yaml(tmp_path, monkeypatch):
    monkeypatch.setattr(dvc_stages, "REPO", tmp_path)
    monkeypatch.setattr(dvc_stages, "render", lambda: "stages: {}\n")
    (tmp_path / "dvc.yaml").write_text("stages: {old: {}}\n")
    assert dvc_stages.main(["--check"]) == 1
    assert dvc_stages.main([]) == 0 and (tmp_path / "dvc.yaml").read_text() == "stages: {}\n"
    assert dvc_stages.main(["--check"]) == 0


def test_duplicate_run_names_are_refused(tmp_path):
    root = _configs(tmp_path, default=(REPO / "configs" / "default.yaml").read_text(), twin="run_name: tiny\n")
    with pytest.raises(dvc_stages.StageError, match="configs/twin.yaml and configs/default.yaml both name the run 'tiny'"):
        dvc_stages.stages(root)

