"""Resume after an edit: a checkpoint is reused only when its fingerprint matches the run's;
corrupt newest checkpoints fall back to an older one (issue 9, items 1 and 3)."""
import copy
import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from softpick.train import list_checkpoints, train

REPO = Path(__file__).resolve().parents[1]


def weights(model_dir):
    return load_file(str(model_dir / "model.safetensors"))


def same_weights(a, b) -> bool:
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def ckpt_dir(model_dir: Path) -> Path:
    return model_dir.parent / f"{model_dir.name}.checkpoints"


def test_lr_change_retrains_from_scratch(tiny_config, tiny_data_dir, tmp_path, capfd):
    run = tmp_path / "run" / "softpick"
    train(tiny_config, "softpick", tiny_data_dir, run)
    old = tmp_path / "old"
    shutil.copytree(run, old)
    capfd.readouterr()
    edited = copy.deepcopy(tiny_config)
    edited["train"]["lr"] = 5e-3
    train(edited, "softpick", tiny_data_dir, run)  # what Snakemake reruns after the edit
    err = capfd.readouterr().err
    fresh = tmp_path / "fresh" / "softpick"
    train(edited, "softpick", tiny_data_dir, fresh)
    assert not same_weights(run, old), "the rerun exported the old model"
    assert same_weights(run, fresh)
    assert re.search(r"starting fresh \(fingerprint \w+\): fingerprint differs in train\.lr \(0\.01 -> 0\.005\)", err), err
    # the old checkpoints were moved aside, one stale set only
    stale = sorted(p.name for p in run.parent.glob("softpick.checkpoints.stale-*"))
    assert len(stale) == 1 and list_checkpoints(run.parent / stale[0])
    steps = [json.loads(l)["step"] for l in (run / "train_log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 13))  # the old run's records were dropped


def test_model_shape_change_starts_fresh(tiny_config, tiny_data_dir, tmp_path, capfd):
    run = tmp_path / "run" / "softmax"
    train(tiny_config, "softmax", tiny_data_dir, run, stop_after=4)  # a checkpoint at step 3
    edited = copy.deepcopy(tiny_config)
    edited["model"]["intermediate_size"] = 48
    capfd.readouterr()
    train(edited, "softmax", tiny_data_dir, run)  # no size-mismatch traceback
    assert "fingerprint differs in model.intermediate_size (64 -> 48)" in capfd.readouterr().err
    fresh = tmp_path / "fresh" / "softmax"
    train(edited, "softmax", tiny_data_dir, fresh)
    assert same_weights(run, fresh)
    assert weights(run)["model.layers.0.mlp.up_proj.weight"].shape == (48, 32)


def test_data_manifest_change_starts_fresh(tiny_config, tiny_data_dir, tmp_path, capfd):
    data = tmp_path / "data"
    shutil.copytree(tiny_data_dir, data)
    run = tmp_path / "run" / "softpick"
    train(tiny_config, "softpick", data, run, stop_after=4)
    manifest = data / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"seed": 0', '"seed": 1'))  # another data stage's output
    capfd.readouterr()
    train(tiny_config, "softpick", data, run, stop_after=1)
    assert "fingerprint differs in the data manifest" in capfd.readouterr().err


def test_matching_fingerprint_resumes_and_says_so(tiny_config, tiny_data_dir, tmp_path, capfd):
    run = tmp_path / "run" / "softpick"
    train(tiny_config, "softpick", tiny_data_dir, run, stop_after=5)
    assert re.search(r"starting fresh \(fingerprint \w+\): no checkpoint in ", capfd.readouterr().err)
    operational = copy.deepcopy(tiny_config)
    operational["train"].update(gpus=1, peak_tflops=100.0, rdzv_port=1234)  # do not change the weights
    train(operational, "softpick", tiny_data_dir, run)
    assert re.search(r"resuming from step 3 \(fingerprint \w{12}, ", capfd.readouterr().err)
    straight = tmp_path / "straight" / "softpick"
    train(tiny_config, "softpick", tiny_data_dir, straight)
    assert same_weights(run, straight)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "missing"])
def test_corrupt_newest_checkpoint_falls_back_to_older(tiny_config, tiny_data_dir, tmp_path, capfd, damage):
    straight = tmp_path / "straight" / "softpick"
    train(tiny_config, "softpick", tiny_data_dir, straight)
    run = tmp_path / "run" / "softpick"
    train(tiny_config, "softpick", tiny_data_dir, run, stop_after=7)  # checkpoints at steps 3 and 6
    newest = list_checkpoints(ckpt_dir(run))[-1]
    assert newest.name == "step_00000006"
    state = newest / "state.pt"
    if damage == "truncated":
        state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    elif damage == "garbage":
        state.write_bytes(b"\x00garbage" * 1000)
    else:
        state.unlink()
    capfd.readouterr()
    train(tiny_config, "softpick", tiny_data_dir, run)
    err = capfd.readouterr().err
    assert re.search(r"warning: checkpoint \S+step_00000006 is corrupt: \S+state\.pt", err), err
    assert "resuming from step 3" in err
    assert same_weights(run, straight)


def test_no_loadable_checkpoint_starts_fresh_with_warning(tiny_config, tiny_data_dir, tmp_path, capfd):
    straight = tmp_path / "straight" / "softmax"
    train(tiny_config, "softmax", tiny_data_dir, straight)
    run = tmp_path / "run" / "softmax"
    train(tiny_config, "softmax", tiny_data_dir, run, stop_after=7)
    for ckpt in list_checkpoints(ckpt_dir(run)):
        (ckpt / "state.pt").write_bytes(b"not a checkpoint")
    capfd.readouterr()
    train(tiny_config, "softmax", tiny_data_dir, run)
    err = capfd.readouterr().err
    assert err.count("is corrupt") == 2 and "warning: starting fresh" in err and "loads" in err, err
    assert same_weights(run, straight)


def test_code_edit_changes_the_fingerprint(tiny_config, tiny_data_dir, tmp_path):
    """An edit of any file the training runs (here model.py in a copy of the package) is seen."""
    from softpick.checkpoint import PACKAGE_DIR, differences, fingerprint

    pkg = tmp_path / "softpick"
    shutil.copytree(PACKAGE_DIR, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    before = fingerprint(tiny_config, "softpick", tiny_data_dir, code_root=pkg)
    assert before == fingerprint(tiny_config, "softpick", tiny_data_dir, code_root=pkg)
    (pkg / "model.py").write_text((pkg / "model.py").read_text() + "\n# edited\n")
    after = fingerprint(tiny_config, "softpick", tiny_data_dir, code_root=pkg)
    assert before["fingerprint"] != after["fingerprint"]
    assert differences(before["inputs"], after["inputs"]) == ["code softpick/model.py"]
    assert fingerprint(tiny_config, "softmax", tiny_data_dir, code_root=pkg)["fingerprint"] != after["fingerprint"]


def test_fingerprint_covers_the_code_snakemake_reruns_train_for():
    """Every file whose edit reruns the train rule (common.smk CODE train + model) is in the fingerprint,
    so a rerun Snakemake starts because of a code edit never resumes the old training."""
    from softpick.checkpoint import PACKAGE_DIR, training_code_files

    text = (REPO / "workflow" / "rules" / "common.smk").read_text()
    listed = set()
    for stage in ("train", "model"):
        entry = re.search(rf'"{stage}": \[(.*?)\]', text).group(1)
        listed |= {m for m in re.findall(r'\{LIB\}/([\w/.]+)"', entry)}
    assert "checkpoint.py" in listed
    fingerprinted = {p.relative_to(PACKAGE_DIR).as_posix() for p in training_code_files()}
    assert listed <= fingerprinted, listed - fingerprinted
