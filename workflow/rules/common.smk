# Paths shared by the rules; the same layout as softpick.config.run_paths.
RESULTS = f"results/{RUN}"
FIGDIR = f"figures/{RUN}"
LOGS = f"logs/{RUN}"
BENCH = f"logs/{RUN}/benchmarks"
LIB = "src/softpick"

# The code each stage runs, derived from its imports (softpick.stages.code: the stage module, every
# softpick module it imports transitively and the package files they read, e.g. the lm-eval task YAMLs):
# editing one reruns the stages that run it and what depends on them.
from softpick.stages.registry import stage_code


def code(stage):
    return stage_code(stage, LIB)


CONDA_ENV = "../../environment.yml"  # with --use-conda; pyproject.toml holds the dependency list

MODEL_FILES = ["config.json", "model.safetensors", "train_log.jsonl", "train_summary.json", "snapshots.json"]

# The figures and tables of the run: softpick.figures' registry (names, outputs, captions, inputs).
from softpick.figures import REGISTRY as FIGURE_REGISTRY
from softpick.figures.results import LAYOUT as RESULT_LAYOUT


def model_files(variant):
    return [f"{RESULTS}/models/{variant}/{name}" for name in MODEL_FILES]


def _figure_paths(rule, report_files=False):
    out = []
    for fig in FIGURE_REGISTRY.values():
        if fig.rule != rule:
            continue
        where = FIGDIR if fig.kind == "figure" else f"{RESULTS}/tables"
        for name in fig.outputs(VARIANTS):
            path = f"{where}/{name}"
            if report_files and name.endswith((".png", ".md")):  # in the HTML report, with its caption
                path = report(path, caption=f"../report/{fig.caption}", category=fig.category)
            out.append(path)
    return out


def figure_files(rule="figures"):
    """Every file the registry's figures of `rule` write (figures/<run>/*.png|pdf, results/<run>/tables/*.md|tex)."""
    return _figure_paths(rule)


def figure_outputs(rule="figures"):
    """figure_files(rule) as a rule's output: each PNG and Markdown file in Snakemake's report with its caption."""
    return _figure_paths(rule, report_files=True)


def figure_inputs(rule="figures"):
    """The result files the figures of `rule` read, per variant (softpick.figures.results.LAYOUT); the quantized
    evaluations: one per quantize job."""
    keys = dict.fromkeys(k for fig in FIGURE_REGISTRY.values() if fig.rule == rule for k in (*fig.reads, *fig.optional))
    files = []
    for key in keys:
        entry = RESULT_LAYOUT[key]
        jobs = QUANT_JOBS if entry.is_glob else [(None, None)]
        files += [f"{RESULTS}/{entry.pattern.format(variant=v, method=m, bits=b)}" for v in VARIANTS for m, b in jobs]
    return files


FIGURES = [f for f in figure_files() if f.endswith((".png", ".pdf"))]
TABLES = [f for f in figure_files() if f.endswith((".md", ".tex"))]


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
