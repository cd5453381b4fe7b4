"""Config loading and validation: errors name the bad key before any work starts."""
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from softpick.config import ConfigError, load_config

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path, data, name="override.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def test_default_config_is_valid():
    config = load_config()
    assert config["run_name"] == "tiny"
    assert config["variants"] == ["softmax", "softpick"]


def test_override_file_merges_deeply(tmp_path):
    config = load_config([write(tmp_path, {"train": {"max_steps": 7}})])
    assert config["train"]["max_steps"] == 7
    assert config["train"]["lr"] == load_config()["train"]["lr"]  # untouched siblings survive


def test_unknown_key_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown config key 'train\.learning_rate'"):
        load_config([write(tmp_path, {"train": {"learning_rate": 1e-3}})])


def test_wrong_type_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"config key 'train\.lr': 'fast' is not of type 'number'"):
        load_config([write(tmp_path, {"train": {"lr": "fast"}})])


def test_wrong_enum_value_is_named():
    with pytest.raises(ConfigError, match=r"config key 'variants\.1'"):
        load_config(overrides=["variants=[softmax, sparsemax]"])


def test_batch_divisibility_checked():
    with pytest.raises(ConfigError, match="global_batch_size"):
        load_config(overrides=["train.global_batch_size=10", "train.micro_batch_size=4"])


def test_missing_config_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does-not-exist.yaml"):
        load_config([tmp_path / "does-not-exist.yaml"])


def test_cli_reports_config_error_without_traceback(tmp_path):
    bad = write(tmp_path, {"model": {"hidden_size": "big"}})
    proc = subprocess.run([sys.executable, "-m", "softpick", "data", "--config", str(bad)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "model.hidden_size" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("override, message", [
    ("train.nodes=0", r"config key 'train\.nodes': 0 is less than the minimum of 1"),
    ("train.nodes=two", r"config key 'train\.nodes': 'two' is not of type 'integer'"),
    ("train.rdzv_port=70000", r"config key 'train\.rdzv_port': 70000 is greater than the maximum"),
    ("train.wandb={entity: me}", r"config section 'train\.wandb' is missing a key: 'project'"),
    ("train.wandb={project: p, team: t}", r"unknown config key 'train\.wandb\.team'"),
    ("train.wandb={project: p, mode: sometimes}", r"config key 'train\.wandb\.mode'"),
    ("train.wandb=softpick", r"config key 'train\.wandb': 'softpick' is not of type 'object', 'null'"),
])
def test_multinode_and_wandb_keys_are_checked(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=[override])


def test_multinode_and_wandb_defaults():
    import json

    train = load_config()["train"]
    assert (train["nodes"], train["rdzv_port"], train["wandb"]) == (1, 29500, None)
    wandb = {"project": "softpick", "entity": None, "name": "run-1", "mode": "offline"}
    assert load_config(overrides=[f"train.wandb={json.dumps(wandb)}", "train.nodes=4"])["train"]["wandb"] == wandb


# ----------------------------------------------------------------------------- YAML errors (issue 15)
def test_duplicate_key_is_refused_naming_file_line_and_key(tmp_path):
    """A second `train:` section silently dropped the first's max_steps (PyYAML keeps the last key)."""
    path = tmp_path / "dup.yaml"
    path.write_text("train:\n  max_steps: 7\nseed: 1\ntrain:\n  lr: 0.001\n")
    with pytest.raises(ConfigError, match=rf"{path}:4: invalid YAML: duplicate key 'train' \(first given on line 1\)"):
        load_config([path])
    nested = tmp_path / "nested.yaml"
    nested.write_text("train:\n  lr: 0.1\n  max_steps: 3\n  lr: 0.2\n")
    with pytest.raises(ConfigError, match=rf"{nested}:4: invalid YAML: duplicate key 'lr'"):
        load_config([nested])


def test_yaml_merge_keys_still_override():
    from softpick.config import load_yaml

    assert load_yaml("a: &x {p: 1, q: 2}\nb:\n  <<: *x\n  p: 3\n", "f") == {"a": {"p": 1, "q": 2}, "b": {"p": 3, "q": 2}}


@pytest.mark.parametrize("override, message", [
    ("train.lr=[1,", r"override 'train\.lr=\[1,': invalid YAML: while parsing a flow"),
    ("train.wandb={project: a, project: b}", r"override 'train\.wandb=.*': invalid YAML: duplicate key 'project'"),
    ("train..lr=1", r"override 'train\.\.lr=1': 'train\.\.lr' is not a key path"),
    ("train.lr.x=1", r"override 'train\.lr\.x=1': 'train\.lr' is a value, not a section"),
])
def test_bad_override_is_named(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=[override])


def test_malformed_yaml_file_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  max_steps: 5\n  lr 0.1: x: y\n")
    with pytest.raises(ConfigError, match=rf"{bad}:3: invalid YAML: .*mapping values are not allowed here"):
        load_config([bad])


@pytest.mark.parametrize("args", [["--config", "bad.yaml"], ["--set", "train.lr=[1,"]])
def test_cli_yaml_errors_are_one_line_exit_2(tmp_path, args):
    """Before: a raw PyYAML traceback (exit 1)."""
    (tmp_path / "bad.yaml").write_text("train:\n  max_steps: 5\n  lr 0.1: x: y\n")
    proc = subprocess.run([sys.executable, "-m", "softpick", "data", *args], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    where = "bad.yaml:3" if args[0] == "--config" else "override 'train.lr=[1,'"
    assert f"softpick data: error: {where}: invalid YAML: " in proc.stderr, proc.stderr


def test_snakefile_refuses_a_duplicate_key_in_a_configfile(tmp_path):
    """Snakemake reads --configfile with a loader that keeps the last duplicate: the Snakefile parses the
    files again and stops before any job, naming file, line and key."""
    dup = tmp_path / "dup.yaml"
    dup.write_text("run_name: dup-test\ntrain:\n  max_steps: 7\nseed: 1\ntrain:\n  lr: 0.001\n")
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--configfile",
                           "configs/default.yaml", str(dup)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0, proc.stdout[-2000:]
    assert f"{dup}:5: invalid YAML: duplicate key 'train' (first given on line 2)" in proc.stdout + proc.stderr


# ----------------------------------------------------------------------------- eval vs train length (issue 15)
def test_eval_longer_than_training_is_refused_naming_both_keys():
    """configs/test.yaml evaluated at 256 tokens a model trained (and sized) for 64."""
    with pytest.raises(ConfigError, match=r"config key 'eval\.max_length' \(256\) must not exceed "
                                          r"'train\.seq_len' \(64\)"):
        load_config(overrides=["train.seq_len=64", "eval.max_length=256"])
    config = load_config(overrides=["train.seq_len=64", "eval.max_length=64"])  # equal is fine
    assert (config["train"]["seq_len"], config["eval"]["max_length"]) == (64, 64)


def _dvc_stages():
    """scripts/dvc_stages.py, which reads each config's --configfile list from its header's usage line."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("dvc_stages", REPO / "scripts" / "dvc_stages.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "configs").glob("*.yaml")))
def test_every_shipped_config_is_valid(name):
    """Each file of configs/ merged over configs/default.yaml, after the files its header runs it on (an
    overlay such as small-seed2.yaml goes over small.yaml), as Snakemake merges --configfile files over the
    Snakefile's configfile, passes validation."""
    stages = _dvc_stages()
    config = stages.run_config(stages.config_files(f"configs/{name}"))
    assert config["eval"]["max_length"] <= config["train"]["seq_len"]
