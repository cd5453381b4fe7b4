"""softpick.figures: the registry, make_all over small synthetic result files (every figure PNG + PDF, every
table Markdown + LaTeX, in the results layout of softpick.figures.results) and the figure and table writers."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from softpick.analysis import run_analysis, write_json_atomic
from softpick.figures import REGISTRY, make_all
from softpick.figures import analysis_table, eval_tables, hidden_states, quantization, registry, sinks, style
from softpick.figures.results import LAYOUT

TASKS = ["arc_easy", "lambada", "piqa", "sciq"]
VARIANTS = ("softmax", "softpick")


def _at(run_dir, key, variant, **fields):
    """The path of one result file in the layout, its directory created."""
    path = LAYOUT[key].path(run_dir, variant, **fields)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _write_results(run_dir, variants=VARIANTS):
    from softpick.model import SoftpickConfig, SoftpickForCausalLM

    rng = np.random.default_rng(0)
    docs = [np.concatenate([[1], rng.integers(3, 64, rng.integers(4, 50)), [2]]) for _ in range(12)]
    tokens = np.concatenate(docs).astype(np.uint16)
    offsets = np.concatenate([[0], np.cumsum([len(d) for d in docs])]).astype(np.int64)
    data_dir = run_dir / "data"
    data_dir.mkdir(parents=True)
    np.save(data_dir / "tokens_val.npy", tokens)
    np.save(data_dir / "docs_val.npy", offsets)
    cfg = dict(num_docs=10, max_len=40, batch_size=4, sink_eps=[0.2, 0.3], zero_threshold=1e-5,
               example_doc=0, length_sweep=[8, 16, 40], sink_short_len=16, box_sample_size=2000)
    for k, v in enumerate(variants):
        model_dir = run_dir / "models" / v
        torch.manual_seed(k)
        model = SoftpickForCausalLM(SoftpickConfig(vocab_size=64, hidden_size=32, num_hidden_layers=3,
                                                   num_attention_heads=4, intermediate_size=48, attention_kind=v))
        model.save_pretrained(model_dir)
        run_analysis(model_dir, data_dir, cfg, _at(run_dir, "analysis_json", v), _at(run_dir, "analysis_npz", v))
        with open(_at(run_dir, "train_log", v), "w") as f:
            for step in range(1, 301):
                loss = 4 + 3 * np.exp(-step / 60) + 0.15 * rng.standard_normal() + 0.05 * k
                rec = {"step": step, "loss": loss, "lr": 1e-3, "grad_norm": float(np.exp(rng.normal())),
                       "tokens_per_s": 5000.0, "tokens": step * 4096}
                if step % 50 == 0:
                    rec["val_loss"] = loss + 0.1
                f.write(json.dumps(rec) + "\n")
            f.write('{"step": 301, "lo')  # a torn last line must be tolerated

        def ev(acc_drop, ppl_mult, bits=None):
            e = {"tasks": {t: {"acc": 0.6 - 0.05 * i - acc_drop, "acc_norm": 0.55 - acc_drop, "acc_stderr": 0.02}
                           for i, t in enumerate(TASKS)},
                 "perplexity": {"word_perplexity": 40.0 * ppl_mult, "byte_perplexity": 2.0, "bits_per_byte": 1.0}}
            if bits is not None:
                e["quantization"] = {"bits": bits, "method": "hqq", "group_size": 64}
            return e

        write_json_atomic(_at(run_dir, "eval", v), ev(0.01 * k, 1.0))
        for b, drop in [(8, 0.0), (4, 0.02), (3, 0.08), (2, 0.2)]:
            write_json_atomic(_at(run_dir, "quant", v, method="hqq", bits=b),
                              ev(drop * (1 - 0.5 * k), 1 + 10 * drop * (1 - 0.5 * k), b))


def _write_later_stages(run_dir, variants=VARIANTS):
    """Small results of the dynamics, knockout, passkey and mechanism stages and the train summary, shaped as
    those stages write them (softpick.dynamics, .knockout, .passkey, .mechanism, .train)."""
    for k, v in enumerate(variants):
        snaps = [{"step": s, "tokens": s * 4096, "val_loss": 5.0 - 0.01 * s, "kurtosis": 3.0 + s + 10 * k,
                  "max_abs": 2.0 + s, "sparsity_exact_zero_pct": 30.0 * k,
                  "sink_rate": {"16": {"0.2": 10.0 + s, "0.3": 5.0 + s}, "40": {"0.2": 20.0, "0.3": 9.0 * (1 - k)}},
                  "dead_heads_pct": {"1e-06": 0.0, "0.01": 8.0 * k}, "num_docs": 3, "num_tokens": 90}
                 for s in (0, 4, 8)]
        write_json_atomic(_at(run_dir, "dynamics", v), {"variant": v, "config": {"num_docs": 3, "lengths": [16]},
                                                        "snapshots": snaps})
        lengths = [{"length": n, "num_heads_total": 12, "base_loss": 4.5, "sink_heads": [[0, 1, 0.6], [2, 3, 0.4]][:2 - k],
                    "sink_knockout_delta": 0.25, "random_knockout_delta": {"mean": 0.01, "min": -0.02, "max": 0.04}}
                   for n in (16, 40)]
        write_json_atomic(_at(run_dir, "knockout", v), {"variant": v, "config": {"eps": 0.3}, "lengths": lengths})
        write_json_atomic(_at(run_dir, "passkey", v), {"variant": v, "accuracy_by_length": {"32": 90.0, "64": 40.0 * k}})
        write_json_atomic(_at(run_dir, "train_summary", v), {"variant": v, "final_val_loss": 4.25 + k})
        size = 6
        write_json_atomic(_at(run_dir, "mechanism", v), {
            "variant": v, "sink_rate": {"0.2": 50.0 * (1 - k), "0.3": 40.0 * (1 - k)},
            "attention_map": {"size": size, "mean": np.tril(np.full((1, 2, size, size), 1 / size)).tolist()},
            "train": {"log": [{"step": s, "bos_attention_non_trigger": 0.1 * s * (1 - k), "copy_accuracy": 0.2 * s}
                              for s in (1, 2, 3)]},
            "bos_attention": {"trigger_queries": 0.1, "non_trigger_queries": 0.8 * (1 - k)},
            "residual_norm": {"hidden_states": ["emb", "0", "out"], "bos": [1.0, 30.0 * (1 - k) + 1, 2.0],
                              "others": [1.0, 2.0, 2.0]},
            "accuracy": {"copy": 0.95, "bigram": 0.4, "bigram_bayes_optimal": 0.45},
            "config": {"vocab_size": 20, "num_triggers": 2, "seq_len": 16, "num_layers": 1, "num_heads": 2,
                       "hidden_size": 16, "steps": 3, "batch_size": 4},
            "eval_sequences": 8})


EXPECTED = ["training_loss", "attention_maps_softmax", "attention_maps_softpick", "hidden_states",
            "hidden_state_boxplots", "sink_scores_heads", "sink_rate_per_layer", "length_sweep", "quantization"]
TABLES = ["analysis_table", "eval_table", "eval_table_all_tasks", "quant_table"]


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """Every result a figure reads, for both variants."""
    run = tmp_path_factory.mktemp("results") / "tiny"
    _write_results(run)
    _write_later_stages(run)
    return run


def test_make_all_writes_every_file(tmp_path):
    run = tmp_path / "results" / "tiny"
    _write_results(run)
    fig_dir = tmp_path / "figures"
    written = make_all(run, fig_dir, ["softmax", "softpick"])
    names = {p.name for p in written}
    for stem in EXPECTED:
        for ext in ("png", "pdf"):
            assert f"{stem}.{ext}" in names
    for stem in TABLES:
        for ext in ("md", "tex"):
            assert f"{stem}.{ext}" in names
    for p in written:
        assert p.exists() and p.stat().st_size > 0, p
    # no temporary files left behind
    assert not [p for p in fig_dir.iterdir() if p.name.startswith(".")]
    md = (fig_dir / "analysis_table.md").read_text()
    assert "softpick" in md and "27,962.8" in md and "different scale" in md
    tex = (fig_dir / "analysis_table.tex").read_text()
    assert r"\begin{tabular}" in tex and r"\%" in tex
    q = (fig_dir / "quant_table.md").read_text()
    assert "| hqq | 2 |" in q and "| float | float |" in q and "Δ" in q


def test_missing_inputs_are_skipped(tmp_path):
    run = tmp_path / "run"
    (run / "softmax").mkdir(parents=True)
    assert make_all(run, tmp_path / "figs") == []
    with pytest.raises(FileNotFoundError):
        make_all(run, tmp_path / "figs", strict=True)


# ------------------------------------------------------------------ figure contents and tables
def test_figure_names_match_the_registry_and_captions():
    """Every figure make_all writes is registered (softpick.figures, which common.smk lists the rule's outputs from)
    with a caption file (and vice versa)."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    drawn = [f for f in REGISTRY.values() if f.rule == "figures"]
    registered = {stem for f in drawn if f.kind == "figure" for stem in f.stems(VARIANTS)}
    assert set(EXPECTED) | {"claims_over_training"} == registered
    tables = {f.name for f in drawn if f.kind == "table"}
    assert set(TABLES) | {"knockout_table", "authors_reference"} == tables
    for fig in REGISTRY.values():
        assert (root / "workflow" / "report" / fig.caption).exists(), fig.name
    smk = (root / "workflow" / "rules" / "common.smk").read_text()
    assert "FIGURE_REGISTRY" in smk and "FIGURE_NAMES" not in smk  # no hand list beside the registry


def _capture_figures(monkeypatch, module):
    """Keep every figure `module` saves."""
    figs = []
    real = module.save_figure

    def keep(fig, out, caption=None):
        figs.append(fig)
        return real(fig, out, caption)

    monkeypatch.setattr(module, "save_figure", keep)
    return figs


def test_sink_rate_lines_at_zero_stay_distinguishable(tmp_path, monkeypatch):
    """Issue 10: four series all at 0 % hid each other; each series now differs in x offset and marker style."""
    figs = _capture_figures(monkeypatch, sinks)
    paths = {}
    for v in ("softmax", "softpick"):
        s = {"sink_rate": {"0.2": 0.0, "0.3": 0.0}, "sink_rate_per_layer": {"0.2": [0.0] * 4, "0.3": [0.0] * 4},
             "sink_rate_short": {"length": 64, "sink_rate": {"0.2": 0.0, "0.3": 0.0},
                                 "sink_rate_per_layer": {"0.2": [0.0] * 4, "0.3": [0.0] * 4}},
             "sparsity": {"exact_zero_pct": 0.0, "le_threshold_pct": 0.0, "threshold": 1e-5},
             "sparsity_per_layer": {"exact_zero_pct": [0.0] * 4, "le_threshold_pct": [0.0] * 4}, "max_len": 256}
        paths[v] = tmp_path / f"{v}.json"
        write_json_atomic(paths[v], s)
    sinks.plot_sink_rate(paths, tmp_path / "sink")
    fig = figs[-1]
    sink_axes = [a for a in fig.axes if a.get_title().startswith("Sink rate per layer")]
    assert len(sink_axes) == 2 and "first 64 tokens" in sink_axes[1].get_title()
    for ax in sink_axes + [fig.axes[-1]]:
        lines = [l for l in ax.get_lines() if len(l.get_xdata())]
        assert len(lines) == 4
        xs = {tuple(np.round(l.get_xdata(), 6)) for l in lines}
        looks = {(l.get_marker(), l.get_markerfacecolor(), l.get_color(), l.get_linestyle()) for l in lines}
        assert len(xs) == 4 and len(looks) == 4  # none drawn on top of another, each tells itself apart
        for l in lines:
            assert np.all(np.abs(l.get_xdata() - np.arange(4)) < 0.5)  # still at its own layer


def _eval(tasks):
    return {"tasks": tasks, "perplexity": {"word_perplexity": 55.5}, "limit": 100}


def test_eval_table_is_the_papers_table_1_with_missing_values(tmp_path):
    a = tmp_path / "softmax.json"
    b = tmp_path / "softpick.json"
    write_json_atomic(a, _eval({"arc_easy": {"acc": 0.5, "acc_stderr": 0.05, "acc_norm": 0.45, "acc_norm_stderr": 0.05},
                                "lambada": {"acc": 0.1, "acc_stderr": 0.03, "perplexity": 1234.5},
                                "piqa": {"acc": 0.6}, "sciq": {"acc": 0.7, "acc_norm": float("nan")}}))
    write_json_atomic(b, {"tasks": {"arc_easy": {"acc": 0.52}}, "perplexity": None})
    md, tex = eval_tables.write_eval_table({"softmax": a, "softpick": b}, tmp_path / "t1")
    text = md.read_text()
    lines = [l for l in text.splitlines() if l.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == ["model", "ARC-e acc", "ARC-e acc_norm", "LAMBADA acc", "LAMBADA ppl", "PIQA acc",
                      "PIQA acc_norm", "SciQ acc", "SciQ acc_norm", "word ppl"]
    rows = {r.split("|")[1].strip(): [c.strip() for c in r.strip("|").split("|")] for r in lines[2:]}
    assert rows["softmax (ours)"] == ["softmax (ours)", "50.0 ± 5.0", "45.0 ± 5.0", "10.0 ± 3.0", "1,234.50", "60.0", "—",
                               "70.0", "—", "55.50"]
    assert rows["softpick (ours)"] == ["softpick (ours)", "52.0"] + ["—"] * 8
    assert "Our examples per task: 100." in text
    ref = rows["340M softpick (paper v4 Table 1) *"]
    assert ref[1:] == ["61.11", "56.73", "36.21", "28.63", "66.59", "66.49", "83.60", "77.30", "24.32"]
    assert rows["1.8B softmax (paper v4 Table 1) *"][1] == "—"
    assert "different scale" in text and "WikiText" in text
    assert r"\begin{tabular}" in tex.read_text() and "acc\\_norm" in tex.read_text()
    md2, _ = eval_tables.write_eval_table_all({"softmax": a, "softpick": b}, tmp_path / "all")
    t2 = md2.read_text()
    assert "lambada ppl" in t2 and "1,234.50" in t2 and "—" in t2


def test_analysis_table_short_sink_and_dead_heads_with_missing_values(tmp_path):
    new = {"num_docs": 4, "max_len": 1024, "sink_rate": {"0.2": 12.5, "0.3": 5.0}, "kurtosis_hf_hidden_states": 150.5,
           "length_sweep": [{"length": 256, "sink_rate": {"0.2": 20.0, "0.3": 9.5}}],
           "sink_rate_short": {"length": 64, "sink_rate": {"0.2": 40.0, "0.3": 17.25}},
           "dead_heads": {"pct": {"1e-06": 6.25, "0.01": 12.5}}, "kurtosis": 148.0, "min": -3.0, "max": 395.0,
           "max_abs": 395.0, "sparsity": {"exact_zero_pct": 0.0, "le_threshold_pct": 1.0}}
    old = {"num_docs": 4, "max_len": 256, "sink_rate": {"0.2": 1.0, "0.3": 0.5}, "kurtosis": None}
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    write_json_atomic(a, new)
    write_json_atomic(b, old)  # an analysis file from before these metrics: every new column "—"
    md, _ = analysis_table.write_analysis_table({"softmax": a, "softpick": b}, tmp_path / "an", "small")
    lines = [l for l in md.read_text().splitlines() if l.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header[1:6] == ["sink % ε 0.2 / 0.3, T=64", "sink % ε 0.2 / 0.3, L=256", "sink % ε 0.2 / 0.3, full length",
                           "kurtosis", "kurtosis (HF states)"]
    assert header[-2:] == ["dead heads % (ε=1e-06)", "dead heads % (ε=0.01)"]
    rows = [[c.strip() for c in l.strip("|").split("|")] for l in lines[2:]]
    assert rows[0][1:6] == ["40.00 / 17.25", "20.00 / 9.50", "12.50 / 5.00", "148.0", "150.5"]
    assert rows[0][-2:] == ["6.25", "12.50"]
    assert rows[1][1:4] == ["—", "1.00 / 0.50", "1.00 / 0.50"]  # its full length is 256 and rows[1][4] == "—" and rows[1][-2:] == ["—", "—"]
    ref = {r[0]: r for r in rows}
    assert ref["340M softpick (paper v4 Table 2) *"][-2:] == ["9.11", "—"]
    assert ref["1.8B softmax (paper v4 Table 2) *"][3:5] == ["41.73 / 14.96", "74,456.8"]
    # each reference row sits in the column of the length it was measured at
    assert ref["340M softmax (paper v4 Table 3, 10k steps) ‡"][1:4] == ["—", "47.97 / 34.89", "—"]
    assert ref["340M softmax (paper code, 100k steps, len 4096) †"][1:4] == ["—", "—", "68.53 / 63.41"]
    assert ref["340M softmax (paper code, 100k steps) ‡"][1:4] == ["—", "71.23 / 67.74", "—"]


def _box_inputs(tmp_path, variant, scale, n_states=5, seed=0):
    """An analysis JSON + NPZ pair holding what plot_hidden_box reads (heavy-tailed values, exact extremes)."""
    from softpick.analysis import _box_summary, ValueSample

    rng = np.random.default_rng(seed)
    samples = []
    for i in range(n_states):
        smp = ValueSample(3000, seed=i)
        x = rng.standard_normal(2000) * (1 + i)
        x[:3] = [scale * (i + 1), -scale, 0.5 * scale]  # massive activations
        smp.add(torch.from_numpy(x).float())
        samples.append(smp)
    arr = np.full((n_states, 2000), np.nan, dtype=np.float32)
    for i, smp in enumerate(samples):
        arr[i] = smp.values
    exact_max = [float(np.nanmax(r)) * 1.5 for r in arr]  # the exact extremes lie beyond the sample
    summary = {"max_abs": max(exact_max), "hidden_box": _box_summary(samples),
               "per_hidden_state": {"min": [float(np.nanmin(r)) for r in arr], "max": exact_max}}
    js, nz = tmp_path / f"{variant}.json", tmp_path / f"{variant}.npz"
    write_json_atomic(js, summary)
    np.savez(nz, hidden_sample=arr)
    return js, nz, summary


def test_hidden_box_plot_draws_boxes_outliers_and_exact_extremes(tmp_path, monkeypatch):
    figs = _capture_figures(monkeypatch, hidden_states)
    js, nz = {}, {}
    for k, (v, scale) in enumerate((("softmax", 300.0), ("softpick", 30.0))):
        js[v], nz[v], _ = _box_inputs(tmp_path, v, scale, seed=k)
    paths = hidden_states.plot_hidden_box(js, nz, tmp_path / "box")
    assert [p.suffix for p in paths] == [".png", ".pdf"] and all(p.stat().st_size > 1000 for p in paths)
    fig = figs[-1]
    axes = [a for a in fig.axes if a.get_yscale() == "symlog"]
    assert len(axes) == 2 and "softmax" in axes[0].get_title() and "softpick" in axes[1].get_title()
    assert [t.get_text() for t in axes[0].get_xticklabels()] == ["emb", "0", "1", "2", "out"]
    for ax, v in zip(axes, ("softmax", "softpick")):
        s = json.loads(js[v].read_text())
        ys = np.concatenate([c.get_offsets()[:, 1] for c in ax.collections if len(c.get_offsets())])
        assert np.max(ys) == pytest.approx(s["max_abs"], rel=1e-6)  # the exact maximum is drawn
        assert len(ys) <= 5 * (120 + 2)  # outliers thinned per hidden state, plus min and max
    # an analysis written before the box-plot sample existed: no figure, no error
    old = tmp_path / "old.npz"
    np.savez(old, topk_values=np.zeros((5, 4)))
    assert hidden_states.plot_hidden_box({"softmax": js["softmax"]}, {"softmax": old}, tmp_path / "none") is None

def test_hidden_box_plot_is_the_same_picture_every_time(tmp_path):
    """The outliers' jitter comes from a fixed seed (seaborn's stripplot draws it from numpy's global RNG),
    whatever that RNG's state; the caller's global RNG is left as it was."""
    js, nz = {}, {}
    for k, (v, scale) in enumerate((("softmax", 300.0), ("softpick", 30.0))):
        js[v], nz[v], _ = _box_inputs(tmp_path, v, scale, seed=k)
    pngs = []
    for run, global_seed in enumerate((1, 2)):
        np.random.seed(global_seed)
        png = hidden_states.plot_hidden_box(js, nz, tmp_path / f"box{run}")[0]
        assert np.random.random() == np.random.RandomState(global_seed).random()  # the caller's RNG untouched
        pngs.append(png.read_bytes())
    assert pngs[0] == pngs[1]


def ev(acc, se, ppl, bits=None):
    d = {"tasks": {"arc_easy": {"acc_norm": acc, "acc_norm_stderr": se}}, "perplexity": {"word_perplexity": ppl}}
    if bits: d["quantization"] = {"bits": bits, "method": "hqq"}
    return d

def test_quant_table_marks_differences_within_two_stderr(tmp_path):
    paths = {}
    for name, obj in {"sm": ev(0.30, 0.02, 100.0), "sp": ev(0.31, 0.02, 90.0), "sm2": ev(0.25, 0.02, 300.0, 2),
                      "sp2": ev(0.40, 0.02, 200.0, 2)}.items():
        paths[name] = tmp_path / f"{name}.json"
        write_json_atomic(paths[name], obj)
    md, _ = quantization.write_quant_table({"softmax": paths["sm"], "softpick": paths["sp"]},
                                           {"softmax": [paths["sm2"]], "softpick": [paths["sp2"]]}, tmp_path / "q")
    rows = {l.split(" | ")[0].strip("| "): l for l in md.read_text().splitlines() if l.startswith("| ")}
    assert " 30.00 ± 2.00 " in rows["float"] and " +1.00 (n.s.) " in rows["float"]  # 1 < 2 * 2.83
    assert " +15.00 | " in rows["hqq"] and "(n.s.)" not in rows["hqq"].split(" | ")[4]  # 15 > 5.66
    assert " -100.00 " in rows["hqq"]  # no stderr for word perplexity: never marked


# ------------------------------------------------------------------------------------ the registry
def test_every_registered_figure_draws_exactly_its_declared_outputs(full_run, tmp_path):
    assert {f.rule for f in REGISTRY.values()} == {"figures", "mechanism_figure", "variants_table"}
    for name, fig in REGISTRY.items():
        out_dir = tmp_path / name
        inputs = registry.find_inputs(fig, full_run, VARIANTS, strict=True)
        paths = fig.draw(inputs, out_dir / fig.name, "tiny")
        assert sorted(p.name for p in paths) == sorted(fig.outputs(VARIANTS)), name
        assert sorted(p.name for p in out_dir.iterdir()) == sorted(fig.outputs(VARIANTS)), name  # nothing else
        assert all(p.stat().st_size > 0 for p in paths), name
    # make_all of one rule: its figures to the figure directory, its tables to the table directory
    for rule, where in (("variants_table", "tables"), ("mechanism_figure", "figs")):
        written = make_all(full_run, tmp_path / "figs", VARIANTS, table_dir=tmp_path / "tables", strict=True, rule=rule)
        assert sorted(p.name for p in written) == sorted(f for fig in REGISTRY.values() if fig.rule == rule
                                                         for f in fig.outputs(VARIANTS))
        assert {p.parent.name for p in written} == {where}
    assert "softmax (tiny)" in (tmp_path / "tables" / "variants_table.md").read_text()  # the run label names our rows


def test_registry_names_are_unique(monkeypatch):
    names = [fig.name for module in _families() for fig in module.FIGURES]
    assert len(names) == len(set(names)) == len(REGISTRY)
    files = [f for fig in REGISTRY.values() for f in fig.outputs(VARIANTS)]
    assert len(files) == len(set(files))
    # a second figure of the same name is refused, naming it
    from softpick.figures import training

    monkeypatch.setattr(training, "FIGURES", training.FIGURES + (REGISTRY["length_sweep"],))
    with pytest.raises(ValueError, match="'length_sweep' is registered twice"):
        registry._discover()
    # a declaration that names no result file, or no caption file, is refused naming it
    from softpick.figures import Figure

    with pytest.raises(ValueError, match=r"reads \['sink_json'\]"):
        Figure("x", "figure", "x.rst", "Analysis", ("sink_json",), lambda *a: [])
    with pytest.raises(ValueError, match="workflow/report"):
        Figure("x", "figure", "x.txt", "Analysis", ("eval",), lambda *a: [])


def _families():
    import importlib
    import pkgutil
    from pathlib import Path

    import softpick.figures as package

    modules = [importlib.import_module(f"softpick.figures.{m.name}") for m in pkgutil.iter_modules([str(Path(package.__file__).parent)])]
    return [m for m in modules if hasattr(m, "FIGURES")]


def test_a_figure_with_a_missing_input_names_the_file_and_the_stage(full_run, tmp_path):
    import shutil

    run = tmp_path / "tiny"
    shutil.copytree(full_run, run)
    (run / "knockout" / "softpick.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"knockout/softpick\.json is missing: run the 'knockout' stage"):
        make_all(run, tmp_path / "figs", VARIANTS, strict=True)
    assert not (tmp_path / "figs").exists()  # checked before anything is drawn
    # without strict: the figure is drawn from the variants that have its input, skipped when none has
    knockout = REGISTRY["knockout_table"]
    md, _ = knockout.draw(registry.find_inputs(knockout, run, VARIANTS), tmp_path / "knockout_table")
    assert "| softmax |" in md.read_text() and "| softpick |" not in md.read_text()
    (run / "knockout" / "softmax.json").unlink()
    assert registry.find_inputs(knockout, run, VARIANTS) is None
    # a glob input (the quantized evaluations): the pattern and the quantize stage
    shutil.rmtree(run / "quant" / "softmax")
    with pytest.raises(FileNotFoundError, match=r"quant/softmax/\*_\*bit\.json is missing: run the 'quantize' stage"):
        registry.find_inputs(REGISTRY["quantization"], run, VARIANTS, strict=True)
    # the other rules' figures: their own inputs
    (run / "mechanism" / "softmax.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"mechanism/softmax\.json is missing: run the 'mechanism' stage"):
        make_all(run, tmp_path / "figs", VARIANTS, strict=True, rule="mechanism_figure")
    (run / "passkey" / "softmax.json").unlink()  # optional for the variants table: "—"
    assert len(make_all(run, tmp_path / "figs", VARIANTS, strict=True, rule="variants_table")) == 2


def test_colours_and_labels_are_the_attention_kinds():
    from softpick.attention import KINDS, get_kind

    for k in KINDS:
        assert style.color(k) == get_kind(k).color and style.label_of(k) == get_kind(k).label
    assert style.color("softmax") == "#D55E00" and style.color("softpick") == "#0072B2"
    # a variant that is no attention kind: a fixed fallback colour, its name as label
    assert style.color("my_variant") == style.color("my_variant") and style.color("my_variant").startswith("#")
    assert style.label_of("my_variant") == "my variant"
