"""The paper's reference numbers and the authors' own measurements, each with the table it comes from.

The paper: Softpick (arXiv 2504.20966), version 4. "The authors' scripts": the committed outputs of the
analysis scripts in the authors' public code (their flame fork) on their released models. Every number
here is at another scale than our runs (340M / 1.8B parameters): the tables print them beside ours for
orientation, marked, never mixed with them. None = not reported.
"""
from __future__ import annotations

__all__ = ["PAPER_ANALYSIS_REFERENCE", "PAPER_ANALYSIS_REFERENCE_10K", "PAPER_ANALYSIS_V4", "PAPER_V4_SOURCE",
           "PAPER_EVAL_V4", "PAPER_REFERENCE_SOURCE", "PAPER_ANALYSIS_AT_256", "PAPER_VARIANTS_REFERENCE",
           "PAPER_PASSKEY_LENGTHS", "AUTHORS_REFERENCE"]

# The authors' scripts (result files of their public code, not the PDF) on their 340M / 1.8B models
# trained 100k steps x 524k tokens on FineWeb-Edu; 1000 validation docs, fp16, len 4096 (2048 for
# 1.8B). A DIFFERENT SCALE from our runs: for orientation only. The |a| <= 1e-5 sparsity was not
# reported (None); max_abs = max(|min|, |max|).
PAPER_ANALYSIS_REFERENCE: list[dict] = [
    {"model": "340M softmax (paper code, 100k steps, len 4096)", "variant": "softmax", "sink_0.2": 68.53,
     "sink_0.3": 63.41, "kurtosis": 27962.8, "min": -207.75, "max": 285.75, "max_abs": 285.75,
     "sparsity_zero": 0.92, "sparsity_le": None},
    {"model": "340M softpick (paper code, 100k steps, len 4096)", "variant": "softpick", "sink_0.2": 0.0,
     "sink_0.3": 0.0, "kurtosis": 325.1, "min": -50.88, "max": 56.13, "max_abs": 56.13,
     "sparsity_zero": 94.46, "sparsity_le": None, "note": "sink ε=0.2 reported as ≈0.00"},
    {"model": "1.8B softmax (paper code, len 2048)", "variant": "softmax", "sink_0.2": 44.41, "sink_0.3": 16.14,
     "kurtosis": 59249.5, "min": -176.88, "max": 378.75, "max_abs": 378.75, "sparsity_zero": 0.31,
     "sparsity_le": None},
    {"model": "1.8B softpick (paper code, len 2048)", "variant": "softpick", "sink_0.2": 0.003, "sink_0.3": 0.0001,
     "kurtosis": 2277.7, "min": -74.25, "max": 105.06, "max_abs": 105.06, "sparsity_zero": 96.41,
     "sparsity_le": None},
]
# The authors' scripts, 340M after 10k steps, len 4096 (min not reported; "max" is the reported maximum).
PAPER_ANALYSIS_REFERENCE_10K: list[dict] = [
    {"model": "340M softmax (paper code, 10k steps)", "variant": "softmax", "sink_0.2": 35.97, "sink_0.3": 24.61,
     "kurtosis": 2456.0, "min": None, "max": 178.9, "max_abs": None, "sparsity_zero": 0.83, "sparsity_le": None},
    {"model": "340M softpick (paper code, 10k steps)", "variant": "softpick", "sink_0.2": 0.024, "sink_0.3": 0.002,
     "kurtosis": 216.0, "min": None, "max": 25.4, "max_abs": None, "sparsity_zero": 93.78, "sparsity_le": None},
]
# The paper's v4 Table 2 (the paper's own numbers, cited as "the paper"),
# with the dead-head shares of v4 section 7.2 (eps 1e-6, >= 95% of 5M tokens; reported for softpick only).
# max_abs = max(|min|, |max|); sparsity = exact zeros of the causal lower triangle; T = 64 sink rate not reported.
PAPER_ANALYSIS_V4: list[dict] = [
    {"model": "340M softmax (paper v4 Table 2)", "variant": "softmax", "sink_0.2": 68.28, "sink_0.3": 63.41,
     "kurtosis": 33510.81, "min": -207.55, "max": 240.27, "max_abs": 240.27, "sparsity_zero": 4.53, "sparsity_le": None,
     "dead_1e-06": None},
    {"model": "340M softpick (paper v4 Table 2)", "variant": "softpick", "sink_0.2": 0.0, "sink_0.3": 0.0,
     "kurtosis": 340.96, "min": -45.03, "max": 36.21, "max_abs": 45.03, "sparsity_zero": 99.34, "sparsity_le": None,
     "dead_1e-06": 9.11},
    {"model": "1.8B softmax (paper v4 Table 2)", "variant": "softmax", "sink_0.2": 41.73, "sink_0.3": 14.96,
     "kurtosis": 74456.81, "min": -173.48, "max": 371.43, "max_abs": 371.43, "sparsity_zero": 4.28, "sparsity_le": None,
     "dead_1e-06": None},
    {"model": "1.8B softpick (paper v4 Table 2)", "variant": "softpick", "sink_0.2": 0.0, "sink_0.3": 0.0,
     "kurtosis": 2193.27, "min": -51.05, "max": 101.51, "max_abs": 101.51, "sparsity_zero": 95.63, "sparsity_le": None,
     "dead_1e-06": 20.90},
]
PAPER_V4_SOURCE = ("the paper (arXiv 2504.20966 v4) Table 2: sink rate over 1000 SlimPajama validation samples, "
                   "the rest over 10 samples, length 4096 and the dead heads of v4 §7.2 (ε = 1e-6, ≥ 95% of 5M tokens; softpick only; "
                   "after 10k steps 17.19% at 340M, 42.87% at 1.8B)")

# The paper's v4 Table 1: zero-shot lm-eval, in %; LAMBADA (openai) perplexity;
# word perplexity on WikiText (ours: the held-out corpus). None = not given.
PAPER_EVAL_V4: list[dict] = [
    {"model": "340M softmax (paper v4 Table 1)", "arc_easy": {"acc": 60.35, "acc_norm": 56.61},
     "lambada": {"acc": 36.25, "perplexity": 30.33}, "piqa": {"acc": 66.97, "acc_norm": 66.59},
     "sciq": {"acc": 83.20, "acc_norm": 74.90}, "word_perplexity": 23.85},
    {"model": "340M softpick (paper v4 Table 1)", "arc_easy": {"acc": 61.11, "acc_norm": 56.73},
     "lambada": {"acc": 36.21, "perplexity": 28.63}, "piqa": {"acc": 66.59, "acc_norm": 66.49},
     "sciq": {"acc": 83.60, "acc_norm": 77.30}, "word_perplexity": 24.32},
    {"model": "1.8B softmax (paper v4 Table 1)", "arc_easy": {"acc": None, "acc_norm": 67.21},
     "lambada": {"acc": 49.43, "perplexity": 11.38}, "piqa": {"acc": None, "acc_norm": 73.61},
     "sciq": {"acc": None, "acc_norm": 86.40}, "word_perplexity": 15.10},
    {"model": "1.8B softpick (paper v4 Table 1)", "arc_easy": {"acc": None, "acc_norm": 62.04},
     "lambada": {"acc": 43.51, "perplexity": 15.81}, "piqa": {"acc": None, "acc_norm": 70.89},
     "sciq": {"acc": None, "acc_norm": 80.40}, "word_perplexity": 17.87},
]
PAPER_REFERENCE_SOURCE = ("the authors' analysis scripts' committed outputs (their flame fork) on their released "
                          "340M / 1.8B models: 1000 SlimPajama validation documents, batch 1, fp16")

# Rows at L = 256: the authors' scripts' length sweep on their 100k-step 340M models, and the paper's v4 Table 3
# (10k steps; it equals that sweep at L = 256 on the 10k-step models). The analysis table puts each reference row
# in the column of the length it was measured at (the rows above: the full length, 4096 / 2048).
PAPER_ANALYSIS_AT_256: list[dict] = [
    {"model": "340M softmax (paper code, 100k steps)", "variant": "softmax", "sink_0.2": 71.23, "sink_0.3": 67.74,
     "kurtosis": 33722.0},
    {"model": "340M softpick (paper code, 100k steps)", "variant": "softpick", "kurtosis": 344.2, "sparsity_zero": 93.49},
    {"model": "340M softmax (paper v4 Table 3, 10k steps)", "variant": "softmax", "sink_0.2": 47.97, "sink_0.3": 34.89,
     "kurtosis": 6452.72, "min": -270.50, "max": 178.88, "sparsity_zero": 0.16},
    {"model": "340M softpick (paper v4 Table 3, 10k steps)", "variant": "softpick", "sink_0.2": 0.02, "sink_0.3": 0.00,
     "kurtosis": 281.57, "min": -59.06, "max": 25.36, "sparsity_zero": 92.74, "dead_1e-06": 17.19},
]

# The paper's v4 Table 3: 340M shape, 10k steps; sink % at L = 256 (eps 0.2 / 0.3; the authors' sweep),
# kurtosis, min, max, sparsity % (exact zeros). Dead heads (v4 7.2, eps 1e-6): softpick 17.19% after
# 10k steps. Passkey (v4 Table 4, % at 890/1983/3075/4167/4986 tokens, 4096-token training context):
# softmax and softpick only. Not reported: sink at T = 64, validation loss (None).
PAPER_VARIANTS_REFERENCE: list[dict] = [
    {"variant": "softmax", "sink_0.2": 47.97, "sink_0.3": 34.89, "kurtosis": 6452.72, "min": -270.50, "max": 178.88,
     "sparsity_zero": 0.16, "passkey": [95.5, 97.0, 73.0, 70.5, 0.0]},
    {"variant": "softpick", "sink_0.2": 0.02, "sink_0.3": 0.00, "kurtosis": 281.57, "min": -59.06, "max": 25.36,
     "sparsity_zero": 92.74, "dead_heads": 17.19, "passkey": [94.0, 91.0, 75.0, 66.5, 0.0]},
    {"variant": "gated", "sink_0.2": 5.00, "sink_0.3": 2.00, "kurtosis": 135.62, "min": -49.09, "max": 23.31,
     "sparsity_zero": 0.73},
    {"variant": "learned_sink", "sink_0.2": 19.34, "sink_0.3": 8.78, "kurtosis": 1800.34, "min": -36.25, "max": 106.62,
     "sparsity_zero": 0.05},
    {"variant": "rectified_softmax", "sink_0.2": 33.08, "sink_0.3": 25.60, "kurtosis": 11054.50, "min": -312.25,
     "max": 271.00, "sparsity_zero": 60.70},
    {"variant": "relu_softmax", "sink_0.2": 8.16, "sink_0.3": 4.56, "kurtosis": 452.59, "min": -61.28, "max": 60.62,
     "sparsity_zero": 29.08},
    {"variant": "scaled_softpick", "sink_0.2": 0.01, "sink_0.3": 0.00, "kurtosis": 170.70, "min": -53.69, "max": 30.81,
     "sparsity_zero": 91.95},
    {"variant": "softmax_plus_one", "sink_0.2": 24.38, "sink_0.3": 16.36, "kurtosis": 574.16, "min": -47.56,
     "max": 83.88, "sparsity_zero": 0.12},
]
PAPER_PASSKEY_LENGTHS = [890, 1983, 3075, 4167, 4986]  # the prompt lengths of the paper's v4 Table 4

# The authors' scripts on their released models, per size: (layers, heads) of the model and rows
# (variant, truncation length L, sink % eps 0.2, sink % eps 0.3, kurtosis, min, max, exact zeros %). Their v4
# Table 3 equals the L = 256 rows of their length sweeps (340M); L = 4096 (2048 for 1.8B) is their full length.
AUTHORS_REFERENCE: dict[str, dict] = {
    "340M": {"layers": 24, "heads": 16, "rows": [
        ("softmax", 256, 71.23, 67.74, 33722.0, None, None, None),
        ("softpick", 256, None, None, 344.2, None, None, 93.49),
        ("softmax", 4096, 68.53, 63.41, 27962.8, -207.75, 285.75, 0.92),
        ("softpick", 4096, 0.0, 0.0, 325.1, -50.88, 56.13, 94.46),  # sink ε=0.2 "≈0.00"
    ]},
    "1.8B": {"layers": 32, "heads": 32, "rows": [
        ("softmax", 2048, 44.41, 16.14, 59249.5, -176.88, 378.75, 0.31),
        ("softpick", 2048, 0.003, 0.0001, 2277.7, -74.25, 105.06, 96.41),
    ]},
}
