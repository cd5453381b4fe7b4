"""Resume after an edit: a checkpoint is reused only when its fingerprint matches the run's;
corrupt newest checkpoints fall back to an older one (issue 9, items 1 and 3)."""
import copy
import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from softpick.checkpoint import list_checkpoints
from softpick.train import train

from conftest import run_concurrently

REPO = Path(__file__).resolve().parents[1]


def weights(model_dir):
    return load_file(str(model_dir / "model.safetensors"))


def same_weights(a, b) -> bool:
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def ckpt_dir(model_dir: Path) -> Path:
    return model_dir.parent / f"{model_dir.name}.checkpoints"


def test_lr_change_retrains_from_scratch(tiny_config, tiny_data_dir, tmp_path, capfd):
    run = tmp_path / "run" / "softpick"
    train(tiny_config, "softpick", tiny_data_dir, run)
    old = tmp_path / "old"
    shutil.copytree(run, old)
    capfd.readouterr()
    edited = copy.deepcopy(tiny_config)
    edited["train"]["lr"] = 5e-3
    train(edited, "softpick", tiny_data_dir, run)  # what Snakemake reruns after the edit
    err = capfd.readouterr().err
    fresh = tmp_path / "fresh" / "softpick"
    train(edited, "softpick", tiny_data_dir, fresh)
    assert not same_weights(run, old), "the rerun exported the old model"
    assert same_weights(run, fresh)
    assert re.search(r"starting fresh \(fingerprint \w+\): fingerprint differs in train\.lr \(0\.01 -> 0\.005\)", err), err
    # the old checkpoints were moved aside, one stale set only
    stale = sorted(p.name for p in run.parent.glob("softpick.checkpoints.stale-*"))
    assert len(stale) == 1 and list_checkpoints(run.parent / stale[0])
    steps = [json.loads(l)["step"] for l in (run / "train_log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 13))  # the old run's records were dropped


def test_model_shape_change_starts_fresh(tiny_config, tiny_data_dir, tmp_path, capfd):
    run = tmp_path / "run" / "softmax"
    train(tiny_config, "softmax", tiny_data_dir, run, stop_after=4)  # a checkpoint at step 3
    edited = copy.deepcopy(tiny_config)
    edited["model"]["intermediate_size"] = 48
    capfd.readouterr()
    train(edited, "softmax", tiny_data_dir, run)  # no size-mismatch traceback
    assert "fingerprint differs in model.intermediate_size (64 -> 48)" in capfd.readouterr().err
    fresh = tmp_path / "fresh" / "softmax"
    train(edited, "softmax", tiny_data_dir, fresh)
    assert same_weights(run, fresh)
    assert weights(run)["model.layers.0.mlp.up_proj.weight"].shape == (48, 32)


def test_data_manifest_change_starts_fresh(tiny_config, tiny_data_dir, tmp_path, capfd):
    data = tmp_path / "data"
    shutil.copytree(tiny_data_dir, data)
    run = tmp_path / "run" / "softpick"
    train(tiny_config, "softpick", data, run, stop_after=4)
    manifest = data / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"seed": 0', '"seed": 1'))  # another data stage's output
    capfd.readouterr()
    train(tiny_config, "softpick", data, run, stop_after=1)
    assert "fingerprint differs in the data manifest" in capfd.readouterr().err


def test_matching_fingerprint_resumes_and_says_so(tiny_config, tiny_data_dir, tmp_path, capfd):
    run = tmp_path / "run" / "softpick"
    train(tiny_config, "softpick", tiny_data_dir, run, stop_after=5)
    assert re.search(r"starting fresh \(fingerprint \w+\): no checkpoint in ", capfd.readouterr().err)
    operational = copy.deepcopy(tiny_config)
    operational["train"].update(gpus=1, peak_tflops=100.0, rdzv_port=1234)  # do not change the weights
    train(operational, "softpick", tiny_data_dir, run)
    assert re.search(r"resuming from step 3 \(fingerprint \w{12}, ", capfd.readouterr().err)
    straight = tmp_path / "straight" / "softpick"
    train(tiny_config, "softpick", tiny_data_dir, straight)
    assert same_weights(run, straight)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "missing"])
def test_corrupt_newest_checkpoint_falls_back_to_older(tiny_config, tiny_data_dir, tmp_path, capfd, damage):
    straight = tmp_path / "straight" / "softpick"
    train(tiny_config, "softpick", tiny_data_dir, straight)
    run = tmp_path / "run" / "softpick"
    train(tiny_config, "softpick", tiny_data_dir, run, stop_after=7)  # checkpoints at steps 3 and 6
    newest = list_checkpoints(ckpt_dir(run))[-1]
    assert newest.name == "step_00000006"
    state = newest / "state.pt"
    if damage == "truncated":
        state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    elif damage == "garbage":
        state.write_bytes(b"\x00garbage" * 1000)
    else:
        state.unlink()
    capfd.readouterr()
    train(tiny_config, "softpick", tiny_data_dir, run)
    err = capfd.readouterr().err
    assert re.search(r"warning: checkpoint \S+step_00000006 is corrupt: \S+state\.pt", err), err
    assert "resuming from step 3" in err
    assert same_weights(run, straight)


def test_no_loadable_checkpoint_starts_fresh_with_warning(tiny_config, tiny_data_dir, tmp_path, capfd):
    straight = tmp_path / "straight" / "softmax"
    train(tiny_config, "softmax", tiny_data_dir, straight)
    run = tmp_path / "run" / "softmax"
    train(tiny_config, "softmax", tiny_data_dir, run, stop_after=7)
    for ckpt in list_checkpoints(ckpt_dir(run)):
        (ckpt / "state.pt").write_bytes(b"not a checkpoint")
    capfd.readouterr()
    train(tiny_config, "softmax", tiny_data_dir, run)
    err = capfd.readouterr().err
    assert err.count("is corrupt") == 2 and "warning: starting fresh" in err and "loads" in err, err
    assert same_weights(run, straight)


def test_checkpoint_without_fingerprint_is_not_resumed(tiny_config, tiny_data_dir, tmp_path, capfd):
    """A checkpoint of an older version (no fingerprint) may come from any config: start fresh."""
    from softpick.checkpoint import save_checkpoint

    run = tmp_path / "run" / "softmax"
    save_checkpoint(ckpt_dir(run), 3, {"step": 3, "model": {}}, keep=2)
    capfd.readouterr()
    train(tiny_config, "softmax", tiny_data_dir, run, stop_after=1)
    err = capfd.readouterr().err
    assert re.search(r"starting fresh \(fingerprint \w+\): the checkpoints have no fingerprint", err), err
    assert [p.name for p in run.parent.glob("softmax.checkpoints.stale-*")] == ["softmax.checkpoints.stale-none"]


def test_code_edit_changes_the_fingerprint(tiny_config, tiny_data_dir, tmp_path):
    """An edit of any file the training runs (here model.py in a copy of the package) is seen."""
    from softpick.checkpoint import PACKAGE_DIR, differences, fingerprint

    pkg = tmp_path / "softpick"
    shutil.copytree(PACKAGE_DIR, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    before = fingerprint(tiny_config, "softpick", tiny_data_dir, code_root=pkg)
    assert before == fingerprint(tiny_config, "softpick", tiny_data_dir, code_root=pkg)
    (pkg / "model.py").write_text((pkg / "model.py").read_text() + "\n# edited\n")
    after = fingerprint(tiny_config, "softpick", tiny_data_dir, code_root=pkg)
    assert before["fingerprint"] != after["fingerprint"]
    assert differences(before["inputs"], after["inputs"]) == ["code softpick/model.py"]
    assert fingerprint(tiny_config, "softmax", tiny_data_dir, code_root=pkg)["fingerprint"] != after["fingerprint"]


def test_fingerprint_covers_the_code_snakemake_reruns_train_for():
    """Every file whose edit reruns the train rule (its code inputs: softpick.stages.registry.stage_code)
    is in the fingerprint, so a rerun Snakemake starts because of a code edit never resumes the old training."""
    from softpick.checkpoint import PACKAGE_DIR, training_code_files
    from softpick.stages.registry import stage_code

    listed = {p.removeprefix("src/softpick/") for p in stage_code("train")}
    assert {"checkpoint.py", "model.py", "train.py", "attention/triton/kernels.py"} <= listed
    # hf_export.py writes the modeling code beside the exported weights: its edit reruns train, which
    # resumes from the final checkpoint and re-exports (the weights do not depend on it); the config schemas
    # (the data section is validated against them) do not change the weights either.
    export_only = {"hf_export.py"} | {p for p in listed if p.startswith("workflow/schemas/")}
    fingerprinted = {p.relative_to(PACKAGE_DIR).as_posix() for p in training_code_files()}
    assert listed - export_only <= fingerprinted, listed - export_only - fingerprinted
    kinds = {p.relative_to(PACKAGE_DIR).as_posix() for p in (PACKAGE_DIR / "attention" / "kinds").glob("*.py")}
    assert kinds and kinds <= fingerprinted  # every attention kind, through attention/kinds/__init__.py


# ----------------------------------------------------------------------------- fault campaign
# One process imports torch and softpick once, then forks one child per attempt (a fresh process
# start costs seconds; a fork milliseconds). Each request on stdin is one attempt:
#   {"out": dir, "mode": "none"}            train to the end
#   {"mode": "tick", "n": N}                SIGKILL itself at the N-th file or optimizer operation
#                                           (os.replace / os.fsync / shutil.rmtree / torch.save /
#                                           AdamW.step, each counted before and after the call)
#   {"mode": "save", "n": N}                SIGKILL halfway through writing the N-th torch.save file
#   {"mode": "external", "n": N}            the forking process SIGKILLs the child from outside once it
#                                           passed the N-th operation; the child runs on meanwhile (the kill
#                                           lands wherever it happens to be) and waits at the next one, so
#                                           the kill comes before the training can end, however fast or
#                                           slow the machine
# and the reply is {"exit": the child's exit code (-9 when killed), "seconds": its wall time}.
FORK_SERVER = r'''
import io, json, os, shutil, signal, sys, time, traceback
import torch, yaml
from softpick.train import train

config = yaml.safe_load(open(sys.argv[1]))
data_dir = sys.argv[2]


def die():
    os.kill(os.getpid(), signal.SIGKILL)


def install_tick_kill(n, notify_fd=None):
    """SIGKILL at the n-th operation; with notify_fd, tell the parent (one byte) at the n-th operation
    and wait for its SIGKILL at the next one."""
    count = [0]

    def tick():
        count[0] += 1
        if notify_fd is None and count[0] >= n:
            die()
        if notify_fd is not None and count[0] == n:
            os.write(notify_fd, b"k")
        elif notify_fd is not None and count[0] > n:
            while True:
                time.sleep(1)

    def hook(owner, name):
        real = getattr(owner, name)

        def hooked(*args, **kwargs):
            tick()
            out = real(*args, **kwargs)
            tick()
            return out
        setattr(owner, name, hooked)
    for owner, name in ((os, "replace"), (os, "fsync"), (shutil, "rmtree"), (torch, "save"), (torch.optim.AdamW, "step")):
        hook(owner, name)


def install_save_kill(n):
    real, count = torch.save, [0]

    def save(obj, f, *args, **kwargs):
        count[0] += 1
        if count[0] < n:
            return real(obj, f, *args, **kwargs)
        buf = io.BytesIO()
        real(obj, buf)
        with open(f, "wb") as fh:
            fh.write(buf.getvalue()[: len(buf.getvalue()) // 2])
        die()
    torch.save = save


for line in sys.stdin:
    req = json.loads(line)
    sys.stdout.flush()
    t0 = time.perf_counter()
    notify_read, notify_write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(notify_read)
            if req["mode"] == "tick":
                install_tick_kill(req["n"])
            elif req["mode"] == "external":
                install_tick_kill(req["n"], notify_write)
            elif req["mode"] == "save":
                install_save_kill(req["n"])
            train(config, "softpick", data_dir, req["out"])
            os._exit(0)
        except BaseException:
            traceback.print_exc()
            sys.stderr.flush()
            os._exit(1)
    os.close(notify_write)
    if os.read(notify_read, 1):  # b"" (end of file): the child ended without asking for the kill
        os.kill(pid, signal.SIGKILL)  # not reaped yet: the pid is still this child's
    os.close(notify_read)
    _, status = os.waitpid(pid, 0)
    print(json.dumps({"exit": os.waitstatus_to_exitcode(status), "seconds": time.perf_counter() - t0}), flush=True)
'''


class ForkServer:
    def __init__(self, tmp: Path, config: dict, data_dir: Path):
        import os
        import subprocess
        import sys

        import yaml

        (tmp / "fork_server.py").write_text(FORK_SERVER)
        (tmp / "config.yaml").write_text(yaml.safe_dump(config))
        env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
        self.stderr_path = tmp / "fork_server.stderr"
        self.proc = subprocess.Popen([sys.executable, str(tmp / "fork_server.py"), str(tmp / "config.yaml"), str(data_dir)],
                                     env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=open(self.stderr_path, "w"), text=True, start_new_session=True)

    def attempt(self, timeout: float = 900, **request) -> dict:
        """One attempt's reply (timeout: a hang guard only; an attempt takes seconds)."""
        import select

        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            pytest.fail(f"the fork server gave no answer to {request}:\n{self.stderr_path.read_text()[-3000:]}")
        return json.loads(line)

    def close(self):
        import os
        import signal

        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except Exception:  # noqa: BLE001
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def _debris(ckpt: Path) -> list[str]:
    """What a save cut short leaves: a temp dir, or a renamed dir without its COMPLETE marker."""
    if not ckpt.exists():
        return []
    return sorted(p.name for p in ckpt.iterdir()
                  if p.name.startswith(".tmp_step_") or (p.name.startswith("step_") and not (p / "COMPLETE").exists()))


@pytest.mark.slow
def test_fault_campaign_20_sigkills_then_bitwise_equal(tiny_config, tiny_data_dir, tmp_path):
    """SIGKILL one training at 20 random moments (5 halfway through writing a checkpoint, 8 at a random
    file / optimizer operation, 7 from outside, soon after a random operation), restarting after each: the
    final weights and log equal an uninterrupted run's, no stale or corrupt checkpoint is ever taken.
    Every kill point is counted in operations, not seconds: the same on a fast or a loaded machine."""
    import random
    import signal

    seed = random.randrange(2**32)
    print(f"fault campaign seed {seed}")
    rnd = random.Random(seed)
    config = copy.deepcopy(tiny_config)
    config["train"].update(max_steps=60, checkpoint_every=1, keep_checkpoints=2, val_every=20)
    server = ForkServer(tmp_path, config, tiny_data_dir)
    try:
        straight = tmp_path / "straight" / "softpick"
        reference = server.attempt(out=str(straight), mode="none")
        assert reference["exit"] == 0, (tmp_path / "fork_server.stderr").read_text()[-3000:]
        run = tmp_path / "run" / "softpick"
        plan = ["save"] * 5 + ["tick"] * 8 + ["external"] * 7
        rnd.shuffle(plan)
        history = []
        for mode in plan:
            request = {"out": str(run), "mode": mode}
            if mode == "save":
                request["n"] = rnd.randint(1, 3)
            else:  # tick, external: a few steps at most
                request["n"] = rnd.randint(1, 40)
            reply = server.attempt(**request)
            assert reply["exit"] == -signal.SIGKILL, (request, reply, (tmp_path / "fork_server.stderr").read_text()[-3000:])
            debris = _debris(ckpt_dir(run))
            if mode == "save":
                assert debris, "a kill halfway through torch.save left no temp dir"
            done = list_checkpoints(ckpt_dir(run))
            history.append((mode, request["n"], done[-1].name if done else None, debris))
            assert not run.exists() or (run / "model.safetensors").exists()  # the export is whole or absent
        print("\n".join(map(str, history)))
        assert sum(1 for h in history if h[3]) >= 5  # kills during a checkpoint save
        last = list_checkpoints(ckpt_dir(run))
        assert not last or int(last[-1].name.split("_")[1]) < 60, "the run finished before the 20th kill"
        assert server.attempt(out=str(run), mode="none")["exit"] == 0
    finally:
        server.close()
    assert same_weights(run, straight)
    steps = [json.loads(l)["step"] for l in (run / "train_log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 61))
    assert _debris(ckpt_dir(run)) == []
    stderr = (tmp_path / "fork_server.stderr").read_text()
    assert "is corrupt" not in stderr and "fingerprint differs" not in stderr
    assert stderr.count("resuming from step") >= 10


# Injected through PYTHONPATH (Python imports `sitecustomize` at startup) into the Snakemake job of
# test_snakemake_ctrl_c_then_rerun_recovers: once softpick.train is imported, training holds after
# writing the checkpoint of step HOLD_STEP while HOLD_FILE exists, having created HOLD_FILE.reached,
# so the test interrupts it at a step it chose, however fast or slow the machine is.
HOLD_SITECUSTOMIZE = r"""
import importlib.abc, importlib.machinery, os, sys, time

HOLD_FILE, HOLD_STEP = os.environ["SOFTPICK_TEST_HOLD_FILE"], int(os.environ["SOFTPICK_TEST_HOLD_STEP"])


def patch(train):
    real_save = train._save

    def _save(job, progress):
        real_save(job, progress)
        if progress.step == HOLD_STEP and os.path.exists(HOLD_FILE):
            open(HOLD_FILE + ".reached", "w").close()
            while os.path.exists(HOLD_FILE):
                time.sleep(0.05)
    train._save = _save


class HoldTraining(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "softpick.train":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        exec_module = spec.loader.exec_module

        def exec_and_patch(module):
            exec_module(module)
            patch(module)
        spec.loader.exec_module = exec_and_patch
        return spec


sys.meta_path.insert(0, HoldTraining())
"""


@pytest.mark.slow
def test_snakemake_ctrl_c_then_rerun_recovers(tmp_path):
    """Ctrl-C (SIGINT to the process group, as a terminal sends it) while `train` runs under Snakemake:
    nothing half-written is left, and the rerun resumes the training and ends with the weights of an
    uninterrupted one. The job holds after its checkpoint of step 4 until the interrupt (HOLD_SITECUSTOMIZE)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import yaml

    from softpick.atomic import sha256_file

    hold_step, max_steps = 4, 10  # the hold, not the length of the training, decides where Ctrl-C lands
    work = tmp_path / "work"
    work.mkdir()
    for name in ("Snakefile", "workflow", "configs", "data", "src"):
        os.symlink(REPO / name, work / name)
    (work / "longer.yaml").write_text(yaml.safe_dump(
        {"run_name": "sigint-test", "train": {"max_steps": max_steps, "checkpoint_every": 2}}))
    results = work / "results" / "sigint-test"
    model = results / "models" / "softpick"
    cmd = [sys.executable, "-m", "snakemake", "--cores", "1", "--configfile", "configs/test.yaml", "longer.yaml",
           "--", str(model.relative_to(work) / "model.safetensors")]
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(HOLD_SITECUSTOMIZE)
    hold = tmp_path / "hold"
    hold.touch()
    reached = tmp_path / "hold.reached"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(hook)]), "OMP_NUM_THREADS": "1",
           "SOFTPICK_TEST_HOLD_FILE": str(hold), "SOFTPICK_TEST_HOLD_STEP": str(hold_step)}
    log_path = tmp_path / "snakemake.out"
    with open(log_path, "w") as log_file:
        # SIGINT back to its default in Snakemake: a shell without job control starts background commands
        # (`pytest &`, a CI runner's nohup) with SIGINT ignored, which Python and its children inherit, and
        # the Ctrl-C below would then do nothing (the job held on forever)
        proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                                start_new_session=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 1800  # a hang guard only: the job waits for us at hold_step
        while not reached.exists():
            assert proc.poll() is None, f"snakemake ended before the hold:\n{log_path.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"the hold was never reached:\n{log_path.read_text()[-3000:]}"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=600)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    out = log_path.read_text()
    assert proc.returncode != 0, out[-3000:]
    assert [p.name for p in list_checkpoints(ckpt_dir(model))][-1] == f"step_{hold_step:08d}"
    # nothing half-written: the job's outputs are gone, no temp file outside the checkpoint dir,
    # the finished data stage's files match their manifest
    for name in ("config.json", "model.safetensors", "train_log.jsonl", "train_summary.json"):
        assert not (model / name).exists(), name
    leftovers = [p for p in results.rglob("*") if ".tmp" in p.name and ".checkpoints" not in str(p)]
    assert leftovers == [], leftovers
    manifest = json.loads((results / "data" / "manifest.json").read_text())
    for name, digest in manifest["files"].items():
        assert sha256_file(results / "data" / name) == digest, name

    hold.unlink()  # the rerun runs through
    rerun = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=1800)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    log = (work / "logs" / "sigint-test" / "train_softpick.log").read_text()
    assert f"resuming from step {hold_step} (fingerprint" in log, log[-3000:]
    steps = [json.loads(l)["step"] for l in (model / "train_log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, max_steps + 1))
    config = yaml.safe_load((model / "resolved_config.yaml").read_text())
    straight = tmp_path / "straight" / "softpick"
    train(config, "softpick", results / "data", straight)
    assert same_weights(model, straight)


# ----------------------------------------------------------------------------- issue 15
OPERATIONAL_EDIT = {"log_every": 2, "val_every": 1, "checkpoint_every": 4, "keep_checkpoints": 3,
                    "max_consecutive_skips": 3}


def test_operational_keys_resume_with_the_same_weights(tiny_config, tiny_data_dir, tmp_path, capfd):
    """log_every / val_every / checkpoint_every / keep_checkpoints / max_consecutive_skips change no weight
    (validation draws no random numbers): a run continued with other values resumes and ends with the
    weights of an uninterrupted run (before: a fresh start, the checkpoints moved aside)."""
    run = tmp_path / "run" / "softpick"
    train(tiny_config, "softpick", tiny_data_dir, run, stop_after=5)  # a checkpoint at step 3
    edited = copy.deepcopy(tiny_config)
    edited["train"].update(OPERATIONAL_EDIT)
    capfd.readouterr()
    train(edited, "softpick", tiny_data_dir, run)
    err = capfd.readouterr().err
    assert re.search(r"resuming from step 3 \(fingerprint \w{12}, ", err), err
    assert not list(run.parent.glob("softpick.checkpoints.stale-*"))
    straight = tmp_path / "straight" / "softpick"
    train(tiny_config, "softpick", tiny_data_dir, straight)
    assert same_weights(run, straight)
    records = [json.loads(l) for l in (run / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4, 6, 8, 10, 12]  # log_every 2 from the resumed step on
    assert all("val_loss" in r for r in records if r["step"] > 3)  # val_every 1


def test_reverted_edit_resumes_from_the_stale_set(tiny_config, tiny_data_dir, tmp_path, capfd):
    """Train with lr x, edit lr (fresh start, the checkpoints moved aside), revert: the run resumes from
    the first training's checkpoints, its log with them, and ends as an uninterrupted run (before: the
    intervening run deleted that set and the revert trained from scratch)."""
    run = tmp_path / "run" / "softpick"
    train(tiny_config, "softpick", tiny_data_dir, run, stop_after=7)  # checkpoints at steps 3 and 6
    edited = copy.deepcopy(tiny_config)
    edited["train"]["lr"] = 5e-3
    capfd.readouterr()
    train(edited, "softpick", tiny_data_dir, run, stop_after=4)
    assert "starting fresh" in capfd.readouterr().err
    train(tiny_config, "softpick", tiny_data_dir, run)  # reverted
    err = capfd.readouterr().err
    assert re.search(r"resuming from the stale set \S+softpick\.checkpoints\.stale-\w{8} \(fingerprint differs in "
                     r"train\.lr \(0\.005 -> 0\.01\); the old checkpoints were moved to \S+stale-\w{8}\)", err), err
    assert re.search(r"resuming from step 6 \(fingerprint \w{12}, ", err), err
    straight = tmp_path / "straight" / "softpick"
    train(tiny_config, "softpick", tiny_data_dir, straight)
    assert same_weights(run, straight)
    # the log is the first training's, continued: the edited run's records went with its set
    ours = [json.loads(l) for l in (run / "train_log.jsonl").read_text().splitlines()]
    theirs = [json.loads(l) for l in (straight / "train_log.jsonl").read_text().splitlines()]
    assert [(r["step"], r["loss"]) for r in ours] == [(r["step"], r["loss"]) for r in theirs]
    # the edited training's set is kept in turn, with its log
    (other,) = run.parent.glob("softpick.checkpoints.stale-*")
    assert list_checkpoints(other) and (other / "train_log.jsonl").is_file()


def test_stale_sets_are_bounded_newest_kept(tiny_config, tiny_data_dir, tmp_path, capfd):
    from softpick.checkpoint import fingerprint

    run = tmp_path / "run" / "softmax"
    lrs = [1e-2, 9e-3, 8e-3, 7e-3, 6e-3]
    prints = []
    for lr in lrs:
        config = copy.deepcopy(tiny_config)
        config["train"]["lr"] = lr
        prints.append(fingerprint(config, "softmax", tiny_data_dir)["fingerprint"])
        train(config, "softmax", tiny_data_dir, run, stop_after=3)  # a checkpoint at step 3
    kept = sorted(p.name for p in run.parent.glob("softmax.checkpoints.stale-*"))
    # the three most recently moved aside (STALE_SETS_KEPT): not the current training's, not the oldest
    assert kept == sorted(f"softmax.checkpoints.stale-{fp[:8]}" for fp in prints[1:4])


def test_planted_pickle_payload_is_refused_and_never_runs(tiny_config, tiny_data_dir, tmp_path, capfd):
    """A state.pt whose pickle calls builtins.open (a stand-in for any code), with a matching fingerprint and
    the sha256 its COMPLETE marker records: refused with a warning naming the file, the payload never runs
    (before: torch.load(weights_only=False) ran it)."""
    from softpick.atomic import sha256_file

    marker = tmp_path / "payload-ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    run = tmp_path / "run" / "softpick"
    train(tiny_config, "softpick", tiny_data_dir, run, stop_after=7)  # checkpoints at steps 3 and 6
    newest = list_checkpoints(ckpt_dir(run))[-1]
    torch.save({"step": 6, "model": Payload()}, newest / "state.pt")
    complete = json.loads((newest / "COMPLETE").read_text())
    complete["sha256"]["state.pt"] = sha256_file(newest / "state.pt")
    (newest / "COMPLETE").write_text(json.dumps(complete))
    capfd.readouterr()
    train(tiny_config, "softpick", tiny_data_dir, run)
    err = capfd.readouterr().err
    assert not marker.exists(), "the planted payload ran"
    assert re.search(r"warning: checkpoint \S+step_00000006 is refused: \S+step_00000006/state\.pt: its pickle needs "
                     r"globals a checkpoint never holds \((io|builtins)\.open\); not unpickled", err), err
    assert "resuming from step 3" in err
    straight = tmp_path / "straight" / "softpick"
    train(tiny_config, "softpick", tiny_data_dir, straight)
    assert same_weights(run, straight)


def _smk(work: Path, *args: str, run_file: str = "run.yaml") -> str:
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", "--configfile", "configs/test.yaml",
                           run_file, *args], cwd=work, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


@pytest.mark.slow
def test_operational_keys_are_not_train_params(tmp_path):
    """After a train job ran (Snakemake recorded its params), changing only operational keys leaves
    nothing to do; changing lr reruns it (the control)."""
    import os

    import yaml

    work = tmp_path / "work"
    work.mkdir()
    for name in ("Snakefile", "workflow", "configs", "data", "src"):
        os.symlink(REPO / name, work / name)
    base = {"run_name": "opkeys", "train": {"max_steps": 2, "checkpoint_every": 1}}
    (work / "run.yaml").write_text(yaml.safe_dump(base))
    target = "results/opkeys/models/softpick/model.safetensors"
    _smk(work, "--", target)
    (work / "operational.yaml").write_text(yaml.safe_dump({**base, "train": {**base["train"], **OPERATIONAL_EDIT}}))
    (work / "lr.yaml").write_text(yaml.safe_dump({**base, "train": {**base["train"], "lr": 1e-3}}))
    operational, lr = run_concurrently(lambda: _smk(work, "-n", "--", target, run_file="operational.yaml"),
                                       lambda: _smk(work, "-n", "--", target, run_file="lr.yaml"))  # dry runs: no lock
    assert "Nothing to be done" in operational
    assert re.search(r"rule train:(.|\n)*reason: .*Params have changed", lr)
