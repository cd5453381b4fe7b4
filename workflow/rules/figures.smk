def figure(name, caption, category):
    return expand(
        report(f"{FIGDIR}/{name}.{{ext}}", caption=f"../report/{name}.rst", category=category),
        ext=["png", "pdf"],
    )


rule figures:
    """Every figure (PNG and PDF) and table (Markdown and LaTeX) of the run."""
    input:
        models=[f for v in VARIANTS for f in model_files(v)],
        eval=expand(f"{RESULTS}/eval/{{variant}}.json", variant=VARIANTS),
        quant=expand(f"{RESULTS}/quant/{{variant}}/{QMETHOD}_{{bits}}bit.json", variant=VARIANTS, bits=BITS),
        analysis=expand(f"{RESULTS}/analysis/{{variant}}.{{ext}}", variant=VARIANTS, ext=["json", "npz"]),
        code=CODE["figures"],
    output:
        figure("loss_curves", "Training loss", "Training"),
        figure("attention_maps", "Attention maps", "Analysis"),
        figure("hidden_state_heatmaps", "Hidden-state magnitudes", "Analysis"),
        figure("activation_histograms", "Activation histograms", "Analysis"),
        figure("sink_rate_per_layer", "Sink rate per layer", "Analysis"),
        figure("quantization", "Quantization", "Quantization"),
        [report(f"{RESULTS}/tables/{n}.md", caption=f"../report/table_{n}.rst", category="Tables") for n in TABLE_NAMES],
        [f"{RESULTS}/tables/{n}.tex" for n in TABLE_NAMES],
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
