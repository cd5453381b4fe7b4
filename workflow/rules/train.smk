import sys

from softpick.train import check_distributed

# train.gpus: 0 = CPU, 1 = one GPU process, N > 1 = torchrun with N processes (DDP / FSDP).
# The job declares resources gpu=N, so `--resources gpu=K` (local-gpu profile) keeps Snakemake
# from oversubscribing a box's GPUs and the SLURM executor asks for N GPUs.
TRAIN_GPUS = config["train"].get("gpus", 0)
check_distributed(config["train"], max(1, TRAIN_GPUS))  # fail at parse time, naming the keys

# Keys that do not change the trained model stay out of params (a changed param reruns the job):
# gpus, peak_tflops and tensorboard always; parallelism / compile / dtype at their defaults, so
# models trained before these keys existed are not invalidated.
TRAIN_OPERATIONAL = ("gpus", "peak_tflops", "tensorboard")
TRAIN_DEFAULTS = {"parallelism": "ddp", "compile": False, "dtype": "float32"}
TRAIN_PARAMS = {k: v for k, v in config["train"].items()
                if k not in TRAIN_OPERATIONAL and not (k in TRAIN_DEFAULTS and v == TRAIN_DEFAULTS[k])}


if TRAIN_GPUS > 1:

    rule train_config:
        """The resolved config as one YAML file: what the torchrun-launched train processes read."""
        output:
            f"{RESULTS}/train_config.yaml",
        params:
            config=config,
        log:
            f"{LOGS}/train_config.log",
        run:
            import yaml

            with open(output[0], "w") as fh:
                yaml.safe_dump(params.config, fh, sort_keys=False)

    rule train:
        """Pretrain one attention variant on train.gpus GPUs (torchrun, one process per GPU); exports a transformers model."""
        input:
            manifest=f"{RESULTS}/data/manifest.json",
            config=f"{RESULTS}/train_config.yaml",
            code=CODE["train"] + CODE["model"],
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
        threads: max(1, config["train"].get("threads", 1)) * TRAIN_GPUS
        resources:
            gpu=TRAIN_GPUS,
            mem_mb=16000 * TRAIN_GPUS,
            runtime=60 * 24,
        shell:
            "{params.python} -m torch.distributed.run --standalone --nproc_per_node={resources.gpu} "
            "-m softpick train --config {input.config} --variant {wildcards.variant} > {log} 2>&1"

else:

    rule train:
        """Pretrain one attention variant (softmax or softpick) in one process; exports a transformers model."""
        input:
            manifest=f"{RESULTS}/data/manifest.json",
            code=CODE["train"] + CODE["model"],
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
