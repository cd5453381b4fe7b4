# Post-training quantization: one job per variant x (method, bits) of the config (QUANT_JOBS, softpick.quantize).


rule quantize:
    """Post-training quantization of one model with one method at one bit width, then the same evaluation
    on the run's device (GPTQ calibrates on windows of the training split)."""
    input:
        model=lambda w: model_files(w.variant),
        val_docs=f"{RESULTS}/data/val_docs.jsonl",
        train_tokens=f"{RESULTS}/data/tokens_train.npy",
        code=code("quantize"),
    output:
        f"{RESULTS}/quant/{{variant}}/{{method}}_{{bits}}bit.json",
    params:
        quantize=config["quantize"],
        eval=config["eval"],
        device=config["device"],
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/quantize_{{variant}}_{{method}}_{{bits}}bit.log",
    benchmark:
        f"{BENCH}/quantize_{{variant}}_{{method}}_{{bits}}bit.tsv"
    wildcard_constraints:
        variant="|".join(VARIANTS),
        method="|".join(sorted({m for m, _ in QUANT_JOBS})),
        bits=r"\d+",
    threads: 1
    resources:
        mem_mb=4000,
        runtime=120,
        gpu_mem_gb=eval_gpu_mem_gb,
    script:
        "../scripts/stage.py"
