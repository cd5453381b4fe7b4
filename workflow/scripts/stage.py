"""Snakemake entry point of every rule that runs a stage: the rule names the stage
(softpick.stages.registry.stage_for_rule: its name, import_model for `import`); the work is
softpick.cli.run_stage, the same function `softpick <stage>` runs outside Snakemake. redirect_output
sends everything to the rule's log (progress bars at a log-friendly rate); run_stage starts it with the
stage header, listing the rule's inputs with their sha256."""
import torch

from softpick.cli import redirect_output, run_stage
from softpick.stages.registry import stage_for_rule

smk = snakemake  # noqa: F821 (injected by Snakemake's script directive)
torch.set_num_threads(smk.threads)
with redirect_output(smk.log[0]):
    run_stage(
        stage_for_rule(smk.rule).name,
        smk.config,
        variant=smk.wildcards.get("variant"),
        bits=int(smk.wildcards["bits"]) if "bits" in smk.wildcards.keys() else None,
        method=smk.wildcards.get("method"),
        inputs=[str(path) for path in smk.input],
    )
