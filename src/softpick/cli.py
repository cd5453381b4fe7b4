"""The command line of every pipeline stage, outside Snakemake (one subcommand per stage of
softpick.stages.registry):

    python -m softpick data      --config configs/default.yaml
    python -m softpick import    --config configs/authors-340m.yaml --variant softpick   # models_from
    python -m softpick train     --config configs/default.yaml --variant softpick
    python -m softpick evaluate  --variant softpick
    python -m softpick quantize  --variant softpick --method rtn --bits 4
    python -m softpick analyze   --variant softpick
    python -m softpick figures
    python -m softpick launch    --config run.yaml --variant softpick --dry-run   # torchrun, train.gpus > 1

--config files are merged over configs/default.yaml in order; --set key.path=value overrides
single keys. `softpick <stage> --help` lists the options of one stage. The Snakemake rules call
run_stage() with the same arguments (workflow/scripts/stage.py); `softpick` is the same program.

Every stage starts its log with a header (stage_header: stage, variant, config digest, inputs and
their sha256, device, package versions, git commit), verifies the data it reads
(softpick.data.verify_data_dir), prints "wrote <path>" for each file it wrote and ends with its wall
time; progress bars redraw at most every PROGRESS_INTERVAL_S seconds, one line each, when the output
is not a terminal.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from . import __version__
from .config import REPO_ROOT, check_device_available, load_config, run_paths
from .stages.base import Job, Stage
from .stages.registry import REGISTRY, get_stage

HEADER_PACKAGES = ("torch", "transformers", "tokenizers", "numpy", "lm_eval", "hqq", "snakemake")
HASH_LIMIT_BYTES = 256 << 20  # inputs above this are listed with size and mtime, not hashed
PROGRESS_INTERVAL_S = float(os.environ.get("SOFTPICK_PROGRESS_INTERVAL", "30"))


def attention_kinds() -> tuple[str, ...]:
    from .attention import KINDS

    return tuple(KINDS)


def quantize_choices() -> tuple[list[str], list[int]]:
    """(methods, bit widths) the quantize registry implements."""
    from .quantize import METHODS

    return sorted(METHODS), sorted({b for m in METHODS.values() for b in m.bits}, reverse=True)


def stage_options(stage: Stage, given: dict | None = None) -> dict:
    """The stage's own arguments (Stage.arguments) by dest: their defaults, updated by `given`."""
    parser = argparse.ArgumentParser(add_help=False)
    for arg in stage.arguments:
        parser.add_argument(*arg.flags, **arg.options)
    return {**vars(parser.parse_args([])), **(given or {})}


def run_stage(stage: str, config: dict, *, variant: str | None = None, bits: int | None = None,
              method: str | None = None, root: str | Path = ".", inputs: list[str] | None = None,
              options: dict | None = None) -> list[Path]:
    """Run one stage of the run described by `config`, reading and writing the standard layout; returns
    the files it wrote.

    Checks the variant, the device and the quantization job, prints the stage header (inputs: the
    Snakemake rule's, else the stage's files in the layout), verifies the data before any work, then
    "wrote <path>" for each output (stdout) and the wall time."""
    spec = get_stage(stage)
    if spec.variant and variant not in config["variants"]:
        raise ValueError(f"--variant must be one of config 'variants' {config['variants']}, got {variant!r}")
    if spec.device:
        check_device_available(config)  # names the key; 'auto' falls back to the CPU
    if spec.quantized:
        from .quantize import quantize_jobs

        jobs = quantize_jobs(config["quantize"])
        if (method, bits) not in jobs:
            raise ValueError(f"--method / --bits must be one of the config's quantize jobs "
                             f"{', '.join(f'{m} {b}' for m, b in jobs)}; got {method!r} {bits!r}")
    job = Job(config, run_paths(config, root), variant=variant, method=method, bits=bits,
              options=stage_options(spec, options))
    t0 = time.perf_counter()
    if spec.header and _is_rank_zero():
        if inputs is None:
            inputs = [str(p) for p in spec.inputs(job)]
        print(stage_header(stage, config, variant=variant, bits=bits, method=method, inputs=inputs), file=sys.stderr,
              flush=True)
    if spec.splits is not None:
        from .data import verify_data_dir

        verify_data_dir(job.data_dir, spec.splits)
    if spec.device:
        from .loading import resolve_device

        job.device = str(resolve_device(config["device"]))
    written = [Path(p) for p in spec.run(job) or []]
    if _is_rank_zero():
        for path in written:
            print(f"wrote {path}", flush=True)
        if spec.header:
            print(f"softpick {stage}: done in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    return written


# ----------------------------------------------------------------------------- the log header
def _is_rank_zero() -> bool:
    return os.environ.get("RANK", "0") in ("", "0")


def config_digest(config: dict, stage: str | None = None) -> str:
    """sha256 of the resolved config (canonical JSON), of the sections `stage` depends on when given."""
    part = config if stage is None else {k: config.get(k) for k in get_stage(stage).sections}
    return hashlib.sha256(json.dumps(part, sort_keys=True, default=str).encode()).hexdigest()


def describe_file(path: str | Path) -> str:
    from .atomic import sha256_file

    path = Path(path)
    if not path.exists():
        return f"{path} (missing)"
    if path.is_dir():
        return f"{path}/ (directory)"
    size = path.stat().st_size
    if size > HASH_LIMIT_BYTES:
        return f"{path} {size} bytes, mtime {time.strftime('%Y-%m-%dT%H:%M:%S', time.localtime(path.stat().st_mtime))} (not hashed: large)"
    return f"{path} {size} bytes sha256 {sha256_file(path)}"


def _versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    out = [f"python {platform.python_version()}"]
    for name in ("softpick", *HEADER_PACKAGES):
        try:
            out.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            pass
    return ", ".join(out)


def _git_commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=REPO_ROOT, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, cwd=REPO_ROOT, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"
    return head + (" (uncommitted changes)" if dirty else "")


def _device_line(config: dict, stage: str) -> str:
    if not get_stage(stage).device:
        return "cpu (this stage uses no accelerator)"
    import torch

    name = config["device"]
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        return f"cuda ({torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}), config device '{config['device']}'"
    return f"cpu ({os.cpu_count()} cores, torch threads {torch.get_num_threads()}), config device '{config['device']}'"


def stage_header(stage: str, config: dict, *, variant: str | None = None, bits: int | None = None,
                 method: str | None = None, inputs: list[str] = ()) -> str:
    """The first lines of every stage log: what runs, on what, from which inputs and code."""
    what = [f"stage {stage}"] + [f"{k} {v}" for k, v in (("variant", variant), ("method", method), ("bits", bits)) if v]
    lines = [
        "=" * 100,
        f"softpick {', '.join(what)}   (run {config.get('run_name')}, started {time.strftime('%Y-%m-%d %H:%M:%S %Z')})",
        f"config digest  {config_digest(config, stage)}  (sha256 of sections {', '.join(get_stage(stage).sections)})",
        f"full config    {config_digest(config)}",
        f"device         {_device_line(config, stage)}",
        f"host           {platform.node()}, {platform.platform()}",
        f"versions       {_versions()}",
        f"git commit     {_git_commit()}",
        f"inputs ({len(inputs)}):",
        *(f"  {describe_file(p)}" for p in inputs),
        "=" * 100,
    ]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- logs
class _LineStream:
    """A text stream whose carriage returns become newlines: each progress-bar redraw is one log line."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(text.replace("\r\n", "\n").replace("\r", "\n"))
        return len(text)

    def isatty(self) -> bool:
        return False

    def __getattr__(self, name):
        return getattr(self._stream, name)


def log_friendly_progress(interval_s: float | None = None) -> None:
    """Make every tqdm bar created from now on in this process redraw at most every interval_s seconds
    (mininterval; maxinterval too, so tqdm's monitor thread does not redraw sooner; set_postfix no longer
    forces a redraw). For output that is a file: called by redirect_output and by main() when stderr is
    not a terminal."""
    from tqdm import std

    interval_s = PROGRESS_INTERVAL_S if interval_s is None else interval_s
    cls = std.tqdm
    if getattr(cls, "_softpick_interval", None) == interval_s:
        return
    original = cls.__dict__.get("_softpick_original_init", cls.__dict__["__init__"])
    postfix = cls.__dict__.get("_softpick_original_set_postfix", cls.__dict__["set_postfix"])

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("mininterval", interval_s)
        kwargs.setdefault("maxinterval", max(interval_s, kwargs["mininterval"]))
        original.__get__(self, type(self))(*args, **kwargs)

    def set_postfix(self, ordered_dict=None, refresh=False, **kwargs):
        """tqdm's, without the forced redraw (the next update past mininterval shows it)."""
        return postfix(self, ordered_dict, refresh, **kwargs)

    cls._softpick_original_init, cls._softpick_original_set_postfix = original, postfix
    cls.__init__, cls.set_postfix = __init__, set_postfix
    cls._softpick_interval = interval_s


@contextlib.contextmanager
def _stage_logging(stream):
    """softpick.* INFO messages (e.g. the data stage's counts and timings) to `stream` while running."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s", "%H:%M:%S"))
    logger = logging.getLogger("softpick")
    level, propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # not a second time through a root handler writing to the same log
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


@contextlib.contextmanager
def redirect_output(log_path: str | Path):
    """Send this process's stdout / stderr (progress bars included, one line per redraw at most every
    PROGRESS_INTERVAL_S seconds) and softpick's INFO log to log_path."""
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_friendly_progress()
    with open(log_path, "w", buffering=1) as raw:
        fh = _LineStream(raw)
        with contextlib.redirect_stdout(fh), contextlib.redirect_stderr(fh):
            handler = logging.StreamHandler(fh)
            logging.getLogger().addHandler(handler)
            try:
                with _stage_logging(fh):
                    yield
            except BaseException:
                import traceback

                traceback.print_exc(file=fh)  # the log tells the whole story, not only Snakemake's terminal
                raise
            finally:
                logging.getLogger().removeHandler(handler)


def build_parser() -> argparse.ArgumentParser:
    """`softpick <stage> [options]`: one subcommand per stage of the registry, each with its own --help."""
    parser = argparse.ArgumentParser(prog="softpick", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"softpick {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", action="append", default=[], metavar="FILE",
                        help="YAML merged over configs/default.yaml (repeatable, in order)")
    common.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one key, e.g. --set train.max_steps=50 (value parsed as YAML; repeatable)")
    sub = parser.add_subparsers(dest="stage", required=True, metavar="STAGE")
    kinds = attention_kinds()
    for spec in REGISTRY.values():
        p = sub.add_parser(spec.name, parents=[common], help=spec.help, description=spec.help)
        if spec.variant:
            p.add_argument("--variant", required=True, choices=kinds, help="attention variant (one of config 'variants')")
        if spec.quantized:
            methods, bits = quantize_choices()
            p.add_argument("--bits", type=int, required=True, choices=bits, help="bit width (one of config 'quantize.bits')")
            p.add_argument("--method", required=True, choices=methods, help="quantizer (one of config 'quantize.methods')")
        for arg in spec.arguments:
            p.add_argument(*arg.flags, **arg.options)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .data import DataSourceUnavailableError

    if not sys.stderr.isatty():  # a log file (e.g. the multi-process train rule's `> log 2>&1`)
        log_friendly_progress()
        sys.stderr = _LineStream(sys.stderr)
    try:
        config = load_config(args.config, args.set)
        with _stage_logging(sys.stderr):
            run_stage(args.stage, config, variant=getattr(args, "variant", None), bits=getattr(args, "bits", None),
                      method=getattr(args, "method", None), options=vars(args))
    except (ValueError, FileNotFoundError, DataSourceUnavailableError) as err:
        print(f"softpick {args.stage}: error: {err}", file=sys.stderr)
        return 2
    return 0
