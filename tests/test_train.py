"""Training: determinism, exact resume after a kill, atomic checkpoints, the non-finite guard."""
import json

import pytest
import torch
from safetensors.torch import load_file

from softpick.train import NonFiniteError, WindowSampler, list_checkpoints, lr_at, save_checkpoint, train


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
