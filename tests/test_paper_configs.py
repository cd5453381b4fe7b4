"""configs/paper-*.yaml follow the paper's v4 recipe (arXiv 2504.20966) and fail clearly without the hub."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from softpick.config import load_config
from softpick.distributed import check_distributed

ROOT = Path(__file__).resolve().parents[1]
TOKENIZER = "fla-hub/transformer-1.3B-100B"


def _config(name):
    return load_config([str(ROOT / "configs" / f"{name}.yaml")])


@pytest.mark.parametrize("name, lr, warmup, steps, accum", [
    ("paper-340m", 3e-4, 1000, 100_000, 1),   # v4 Table 6: micro-batch 16 x 8 GPUs
    ("paper-1.8b", 2e-4, 2000, 200_000, 2),   # v4 Table 6: micro-batch 8 x grad-accum 2 x 8 GPUs
])
def test_paper_configs_follow_v4_table_6(name, lr, warmup, steps, accum):
    c = _config(name)
    t = c["train"]
    assert (t["lr"], t["warmup_steps"], t["max_steps"]) == (lr, warmup, steps)
    processes = t["gpus"] * t.get("nodes", 1)
    assert processes == 8 and check_distributed(t, processes) == accum
    assert t["global_batch_size"] * t["seq_len"] == 128 * 4096  # 524,288 tokens per step
    assert t["min_lr_ratio"] == 0.1 and t["bos_first"] is False  # flame: no BOS per window
    assert (c["data"]["tokenizer"]["kind"], c["data"]["tokenizer"]["name"]) == ("pretrained", TOKENIZER)
    assert c["analysis"]["sink_short_len"] == 64 and c["analysis"]["dead_head_eps"][0] == 1e-6


@pytest.mark.parametrize("name", ["paper-340m", "paper-1.8b"])
def test_paper_config_offline_names_the_tokenizer(tmp_path, name):
    """Without the hub: exit 2, one line naming the authors' tokenizer, no traceback, no token files."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home"), "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run([sys.executable, "-m", "softpick", "data", "--config", str(ROOT / "configs" / f"{name}.yaml")],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert TOKENIZER in proc.stderr and "HF_HUB_OFFLINE" in proc.stderr and "Traceback" not in proc.stderr
    assert not list(tmp_path.rglob("tokens_train.npy"))


def test_small_config_runs_the_papers_quantization_grid():
    """small.yaml: HQQ and GPTQ at 8/4/3/2 bits and bitsandbytes 8/4 (the paper's grid), RTN 3/2 and W8A8 -- and
    nothing of the default's subset leaks in through the merge."""
    from softpick.quantize import quantize_jobs

    jobs = set(quantize_jobs(_config("small")["quantize"]))
    paper = {(m, b) for m in ("hqq", "gptq") for b in (8, 4, 3, 2)} | {("bnb", 8), ("bnb", 4)}
    assert jobs == paper | {("rtn", 3), ("rtn", 2), ("rtn_a8_token", 8), ("rtn_a8_tensor", 8)}


@pytest.mark.parametrize("name", ["paper-340m", "paper-1.8b"])
def test_full_scale_configs_run_every_method_at_every_bit_width_it_supports(name):
    """The default's subset (quantize.bits_by_method) must not leak into the full grids through the merge."""
    from softpick.quantize import METHODS, quantize_jobs

    quant = _config(name)["quantize"]
    jobs = quantize_jobs(quant)
    assert set(quant["methods"]) == set(METHODS)
    for method, spec in METHODS.items():
        assert sorted(b for m, b in jobs if m == method) == sorted(spec.bits), method
