"""The attention-sink mechanism on Bigram-Backcopy, the variants side by side (results/<run>/mechanism/<variant>.json,
softpick.mechanism): mean attention maps, how the sink forms during training, attention on BOS at trigger vs other
queries, the residual norm at BOS and the accuracy. Drawn by its own Snakemake rule (mechanism_figure)."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Mapping

import numpy as np
from matplotlib import colors as mcolors
from matplotlib.gridspec import GridSpec

from .base import Figure
from .style import color, plt, save_figure


def plot_mechanism(json_paths: Mapping[str, str | Path], out) -> list[Path]:
    """Variants side by side: mean attention map (first positions), attention on BOS at trigger vs
    other queries, residual norm at BOS vs other positions, accuracy; PNG + PDF."""
    res = {v: json.loads(Path(p).read_text()) for v, p in json_paths.items()}
    variants = list(res)
    eps = "0.3" if all("0.3" in r["sink_rate"] for r in res.values()) else next(iter(next(iter(res.values()))["sink_rate"]))
    fig = plt.figure(figsize=(4.2 * max(3, len(variants) + 1), 8.4), layout="constrained")
    gs = GridSpec(2, max(3, len(variants) + 1), figure=fig, height_ratios=[1.15, 1])

    for i, v in enumerate(variants):  # row 1: one attention map per variant
        ax = fig.add_subplot(gs[0, i])
        amap = np.nanmean(np.asarray(res[v]["attention_map"]["mean"], dtype=float), axis=(0, 1))
        cmap = mcolors.LinearSegmentedColormap.from_list(v, ["#FFFFFF", color(v)]).with_extremes(bad="#F2F2F2")
        masked = np.ma.masked_where(np.triu(np.ones_like(amap, dtype=bool), 1), amap)
        im = ax.imshow(masked, cmap=cmap, norm=mcolors.PowerNorm(0.5, vmin=0, vmax=1), interpolation="nearest")
        ax.grid(False)
        ax.set_title(f"{v}: sink rate {res[v]['sink_rate'][eps]:.1f}%  (ε = {eps})", color=color(v), fontweight="bold")
        ax.set_xlabel("key position (0 = BOS)")
        ax.set_ylabel("query position")
        fig.colorbar(im, ax=ax, shrink=0.8, label="mean attention weight")
    ax = fig.add_subplot(gs[0, len(variants)])  # how it forms during training (the probe sequences)
    for v in variants:
        log = [e for e in res[v]["train"]["log"] if "bos_attention_non_trigger" in e]
        steps = [e["step"] for e in log]
        ax.plot(steps, [e["bos_attention_non_trigger"] for e in log], "-", color=color(v), lw=2.2,
                label=f"{v}: attention on BOS, other queries")
        ax.plot(steps, [e["copy_accuracy"] for e in log], ":", color=color(v), lw=1.8, label=f"{v}: copy accuracy")
    ax.set_ylim(-0.02, 1.05)
    ax.set_xlabel("training step")
    ax.set_title("during training")
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(fontsize=8, frameon=False, loc="center right")

    ax = fig.add_subplot(gs[1, 0])
    _bars(ax, variants, {v: [res[v]["bos_attention"]["trigger_queries"], res[v]["bos_attention"]["non_trigger_queries"]]
                         for v in variants}, ["trigger queries\n(must copy)", "other queries\n(nothing to do)"], color, fmt="{:.2f}")
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("mean attention on BOS")
    ax.set_title("where the weight goes when a head has no work")

    ax = fig.add_subplot(gs[1, 1])
    names = next(iter(res.values()))["residual_norm"]["hidden_states"]
    xs = np.arange(len(names))
    for v in variants:
        rn = res[v]["residual_norm"]
        ax.plot(xs, rn["bos"], "-o", color=color(v), lw=2, label=f"{v}: BOS")
        ax.plot(xs, rn["others"], "--s", color=color(v), lw=1.5, alpha=0.7, label=f"{v}: other positions")
    ax.set_xticks(xs, names, rotation=20)
    ax.set_yscale("log")
    ax.set_ylabel("mean ‖h‖ (residual stream)")
    ax.set_title("BOS residual norm vs other positions")
    ax.legend(fontsize=8, frameon=False)

    ax = fig.add_subplot(gs[1, 2])
    _bars(ax, variants, {v: [res[v]["accuracy"]["copy"], res[v]["accuracy"]["bigram"]] for v in variants},
          ["copy positions", "bigram positions"], color, fmt="{:.2f}")
    bayes = np.mean([r["accuracy"]["bigram_bayes_optimal"] for r in res.values()])
    ax.hlines(bayes, 0.55, 1.45, colors="#333333", linestyles=":", lw=1.8, label=f"Bayes-optimal bigram {bayes:.2f}")
    ax.legend(frameon=False, fontsize=8, loc="center right")
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("next-token accuracy")
    ax.set_title("both variants solve the task")
    c = next(iter(res.values()))["config"]
    caption = (f"Bigram-Backcopy (Guo et al. 2024) from the corpus's bigrams: V = {c['vocab_size']}, "
               f"{c['num_triggers']} triggers, T = {c['seq_len']}; {c['num_layers']} layer(s) × {c['num_heads']} head(s), "
               f"d = {c['hidden_size']}, {c['steps']} AdamW steps × {c['batch_size']} sequences; "
               f"{next(iter(res.values()))['eval_sequences']} held-out sequences. "
               f"Maps: first {next(iter(res.values()))['attention_map']['size']} positions, "
               "mean over sequences, layers and heads.")
    return save_figure(fig, out, caption=caption)


def _bars(ax, variants, values: Mapping[str, list], groups: list[str], color, fmt: str) -> None:
    width = 0.8 / len(variants)
    for i, v in enumerate(variants):
        xs = np.arange(len(groups)) + (i - (len(variants) - 1) / 2) * width
        ys = [np.nan if y is None else y for y in values[v]]
        ax.bar(xs, ys, width * 0.92, color=color(v), label=v)
        for x, y in zip(xs, ys):
            if math.isfinite(y):
                ax.text(x, y, fmt.format(y), ha="center", va="bottom", fontsize=9)
    ax.set_xticks(np.arange(len(groups)), groups)
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(frameon=False, fontsize=8, loc="upper right")


def _draw(inputs, out, run_label="ours"):
    return plot_mechanism(inputs["mechanism"], out)


FIGURES = (Figure("mechanism", "figure", "mechanism.rst", "Mechanism", ("mechanism",), _draw, rule="mechanism_figure"),)
