"""A non-editable `pip install .` finds its configs, schemas, task data and embedded corpus: the CLI from any
directory (package data), the Snakefile from a checkout (the checkout's files first)."""
import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from importlib.metadata import version
from pathlib import Path

import pytest

from conftest import run_concurrently

REPO = Path(__file__).resolve().parents[1]


def copy_checkout(dst: Path) -> None:
    """The files a clone holds (symlinks kept), so the build writes nothing into this checkout."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout
    for rel in filter(None, listed.split("\0")):
        src, out = REPO / rel, dst / rel
        if not (src.is_symlink() or src.is_file()) or rel.startswith(("results/", "benchmarks/")):
            continue
        out.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            os.symlink(os.readlink(src), out)
        else:
            shutil.copy2(src, out)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    base = tmp_path_factory.mktemp("install")
    checkout, site = base / "checkout", base / "site"
    copy_checkout(checkout)
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site), "."]
    if int(version("setuptools").split(".")[0]) >= 77:  # the build backend pyproject asks for is here
        cmd[4:4] = ["--no-build-isolation", "--no-index"]
    proc = subprocess.run(cmd, cwd=checkout, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return base, checkout, site


def python_in(cwd: Path, site: Path, code: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1"}
    env.pop("SOFTPICK_TASK_DATA", None)
    return subprocess.run([sys.executable, *(["-c", textwrap.dedent(code)] if code else []), *args], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=600)


def test_cli_from_any_directory_uses_package_data(installed):
    base, _, site = installed
    elsewhere = base / "elsewhere"
    elsewhere.mkdir()
    proc, cli = run_concurrently(lambda: python_in(elsewhere, site, """
        import softpick, softpick.config as c, softpick.evaluate as ev, softpick.schema as s
        from pathlib import Path
        site = Path(softpick.__file__).resolve().parent
        for p in (c.DEFAULT_CONFIG, s.SCHEMA_DIR, ev.task_data_dir(), ev.tasks_dir()):
            assert site in p.resolve().parents and p.exists(), p
        assert c.load_config([str(c.DEFAULT_CONFIG.parent / "test.yaml")])["run_name"] == "e2e-test"
        assert len(ev.load_task_docs("arc_easy")) > 100  # the shipped files pass the manifest's sha256
        print("OK", site)
    """), lambda: python_in(elsewhere, site, "", "-m", "softpick", "--help"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"OK {site.resolve()}/softpick" in proc.stdout
    assert cli.returncode == 0 and "train" in cli.stdout, cli.stderr[-2000:]


def test_default_data_stage_from_any_directory_reads_the_packaged_corpus(installed):
    """The default data.source (embedded, data/corpus/corpus.jsonl.xz) needs no checkout: the corpus ships
    with the package; the manifest names it as configured, with the checkout's sha256."""
    base, checkout, site = installed
    elsewhere = base / "data-elsewhere"
    elsewhere.mkdir()
    proc = python_in(elsewhere, site, """
        import json, sys
        import softpick.config as c
        from softpick.cli import main
        from softpick.data import verify_data_dir
        sys.exit(main(["data", "--config", str(c.DEFAULT_CONFIG.parent / "test.yaml")]) or
                 print(json.dumps(verify_data_dir("results/e2e-test/data")["corpus"])))
    """)
    assert proc.returncode == 0, proc.stderr[-3000:]
    corpus = checkout / "data" / "corpus" / "corpus.jsonl.xz"
    digest = hashlib.sha256(corpus.read_bytes()).hexdigest()
    assert json.loads(proc.stdout.splitlines()[-1]) == [
        {"path": "data/corpus/corpus.jsonl.xz", "bytes": corpus.stat().st_size, "sha256": digest}]
    assert not (elsewhere / "data").exists()


def test_snakefile_from_a_checkout_with_the_installed_package(installed):
    _, checkout, site = installed
    proc, dry = run_concurrently(lambda: python_in(checkout, site, """
        import softpick, softpick.config as c
        from pathlib import Path
        assert "site" in Path(softpick.__file__).parts, softpick.__file__  # not the checkout's src/
        assert c.DEFAULT_CONFIG == (Path.cwd() / "configs" / "default.yaml").resolve(), c.DEFAULT_CONFIG
        print("OK")
    """), lambda: python_in(checkout, site, "", "-m", "snakemake", "-n", "--cores", "1", "--configfile",
                            "configs/test.yaml"))  # a dry run: writes nothing the other reads
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-3000:]
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert "rule train" in dry.stdout + dry.stderr
