# Paths shared by the rules; the same layout as softpick.config.run_paths.
import glob

RESULTS = f"results/{RUN}"
FIGDIR = f"figures/{RUN}"
LOGS = f"logs/{RUN}"
BENCH = f"logs/{RUN}/benchmarks"
LIB = "src/softpick"
ANALYSIS = sorted(glob.glob(f"{LIB}/analysis/*.py"))  # the analysis package: every accumulator module

# Library code each stage runs: editing it reruns that stage and what depends on it.
CODE = {
    "data": [f"{LIB}/data.py", f"{LIB}/slimpajama.py", f"{LIB}/atomic.py"],
    "model": [f"{LIB}/model.py", f"{LIB}/attention/__init__.py", f"{LIB}/attention/reference.py", f"{LIB}/attention/torch_fused.py",
              *sorted(glob.glob(f"{LIB}/attention/kinds/*.py"))],
    "train": [f"{LIB}/train.py", f"{LIB}/checkpoint.py", f"{LIB}/hf_export.py"],
    "evaluate": [f"{LIB}/evaluate.py", f"{LIB}/finite.py"],
    "quantize": [f"{LIB}/quantize/{m}.py" for m in ("__init__", "rtn", "hqq", "bnb", "gptq", "activation")] + [f"{LIB}/evaluate.py", f"{LIB}/finite.py"],
    "analyze": [*ANALYSIS, f"{LIB}/finite.py"],
    "dynamics": [f"{LIB}/dynamics.py", *ANALYSIS, f"{LIB}/finite.py"],
    "knockout": [f"{LIB}/knockout.py", *ANALYSIS, f"{LIB}/finite.py"],
    "passkey": [f"{LIB}/passkey.py", f"{LIB}/finite.py"],
    "mechanism": [f"{LIB}/mechanism.py", *ANALYSIS, f"{LIB}/data.py", f"{LIB}/atomic.py"],
    "figures": [f"{LIB}/plots.py"],
}

CONDA_ENV = "../../environment.yml"  # with --use-conda; pyproject.toml holds the dependency list

MODEL_FILES = ["config.json", "model.safetensors", "train_log.jsonl", "train_summary.json", "snapshots.json"]

FIGURE_NAMES = [
    "training_loss",
    *[f"attention_maps_{v}" for v in VARIANTS],
    "hidden_states",
    "hidden_state_boxplots",
    "sink_scores_heads",
    "sink_rate_per_layer",
    "length_sweep",
    "quantization",
]
TABLE_NAMES = ["analysis_table", "eval_table", "eval_table_all_tasks", "quant_table"]
# the families of the figure registry (softpick.figures): names and captions come from their modules
from softpick.figures import REGISTRY as FIGURE_REGISTRY

FIGURE_NAMES += [name for name, fig in FIGURE_REGISTRY.items() if fig.KIND == "figure"]
TABLE_NAMES += [name for name, fig in FIGURE_REGISTRY.items() if fig.KIND == "table"]

FIGURES = expand(f"{FIGDIR}/{{name}}.{{ext}}", name=FIGURE_NAMES, ext=["png", "pdf"])
TABLES = expand(f"{RESULTS}/tables/{{name}}.{{ext}}", name=TABLE_NAMES, ext=["md", "tex"])


def model_files(variant):
    return [f"{RESULTS}/models/{variant}/{name}" for name in MODEL_FILES]


CAPTIONED = {
    "training_loss": "Training",
    "attention_maps": "Analysis",
    "hidden_states": "Analysis",
    "hidden_state_boxplots": "Analysis",
    "sink_scores_heads": "Analysis",
    "sink_rate_per_layer": "Analysis",
    "length_sweep": "Analysis",
    "quantization": "Quantization",
    **{name: "Training dynamics" if fig.KIND == "figure" else "Tables" for name, fig in FIGURE_REGISTRY.items()},
}


def figure_outputs():
    out = []
    for name in FIGURE_NAMES:
        key = "attention_maps" if name.startswith("attention_maps") else name
        out.append(report(f"{FIGDIR}/{name}.png", caption=f"../report/{key}.rst", category=CAPTIONED[key]))
        out.append(f"{FIGDIR}/{name}.pdf")
    for name in TABLE_NAMES:
        out.append(report(f"{RESULTS}/tables/{name}.md", caption=f"../report/{name}.rst", category=CAPTIONED.get(name, "Tables")))
        out.append(f"{RESULTS}/tables/{name}.tex")
    return out


# GPU memory an evaluation holds at its peak (lm-eval batches of eval.batch_size x eval.max_length logits over the
# vocabulary, fp32, a few copies): `--resources gpu_mem_gb=N` keeps Snakemake from starting more evaluate /
# quantize jobs than one GPU holds (15 at once on an H200 ran out of memory with the small config: ~9 GiB each).
def eval_gpu_mem_gb(wildcards=None):
    ecfg = config["eval"]
    vocab = config["data"]["tokenizer"].get("vocab_size", 32000)
    return max(1, round(4 * 2.5 * ecfg.get("batch_size", 64) * ecfg.get("max_length", 1024) * vocab / 2**30 + 1))


# GPU memory of a forward pass that keeps every layer's attention map (analyze / dynamics / knockout / passkey):
# fp32 maps of batch x heads x length^2 for all layers plus two working copies, and the logits. Without it
# Snakemake started both analyze jobs beside 15 quantize jobs and they ran the H200 out of memory.
def model_pass_gpu_mem_gb(batch_size, length):
    mcfg = config["model"]
    vocab = config["data"]["tokenizer"].get("vocab_size", 32000)
    maps = 4 * batch_size * mcfg["num_attention_heads"] * length**2 * (mcfg["num_hidden_layers"] + 2)
    logits = 4 * 2 * batch_size * length * vocab
    return max(1, round((maps + logits) / 2**30 + 2))
