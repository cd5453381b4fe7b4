"""softpick.launch (`softpick launch`): the torchrun command of the train job (one node, several nodes under SLURM or by
MASTER_ADDR), the SLURM node-list parser, the resources the SLURM executor plugin turns into sbatch
flags, and one real 2-process gloo run through an explicit c10d rendezvous endpoint."""
import copy
import json
import os
import shlex
import socket
import subprocess
import sys
from functools import partial
from types import SimpleNamespace

import pytest
import yaml

from softpick.cli import main as cli_main
from softpick.launch import LaunchError, expand_nodelist, slurm_resources, torchrun_command, train_processes

from conftest import run_concurrently
from test_distributed import MAX_ABS_DIFF_1_VS_2, REPO, max_abs_diff, run_in_own_session, small_config

PY = "/env/bin/python"
TRAIN = ["-m", "softpick", "train", "--config", "run.yaml", "--variant", "softpick"]


def main(argv):
    """`softpick launch ...`"""
    return cli_main(["launch", *argv])


def command(env, **kw):
    return torchrun_command(PY, "run.yaml", "softpick", env=env, **kw)


# ----------------------------------------------------------------------------- argv
def test_one_node_is_standalone_whatever_the_environment():
    env = {"SLURM_JOB_ID": "77", "SLURM_JOB_NODELIST": "gpu[01-02]", "MASTER_ADDR": "elsewhere"}
    assert command(env, gpus=8) == [PY, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=8", *TRAIN]


def test_several_nodes_under_slurm_run_one_torchrun_per_node_through_srun():
    env = {"SLURM_JOB_ID": "4242", "SLURM_JOB_NODELIST": "gpu[07-08,11]"}
    argv = command(env, gpus=8, nodes=3, rdzv_port=29611, cpus_per_node=64)
    assert argv == [
        "srun", "--nodes=3", "--ntasks=3", "--ntasks-per-node=1", "--kill-on-bad-exit=1", "--cpus-per-task=64",
        PY, "-m", "torch.distributed.run", "--nnodes=3", "--nproc_per_node=8", "--rdzv_backend=c10d",
        "--rdzv_endpoint=gpu07:29611", "--rdzv_id=4242", *TRAIN,
    ]
    # SLURM's host wins over MASTER_ADDR; without a CPU count srun gets no --cpus-per-task
    argv = command({**env, "MASTER_ADDR": "other", "MASTER_PORT": "1234"}, gpus=4, nodes=2)
    assert "--rdzv_endpoint=gpu07:29500" in argv and not any(a.startswith("--cpus-per-task") for a in argv)


def test_several_nodes_outside_slurm_use_master_addr_and_port():
    argv = command({"MASTER_ADDR": "10.0.0.5", "MASTER_PORT": "29777"}, gpus=2, nodes=2)
    assert argv == [PY, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=2", "--rdzv_backend=c10d",
                    "--rdzv_endpoint=10.0.0.5:29777", "--rdzv_id=softpick-softpick", *TRAIN]
    # no MASTER_PORT: train.rdzv_port
    assert "--rdzv_endpoint=head:29501" in command({"MASTER_ADDR": "head"}, gpus=2, nodes=2, rdzv_port=29501)
    # one node with an explicit rendezvous (what the gloo test below runs)
    assert command({"MASTER_ADDR": "localhost"}, gpus=2, rendezvous=True)[3:8] == [
        "--nnodes=1", "--nproc_per_node=2", "--rdzv_backend=c10d", "--rdzv_endpoint=localhost:29500",
        "--rdzv_id=softpick-softpick"]


@pytest.mark.parametrize("env, message", [
    ({}, r"MASTER_ADDR"),
    ({"MASTER_PORT": "29500"}, r"MASTER_ADDR"),
    ({"MASTER_ADDR": "head", "MASTER_PORT": "http"}, r"MASTER_PORT: 'http' is not a port number"),
    ({"MASTER_ADDR": "head", "MASTER_PORT": "70000"}, r"MASTER_PORT: 70000"),
    ({"SLURM_JOB_ID": "9"}, r"SLURM job 9: SLURM_JOB_NODELIST is not set"),
    ({"SLURM_JOB_ID": "9", "SLURM_JOB_NODELIST": "gpu[01-"}, r"unclosed"),
])
def test_missing_or_bad_rendezvous_information_is_named(env, message):
    with pytest.raises(LaunchError, match=message):
        command(env, gpus=2, nodes=2)


def test_bad_counts_are_named():
    assert [train_processes(g, n) for g, n in [(0, 1), (1, 1), (8, 1), (1, 2), (8, 4)]] == [1, 1, 8, 2, 32]
    with pytest.raises(LaunchError, match=r"'train\.nodes' is 2 but 'train\.gpus' is 0"):
        train_processes(0, 2)
    with pytest.raises(LaunchError, match=r"'train\.nodes': 0"):
        train_processes(4, 0)
    with pytest.raises(LaunchError, match=r"'train\.gpus' is 0: torchrun needs >= 1 process per node"):
        command({}, gpus=0)
    with pytest.raises(LaunchError, match=r"'train\.rdzv_port': 0"):
        command({"MASTER_ADDR": "head"}, gpus=1, nodes=2, rdzv_port=0)


# ----------------------------------------------------------------------------- node lists
@pytest.mark.parametrize("nodelist, hosts", [
    ("gpu5", ["gpu5"]),
    ("gpu[01-03,07],cpu5", ["gpu01", "gpu02", "gpu03", "gpu07", "cpu5"]),
    ("a,b", ["a", "b"]),
    ("gpu[8-10]", ["gpu8", "gpu9", "gpu10"]),            # no padding
    ("gpu[098-101]", ["gpu098", "gpu099", "gpu100", "gpu101"]),  # padding of the lower bound
    ("n[1]", ["n1"]),
    ("rack[1-2]-n[08-09]", ["rack1-n08", "rack1-n09", "rack2-n08", "rack2-n09"]),
    ("x-1.ib[3,1],y", ["x-1.ib3", "x-1.ib1", "y"]),       # order kept as written
    (" gpu[1-2] ", ["gpu1", "gpu2"]),
])
def test_nodelist_expansion(nodelist, hosts):
    assert expand_nodelist(nodelist) == hosts


@pytest.mark.parametrize("nodelist, message", [
    ("", "empty host name"),
    ("a,,b", "empty host name"),
    ("gpu[01-03", "unclosed"),
    ("gpu]1[", "without"),
    ("gpu[[1]]", "nested"),
    ("gpu[a-b]", "cannot read range 'a-b'"),
    ("gpu[1-2-3]", "cannot read range"),
    ("gpu[5-3]", "runs backwards"),
    ("gpu[]", "cannot read range ''"),
])
def test_nodelist_errors_name_the_list(nodelist, message):
    with pytest.raises(LaunchError, match=message):
        expand_nodelist(nodelist)


# ----------------------------------------------------------------------------- CLI
@pytest.fixture
def clean_env(monkeypatch):
    for var in list(os.environ):
        if var.startswith(("SLURM_", "MASTER_")):
            monkeypatch.delenv(var)
    monkeypatch.setattr("shutil.which", lambda name: None)  # no scontrol / squeue: the parser
    return monkeypatch


def test_cli_reads_counts_from_the_config(tmp_path, capsys, clean_env):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({"train": {"gpus": 4, "nodes": 2, "rdzv_port": 29999}}))
    clean_env.setenv("SLURM_JOB_ID", "31")
    clean_env.setenv("SLURM_JOB_NODELIST", "h[3-4]")
    assert main(["--config", str(cfg), "--variant", "softmax", "--python", "py", "--cpus-per-node", "32",
                 "--dry-run"]) == 0
    out = capsys.readouterr().out.split()
    assert out[:6] == ["srun", "--nodes=2", "--ntasks=2", "--ntasks-per-node=1", "--kill-on-bad-exit=1",
                       "--cpus-per-task=32"]
    assert "--rdzv_endpoint=h3:29999" in out and "--rdzv_id=31" in out and "--nproc_per_node=4" in out
    # flags override the config
    assert main(["--config", str(cfg), "--variant", "softmax", "--nodes", "1", "--gpus", "2", "--dry-run"]) == 0
    assert "--standalone --nproc_per_node=2" in capsys.readouterr().out


def test_cli_operational_keys_override_the_file_and_reach_the_trainer(tmp_path, capsys, clean_env):
    """The rule passes gpus / nodes / wandb ... as --operational JSON: counts for torchrun, --set for the trainer."""
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({"train": {"gpus": 4, "nodes": 2}}))
    operational = {"gpus": 2, "nodes": 1, "wandb": {"project": "p", "mode": "offline"}, "peak_tflops": None}
    assert main(["--config", str(cfg), "--variant", "softpick", "--operational", json.dumps(operational),
                 "--dry-run"]) == 0
    argv = shlex.split(capsys.readouterr().out)
    assert argv[3:5] == ["--standalone", "--nproc_per_node=2"]
    sets = dict(argv[i + 1].split("=", 1) for i, a in enumerate(argv) if a == "--set")
    assert {k: yaml.safe_load(v) for k, v in sets.items()} == {f"train.{k}": v for k, v in operational.items()}
    for bad in ("[1, 2]", "{gpus: 2"):
        assert main(["--config", str(cfg), "--variant", "softpick", "--operational", bad, "--dry-run"]) == 2
        assert "--operational must be a JSON object" in capsys.readouterr().err


def test_cli_error_is_one_line_and_exit_2(tmp_path, capsys, clean_env):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({"train": {"gpus": 2, "nodes": 2}}))
    assert main(["--config", str(cfg), "--variant", "softpick", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("softpick launch: error:") and "MASTER_ADDR" in err and "Traceback" not in err


# ----------------------------------------------------------------------------- SLURM executor plugin
class Resources(dict):
    __getattr__ = dict.__getitem__


def sbatch_call(resources: dict, threads: int) -> str:
    """The sbatch command line snakemake-executor-plugin-slurm builds for a job with these resources."""
    submit = pytest.importorskip("snakemake_executor_plugin_slurm.submit_string")
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    job = SimpleNamespace(resources=Resources(resources, runtime=60, mem_mb=1000), threads=threads)
    params = {"run_uuid": "u", "slurm_logfile": "l.log", "comment_str": "rule_train", "account": "",
              "partition": "", "workdir": "/w"}
    return submit.get_submit_command(job, params) + set_gres_string(job)


def test_slurm_plugin_gets_gpus_per_node_and_one_task_per_node():
    call = sbatch_call(slurm_resources(8, 2, 64), threads=64)
    for flag in ("--nodes=2", "--ntasks=2", "--gres=gpu:8", "--cpus-per-task=64"):
        assert flag in call.split(), (flag, call)
    assert "--gpus=" not in call and "--ntasks-per-gpu" not in call, call  # --gpus would be a job-wide total
    assert slurm_resources(8, 2, 64)["mpi"] == "srun"  # the jobstep runs the rule's command once, not under srun -n1
    one = sbatch_call(slurm_resources(8, 1, 64), threads=64)
    assert "--gpus=8" in one.split() and "--nodes" not in one and "--ntasks-per-gpu" not in one, one


# ----------------------------------------------------------------------------- a real rendezvous
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_gloo_processes_through_a_c10d_endpoint(tiny_data_dir, tmp_path):
    """The launcher with --rendezvous: torchrun --nnodes=1 --rdzv_backend=c10d --rdzv_endpoint=localhost:<port>."""
    from softpick.train import train

    config = small_config()
    config["run_name"] = "rdzv"
    (tmp_path / "results" / "rdzv").mkdir(parents=True)
    (tmp_path / "results" / "rdzv" / "data").symlink_to(tiny_data_dir)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "MASTER_"))}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO / "src"), MASTER_ADDR="localhost", MASTER_PORT=str(free_port()))
    cmd = [sys.executable, "-m", "softpick", "launch", "--config", "config.yaml", "--variant", "softpick",
           "--gpus", "2", "--rendezvous"]
    proc = run_in_own_session(cmd, cwd=tmp_path, env=env, timeout=600)  # a hang guard only
    out, err = proc.stdout, proc.stderr
    assert proc.returncode == 0, out[-3000:] + err[-3000:]
    assert f"--rdzv_endpoint=localhost:{env['MASTER_PORT']}" in err and "--nnodes=1" in err  # the printed command
    two = tmp_path / "results" / "rdzv" / "models" / "softpick"
    records = [json.loads(line) for line in (two / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 13)) and all(r["world_size"] == 2 for r in records)
    one = tmp_path / "one" / "softpick"
    train(copy.deepcopy(config), "softpick", tiny_data_dir, one)
    assert max_abs_diff(one, two) <= MAX_ABS_DIFF_1_VS_2


# ----------------------------------------------------------------------------- the Snakemake rule
def snakemake(workdir, override, *args):
    cmd = [sys.executable, "-m", "snakemake", "--cores", "2", *args, "--configfile", "configs/test.yaml", override]
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=600)
    return proc, proc.stdout + proc.stderr


@pytest.mark.slow
def test_rule_trains_through_the_launcher_and_operational_keys_do_not_rerun_it(tmp_path):
    """train.gpus: 2 on CPU: the train rule runs `softpick launch` (torchrun, 2 gloo processes); then
    changing gpus / nodes / rdzv_port / wandb schedules no training, changing lr does."""
    for name in ("Snakefile", "workflow", "configs", "data", "src"):
        os.symlink(REPO / name, tmp_path / name)
    target = "results/e2e-test/models/softpick/model.safetensors"

    def override(name, **train):
        (tmp_path / name).write_text(yaml.safe_dump({"train": {"micro_batch_size": 1, **train}}))
        return name

    proc, out = snakemake(tmp_path, override("ddp.yaml", gpus=2), target)
    assert proc.returncode == 0, out[-3000:] + "".join(p.read_text()[-2000:] for p in tmp_path.glob("logs/*/*.log"))
    log = (tmp_path / "logs" / "e2e-test" / "train_softpick.log").read_text()
    assert "softpick launch:" in log and "--standalone --nproc_per_node=2" in log
    summary = json.loads((tmp_path / "results" / "e2e-test" / "models" / "softpick" / "train_summary.json").read_text())
    assert summary["world_size"] == 2
    changed = [override("more.yaml", gpus=4),
               override("nodes.yaml", gpus=1, nodes=2, rdzv_port=29999, wandb={"project": "p", "mode": "offline"})]
    lr = override("lr.yaml", gpus=2, lr=5e-3)
    # three dry runs side by side (no lock, no log file)
    *operational, (proc, out) = run_concurrently(*(partial(snakemake, tmp_path, name, target, "-n")
                                                   for name in (*changed, lr)))
    for proc_op, out_op in operational:
        assert proc_op.returncode == 0 and "rule train:" not in out_op and "rule train_config:" not in out_op, out_op[-3000:]
    assert proc.returncode == 0 and "rule train:" in out, out[-3000:]
