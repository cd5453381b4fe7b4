"""Snakemake entry point of rule variants_table: softpick.plots.write_variants_table over the run's results."""
from softpick.cli import redirect_output
from softpick.plots import write_variants_table

smk = snakemake  # noqa: F821 (injected by Snakemake's script directive)
variants = list(smk.params.variants)
with redirect_output(smk.log[0]):
    for path in write_variants_table(
        dict(zip(variants, smk.input.analysis)),
        smk.output.md,
        passkey_paths=dict(zip(variants, smk.input.passkey)),
        train_summary_paths=dict(zip(variants, smk.input.summary)),
        run_label=smk.params.run_label,
    ):
        print(path)
