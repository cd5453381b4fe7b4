"""DVC shares whole runs through the stages of dvc.yaml (docs/dvc.md, scripts/dvc_stages.py): in a scratch git repo made of
this checkout's files, `dvc repro e2e-test` runs the test DAG through Snakemake (conftest.e2e_run, shared with
test_pipeline; copied here) and `dvc push` sends it to the committed default remote (a directory beside the
repo); a fresh `git clone` + `dvc pull e2e-test` + `snakemake --touch` leaves Snakemake nothing to do. A
corrupted object on the remote is refused by the committed config (remote verify = true). A published run
(small) is shared by git and DVC together."""
import hashlib
import json
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import E2E_RUN as RUN
from conftest import REPO, copy_run, git_checkout_copy
from conftest import tool as run

TRACKED = (f"results/{RUN}", f"figures/{RUN}")
SMK = ["--configfile", "configs/test.yaml"]
# the colleague step of docs/dvc.md: pulled files get new mtimes and a fresh clone has no .snakemake/ records, so
# Snakemake would rerun jobs; --touch marks the pulled outputs up to date in DAG order. `&&`: only after a
# complete pull (a --touch over missing files exits 0 without creating them).
PULL = f"dvc pull {RUN} && snakemake --touch --cores 1 --configfile configs/test.yaml"
UP_TO_DATE = "Data and pipelines are up to date"


def out(proc) -> str:
    return proc.stdout + proc.stderr


def files_under(root: Path) -> list[Path]:
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())


def clone(base: Path, name: str) -> Path:
    run(base, "git", "clone", "-q", "origin", name)
    return base / name


def remote_object(base: Path, path: Path) -> Path:
    md5 = hashlib.md5(path.read_bytes()).hexdigest()
    return base / "softpick-dvc-remote" / "files" / "md5" / md5[:2] / md5[2:]


@pytest.fixture(scope="module")
def shared(e2e_run, tmp_path_factory):
    """A repo that ran the test DAG through its DVC stage (a copy of conftest.e2e_run's) and pushed it;
    returns the folder holding origin/ and the remote."""
    base = tmp_path_factory.mktemp("dvc")
    origin = copy_run(e2e_run.path, base / "origin")
    repro = e2e_run.repro  # `dvc repro e2e-test` ran the stage's cmd: the Snakemake DAG of configs/test.yaml
    assert f"Running stage '{RUN}'" in repro and "rule train" in repro, repro
    lock = yaml.safe_load((origin / "dvc.lock").read_text())["stages"]
    assert list(lock) == [RUN]
    assert sorted(o["path"] for o in lock[RUN]["outs"]) == sorted(TRACKED)
    # nothing but dvc.lock to commit: the top-level .gitignore already ignores the run directories
    assert run(origin, "git", "status", "--porcelain").stdout.split() == ["??", "dvc.lock"]
    run(origin, "git", "add", "dvc.lock")
    run(origin, "git", "commit", "-qm", f"artifacts of {RUN}")
    pushed = run(origin, "dvc", "push")
    assert "pushed" in out(pushed), out(pushed)
    assert (base / "softpick-dvc-remote" / "files" / "md5").is_dir()  # the committed default remote
    return base


@pytest.mark.slow
def test_clone_pull_touch_leaves_nothing_to_do(shared):
    origin = shared / "origin"
    # the stage is up to date where it ran, and a second repro leaves it to Snakemake: nothing runs
    assert UP_TO_DATE in out(run(origin, "dvc", "status", RUN))
    assert f"Stage '{RUN}' didn't change, skipping" in out(run(origin, "dvc", "repro", RUN))
    work = clone(shared, "colleague")
    assert not (work / "results" / RUN / "eval").exists()  # git holds only dvc.yaml and dvc.lock
    run(work, "bash", "-c", PULL)
    for rel in TRACKED:
        a, b = origin / rel, work / rel
        files = files_under(a)
        assert files, rel
        # everything but the training checkpoints, which .dvcignore keeps out
        assert [f for f in files if not any(p.endswith(".checkpoints") for p in f.parts)] == files_under(b)
        for f in files_under(b):
            assert (a / f).read_bytes() == (b / f).read_bytes(), f
    assert list((origin / "results" / RUN / "models").glob("*.checkpoints"))
    assert not list((work / "results" / RUN / "models").glob("*.checkpoints"))
    dry = run(work, "snakemake", "-n", *SMK)
    assert "Nothing to be done" in out(dry), out(dry)
    assert UP_TO_DATE in out(run(work, "dvc", "status", RUN))
    # dvc status names what differs from the pulled version
    ev = work / "results" / RUN / "eval" / "softpick.json"
    good = ev.read_text()
    ev.write_text(good + " ")
    status = out(run(work, "dvc", "status", RUN))
    assert "changed outs" in status and "modified" in status and f"results/{RUN}" in status, status
    ev.write_text(good)
    # and the user's own edit of a stage's code reruns that stage (mtime newer than the pulled outputs) ...
    code = work / "src" / "softpick" / "analysis" / "sinks.py"
    code.write_text(code.read_text() + "\n# edited\n")
    jobs = out(run(work, "snakemake", "-n", *SMK))
    assert "rule analyze" in jobs and "rule train" not in jobs and "rule evaluate" not in jobs, jobs
    status = out(run(work, "dvc", "status", RUN))
    assert "changed deps" in status and "src/softpick" in status, status
    # ... also through `dvc repro`: DVC reruns the stage's command, Snakemake only what the edit touches;
    # persist keeps the outputs in place (without it DVC would delete them first and everything would rerun)
    repro = out(run(work, "dvc", "repro", RUN))
    assert "rule analyze" in repro and "rule train" not in repro and "rule evaluate" not in repro, repro
    assert UP_TO_DATE in out(run(work, "dvc", "status", RUN))


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
        run(lax, "dvc", "pull", RUN)
        assert (lax / target.relative_to(shared / "origin")).read_bytes() != good
        # ... the committed config (verify = true) re-hashes every download and refuses it
        work = clone(shared, "strict")
        pulled = run(work, "bash", "-c", PULL, check=False)
        assert pulled.returncode != 0
        assert f"results/{RUN}" in out(pulled) and "Checkout failed" in out(pulled), out(pulled)
        assert not (work / ".snakemake").exists()  # the touch step did not run
        assert not (work / "results" / RUN / "eval" / "softpick.json").exists()  # never used
        assert not list((work / ".dvc" / "cache").rglob(obj.name))  # nor kept in the cache
        status = out(run(work, "dvc", "status", RUN))
        assert f"results/{RUN}" in status and "not in cache" in status, status
        # the figures' objects were intact: that directory did arrive
        assert (work / "figures" / RUN / "training_loss.png").is_file()
        # Snakemake sees the refused directory as missing: the run is rebuilt, nothing corrupted is used
        jobs = out(run(work, "snakemake", "-n", *SMK))
        assert "rule data" in jobs and "rule evaluate" in jobs, jobs
    finally:
        obj.write_bytes(good)


# what a rerun of configs/small.yaml leaves beside the published files (stand-in bytes)
SMALL_DVC_SIDE = ("data/tokens_train.npy", "data/tokens_val.npy", "data/val_docs.jsonl", "data/tokenizer/tokenizer.json",
                  "models/softmax/model.safetensors", "models/softmax/config.json", "models/softmax/train_summary.json",
                  "models/softpick/model.safetensors", "models/softpick/modeling_softpick.py",
                  "models/softpick/snapshots/step_00000000.safetensors")


@pytest.mark.slow
def test_published_run_is_shared_by_git_and_dvc(tmp_path):
    """results/small + figures/small: git stores the published files (`cache: false` outs, hashed in
    dvc.lock), DVC caches and pushes the rest (models, tokens, tokenizer); a clone gets both."""
    origin = git_checkout_copy(tmp_path / "origin", published=True)
    small = origin / "results" / "small"
    published = files_under(small) + files_under(origin / "figures" / "small")
    assert len(published) > 100
    (origin / "data" / "corpus-large" / "corpus.jsonl.xz").write_text("corpus")
    for rel in SMALL_DVC_SIDE + ("models/softpick.checkpoints/step_00000006/state.pt",):
        (small / rel).parent.mkdir(parents=True, exist_ok=True)
        (small / rel).write_text(rel)
    # the stage's outputs exist: record them as dvc repro would after the run (DVC accepts the split)
    run(origin, "dvc", "commit", "-f", "corpus-large", "small")
    assert UP_TO_DATE in out(run(origin, "dvc", "status", "small"))
    assert run(origin, "git", "status", "--porcelain").stdout.split() == ["??", "dvc.lock"]  # the rest is ignored
    run(origin, "git", "add", "dvc.lock")
    run(origin, "git", "commit", "-qm", "small: dvc.lock")
    run(origin, "dvc", "push")
    # the remote holds the DVC side and not the published files, which git shares
    assert remote_object(tmp_path, small / "models" / "softpick" / "model.safetensors").is_file()
    assert not remote_object(tmp_path, small / "eval" / "softpick.json").exists()
    assert not remote_object(tmp_path, small / "models" / "softpick.checkpoints" / "step_00000006" / "state.pt").exists()
    work = clone(tmp_path, "colleague")
    assert not (work / "results" / "small" / "models" / "softmax").exists()
    run(work, "dvc", "pull", "--with-deps", "small")
    pulled = files_under(work / "results" / "small")
    assert [Path(r) for r in SMALL_DVC_SIDE if Path(r) not in pulled] == []
    assert not (work / "results" / "small" / "models" / "softpick.checkpoints").exists()
    assert (work / "data" / "corpus-large" / "corpus.jsonl.xz").read_text() == "corpus"
    assert UP_TO_DATE in out(run(work, "dvc", "status", "small"))
    # an edit of a published (git) file is a change dvc status names, though no DVC cache holds it
    table = work / "results" / "small" / "tables" / "eval_table.md"
    table.write_text(table.read_text() + "\n")
    status = out(run(work, "dvc", "status", "small"))
    assert "modified" in status and "results/small/tables" in status, status


def test_stage_outs_leave_out_checkpoints_and_stale_sets(tmp_path):
    """What a stage's cached out results/<run> stores: the models, not the checkpoint dirs nor the sets of
    other fingerprints moved aside beside them (<variant>.checkpoints.stale-<fp8>/, softpick.checkpoint)."""
    run(tmp_path, "git", "init", "-q")
    run(tmp_path, "dvc", "init", "-q")
    shutil.copy2(REPO / ".dvcignore", tmp_path / ".dvcignore")
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"r": {"cmd": "true", "outs": [{"results/r": {"persist": True}}]}}}))
    models = tmp_path / "results" / "r" / "models"
    for rel in ("softpick/model.safetensors", "softpick.train_log.jsonl",
                "softpick.checkpoints/step_00000006/state.pt", "softpick.checkpoints/corrupt.step_00000003/state.pt",
                "softpick.checkpoints.stale-0123abcd/step_00000003/state.pt",
                "softpick.checkpoints.stale-0123abcd/train_log.jsonl",
                "softmax.checkpoints.stale-none/step_00000003/state.pt", ".softpick.tmp/model.safetensors"):
        (models / rel).parent.mkdir(parents=True, exist_ok=True)
        (models / rel).write_text(rel)
    run(tmp_path, "dvc", "commit", "-q", "-f", "r")
    md5 = yaml.safe_load((tmp_path / "dvc.lock").read_text())["stages"]["r"]["outs"][0]["md5"]
    listing = tmp_path / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]
    stored = sorted(entry["relpath"] for entry in json.loads(listing.read_text()))
    assert stored == ["models/softpick.train_log.jsonl", "models/softpick/model.safetensors"], stored
