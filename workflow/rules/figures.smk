# The figures and tables (softpick.figures): names, outputs, captions and the result files each reads come from
# its registry (common.smk figure_outputs / figure_inputs).


rule figures:
    """Every figure (PNG and PDF) and table (Markdown and LaTeX) of the run."""
    input:
        results=figure_inputs("figures"),
        code=code("figures"),
    output:
        figure_outputs("figures"),
    params:
        variants=VARIANTS,
        quantize=config["quantize"],
    conda:
        CONDA_ENV
    log:
        f"{LOGS}/figures.log",
    benchmark:
        f"{BENCH}/figures.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    script:
        "../scripts/stage.py"


VARIANTS_TABLE = figure_files("variants_table")


rule variants_table:
    """The paper's Table 3 at this run's scale: sink rates, kurtosis, min / max, sparsity, dead heads, validation loss, passkey."""
    input:
        results=figure_inputs("variants_table"),
        code=code("variants_table"),
    output:
        figure_outputs("variants_table"),
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
        "../scripts/stage.py"
