"""launch: the torchrun command of a multi-process train job, run in place of this process (softpick.launch).
The train rule runs it when train.nodes x train.gpus > 1; it has no rule of its own."""
from __future__ import annotations

import sys

from .base import Arg, Job, Stage


def run(job: Job):
    from ..launch import launch

    o = job.options
    launch(job.config["train"], job.variant, config_files=o.get("config", []), overrides=o.get("set", []),
           operational=o["operational"], gpus=o["gpus"], nodes=o["nodes"], rdzv_port=o["rdzv_port"],
           rendezvous=o["rendezvous"], cpus_per_node=o["cpus_per_node"], python=o["python"], dry_run=o["dry_run"])
    return []  # the train processes write the model (and print what they wrote)


ARGUMENTS = (
    Arg(("--operational",), {"metavar": "JSON", "help": "train keys as a JSON object, e.g. '{\"gpus\": 8, \"nodes\": 2}': "
                             "the launch counts and --set train.<key>=<value> for the train processes"}),
    Arg(("--gpus",), {"type": int, "help": "processes per node (default: train.gpus)"}),
    Arg(("--nodes",), {"type": int, "help": "machines (default: train.nodes)"}),
    Arg(("--rdzv-port",), {"type": int, "help": "rendezvous port (default: train.rdzv_port)"}),
    Arg(("--rendezvous",), {"action": "store_true",
                            "help": "c10d endpoint rendezvous even on one node (default there: --standalone)"}),
    Arg(("--cpus-per-node",), {"type": int, "help": "CPUs of each node's torchrun under srun (--cpus-per-task)"}),
    Arg(("--python",), {"default": sys.executable, "help": "interpreter of the train processes"}),
    Arg(("--dry-run",), {"action": "store_true", "help": "print the command, run nothing"}),
)

STAGE = Stage("launch", "train one variant with train.nodes x train.gpus processes: builds the torchrun command "
              "(softpick.launch) and runs it in place of itself", run, sections=("train",), variant=True,
              arguments=ARGUMENTS, cli_only=True, header=False)
