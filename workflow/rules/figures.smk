CAPTIONED = {
    "training_loss": "Training",
    "attention_maps": "Analysis",
    "hidden_states": "Analysis",
    "sink_scores_heads": "Analysis",
    "sink_rate_per_layer": "Analysis",
    "length_sweep": "Analysis",
    "quantization": "Quantization",
}


def figure_outputs():
    out = []
    for name in FIGURE_NAMES:
        key = "attention_maps" if name.startswith("attention_maps") else name
        out.append(report(f"{FIGDIR}/{name}.png", caption=f"../report/{key}.rst", category=CAPTIONED[key]))
        out.append(f"{FIGDIR}/{name}.pdf")
    for name in TABLE_NAMES:
        out.append(report(f"{RESULTS}/tables/{name}.md", caption=f"../report/{name}.rst", category="Tables"))
        out.append(f"{RESULTS}/tables/{name}.tex")
    return out


rule figures:
    """Every figure (PNG and PDF) and table (Markdown and LaTeX) of the run."""
    input:
        models=[f for v in VARIANTS for f in model_files(v)],
        eval=expand(f"{RESULTS}/eval/{{variant}}.json", variant=VARIANTS),
        quant=expand(f"{RESULTS}/quant/{{variant}}/{QMETHOD}_{{bits}}bit.json", variant=VARIANTS, bits=BITS),
        analysis=expand(f"{RESULTS}/analysis/{{variant}}.{{ext}}", variant=VARIANTS, ext=["json", "npz"]),
        code=CODE["figures"],
    output:
        figure_outputs(),
    params:
        variants=VARIANTS,
        quantize=config["quantize"],
    log:
        f"{LOGS}/figures.log",
    benchmark:
        f"{BENCH}/figures.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    script:
        "../scripts/stage.py"
