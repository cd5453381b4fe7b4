"""End to end: the whole Snakemake DAG on configs/test.yaml (conftest.e2e_run, run once through its DVC
stage and shared with test_dvc), then, in a copy of that run, what a rerun after an edit schedules and the
HTML report."""
import json
import math

import pytest
from conftest import E2E_RUN as RUN
from conftest import copy_run, run_concurrently, snakemake_test_dag as snakemake


def finite_numbers(node):
    if isinstance(node, dict):
        for v in node.values():
            yield from finite_numbers(v)
    elif isinstance(node, list):
        for v in node:
            yield from finite_numbers(v)
    elif isinstance(node, (int, float)) and not isinstance(node, bool):
        yield node


@pytest.fixture(scope="module")
def workdir(e2e_run, tmp_path_factory):
    """This module's copy of the shared run: the tests below edit its src/ and write a report into it."""
    return copy_run(e2e_run.path, tmp_path_factory.mktemp("pipeline") / "work")


@pytest.mark.slow
def test_every_output_exists_and_is_finite(e2e_run):
    workdir = e2e_run.path
    results, figures = workdir / "results" / RUN, workdir / "figures" / RUN
    for name in ("training_loss", "attention_maps_softmax", "attention_maps_softpick", "hidden_states",
                 "sink_scores_heads", "sink_rate_per_layer", "length_sweep", "quantization", "mechanism"):
        for ext in ("png", "pdf"):
            assert (figures / f"{name}.{ext}").stat().st_size > 1000, name
    for name in ("analysis_table", "eval_table", "quant_table", "variants_table"):
        for ext in ("md", "tex"):
            assert (results / "tables" / f"{name}.{ext}").stat().st_size > 50, name
    jsons = [results / "data" / "manifest.json"]
    for variant in ("softmax", "softpick"):
        jsons += [results / "eval" / f"{variant}.json", results / "analysis" / f"{variant}.json",
                  results / "models" / variant / "train_summary.json"]
        jsons += [results / "quant" / variant / f"{m}_2bit.json" for m in ("rtn", "gptq")]
        jsons.append(results / "passkey" / f"{variant}.json")
        jsons.append(results / "mechanism" / f"{variant}.json")
    for path in jsons:
        numbers = list(finite_numbers(json.loads(path.read_text())))
        assert numbers, path
        assert all(math.isfinite(x) for x in numbers), path
    for variant in ("softmax", "softpick"):
        ev = json.loads((results / "eval" / f"{variant}.json").read_text())
        assert set(ev["tasks"]) == {"arc_easy", "piqa"}
        assert ev["perplexity"]["word_perplexity"] > 1
    q = json.loads((results / "quant" / "softpick" / "gptq_2bit.json").read_text())["quantization"]
    assert q["method"] == "gptq" and q["bits"] == 2 and q["device"] == "cpu"
    assert q["calibration"]["sequences"] == 4 and q["calibration"]["length"] == 64 and q["settings"]["act_order"]
    analysis = json.loads((results / "analysis" / "softpick.json").read_text())
    assert analysis["sparsity"]["exact_zero_pct"] > 0  # softpick maps have exact zeros from the first step
    # every rule wrote its log and benchmark
    # data, train x2, evaluate x2, quantize x4, analyze x2, dynamics x2, knockout x2, passkey x2, mechanism x2,
    # mechanism_figure, figures, variants_table
    assert len(list((workdir / "logs" / RUN / "benchmarks").glob("*.tsv"))) == 1 + 2 + 2 + 4 + 2 + 2 + 2 + 2 + 2 + 1 + 1 + 1
    for variant in ("softmax", "softpick"):  # the claims over training: every snapshot of test.yaml (steps 0, 3, 6)
        dyn = json.loads((results / "dynamics" / f"{variant}.json").read_text())
        assert [r["step"] for r in dyn["snapshots"]] == [0, 3, 6]
    assert (workdir / "figures" / RUN / "claims_over_training.png").stat().st_size > 0


@pytest.mark.slow
def test_rerun_after_edit_schedules_only_dependents(workdir):
    # as run, and with a parameter of one stage changed (two dry runs side by side: no lock, no log file)
    (workdir / "fewer_docs.yaml").write_text("analysis: {num_docs: 3}\n")
    same, fewer = run_concurrently(lambda: snakemake(workdir, "-n"),
                                   lambda: snakemake(workdir, "-n", "--configfile", "configs/test.yaml", "fewer_docs.yaml"))
    assert "Nothing to be done" in same.stdout + same.stderr
    # the changed parameter: only that stage and what depends on it
    jobs = fewer.stdout + fewer.stderr
    assert "analyze" in jobs and "figures" in jobs
    for other in ("rule train", "rule evaluate", "rule quantize", "rule data"):
        assert other not in jobs, (other, jobs)
    # the code of one stage
    evaluate_py = workdir / "src" / "softpick" / "evaluate.py"
    evaluate_py.write_text(evaluate_py.read_text() + "\n# edited\n")
    jobs = (lambda p: p.stdout + p.stderr)(snakemake(workdir, "-n"))
    assert "rule evaluate" in jobs and "rule quantize" in jobs and "rule figures" in jobs
    assert "rule train" not in jobs and "rule analyze" not in jobs and "rule data" not in jobs


@pytest.mark.slow
def test_html_report_holds_the_figures(workdir):
    proc = snakemake(workdir, "--report", "report.html")
    assert proc.returncode == 0, proc.stderr[-3000:]
    html = (workdir / "report.html").read_text(errors="ignore")
    assert len(html) > 100_000
    for name in ("training_loss.png", "sink_rate_per_layer.png", "analysis_table.md"):
        assert name in html, name
