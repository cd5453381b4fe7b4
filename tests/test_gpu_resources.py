"""Every job that runs a model on config["device"] tells Snakemake how much GPU memory it takes
(resources gpu_mem_gb; train takes whole GPUs through gpu=N), so `--resources gpu_mem_gb=N` keeps
concurrent jobs inside one card. The small DAG once started both analyze jobs beside 15 quantize jobs
and they ran an H200 out of memory."""
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def device_rules() -> set[str]:
    """Rules whose params pass config["device"] (read from the rule files, so a new rule is covered)."""
    rules = set()
    for smk in (ROOT / "workflow" / "rules").glob("*.smk"):
        current = None
        for line in smk.read_text().splitlines():
            m = re.match(r"\s*rule (\w+):", line)
            current = m.group(1) if m else current
            if current and 'device=config["device"]' in line:
                rules.add(current)
    return rules


def test_every_job_on_the_device_declares_its_gpu_memory():
    env = {**os.environ, "SOFTPICK_SKIP_DEVICE_CHECK": "1"}
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--configfile", "configs/small.yaml"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    jobs, rule = [], None
    for line in proc.stdout.splitlines():
        m = re.match(r"(?:local)?rule (\w+):", line.strip())
        if m:
            rule = m.group(1)
        elif line.strip().startswith("resources:") and rule:
            jobs.append((rule, line))
            rule = None
    on_device = device_rules() - {"train"}
    assert {"analyze", "evaluate", "quantize", "dynamics", "knockout", "passkey"} <= on_device
    seen = {r for r, _ in jobs}
    assert on_device <= seen, on_device - seen
    for r, line in jobs:
        if r in on_device:
            gb = re.search(r"gpu_mem_gb=(\d+)", line)
            assert gb and int(gb.group(1)) >= 1, (r, line)
        if r == "train":
            assert re.search(r"\bgpu=\d+", line), line
