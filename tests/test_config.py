"""Config loading and validation: errors name the bad key before any work starts."""
import subprocess
import sys

import pytest
import yaml

from softpick.config import ConfigError, load_config


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
