PASSKEY = expand(f"{RESULTS}/passkey/{{variant}}.json", variant=VARIANTS)


rule passkey:
    """Passkey retrieval of one trained model (the paper's v4 Table 4): greedy exact match of a hidden key per prompt length."""
    input:
        model=lambda w: model_files(w.variant),
        tokenizer=f"{RESULTS}/data/tokenizer/tokenizer.json",
        code=code("passkey"),
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
