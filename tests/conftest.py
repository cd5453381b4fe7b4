import copy
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

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
E2E_RUN = "e2e-test"  # run_name of configs/test.yaml


def snakemake_test_dag(workdir: Path, *args: str, timeout: float = 1800) -> subprocess.CompletedProcess:
    """`snakemake --cores 2 --configfile configs/test.yaml ARGS` in workdir (timeout: a hang guard only)."""
    cmd = [sys.executable, "-m", "snakemake", "--cores", "2", "--configfile", "configs/test.yaml", *args]
    return subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def e2e_run(tmp_path_factory) -> Path:
    """The whole Snakemake DAG of configs/test.yaml, run once per session for every test that reads its
    outputs (test_pipeline, test_dvc): a folder with the workflow linked in (Snakefile, workflow/, configs/,
    data/), its own copy of src/, and what the run wrote (results/, figures/, logs/, .snakemake/).
    Read it only: a test that edits, adds or reruns anything works on copy_run(e2e_run, ...)."""
    work = tmp_path_factory.mktemp("e2e")
    for name in ("Snakefile", "workflow", "configs", "data"):
        os.symlink(REPO / name, work / name)
    # a copy, not a link: copies of the run get their own src/ to edit
    shutil.copytree(REPO / "src", work / "src", ignore=shutil.ignore_patterns("__pycache__"))
    proc = snakemake_test_dag(work)
    if proc.returncode:
        logs = "\n".join(f"--- {p}\n{p.read_text()[-3000:]}" for p in sorted((work / "logs").rglob("*.log")))
        pytest.fail(f"snakemake failed:\n{proc.stderr[-5000:]}\n{logs}")
    return work


def copy_run(run: Path, dest: Path) -> Path:
    """A copy of e2e_run's folder to change: links stay links, files keep their modification times, and
    .snakemake/ comes along, so Snakemake sees the same finished run there."""
    shutil.copytree(run, dest, symlinks=True)
    return dest


def run_concurrently(*calls):
    """The results of calls (functions of no argument, each running a subprocess that does not depend
    on the others, e.g. `snakemake -n` with another config) in order, as many at once as there are
    CPUs: each such process spends seconds importing torch on one core, so two of them take the time of
    one on a 2-core machine."""
    with ThreadPoolExecutor(max_workers=max(1, min(len(calls), os.cpu_count() or 1))) as pool:
        return list(pool.map(lambda call: call(), calls))
