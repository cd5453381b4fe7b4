rule evaluate:
    """lm-evaluation-harness: zero-shot tasks and held-out corpus perplexity of one trained model."""
    input:
        model=lambda w: model_files(w.variant),
        val_docs=f"{RESULTS}/data/val_docs.jsonl",
        code=code("evaluate"),
    output:
        f"{RESULTS}/eval/{{variant}}.json",
    params:
        eval=config["eval"],
        device=config["device"],
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/evaluate_{{variant}}.log",
    benchmark:
        f"{BENCH}/evaluate_{{variant}}.tsv"
    wildcard_constraints:
        variant="|".join(VARIANTS),
    threads: 1
    resources:
        mem_mb=4000,
        runtime=120,
        gpu_mem_gb=eval_gpu_mem_gb,
    script:
        "../scripts/stage.py"

