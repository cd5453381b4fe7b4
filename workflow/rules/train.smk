rule train:
    """Pretrain one attention variant (softmax or softpick); exports a transformers model."""
    input:
        manifest=f"{RESULTS}/data/manifest.json",
        code=CODE["train"] + CODE["model"],
    output:
        [f"{RESULTS}/models/{{variant}}/{name}" for name in MODEL_FILES],
    params:
        model=config["model"],
        train=config["train"],
        seed=config["seed"],
        device=config["device"],
    log:
        f"{LOGS}/train_{{variant}}.log",
    benchmark:
        f"{BENCH}/train_{{variant}}.tsv"
    wildcard_constraints:
        variant="|".join(VARIANTS),
    threads: config["train"].get("threads", 1)
    resources:
        mem_mb=8000,
        runtime=60 * 24,
    script:
        "../scripts/stage.py"
