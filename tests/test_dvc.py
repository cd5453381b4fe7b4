"""DVC shares a run's artifacts (docs/dvc.md): the test DAG runs in a scratch git repo made of this
checkout's files, `dvc add` + `dvc push` to the committed default remote (a directory beside the repo),
then a fresh `git clone` + `dvc pull` + `snakemake --touch` leaves Snakemake nothing to do. A corrupted
object on the remote is refused by the committed config (remote verify = true)."""
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RUN = "e2e-test"
TRACKED = (f"results/{RUN}", f"figures/{RUN}")
SMK = ["--configfile", "configs/test.yaml"]
# the colleague step of docs/dvc.md: pulled files get new mtimes and a fresh clone has no .snakemake/ records, so
# Snakemake would rerun jobs; --touch marks the pulled outputs up to date in DAG order. `&&`: only after a
# complete pull (a --touch over missing files exits 0 without creating them).
PULL = "dvc pull && snakemake --touch --cores 1 --configfile configs/test.yaml"


def run(cwd: Path, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(cwd / "src"), "DVC_NO_ANALYTICS": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.org"}
    exe = [sys.executable, "-m", cmd[0]] if cmd[0] in ("dvc", "snakemake") else [cmd[0]]
    proc = subprocess.run(exe + list(cmd[1:]), cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    if check and proc.returncode:
        pytest.fail(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def out(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout + proc.stderr


def repo_files() -> list[str]:
    """What a clone of this checkout holds (tracked + new, not ignored), without the benchmark results."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout
    return [f for f in listed.split("\0") if f and not f.startswith(("results/", "benchmarks/", "tests/"))
            and ((REPO / f).is_file() or (REPO / f).is_symlink())]


def files_under(root: Path) -> list[Path]:
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())


def clone(base: Path, name: str) -> Path:
    run(base, "git", "clone", "-q", "origin", name)
    return base / name


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """A repo that ran the test DAG and pushed it; returns the folder holding origin/ and the remote."""
    base = tmp_path_factory.mktemp("dvc")
    origin = base / "origin"
    for rel in repo_files():
        (origin / rel).parent.mkdir(parents=True, exist_ok=True)
        if (REPO / rel).is_symlink():
            os.symlink(os.readlink(REPO / rel), origin / rel)
        else:
            shutil.copy2(REPO / rel, origin / rel)
    run(origin, "git", "init", "-q")
    run(origin, "git", "add", "-A")
    run(origin, "git", "commit", "-qm", "checkout")
    run(origin, "snakemake", "--cores", "2", *SMK)
    # the "after a run" commands of docs/dvc.md
    run(origin, "dvc", "add", *TRACKED)
    run(origin, "git", "add", "-A")
    run(origin, "git", "commit", "-qm", f"artifacts of {RUN}")
    pushed = run(origin, "dvc", "push")
    assert "pushed" in out(pushed), out(pushed)
    assert (base / "softpick-dvc-remote" / "files" / "md5").is_dir()  # the committed default remote
    return base


def remote_object(base: Path, path: Path) -> Path:
    md5 = hashlib.md5(path.read_bytes()).hexdigest()
    return base / "softpick-dvc-remote" / "files" / "md5" / md5[:2] / md5[2:]


@pytest.mark.slow
def test_clone_pull_touch_leaves_nothing_to_do(shared):
    work = clone(shared, "colleague")
    assert not (work / "results" / RUN / "eval").exists()  # git holds only the .dvc files
    run(work, "bash", "-c", PULL)
    for rel in TRACKED:
        a, b = shared / "origin" / rel, work / rel
        files = files_under(a)
        assert files, rel
        # everything but the training checkpoints, which .dvcignore keeps out
        assert [f for f in files if not any(p.endswith(".checkpoints") for p in f.parts)] == files_under(b)
        for f in files_under(b):
            assert (a / f).read_bytes() == (b / f).read_bytes(), f
    assert list((shared / "origin" / "results" / RUN / "models").glob("*.checkpoints"))
    assert not list((work / "results" / RUN / "models").glob("*.checkpoints"))
    dry = run(work, "snakemake", "-n", *SMK)
    assert "Nothing to be done" in out(dry), out(dry)
    assert "Data and pipelines are up to date" in out(run(work, "dvc", "status"))
    # dvc status names what differs from the pulled version
    ev = work / "results" / RUN / "eval" / "softpick.json"
    ev.write_text(ev.read_text() + " ")
    status = out(run(work, "dvc", "status"))
    assert f"results/{RUN}.dvc" in status and "modified" in status, status
    # and the user's own edit of a stage's code reruns that stage (mtime newer than the pulled outputs)
    code = work / "src" / "softpick" / "analysis" / "sinks.py"
    code.write_text(code.read_text() + "\n# edited\n")
    jobs = out(run(work, "snakemake", "-n", *SMK))
    assert "rule analyze" in jobs and "rule train" not in jobs and "rule evaluate" not in jobs, jobs


@pytest.mark.slow
def test_corrupted_remote_object_is_refused(shared):
    target = shared / "origin" / "results" / RUN / "eval" / "softpick.json"
    obj = remote_object(shared, target)
    assert obj.is_file()
    good = obj.read_bytes()
    obj.chmod(0o644)
    obj.write_bytes(good.replace(b"{", b"[", 1))  # same size, other bytes
    try:
        # DVC's own default (verify false) would check the corrupted bytes out and call them up to date ...
        lax = clone(shared, "lax")
        run(lax, "dvc", "config", "--local", "remote.local.verify", "false")
        run(lax, "dvc", "pull")
        assert (lax / target.relative_to(shared / "origin")).read_bytes() != good
        # ... the committed config (verify = true) re-hashes every download and refuses it
        work = clone(shared, "strict")
        pulled = run(work, "bash", "-c", PULL, check=False)
        assert pulled.returncode != 0
        assert f"results/{RUN}" in out(pulled) and "Checkout failed" in out(pulled), out(pulled)
        assert not (work / ".snakemake").exists()  # the touch step did not run
        assert not (work / "results" / RUN / "eval" / "softpick.json").exists()  # never used
        assert not list((work / ".dvc" / "cache").rglob(obj.name))  # nor kept in the cache
        status = out(run(work, "dvc", "status"))
        assert f"results/{RUN}" in status and "not in cache" in status, status
        # the figures' objects were intact: that directory did arrive
        assert (work / "figures" / RUN / "training_loss.png").is_file()
        # Snakemake sees the refused directory as missing: the run is rebuilt, nothing corrupted is used
        jobs = out(run(work, "snakemake", "-n", *SMK))
        assert "rule data" in jobs and "rule evaluate" in jobs, jobs
    finally:
        obj.write_bytes(good)


def test_dvc_add_leaves_out_checkpoints_and_stale_sets(tmp_path):
    """What `dvc add results/<run>` stores: the models, not the checkpoint dirs nor the sets of other
    fingerprints moved aside beside them (<variant>.checkpoints.stale-<fp8>/, softpick.checkpoint)."""
    import json

    run(tmp_path, "git", "init", "-q")
    run(tmp_path, "dvc", "init", "-q")
    shutil.copy2(REPO / ".dvcignore", tmp_path / ".dvcignore")
    models = tmp_path / "results" / "r" / "models"
    for rel in ("softpick/model.safetensors", "softpick.train_log.jsonl",
                "softpick.checkpoints/step_00000006/state.pt", "softpick.checkpoints/corrupt.step_00000003/state.pt",
                "softpick.checkpoints.stale-0123abcd/step_00000003/state.pt",
                "softpick.checkpoints.stale-0123abcd/train_log.jsonl",
                "softmax.checkpoints.stale-none/step_00000003/state.pt", ".softpick.tmp/model.safetensors"):
        (models / rel).parent.mkdir(parents=True, exist_ok=True)
        (models / rel).write_text(rel)
    run(tmp_path, "dvc", "add", "-q", "results/r")
    md5 = next(o["md5"] for o in __import__("yaml").safe_load((tmp_path / "results" / "r.dvc").read_text())["outs"])
    listing = tmp_path / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]
    stored = sorted(entry["relpath"] for entry in json.loads(listing.read_text()))
    assert stored == ["models/softpick.train_log.jsonl", "models/softpick/model.safetensors"], stored
