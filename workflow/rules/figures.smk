rule figures:
    """Every figure (PNG and PDF) and table (Markdown and LaTeX) of the run."""
    input:
        models=[f for v in VARIANTS for f in model_files(v)],
        eval=expand(f"{RESULTS}/eval/{{variant}}.json", variant=VARIANTS),
        quant=[f"{RESULTS}/quant/{v}/{m}_{b}bit.json" for v in VARIANTS for m, b in QUANT_JOBS],
        analysis=expand(f"{RESULTS}/analysis/{{variant}}.{{ext}}", variant=VARIANTS, ext=["json", "npz"]),
        dynamics=DYNAMICS,
        knockout=KNOCKOUT,
        code=code("figures"),
    output:
        figure_outputs(),
    params:
        variants=VARIANTS,
        quantize=config["quantize"],
    conda:
        CONDA_ENV
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
