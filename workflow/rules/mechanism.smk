# The attention-sink mechanism on Bigram-Backcopy (src/softpick/mechanism.py): its own branch of the DAG,
# from the data stage's training tokens to one JSON per variant and one figure.
MECHANISM_JSON = expand(f"{RESULTS}/mechanism/{{variant}}.json", variant=VARIANTS)
MECHANISM_OUTPUTS = MECHANISM_JSON + figure_files("mechanism_figure")


rule mechanism:
    """Train a small model on Bigram-Backcopy sequences drawn from the corpus's bigrams; sink rate, BOS attention, norms, accuracy."""
    input:
        tokens=f"{RESULTS}/data/tokens_train.npy",  # with docs_train.npy, which the data rule writes beside it
        manifest=f"{RESULTS}/data/manifest.json",
        code=code("mechanism"),
    output:
        f"{RESULTS}/mechanism/{{variant}}.json",
    params:
        mechanism=config["mechanism"],
        seed=config["seed"],
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/mechanism_{{variant}}.log",
    benchmark:
        f"{BENCH}/mechanism_{{variant}}.tsv"
    wildcard_constraints:
        variant="|".join(VARIANTS),
    threads: config["mechanism"]["threads"]
    resources:
        mem_mb=3000,
        runtime=10,
    script:
        "../scripts/stage.py"


rule mechanism_figure:
    """The variants side by side: attention maps, attention on BOS at trigger vs other queries, BOS norm, accuracy."""
    input:
        results=figure_inputs("mechanism_figure"),
        code=code("mechanism_figure"),
    output:
        figure_outputs("mechanism_figure"),
    params:
        variants=VARIANTS,
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/mechanism_figure.log",
    benchmark:
        f"{BENCH}/mechanism_figure.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/stage.py"
