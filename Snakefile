# The Softpick paper as one DAG: data -> train -> evaluate / quantize / analyze -> figures -> report.
#   snakemake --cores all                                   # tiny scale (configs/default.yaml), CPU
#   snakemake --cores all --configfile configs/small.yaml   # another scale, merged over the default
#   snakemake --report report.html                          # HTML report of the figures and tables
from softpick.config import check_yaml_files, validate_config
from softpick.quantize import quantize_jobs

# Snakemake's YAML loader keeps the last of duplicate keys (a second `train:` drops the first's keys):
# every config file is parsed again here, refusing them and naming file and line.
check_yaml_files(["configs/default.yaml", *workflow.configfiles])

configfile: "configs/default.yaml"

validate_config(config)

RUN = config["run_name"]
VARIANTS = config["variants"]
QUANT_JOBS = quantize_jobs(config["quantize"])  # [(method, bits)], validated with the config

include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
if config.get("models_from"):
    include: "workflow/rules/import.smk"  # the authors' released models instead of training (softpick.importer)
else:
    include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/quantize.smk"
include: "workflow/rules/analyze.smk"
include: "workflow/rules/dynamics.smk"
include: "workflow/rules/passkey.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/mechanism.smk"


rule all:
    default_target: True
    input:
        FIGURES,
        TABLES,
        PASSKEY,
        VARIANTS_TABLE,
        KNOCKOUT,
        MECHANISM_OUTPUTS,
