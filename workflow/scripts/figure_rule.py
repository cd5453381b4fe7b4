"""Snakemake entry point of a figure rule that is no pipeline stage (variants_table): draws the figures that
softpick.figures' registry assigns to this rule, from the run's results (make_all, strict: a missing input
names its file and the stage that writes it)."""
from softpick.cli import redirect_output
from softpick.figures import make_all

smk = snakemake  # noqa: F821 (injected by Snakemake's script directive)
with redirect_output(smk.log[0]):
    params = smk.params
    for path in make_all(params.results, params.figures, list(params.variants), table_dir=params.tables,
                         run_label=params.run_label, strict=True, rule=smk.rule):
        print(path)
