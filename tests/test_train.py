"""Training: determinism, exact resume after a kill, atomic checkpoints, the non-finite guard."""
import json

import pytest
import torch
from safetensors.torch import load_file

from softpick.checkpoint import list_checkpoints, save_checkpoint
from softpick.schedule import lr_at
from softpick.train import NonFiniteError, train
from softpick.windows import WindowSampler


def weights(model_dir):
    return load_file(str(model_dir / "model.safetensors"))


def assert_same_weights(a, b):
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.equal(wa[name], wb[name]), name


def test_lr_schedule_warmup_then_cosine():
    cfg = {"lr": 1.0, "warmup_steps": 10, "max_steps": 110, "min_lr_ratio": 0.1}
    assert lr_at(0, cfg) == pytest.approx(0.1)
    assert lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(60, cfg) == pytest.approx(0.55)
    assert lr_at(110, cfg) == pytest.approx(0.1)


def test_sampler_covers_every_window_once_per_epoch():
    s = WindowSampler(n_tokens=10 * 8 + 1, seq_len=8, seed=1)
    first = s.next_starts(10)
    assert sorted(first.tolist()) == list(range(0, 80, 8))
    state = s.state_dict()
    nxt = s.next_starts(3)
    s2 = WindowSampler(n_tokens=81, seq_len=8, seed=1)
    s2.load_state_dict(state)
    assert s2.next_starts(3).tolist() == nxt.tolist()


@pytest.mark.parametrize("variant", ["softmax", "softpick"])
def test_training_is_deterministic_and_logs(tiny_config, tiny_data_dir, tmp_path, variant):
    a = tmp_path / "a" / variant
    b = tmp_path / "b" / variant
    summary = train(tiny_config, variant, tiny_data_dir, a)
    train(tiny_config, variant, tiny_data_dir, b)
    assert_same_weights(a, b)
    records = [json.loads(l) for l in (a / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 13))
    for r in records:
        for key in ("loss", "lr", "grad_norm", "tokens_per_s"):
            assert torch.isfinite(torch.tensor(r[key]))
    assert records[-1]["loss"] < records[0]["loss"]
    assert summary["steps"] == 12 and summary["skipped_steps"] == 0
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(a)
    assert model.config.attention_kind == variant
    assert AutoTokenizer.from_pretrained(a).bos_token_id == 1


def test_kill_and_resume_matches_uninterrupted_run(tiny_config, tiny_data_dir, tmp_path):
    straight = tmp_path / "straight" / "softpick"
    train(tiny_config, "softpick", tiny_data_dir, straight)
    resumed = tmp_path / "resumed" / "softpick"
    # "crash" after 5 steps: the last complete checkpoint is step 3, steps 4-5 are lost
    train(tiny_config, "softpick", tiny_data_dir, resumed, stop_after=5)
    ckpts = list_checkpoints(resumed.parent / "softpick.checkpoints")
    assert [p.name for p in ckpts] == ["step_00000003"]
    train(tiny_config, "softpick", tiny_data_dir, resumed)
    assert_same_weights(straight, resumed)
    steps = [json.loads(l)["step"] for l in (resumed / "train_log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 13))  # the lost tail was dropped, not duplicated


def test_incomplete_checkpoint_is_ignored(tmp_path):
    ckpt = tmp_path / "ckpts"
    save_checkpoint(ckpt, 3, {"x": 1}, keep=2)
    save_checkpoint(ckpt, 6, {"x": 2}, keep=2)
    save_checkpoint(ckpt, 9, {"x": 3}, keep=2)
    assert [p.name for p in list_checkpoints(ckpt)] == ["step_00000006", "step_00000009"]
    # a crash mid-save leaves a temp dir, or a renamed dir without its marker: neither is loadable
    (ckpt / ".tmp_step_00000012").mkdir()
    (ckpt / "step_00000015").mkdir()
    assert list_checkpoints(ckpt)[-1].name == "step_00000009"


def test_non_finite_guard_stops_with_clear_error(tiny_config, tiny_data_dir, tmp_path):
    tiny_config["train"].update(lr=1e30, max_consecutive_skips=2, grad_clip=None)
    with pytest.raises(NonFiniteError, match="consecutive steps with non-finite"):
        train(tiny_config, "softmax", tiny_data_dir, tmp_path / "m")


def test_crash_mid_save_leaves_nothing_resume_loads(tiny_config, tiny_data_dir, tmp_path, monkeypatch):
    """torch.save writes half a file, then the process 'dies': resume starts from the previous checkpoint."""
    import softpick.train as train_mod

    straight = tmp_path / "straight" / "softpick"
    train(tiny_config, "softpick", tiny_data_dir, straight)
    real_save = torch.save

    def broken_save(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and obj.get("step") == 6:
            with open(f, "wb") as fh:
                fh.write(b"half a checkpoint")
            raise OSError("disk full (simulated)")
        return real_save(obj, f, *args, **kwargs)

    crashed = tmp_path / "crashed" / "softpick"
    monkeypatch.setattr(train_mod.torch, "save", broken_save)
    with pytest.raises(OSError, match="simulated"):
        train(tiny_config, "softpick", tiny_data_dir, crashed)
    monkeypatch.undo()
    ckpt_dir = crashed.parent / "softpick.checkpoints"
    assert [p.name for p in list_checkpoints(ckpt_dir)] == ["step_00000003"]
    train(tiny_config, "softpick", tiny_data_dir, crashed)
    assert_same_weights(straight, crashed)


HELD_WORKER = r'''
import sys, time
import torch, yaml
from softpick.train import train

hold_after, marker = int(sys.argv[4]), sys.argv[5]
_step, calls = torch.optim.AdamW.step, [0]
def held_step(self, *a, **k):  # the update after step hold_after waits for the parent's SIGKILL
    calls[0] += 1
    if calls[0] == hold_after + 1:
        open(marker, "w").close()
        while True:
            time.sleep(1)
    return _step(self, *a, **k)
torch.optim.AdamW.step = held_step
train(yaml.safe_load(open(sys.argv[1])), "softpick", sys.argv[2], sys.argv[3])
'''


def test_sigkill_at_random_step_then_resume_is_bitwise_equal(tiny_config, tiny_data_dir, tmp_path):
    """A real SIGKILL of a training subprocess at a random step (the worker holds there until the kill,
    however fast the machine); resuming gives the uninterrupted weights."""
    import os
    import random
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    import yaml

    kill_step = random.Random().randint(2, 10)
    print(f"SIGKILL after step {kill_step}")
    straight = tmp_path / "straight" / "softpick"
    train(tiny_config, "softpick", tiny_data_dir, straight)
    killed = tmp_path / "killed" / "softpick"
    marker = tmp_path / "held"
    (tmp_path / "worker.py").write_text(HELD_WORKER)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(tiny_config))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src"), "OMP_NUM_THREADS": "1"}
    stderr = tmp_path / "worker.stderr"
    with open(stderr, "w") as err:
        proc = subprocess.Popen([sys.executable, str(tmp_path / "worker.py"), str(tmp_path / "config.yaml"),
                                 str(tiny_data_dir), str(killed), str(kill_step), str(marker)], env=env,
                                stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + 600  # a hang guard only: the worker waits for the kill
        while not marker.exists():
            assert proc.poll() is None, f"the worker ended before it could be killed:\n{stderr.read_text()[-3000:]}"
            assert time.monotonic() < deadline, "the worker never reached the hold"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not killed.exists()
    log = killed.parent / "softpick.train_log.jsonl"
    assert [json.loads(l)["step"] for l in log.read_text().splitlines()][-1] == kill_step
    train(tiny_config, "softpick", tiny_data_dir, killed)
    assert_same_weights(straight, killed)
    steps = [json.loads(l)["step"] for l in (killed / "train_log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 13))


# ----------------------------------------------------------------------------- train.bos_first
def test_gather_windows_bos_first_replaces_only_the_first_input():
    import numpy as np

    from softpick.windows import gather_windows

    tokens = np.arange(100, 140, dtype=np.uint16)
    starts = np.array([0, 8, 24])
    plain = gather_windows(tokens, starts, 8)
    assert plain.tolist() == [list(range(100 + s, 109 + s)) for s in starts]
    x = gather_windows(tokens, starts, 8, bos_id=1)
    assert x[:, 0].tolist() == [1, 1, 1]
    assert torch.equal(x[:, 1:], plain[:, 1:])
    # shifted targets: position 0 (the BOS input) predicts the stream's token start + 1
    inputs, targets = x[:, :-1], x[:, 1:]
    assert targets[:, 0].tolist() == [101, 109, 125] and inputs.shape == targets.shape == (3, 8)
    assert tokens[0] == 100  # the token array itself is untouched


@pytest.mark.parametrize("bos_first", [False, True])
def test_bos_first_reaches_training_and_validation_windows(tiny_config, tiny_data_dir, tmp_path, monkeypatch,
                                                           bos_first):
    """Every window the trainer builds (training and validation) starts with BOS iff train.bos_first."""
    import numpy as np

    import softpick.train as train_mod
    from softpick.data import load_tokens

    seen = []
    real = train_mod.gather_windows

    def recording(tokens, starts, seq_len, bos_id=None):
        x = real(tokens, starts, seq_len, bos_id)
        seen.append((len(tokens), np.asarray(starts).copy(), x.clone()))
        return x

    monkeypatch.setattr(train_mod, "gather_windows", recording)
    tiny_config["train"].update(max_steps=2, val_every=2, bos_first=bos_first)
    train(tiny_config, "softmax", tiny_data_dir, tmp_path / "m")
    streams = {len(t): t for t in (load_tokens(tiny_data_dir, "train")[0], load_tokens(tiny_data_dir, "val")[0])}
    assert len(streams) == 2 and set(n for n, _, _ in seen) == set(streams)  # both splits were gathered
    L = tiny_config["train"]["seq_len"]
    for n, starts, x in seen:
        stream = np.asarray(streams[n], dtype=np.int64)
        expect = stream[starts[:, None] + np.arange(L + 1)]
        assert x[:, 1:].tolist() == expect[:, 1:].tolist()
        assert x[:, 0].tolist() == ([1] * len(starts) if bos_first else expect[:, 0].tolist())
    if not bos_first:  # windows fall anywhere in the stream: some first token is not BOS
        assert any((x[:, 0] != 1).any() for _, _, x in seen)


def test_bos_first_needs_a_bos_token():
    import types

    from softpick.config import ConfigError
    from softpick.windows import window_bos_id

    assert window_bos_id({"bos_first": False}, types.SimpleNamespace(bos_token_id=None)) is None
    assert window_bos_id({}, types.SimpleNamespace(bos_token_id=1)) is None
    assert window_bos_id({"bos_first": True}, types.SimpleNamespace(bos_token_id=5)) == 5
    with pytest.raises(ConfigError, match="train.bos_first"):
        window_bos_id({"bos_first": True}, types.SimpleNamespace(bos_token_id=None))


# ----------------------------------------------------------------------------- issue 15: the export
@pytest.mark.parametrize("umask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750)])
def test_every_exported_file_respects_the_umask(tiny_config, tiny_data_dir, tmp_path, umask, file_mode, dir_mode):
    """safetensors writes its file 0600; the export gives every file open()'s mode, as the other artifacts."""
    import os
    import stat

    tiny_config["train"].update(max_steps=2)
    old = os.umask(umask)
    try:
        train(tiny_config, "softpick", tiny_data_dir, tmp_path / "m")
    finally:
        os.umask(old)
    root = tmp_path / "m"
    modes = {str(p.relative_to(root)): oct(stat.S_IMODE(p.stat().st_mode)) for p in root.rglob("*") if p.is_file()}
    assert modes == dict.fromkeys(modes, oct(file_mode))
    assert {"model.safetensors", "config.json", "tokenizer.json", "modeling_softpick.py", "manifest.json",
            "train_summary.json", "train_log.jsonl", "snapshots.json", "snapshots/step_00000002.safetensors"} <= set(modes)
    for d in (root, *(p for p in root.rglob("*") if p.is_dir())):
        assert stat.S_IMODE(d.stat().st_mode) == dir_mode, d


def test_non_finite_model_is_not_exported(tiny_config, tiny_data_dir, tmp_path):
    """lr inf (train() is called without config validation here) makes every weight NaN / inf at step 1; the
    later steps are skipped, fewer than max_consecutive_skips: train refuses to export instead of exiting 0."""
    tiny_config["train"].update(lr=float("inf"), max_steps=3)
    with pytest.raises(ValueError, match=r"m \(not exported\) has non-finite weights: model\."):
        train(tiny_config, "softpick", tiny_data_dir, tmp_path / "m")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.checkpoints", "m.train_log.jsonl"]  # no model, no temp dir
