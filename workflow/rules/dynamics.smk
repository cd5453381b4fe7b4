DYNAMICS = expand(f"{RESULTS}/dynamics/{{variant}}.json", variant=VARIANTS)
KNOCKOUT = expand(f"{RESULTS}/knockout/{{variant}}.json", variant=VARIANTS)


rule dynamics:
    """The analysis metrics (validation loss, sink rate at several lengths, kurtosis, max |h|, sparsity, dead heads) at every weight snapshot of one training."""
    input:
        model=lambda w: model_files(w.variant),
        val=f"{RESULTS}/data/tokens_val.npy",
        code=code("dynamics"),
    output:
        f"{RESULTS}/dynamics/{{variant}}.json",
    params:
        dynamics=config.get("dynamics", {}),
        analysis=config["analysis"],
        validation={k: config["train"].get(k) for k in ("seq_len", "val_batches", "micro_batch_size", "bos_first")},
        device=config["device"],
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/dynamics_{{variant}}.log",
    benchmark:
        f"{BENCH}/dynamics_{{variant}}.tsv"
    wildcard_constraints:
        variant="|".join(VARIANTS),
    threads: 1
    resources:
        gpu_mem_gb=model_pass_gpu_mem_gb(config["analysis"]["batch_size"], config["analysis"]["max_len"]),
        mem_mb=8000,
        runtime=60,
    script:
        "../scripts/stage.py"


rule knockout:
    """Validation loss with the first token's attention weight zeroed in the sink heads, and in as many random heads."""
    input:
        model=lambda w: model_files(w.variant),
        val=f"{RESULTS}/data/tokens_val.npy",
        code=code("knockout"),
    output:
        f"{RESULTS}/knockout/{{variant}}.json",
    params:
        knockout=config.get("knockout", {}),
        max_len=config["analysis"]["max_len"],
        bos_first=config["train"].get("bos_first", False),
        device=config["device"],
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/knockout_{{variant}}.log",
    benchmark:
        f"{BENCH}/knockout_{{variant}}.tsv"
    wildcard_constraints:
        variant="|".join(VARIANTS),
    threads: 1
    resources:
        gpu_mem_gb=model_pass_gpu_mem_gb(config["knockout"]["batch_size"], config["analysis"]["max_len"]),
        mem_mb=8000,
        runtime=60,
    script:
        "../scripts/stage.py"
