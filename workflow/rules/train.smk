import json
import sys

from softpick.checkpoint import OPERATIONAL_TRAIN_KEYS
from softpick.launch import slurm_resources, train_processes
from softpick.distributed import check_distributed

# train.gpus: processes per node (0 = CPU, 1 = one GPU process, N > 1 = torchrun with N processes);
# train.nodes: machines. processes = nodes x gpus. More than one process: softpick.launch builds the
# torchrun command (--standalone on one node; several nodes: c10d rendezvous, one torchrun per node
# through srun under SLURM). One node declares resources gpu=N, so `--resources gpu=K` (local-gpu
# profile) keeps Snakemake from oversubscribing a box's GPUs and the SLURM executor asks for N GPUs;
# several nodes declare nodes / tasks / gres per node instead (softpick.launch.slurm_resources says why).
TRAIN_GPUS = config["train"].get("gpus", 0)
TRAIN_NODES = config["train"].get("nodes", 1)
TRAIN_PROCESSES = train_processes(TRAIN_GPUS, TRAIN_NODES)  # names train.nodes / train.gpus when bad
check_distributed(config["train"], TRAIN_PROCESSES)  # fail at parse time, naming the keys
TRAIN_THREADS_PER_NODE = max(1, config["train"].get("threads", 1)) * max(1, TRAIN_GPUS)

# Keys that do not change the trained model stay out of params (a changed param reruns the job):
# the operational keys always (softpick.checkpoint.OPERATIONAL_TRAIN_KEYS, also outside the checkpoint
# fingerprint: gpus, nodes, rdzv_port, peak_tflops, tensorboard, wandb, log_every, val_every,
# checkpoint_every, keep_checkpoints, max_consecutive_skips); parallelism / compile / dtype at their
# defaults, so models trained before these keys existed are not invalidated. The one-process job reads
# them from the whole config (workflow/scripts/stage.py), outside params.
TRAIN_OPERATIONAL = OPERATIONAL_TRAIN_KEYS
TRAIN_DEFAULTS = {"parallelism": "ddp", "compile": False, "dtype": "float32"}
TRAIN_PARAMS = {k: v for k, v in config["train"].items()
                if k not in TRAIN_OPERATIONAL and not (k in TRAIN_DEFAULTS and v == TRAIN_DEFAULTS[k])}
# Several processes read the config from a file (train_config). It holds what training depends on,
# so rewriting it means retraining; the operational keys go to the train command line instead as
# JSON (softpick launch --operational), a global of the shell command: neither a param nor part of
# the command's text, so Snakemake reruns nothing when they change.
# Its eval.max_length is train.seq_len: training evaluates nothing, but the file is validated like any
# config merged over default.yaml (eval.max_length <= train.seq_len; the default's 256 exceeds a shorter seq_len).
TRAIN_FILE_CONFIG = {**{k: config[k] for k in ("run_name", "seed", "device", "variants", "data", "model")},
                     "train": {k: v for k, v in config["train"].items() if k not in TRAIN_OPERATIONAL},
                     "eval": {"max_length": config["train"]["seq_len"]}}
TRAIN_OPERATIONAL_JSON = json.dumps({k: config["train"][k] for k in TRAIN_OPERATIONAL if k in config["train"]})


if TRAIN_PROCESSES > 1:

    rule train_config:
        """The resolved config of training as one YAML file (without the operational keys): what the torchrun-launched train processes read."""
        output:
            f"{RESULTS}/train_config.yaml",
        params:
            config=TRAIN_FILE_CONFIG,
        log:
            f"{LOGS}/train_config.log",
        run:
            import yaml

            with open(output[0], "w") as fh:
                yaml.safe_dump(params.config, fh, sort_keys=False)

    rule train:
        """Pretrain one attention variant with train.nodes x train.gpus processes (torchrun); exports a transformers model."""
        input:
            manifest=f"{RESULTS}/data/manifest.json",
            config=f"{RESULTS}/train_config.yaml",
            code=code("train"),  # not the launcher's: how the processes start does not change the model
        output:
            [f"{RESULTS}/models/{{variant}}/{name}" for name in MODEL_FILES],
        params:
            model=config["model"],
            train=TRAIN_PARAMS,
            seed=config["seed"],
            device=config["device"],
            python=sys.executable,
        conda:
            CONDA_ENV
        log:
            f"{LOGS}/train_{{variant}}.log",
        benchmark:
            f"{BENCH}/train_{{variant}}.tsv"
        wildcard_constraints:
            variant="|".join(VARIANTS),
        threads: TRAIN_THREADS_PER_NODE
        resources:
            **slurm_resources(TRAIN_GPUS, TRAIN_NODES, TRAIN_THREADS_PER_NODE),
            mem_mb=16000 * TRAIN_GPUS,  # per node
            runtime=60 * 24,
        shell:
            "{params.python} -m softpick launch --config {input.config} --variant {wildcards.variant} "
            "--operational {TRAIN_OPERATIONAL_JSON:q} --python {params.python} "
            "--cpus-per-node {resources.cpus_per_task} > {log} 2>&1"

else:

    rule train:
        """Pretrain one attention variant (softmax or softpick) in one process; exports a transformers model."""
        input:
            manifest=f"{RESULTS}/data/manifest.json",
            code=code("train"),
        output:
            [f"{RESULTS}/models/{{variant}}/{name}" for name in MODEL_FILES],
        params:
            model=config["model"],
            train=TRAIN_PARAMS,
            seed=config["seed"],
            device=config["device"],
        conda:
            CONDA_ENV
        log:
            f"{LOGS}/train_{{variant}}.log",
        benchmark:
            f"{BENCH}/train_{{variant}}.tsv"
        wildcard_constraints:
            variant="|".join(VARIANTS),
        threads: config["train"].get("threads", 1)
        resources:
            gpu=TRAIN_GPUS,
            mem_mb=8000,
            runtime=60 * 24,
        script:
            "../scripts/stage.py"
