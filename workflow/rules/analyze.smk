rule analyze:
    """Sink rate, hidden-state kurtosis, min / max activations and attention sparsity on validation documents."""
    input:
        model=lambda w: model_files(w.variant),
        val=f"{RESULTS}/data/tokens_val.npy",
        code=code("analyze"),
    output:
        summary=f"{RESULTS}/analysis/{{variant}}.json",
        arrays=f"{RESULTS}/analysis/{{variant}}.npz",
    params:
        analysis=config["analysis"],
        device=config["device"],
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/analyze_{{variant}}.log",
    benchmark:
        f"{BENCH}/analyze_{{variant}}.tsv"
    wildcard_constraints:
        variant="|".join(VARIANTS),
    threads: 1
    resources:
        gpu_mem_gb=model_pass_gpu_mem_gb(config["analysis"]["batch_size"], config["analysis"]["max_len"]),
        mem_mb=8000,
        runtime=60,
    script:
        "../scripts/stage.py"
