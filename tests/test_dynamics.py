"""Weight snapshots during training (train.snapshot_every) and the dynamics stage that measures them."""
import copy
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from softpick.analysis import analyze_model
from softpick.data import load_tokens
from softpick.dynamics import SnapshotError, list_snapshots, load_snapshot, measure_snapshot, run_dynamics
from softpick.train import train
from softpick.train_export import snapshot_steps


def _config(tiny_config, every=4):
    config = copy.deepcopy(tiny_config)
    config["train"]["snapshot_every"] = every
    config["dynamics"] = {"num_docs": 3, "lengths": [8, 16]}
    config["analysis"].update(num_docs=3, max_len=24, batch_size=2)
    return config


def test_snapshot_steps():
    assert snapshot_steps({"max_steps": 12, "snapshot_every": 4}) == [0, 4, 8, 12]
    assert snapshot_steps({"max_steps": 10, "snapshot_every": 4}) == [0, 4, 8, 10]
    assert snapshot_steps({"max_steps": 10, "snapshot_every": 0}) == []
    assert snapshot_steps({"max_steps": 10}) == []


def test_snapshots_exported_and_survive_a_resume(tiny_config, tiny_data_dir, tmp_path):
    config = _config(tiny_config)
    straight = tmp_path / "straight" / "softpick"
    train(config, "softpick", tiny_data_dir, straight)
    index = json.loads((straight / "snapshots.json").read_text())
    assert [s["step"] for s in index["snapshots"]] == [0, 4, 8, 12]
    assert [s["tokens"] for s in index["snapshots"]] == [s * 4 * 32 for s in (0, 4, 8, 12)]
    final, last = load_file(str(straight / "model.safetensors")), load_file(str(straight / index["snapshots"][-1]["file"]))
    assert final.keys() == last.keys() and all(torch.equal(final[k], last[k]) for k in final)
    first = load_file(str(straight / index["snapshots"][0]["file"]))
    assert not all(torch.equal(first[k], final[k]) for k in final)  # step 0 is the initialisation
    # killed after 6 steps (checkpoint at 3, snapshot at 4 written after it), then resumed: the same files
    resumed = tmp_path / "resumed" / "softpick"
    train(config, "softpick", tiny_data_dir, resumed, stop_after=6)
    train(config, "softpick", tiny_data_dir, resumed)
    again = json.loads((resumed / "snapshots.json").read_text())
    assert [s["sha256"] for s in again["snapshots"]] == [s["sha256"] for s in index["snapshots"]]
    assert oct((resumed / index["snapshots"][1]["file"]).stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask():
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.fixture
def trained(tiny_config, tiny_data_dir, tmp_path):
    config = _config(tiny_config, every=6)
    out = tmp_path / "models" / "softmax"
    train(config, "softmax", tiny_data_dir, out)
    return config, out


def test_dynamics_measures_every_snapshot_like_the_analysis(trained, tiny_data_dir, tmp_path):
    config, model_dir = trained
    out = run_dynamics(model_dir, tiny_data_dir, config, tmp_path / "dyn.json", progress=False)
    assert [r["step"] for r in out["snapshots"]] == [0, 6, 12]
    assert json.loads((tmp_path / "dyn.json").read_text())["snapshots"][2]["step"] == 12
    last = out["snapshots"][-1]
    assert set(last["sink_rate"]) == {"8", "16", "24"} and set(last["sink_rate"]["8"]) == {"0.2", "0.3"}
    # the last snapshot is the exported model: the same numbers as the analysis with the same settings
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dir))
    tokens, offsets = load_tokens(tiny_data_dir, "val")
    cfg = {**config["analysis"], "num_docs": 3, "length_sweep": [8, 16], "sink_short_len": None, "box_sample_size": 1000}
    summary, _ = analyze_model(model, tokens, offsets, cfg)
    assert last["kurtosis"] == pytest.approx(summary["kurtosis"], rel=1e-9)
    assert last["max_abs"] == pytest.approx(summary["max_abs"], rel=1e-9)
    assert last["sink_rate"]["24"] == summary["sink_rate"]
    assert last["sink_rate"]["8"] == summary["length_sweep"][0]["sink_rate"]
    assert last["sparsity_exact_zero_pct"] == pytest.approx(summary["sparsity"]["exact_zero_pct"])
    # the validation loss is the training's own: the log's last val_loss, same windows (float32 both)
    log = [json.loads(l) for l in (model_dir / "train_log.jsonl").read_text().splitlines()]
    assert last["val_loss"] == pytest.approx(log[-1]["val_loss"], rel=1e-6)
    assert out["snapshots"][0]["val_loss"] > last["val_loss"]  # training lowered it


def test_corrupt_or_missing_snapshot_is_named(trained, tiny_data_dir, tmp_path):
    config, model_dir = trained
    snap = model_dir / "snapshots" / "step_00000006.safetensors"
    data = bytearray(snap.read_bytes())
    data[-5] ^= 0xFF  # a flipped bit in a weight: still loads, wrong numbers
    snap.write_bytes(bytes(data))
    with pytest.raises(SnapshotError, match=r"step_00000006\.safetensors does not match its sha256"):
        run_dynamics(model_dir, tiny_data_dir, config, tmp_path / "dyn.json", progress=False)
    snap.unlink()
    with pytest.raises(SnapshotError, match=r"step_00000006\.safetensors listed in .*snapshots\.json is missing"):
        list_snapshots(model_dir)
    assert not (tmp_path / "dyn.json").exists()


def test_model_without_snapshots_says_how_to_get_them(tiny_config, tiny_data_dir, tmp_path):
    config = _config(tiny_config, every=0)
    out = tmp_path / "m" / "softpick"
    train(config, "softpick", tiny_data_dir, out)
    assert json.loads((out / "snapshots.json").read_text())["snapshots"] == []
    with pytest.raises(SnapshotError, match="train.snapshot_every > 0"):
        run_dynamics(out, tiny_data_dir, config, tmp_path / "dyn.json", progress=False)


def test_measure_snapshot_of_a_random_model_is_finite(trained, tiny_data_dir):
    config, model_dir = trained
    model = load_snapshot(model_dir, list_snapshots(model_dir)[0])
    tokens, offsets = load_tokens(tiny_data_dir, "val")
    rec = measure_snapshot(model, {"tokens": tokens, "offsets": offsets, "val_tokens": tokens, "bos_id": None}, config)
    assert np.isfinite(rec["val_loss"]) and rec["val_loss"] == pytest.approx(np.log(512), rel=0.05)  # uniform at init
