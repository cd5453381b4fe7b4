"""The pipeline stages: one module per stage (data, train, evaluate, ...), each declaring a Stage
(softpick.stages.base); softpick.stages.registry collects them, softpick.cli builds the command line
from it, workflow/scripts/stage.py runs them for Snakemake and softpick.stages.code derives the code
each one runs. This file imports nothing, so importing one stage module does not import all of them."""
