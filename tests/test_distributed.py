"""Distributed training on CPU (gloo): 2 processes match 1, kill-and-resume, crash mid-save, config checks.

Each multi-process run is `python -m torch.distributed.run --standalone --nproc_per_node=2` in a
subprocess (how Snakemake launches train.gpus > 1), on the tiny model of conftest.py.

Tolerance, 1 vs 2 processes: the same global batch gives the same update, but the 2-process
gradient is the all-reduce average of two half-batch gradients while the 1-process gradient is
the sum of two accumulated micro-batch gradients, so float sums happen in another order. After
12 AdamW steps the exported weights differ by max |diff| <= 1e-5 (measured: ~1e-7..1e-6 on this
machine); we assert MAX_ABS_DIFF_1_VS_2 = 1e-5. Runs of the same process count are bitwise equal
(gloo's 2-rank all-reduce has a fixed order), which the resume tests assert exactly.
"""
import copy
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from softpick.checkpoint import list_checkpoints
from softpick.config import ConfigError, load_config
from softpick.distributed import check_distributed
from softpick.train import train

MAX_ABS_DIFF_1_VS_2 = 1e-5
REPO = Path(__file__).resolve().parents[1]

WORKER = r'''
import json, os, signal, sys
import torch, yaml
from softpick.train import train

config = yaml.safe_load(open(sys.argv[1]))
args = json.loads(sys.argv[2])
kill_at = args.get("kill_in_save_at")
if kill_at:  # SIGKILL rank 0 half-way through writing the checkpoint of step kill_at
    real_save = torch.save
    def save(obj, f, *a, **k):
        if isinstance(obj, dict) and obj.get("step") == kill_at:
            with open(f, "wb") as fh:
                fh.write(b"partial checkpoint")
            os.kill(os.getpid(), signal.SIGKILL)
        return real_save(obj, f, *a, **k)
    torch.save = save
import torch.distributed as dist
dist.init_process_group("gloo")  # one group for both train() calls (train() leaves a group it did not create)
train(config, args["variant"], args["data"], args["out"], stop_after=args.get("stop_after"))
if args.get("then_resume"):  # a second run in the same processes resumes from the newest checkpoint
    train(config, args["variant"], args["data"], args["out"])
dist.destroy_process_group()
'''


def small_config() -> dict:
    config = yaml.safe_load((REPO / "configs" / "default.yaml").read_text())
    config["model"].update(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    config["train"].update(seq_len=32, global_batch_size=4, micro_batch_size=2, max_steps=12, warmup_steps=2,
                           log_every=1, val_every=4, val_batches=1, checkpoint_every=3, keep_checkpoints=2, lr=1e-2,
                           peak_tflops=1.0)
    config["eval"]["max_length"] = 32  # <= train.seq_len, as validation asks
    return config


def run_in_own_session(cmd: list[str], *, cwd: Path, env: dict, timeout: float) -> subprocess.CompletedProcess:
    """Run cmd in its own process group (a hang takes no orphans with it); fail the test on timeout."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"{cmd[2]} timed out:\n{out[-2000:]}\n{err[-2000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def torchrun(nproc: int, *args, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *map(str, args)]
    return run_in_own_session(cmd, cwd=cwd, env=env, timeout=600)  # a hang guard only


def run_worker(tmp: Path, config: dict, **args) -> subprocess.CompletedProcess:
    (tmp / "worker.py").write_text(WORKER)
    (tmp / "config.yaml").write_text(yaml.safe_dump(config))
    return torchrun(2, tmp / "worker.py", tmp / "config.yaml", json.dumps(args), cwd=tmp)


def weights(model_dir: Path) -> dict:
    return load_file(str(model_dir / "model.safetensors"))


def max_abs_diff(a: Path, b: Path) -> float:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    return max(float((wa[k] - wb[k]).abs().max()) for k in wa)


def assert_bitwise(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


@pytest.fixture(scope="module")
def two_process_run(tiny_data_dir, tmp_path_factory):
    """The CLI under torchrun, 2 gloo processes: `python -m torch.distributed.run ... -m softpick train`."""
    root = tmp_path_factory.mktemp("ddp2")
    config = small_config()
    config["run_name"] = "ddp2"
    (root / "results" / "ddp2").mkdir(parents=True)
    (root / "results" / "ddp2" / "data").symlink_to(tiny_data_dir)
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    proc = torchrun(2, "-m", "softpick", "train", "--config", root / "config.yaml", "--variant", "softpick", cwd=root)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return config, root / "results" / "ddp2" / "models" / "softpick"


def test_two_processes_match_one(two_process_run, tiny_data_dir, tmp_path):
    config, two = two_process_run
    one = tmp_path / "one" / "softpick"
    train(copy.deepcopy(config), "softpick", tiny_data_dir, one)  # 1 process: 2 micro-batches accumulated
    diff = max_abs_diff(one, two)
    print(f"max |w_1proc - w_2proc| = {diff:.3e}")
    assert diff <= MAX_ABS_DIFF_1_VS_2
    # rank 0 alone logs: one record per step, none duplicated by rank 1
    records = [json.loads(l) for l in (two / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 13))
    assert all(r["world_size"] == 2 for r in records)
    for r in records:  # MFU = flops_per_token x tokens/s / (peak_tflops x 1e12 x world)
        assert r["mfu"] == pytest.approx(r["flops_per_token"] * r["tokens_per_s"] / (1e12 * 2))
        assert r["peak_mem_gib"] > 0 and r["peak_mem_kind"] == "cpu_max_rss"
    summary = json.loads((two / "train_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["parallelism"] == "ddp" and summary["steps"] == 12
    one_losses = [json.loads(l)["loss"] for l in (one / "train_log.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in records] == pytest.approx(one_losses, abs=1e-4)


def test_sigkill_mid_save_then_resume_under_two_processes(two_process_run, tiny_data_dir, tmp_path):
    """Rank 0 is SIGKILLed while writing step 6's checkpoint: resume loads step 3, ends bitwise equal."""
    config, straight = two_process_run
    out = tmp_path / "killed" / "softpick"
    args = {"variant": "softpick", "data": str(tiny_data_dir), "out": str(out)}
    proc = run_worker(tmp_path, config, kill_in_save_at=6, **args)
    assert proc.returncode != 0  # torchrun reports the killed worker
    ckpt_dir = out.parent / "softpick.checkpoints"
    assert (ckpt_dir / ".tmp_step_00000006" / "state.pt").read_bytes() == b"partial checkpoint"
    assert [p.name for p in list_checkpoints(ckpt_dir)] == ["step_00000003"]  # the partial one is never loadable
    assert not out.exists()
    proc = run_worker(tmp_path, config, **args)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert_bitwise(straight, out)
    steps = [json.loads(l)["step"] for l in (out / "train_log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 13))  # the lost tail (steps 4-6) was dropped, then redone once


def test_fsdp_two_processes_match_ddp(two_process_run, tiny_data_dir, tmp_path):
    """train.parallelism: fsdp (FSDP2 fully_shard) also runs on gloo / CPU and gives the DDP result."""
    config, ddp = two_process_run
    config = copy.deepcopy(config)
    config["train"]["parallelism"] = "fsdp"
    out = tmp_path / "fsdp" / "softpick"
    ckpt_dir = out.parent / "softpick.checkpoints"
    proc = run_worker(tmp_path, config, variant="softpick", data=str(tiny_data_dir), out=str(out), stop_after=7,
                      then_resume=True)  # stop after step 7, resume from the full (unsharded) checkpoint of step 6
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert [p.name for p in list_checkpoints(ckpt_dir)] == ["step_00000009", "step_00000012"]
    assert torch.load(list_checkpoints(ckpt_dir)[-1] / "state.pt", weights_only=False)["parallelism"] == "fsdp"
    assert max_abs_diff(ddp, out) <= MAX_ABS_DIFF_1_VS_2
    assert json.loads((out / "train_summary.json").read_text())["parallelism"] == "fsdp"
    assert [json.loads(l)["step"] for l in (out / "train_log.jsonl").read_text().splitlines()] == list(range(1, 13))


def test_global_batch_must_split_over_processes():
    tcfg = {"global_batch_size": 4, "micro_batch_size": 2}
    assert check_distributed(tcfg, 1) == 2
    assert check_distributed(tcfg, 2) == 1
    with pytest.raises(ConfigError, match=r"'train\.global_batch_size' \(4\).*'train\.micro_batch_size' \(2\) x processes \(3\)"):
        check_distributed(tcfg, 3)
    with pytest.raises(ConfigError, match=r"train\.parallelism"):
        check_distributed({**tcfg, "parallelism": "zero3"}, 2)
    with pytest.raises(ConfigError, match=r"train\.dtype"):
        check_distributed({**tcfg, "dtype": "float16"}, 1)


def test_train_refuses_bad_split_before_work(tiny_config, tiny_data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")  # checked before any process group is created
    with pytest.raises(ConfigError, match="micro_batch_size"):
        train(tiny_config, "softpick", tiny_data_dir, tmp_path / "m")


@pytest.mark.parametrize("override, key", [
    ("train.parallelism=zero", "train.parallelism"),
    ("train.dtype=float16", "train.dtype"),
    ("train.gpus=-1", "train.gpus"),
    ("train.compile=maybe", "train.compile"),
    ("train.peak_tflops=0", "train.peak_tflops"),
])
def test_schema_names_bad_distributed_keys(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(overrides=[override])


def test_defaults_are_single_process_fp32():
    train_cfg = load_config()["train"]
    assert (train_cfg["gpus"], train_cfg["parallelism"], train_cfg["compile"], train_cfg["dtype"]) == (0, "ddp", False, "float32")
    assert train_cfg["peak_tflops"] is None and train_cfg["tensorboard"] is False


def test_bfloat16_autocast_trains_with_fp32_master_weights(tiny_config, tiny_data_dir, tmp_path):
    tiny_config["train"].update(dtype="bfloat16", max_steps=4)
    summary = train(tiny_config, "softpick", tiny_data_dir, tmp_path / "bf16")
    assert summary["dtype"] == "bfloat16" and summary["skipped_steps"] == 0
    assert all(w.dtype == torch.float32 for w in weights(tmp_path / "bf16").values())


def test_tensorboard_asked_for_but_missing_is_a_clear_error(tiny_config, tiny_data_dir, tmp_path):
    try:
        import tensorboard  # noqa: F401
        pytest.skip("tensorboard is installed")
    except ImportError:
        pass
    tiny_config["train"]["tensorboard"] = True
    with pytest.raises(ConfigError, match=r"train\.tensorboard.*pip install tensorboard"):
        train(tiny_config, "softpick", tiny_data_dir, tmp_path / "m")
