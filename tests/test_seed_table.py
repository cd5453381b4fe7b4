"""scripts/seed_table.py: mean and spread over seeds, n per cell, missing runs named."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "seed_table.py"


def _fake_run(root: Path, name: str, val_loss: dict, ppl: dict, quant_ppl: dict | None = None):
    for v in ("softmax", "softpick"):
        (root / name / "models" / v).mkdir(parents=True)
        if name == "a":  # a model directory with its summary
            (root / name / "models" / v / "train_summary.json").write_text(json.dumps({"final_val_loss": val_loss[v]}))
        else:  # a published run: only the training log is in git
            log = [{"step": 1, "val_loss": 9.0}, {"step": 2, "loss": 1.0}, {"step": 3, "val_loss": val_loss[v]}]
            (root / name / "models" / f"{v}.train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
        (root / name / "eval").mkdir(exist_ok=True)
        tasks = {"piqa": {"acc": 0.5, "acc_norm": 0.6}, "boolq": {"acc": 0.4}}
        (root / name / "eval" / f"{v}.json").write_text(json.dumps({"tasks": tasks, "perplexity": {"word_perplexity": ppl[v]}}))
        if quant_ppl:
            (root / name / "quant" / v).mkdir(parents=True)
            (root / name / "quant" / v / "rtn_2bit.json").write_text(json.dumps({"perplexity": {"word_perplexity": quant_ppl[v]}}))


def test_mean_spread_and_n(tmp_path):
    _fake_run(tmp_path, "a", {"softmax": 2.0, "softpick": 3.0}, {"softmax": 100.0, "softpick": 200.0}, {"softmax": 150.0, "softpick": 300.0})
    _fake_run(tmp_path, "b", {"softmax": 2.2, "softpick": 3.0}, {"softmax": 100.0, "softpick": 200.0})
    out = tmp_path / "seeds" / "t"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--runs", "a", "b", "--results", str(tmp_path), "--out", str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    table = out.with_suffix(".md").read_text()
    assert "| val loss (final, train log) | 2.1000 ± 0.1000 (n=2) | 3.0000 ± 0.0000 (n=2) |" in table
    assert "| mean acc_norm / acc over 2 tasks (%) | 50.00 ± 0.00 (n=2) |" in table  # (60 + 40) / 2
    assert "| word perplexity increase, rtn_2bit (%) | 50.00 (n=1) | 50.00 (n=1) |" in table  # only run a has it
    data = json.loads(out.with_suffix(".json").read_text())
    assert data["per_run"]["b"]["softmax"]["word perplexity"] == 100.0


def test_a_missing_run_is_named(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--runs", "nope", "--results", str(tmp_path), "--out", str(tmp_path / "x")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "nope" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "x.md").exists()
