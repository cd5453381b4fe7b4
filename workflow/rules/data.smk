rule data:
    """Embedded corpus -> tokenizer -> train / validation token files split by document, with a manifest."""
    input:
        code=CODE["data"],
    output:
        manifest=f"{RESULTS}/data/manifest.json",
        train=f"{RESULTS}/data/tokens_train.npy",
        val=f"{RESULTS}/data/tokens_val.npy",
        val_docs=f"{RESULTS}/data/val_docs.jsonl",
        tokenizer=f"{RESULTS}/data/tokenizer/tokenizer.json",
    params:
        data=config["data"],
        seed=config["seed"],
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/data.log",
    benchmark:
        f"{BENCH}/data.tsv"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=30,
    script:
        "../scripts/stage.py"
