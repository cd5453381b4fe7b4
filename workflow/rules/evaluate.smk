rule evaluate:
    """lm-evaluation-harness: zero-shot tasks and held-out corpus perplexity of one trained model."""
    input:
        model=lambda w: model_files(w.variant),
        val_docs=f"{RESULTS}/data/val_docs.jsonl",
        code=CODE["evaluate"] + CODE["model"],
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
    script:
        "../scripts/stage.py"


rule quantize:
    """Weight-only post-training quantization of one model at one bit width, then the same evaluation."""
    input:
        model=lambda w: model_files(w.variant),
        val_docs=f"{RESULTS}/data/val_docs.jsonl",
        code=CODE["quantize"] + CODE["model"],
    output:
        f"{RESULTS}/quant/{{variant}}/{QMETHOD}_{{bits}}bit.json",
    params:
        quantize=config["quantize"],
        eval=config["eval"],
        device=config["device"],
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/quantize_{{variant}}_{{bits}}bit.log",
    benchmark:
        f"{BENCH}/quantize_{{variant}}_{{bits}}bit.tsv"
    wildcard_constraints:
        variant="|".join(VARIANTS),
        bits=r"\d+",
    threads: 1
    resources:
        mem_mb=4000,
        runtime=120,
    script:
        "../scripts/stage.py"
