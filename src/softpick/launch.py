"""The torchrun command of a multi-process train job: one node (--standalone) or several (c10d rendezvous).

    softpick launch --config <resolved.yaml> --variant softpick [--operational JSON] [--dry-run]

takes train.gpus (processes per node), train.nodes and train.rdzv_port from --operational (a JSON
object of train keys, which the train processes also get as --set overrides; the Snakemake rule
passes the keys that do not change the model this way) or else from the config, prints the
command and runs it in place of itself (the stage softpick.stages.launch). Where the rendezvous endpoint comes from when nodes > 1:

  under SLURM (SLURM_JOB_ID set)  host: the first host of SLURM_JOB_NODELIST, port: train.rdzv_port,
                                  id: SLURM_JOB_ID; one torchrun per node through
                                  `srun --nodes=N --ntasks-per-node=1`
  otherwise                       host: MASTER_ADDR, port: MASTER_PORT (else train.rdzv_port),
                                  id: softpick-<variant>; run the same command on every machine

torchrun_command() is the pure part (argv from arguments and an environment mapping); launch() adds
what needs the machine: SLURM's node list when the job step's environment lacks it (the Snakemake
SLURM executor passes only SLURM_JOB_ID on), and `scontrol show hostnames` to expand it.
"""
from __future__ import annotations

import itertools
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from typing import Callable, Mapping, Sequence


class LaunchError(ValueError):
    """The launch cannot be built: a bad key value or missing rendezvous information (named)."""


# ----------------------------------------------------------------------------- SLURM node lists
_BRACKET = re.compile(r"\[([^\[\]]*)\]")


def _split_top_level(nodelist: str) -> list[str]:
    """'gpu[01-03,07],cpu5' -> ['gpu[01-03,07]', 'cpu5']: commas inside brackets do not split."""
    items, depth, start = [], 0, 0
    for i, ch in enumerate(nodelist):
        if ch == "[":
            depth += 1
            if depth > 1:
                raise LaunchError(f"SLURM node list {nodelist!r}: nested '[' at position {i}")
        elif ch == "]":
            depth -= 1
            if depth < 0:
                raise LaunchError(f"SLURM node list {nodelist!r}: ']' without '[' at position {i}")
        elif ch == "," and depth == 0:
            items.append(nodelist[start:i])
            start = i + 1
    if depth:
        raise LaunchError(f"SLURM node list {nodelist!r}: unclosed '['")
    items.append(nodelist[start:])
    return items


def _expand_range_set(nodelist: str, ranges: str) -> list[str]:
    """'01-03,07' -> ['01', '02', '03', '07'], keeping the zero padding of the lower bound."""
    out = []
    for part in ranges.split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m:
            raise LaunchError(f"SLURM node list {nodelist!r}: cannot read range {part!r} in [{ranges}]")
        lo, hi = m.group(1), m.group(2) or m.group(1)
        if int(hi) < int(lo):
            raise LaunchError(f"SLURM node list {nodelist!r}: range {part!r} runs backwards")
        width = len(lo) if lo.startswith("0") else 0
        out.extend(str(n).zfill(width) for n in range(int(lo), int(hi) + 1))
    return out


def expand_nodelist(nodelist: str) -> list[str]:
    """Expand SLURM's compressed host list, in order: 'gpu[01-03,07],cpu5' -> gpu01 gpu02 gpu03 gpu07 cpu5.

    Covers the forms SLURM prints: plain names, comma lists, bracketed ranges with zero padding,
    several bracket groups in one name ('r[1-2]n[1-2]' -> r1n1 r1n2 r2n1 r2n2). Used when scontrol
    is not on PATH; raises LaunchError on anything else rather than guessing.
    """
    hosts = []
    for item in _split_top_level(nodelist.strip()):
        item = item.strip()
        if not item:
            raise LaunchError(f"SLURM node list {nodelist!r}: empty host name")
        pieces = _BRACKET.split(item)  # literal, ranges, literal, ranges, ..., literal
        choices = [[p] if i % 2 == 0 else _expand_range_set(nodelist, p) for i, p in enumerate(pieces)]
        hosts.extend("".join(combo) for combo in itertools.product(*choices))
    return hosts


def slurm_hostnames(nodelist: str) -> list[str]:
    """Host names of a SLURM node list: `scontrol show hostnames` when available, else expand_nodelist."""
    if shutil.which("scontrol"):
        proc = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True)
        hosts = proc.stdout.split()
        if proc.returncode == 0 and hosts:
            return hosts
    return expand_nodelist(nodelist)


def slurm_job_nodelist(job_id: str) -> str | None:
    """The compressed node list of a running job from squeue (None when squeue is missing or fails)."""
    if not shutil.which("squeue"):
        return None
    proc = subprocess.run(["squeue", "--noheader", "--format=%N", f"--jobs={job_id}"], capture_output=True, text=True)
    nodelist = proc.stdout.strip()
    return nodelist if proc.returncode == 0 and nodelist else None


# ----------------------------------------------------------------------------- the command
def train_processes(gpus: int, nodes: int) -> int:
    """Processes of the train job: gpus x nodes (gpus: 0 = one CPU process). Raises LaunchError naming the key."""
    if not isinstance(nodes, int) or isinstance(nodes, bool) or nodes < 1:
        raise LaunchError(f"config key 'train.nodes': {nodes!r} must be an integer >= 1")
    if not isinstance(gpus, int) or isinstance(gpus, bool) or gpus < 0:
        raise LaunchError(f"config key 'train.gpus': {gpus!r} must be an integer >= 0")
    if nodes > 1 and gpus < 1:
        raise LaunchError(f"config key 'train.nodes' is {nodes} but 'train.gpus' is {gpus}: training on several "
                          f"nodes needs train.gpus >= 1 (processes per node)")
    return max(gpus, 1) * nodes


def _port(value, what: str) -> int:
    try:
        port = int(value)
    except (TypeError, ValueError):
        raise LaunchError(f"{what}: {value!r} is not a port number") from None
    if not 1 <= port <= 65535:
        raise LaunchError(f"{what}: {port} is not a port number (1-65535)")
    return port


def rendezvous_endpoint(variant: str, rdzv_port: int, env: Mapping[str, str],
                        hostnames: Callable[[str], list[str]] = expand_nodelist) -> tuple[str, int, str]:
    """(host, port, rendezvous id) of the c10d rendezvous, from SLURM or MASTER_ADDR / MASTER_PORT."""
    if env.get("SLURM_JOB_ID"):
        nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
        if not nodelist:
            raise LaunchError(f"SLURM job {env['SLURM_JOB_ID']}: SLURM_JOB_NODELIST is not set (and squeue did not "
                              f"give the node list), so the rendezvous host is unknown")
        hosts = hostnames(nodelist)
        if not hosts:
            raise LaunchError(f"SLURM_JOB_NODELIST={nodelist!r} names no host")
        return hosts[0], _port(rdzv_port, "config key 'train.rdzv_port'"), env["SLURM_JOB_ID"]
    host = env.get("MASTER_ADDR")
    if not host:
        raise LaunchError("several nodes outside SLURM need the rendezvous host: set MASTER_ADDR to the first "
                          "machine's address (and MASTER_PORT, else train.rdzv_port is used) on every machine")
    if env.get("MASTER_PORT"):
        port = _port(env["MASTER_PORT"], "MASTER_PORT")
    else:
        port = _port(rdzv_port, "config key 'train.rdzv_port'")
    return host, port, f"softpick-{variant}"


def torchrun_command(python: str, config: str | Sequence[str], variant: str, *, gpus: int, nodes: int = 1, rdzv_port: int = 29500,
                     env: Mapping[str, str] | None = None, rendezvous: bool = False, cpus_per_node: int | None = None,
                     train_args: Sequence[str] = (),
                     hostnames: Callable[[str], list[str]] = expand_nodelist) -> list[str]:
    """argv that trains `variant` with gpus processes on each of `nodes` machines.

    One node: torchrun --standalone (a local rendezvous on a free port), unless rendezvous=True asks
    for the c10d endpoint form there too. Several nodes: --nnodes / --rdzv_backend=c10d /
    --rdzv_endpoint=<host>:<port> / --rdzv_id, wrapped in srun (one torchrun per node) under SLURM;
    cpus_per_node becomes srun's --cpus-per-task (a step otherwise gets SLURM's default of 1 CPU);
    config: the config file(s) of the train processes (--config each); train_args go after
    `softpick train` (e.g. --set overrides).
    """
    env = os.environ if env is None else env
    train_processes(gpus, nodes)
    if gpus < 1:
        raise LaunchError(f"config key 'train.gpus' is {gpus}: torchrun needs >= 1 process per node "
                          f"(train.gpus: 0 trains in one CPU process, without this launcher)")
    configs = [config] if isinstance(config, (str, os.PathLike)) else list(config)
    train = ["-m", "softpick", "train", *(a for c in configs for a in ("--config", str(c))), "--variant", variant,
             *train_args]
    torchrun = [python, "-m", "torch.distributed.run"]
    if nodes == 1 and not rendezvous:
        return [*torchrun, "--standalone", f"--nproc_per_node={gpus}", *train]
    host, port, rdzv_id = rendezvous_endpoint(variant, rdzv_port, env, hostnames)
    torchrun += [f"--nnodes={nodes}", f"--nproc_per_node={gpus}", "--rdzv_backend=c10d",
                 f"--rdzv_endpoint={host}:{port}", f"--rdzv_id={rdzv_id}"]
    if nodes > 1 and env.get("SLURM_JOB_ID"):
        srun = ["srun", f"--nodes={nodes}", f"--ntasks={nodes}", "--ntasks-per-node=1", "--kill-on-bad-exit=1"]
        if cpus_per_node and cpus_per_node > 0:
            srun.append(f"--cpus-per-task={cpus_per_node}")
        return [*srun, *torchrun, *train]
    return [*torchrun, *train]


def slurm_resources(gpus: int, nodes: int, cpus_per_node: int) -> dict:
    """Snakemake resources of a multi-process train job, as snakemake-executor-plugin-slurm reads them.

    One node: gpu=G (the plugin asks sbatch for --gpus=G; locally it is the gpu resource that
    `--resources gpu=K` caps). Several nodes: the plugin's `gpu` would be --gpus=G for the whole job,
    so GPUs go per node as gres 'gpu:G'; mpi='srun' makes its job step run the rule's command
    once (the command starts one torchrun per node itself) and asks for tasks=nodes (one per node);
    tasks_per_gpu=0 keeps it from turning tasks into --ntasks-per-gpu.
    """
    train_processes(gpus, nodes)
    if nodes == 1:
        return {"gpu": gpus, "cpus_per_task": cpus_per_node}
    return {"nodes": nodes, "tasks": nodes, "mpi": "srun", "gres": f"gpu:{gpus}", "tasks_per_gpu": 0,
            "cpus_per_task": cpus_per_node}


# ----------------------------------------------------------------------------- CLI
def _machine_env(env: Mapping[str, str]) -> dict[str, str]:
    """env plus SLURM_JOB_NODELIST from squeue when only SLURM_JOB_ID made it into this process."""
    env = dict(env)
    if env.get("SLURM_JOB_ID") and not (env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")):
        nodelist = slurm_job_nodelist(env["SLURM_JOB_ID"])
        if nodelist:
            env["SLURM_JOB_NODELIST"] = nodelist
    return env


def _operational(text: str | None) -> dict:
    if text is None:
        return {}
    try:
        keys = json.loads(text)
    except json.JSONDecodeError as err:
        raise LaunchError(f"--operational must be a JSON object of train keys: {err}") from None
    if not isinstance(keys, dict):
        raise LaunchError(f"--operational must be a JSON object of train keys, got {text!r}")
    return keys


def launch(train_cfg: dict, variant: str, *, config_files: Sequence[str] = (), overrides: Sequence[str] = (),
           operational: str | None = None, gpus: int | None = None, nodes: int | None = None,
           rdzv_port: int | None = None, rendezvous: bool = False, cpus_per_node: int | None = None,
           python: str = sys.executable, dry_run: bool = False) -> None:
    """`softpick launch`: build the torchrun command of `variant` and run it in place of this process.

    train_cfg: the config's train section (config_files merged over the default, with overrides), where
    gpus / nodes / rdzv_port come from unless given; operational: train keys as a JSON object, over
    train_cfg and passed on as --set train.<key>=<value>. The train processes get the same --config
    files and --set overrides. dry_run: print the command (stdout) instead of running it."""
    keys = _operational(operational)
    tcfg = {**train_cfg, **keys}
    gpus = gpus if gpus is not None else tcfg.get("gpus", 0)
    nodes = nodes if nodes is not None else tcfg.get("nodes", 1)
    port = rdzv_port if rdzv_port is not None else tcfg.get("rdzv_port", 29500)
    env = _machine_env(os.environ) if (nodes != 1 or rendezvous) else dict(os.environ)
    sets = [*(a for s in overrides for a in ("--set", s)),
            *(a for k, v in keys.items() for a in ("--set", f"train.{k}={json.dumps(v)}"))]
    cmd = torchrun_command(python, config_files, variant, gpus=gpus, nodes=nodes, rdzv_port=port, env=env,
                           rendezvous=rendezvous, cpus_per_node=cpus_per_node, train_args=sets,
                           hostnames=slurm_hostnames)
    print(f"softpick launch: {shlex.join(cmd)}", file=sys.stderr, flush=True)
    if dry_run:
        print(shlex.join(cmd))
        return
    executable = shutil.which(cmd[0])
    if executable is None:
        raise LaunchError(f"{cmd[0]!r} is not on PATH")
    os.execv(executable, cmd)  # signals from Snakemake / SLURM reach torchrun directly
