import copy
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import torch

# The Triton kernels run on the CPU only under the interpreter, and TRITON_INTERPRET is read when
# triton (or a module that uses it: fla, hqq, transformers) is first imported: set it before any
# test module imports them.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest
import yaml

from softpick.config import DEFAULT_CONFIG

TINY_DATA = {
    "source": "embedded",
    "corpus_path": "data/corpus/corpus.jsonl.xz",
    "max_documents": 40,
    "val_fraction": 0.1,
    "tokenizer": {"kind": "bpe", "vocab_size": 512, "train_sample_bytes": 400_000},
}


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory):
    """Token files of 40 embedded documents with a 512-token BPE (seconds to build)."""
    from softpick.data import prepare_data

    out = tmp_path_factory.mktemp("data")
    prepare_data(copy.deepcopy(TINY_DATA), out, seed=0)
    return out


@pytest.fixture
def tiny_config():
    """The default config shrunk to a model that trains a step in milliseconds."""
    config = yaml.safe_load(DEFAULT_CONFIG.read_text())
    config["model"].update(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    config["train"].update(seq_len=32, global_batch_size=4, micro_batch_size=2, max_steps=12, warmup_steps=2,
                           log_every=1, val_every=4, val_batches=1, checkpoint_every=3, keep_checkpoints=2, lr=1e-2)
    config["eval"]["max_length"] = 32  # <= train.seq_len, as validation asks
    return config


# ----------------------------------------------------------------------------- the test DAG, run once
REPO = Path(__file__).resolve().parents[1]
E2E_RUN = "e2e-test"  # run_name of configs/test.yaml, and its stage in dvc.yaml


def tool(cwd: Path, *cmd: str, check: bool = True, timeout: float = 1800) -> subprocess.CompletedProcess:
    """cmd in cwd with this Python's dvc / snakemake, cwd's src/ first and a git identity; a failure (check)
    fails the test with the output (timeout: a hang guard only)."""
    env = {**os.environ, "PYTHONPATH": str(cwd / "src"), "DVC_NO_ANALYTICS": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.org"}
    exe = [sys.executable, "-m", cmd[0]] if cmd[0] in ("dvc", "snakemake") else [cmd[0]]
    proc = subprocess.run(exe + list(cmd[1:]), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode:
        pytest.fail(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def checkout_files(published: bool = False) -> list[str]:
    """What a clone of this checkout holds (tracked + new, not ignored), without the benchmark results and
    (unless `published`) without the published runs' committed files."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout
    left_out = ("benchmarks/", "tests/", "results/bench/") + (() if published else ("results/", "figures/"))
    return [f for f in listed.split("\0") if f and not f.startswith(left_out)
            and ((REPO / f).is_file() or (REPO / f).is_symlink())]


def git_checkout_copy(dest: Path, published: bool = False) -> Path:
    """A scratch git repository at dest holding checkout_files(published), committed."""
    for rel in checkout_files(published):
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        if (REPO / rel).is_symlink():
            os.symlink(os.readlink(REPO / rel), dest / rel)
        else:
            shutil.copy2(REPO / rel, dest / rel)
    tool(dest, "git", "init", "-q")
    tool(dest, "git", "add", "-A")
    tool(dest, "git", "commit", "-qm", "checkout")
    return dest


class E2ERun(NamedTuple):
    path: Path   # the scratch repository the run is in
    repro: str   # what `dvc repro e2e-test` printed


@pytest.fixture(scope="session")
def e2e_run(tmp_path_factory) -> E2ERun:
    """The whole Snakemake DAG of configs/test.yaml, run once per session for every test that reads its
    outputs (test_pipeline, test_dvc): `dvc repro e2e-test` (the stage's command: snakemake --configfile
    configs/test.yaml) in a scratch git repository of this checkout's files. Read it only: a test that
    edits, adds or reruns anything works on copy_run(e2e_run.path, ...)."""
    work = git_checkout_copy(tmp_path_factory.mktemp("e2e") / "origin")
    proc = tool(work, "dvc", "repro", E2E_RUN, check=False)
    if proc.returncode:
        logs = "\n".join(f"--- {p}\n{p.read_text()[-3000:]}" for p in sorted((work / "logs").rglob("*.log")))
        pytest.fail(f"dvc repro {E2E_RUN} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}\n{logs}")
    return E2ERun(work, proc.stdout + proc.stderr)


def snakemake_test_dag(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    """`snakemake --cores 2 --configfile configs/test.yaml ARGS` in workdir (a copy of the run)."""
    return tool(workdir, "snakemake", "--cores", "2", "--configfile", "configs/test.yaml", *args, check=False)


def copy_run(run: Path, dest: Path) -> Path:
    """A copy of the run's repository to change: links stay links, files keep their modification times,
    and .snakemake/, .git/ and .dvc/ come along, so Snakemake, git and DVC see the same finished run there."""
    shutil.copytree(run, dest, symlinks=True)
    return dest


def run_concurrently(*calls):
    """The results of calls (functions of no argument, each running a subprocess that does not depend
    on the others, e.g. `snakemake -n` with another config) in order, as many at once as there are
    CPUs: each such process spends seconds importing torch on one core, so two of them take the time of
    one on a 2-core machine."""
    with ThreadPoolExecutor(max_workers=max(1, min(len(calls), os.cpu_count() or 1))) as pool:
        return list(pool.map(lambda call: call(), calls))
