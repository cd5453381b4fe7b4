PASSKEY = expand(f"{RESULTS}/passkey/{{variant}}.json", variant=VARIANTS)


rule passkey:
    """Passkey retrieval of one trained model (the paper's v4 Table 4): greedy exact match of a hidden key per prompt length."""
    input:
        model=lambda w: model_files(w.variant),
        tokenizer=f"{RESULTS}/data/tokenizer/tokenizer.json",
        code=CODE["passkey"] + CODE["model"],
    output:
        f"{RESULTS}/passkey/{{variant}}.json",
    params:
        passkey=config.get("passkey", {}),
        seed=config["seed"],
        seq_len=config["train"]["seq_len"],
        device=config["device"],
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/passkey_{{variant}}.log",
    benchmark:
        f"{BENCH}/passkey_{{variant}}.tsv"
    wildcard_constraints:
        variant="|".join(VARIANTS),
    threads: 1
    resources:
        gpu_mem_gb=model_pass_gpu_mem_gb(config["passkey"]["batch_size"], max(config["passkey"]["lengths"])),
        mem_mb=4000,
        runtime=60,
    script:
        "../scripts/stage.py"


VARIANTS_TABLE = expand(f"{RESULTS}/tables/variants_table.{{ext}}", ext=["md", "tex"])


rule variants_table:
    """The paper's Table 3 at this run's scale: sink rates, kurtosis, min / max, sparsity, dead heads, validation loss, passkey."""
    input:
        analysis=expand(f"{RESULTS}/analysis/{{variant}}.json", variant=VARIANTS),
        passkey=PASSKEY,
        summary=[f"{RESULTS}/models/{v}/train_summary.json" for v in VARIANTS],
        code=CODE["figures"],
    output:
        md=report(f"{RESULTS}/tables/variants_table.md", caption="../report/variants_table.rst", category="Tables"),
        tex=f"{RESULTS}/tables/variants_table.tex",
    params:
        variants=VARIANTS,
        run_label=RUN,
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/variants_table.log",
    benchmark:
        f"{BENCH}/variants_table.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    script:
        "../scripts/variants_table.py"
