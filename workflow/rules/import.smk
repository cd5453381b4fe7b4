# Import instead of train (config models_from: variant -> fla checkpoint, a Hub id or a local directory):
# the Snakefile includes this file in place of train.smk, so import_model is the only producer of
# results/<run>/models/<variant>/ (the files of MODEL_FILES, as the train rule writes them).
# Parse time: a variant not imported yet whose Hub checkpoint is neither cached nor reachable stops the
# run at once, naming the Hub id and the config key that can point at a local copy instead.
import sys

from softpick.importer import hub_problem

_IMPORT_PROBLEM = hub_problem(config, f"{RESULTS}/models")
if _IMPORT_PROBLEM:
    print(f"softpick: error: {_IMPORT_PROBLEM}", file=sys.stderr)
    sys.exit(2)


rule import_model:
    """Import one variant's released checkpoint (fla `transformer`, config models_from) instead of training it."""
    input:
        tokenizer=f"{RESULTS}/data/tokenizer/tokenizer.json",  # beside the model when the checkpoint has none; else compared
        code=code("import"),
    output:
        [f"{RESULTS}/models/{{variant}}/{name}" for name in MODEL_FILES],
    params:
        source=lambda w: config["models_from"][w.variant],
        model=config["model"],
    log:
        f"{LOGS}/import_{{variant}}.log",
    benchmark:
        f"{BENCH}/import_{{variant}}.tsv"
    wildcard_constraints:
        variant="|".join(VARIANTS),
    threads: 1
    resources:
        mem_mb=16000,
        runtime=120,
    script:
        "../scripts/stage.py"  # the stage `import` (a rule cannot have that name)
