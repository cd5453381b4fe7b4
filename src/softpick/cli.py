"""Command line for every pipeline stage, outside Snakemake:

    python -m softpick data      --config configs/default.yaml
    python -m softpick import    --config configs/authors-340m.yaml --variant softpick   # models_from
    python -m softpick train     --config configs/default.yaml --variant softpick
    python -m softpick evaluate  --variant softpick
    python -m softpick quantize  --variant softpick --method rtn --bits 4
    python -m softpick analyze   --variant softpick
    python -m softpick passkey   --variant softpick
    python -m softpick figures
    python -m softpick mechanism --variant softpick   # Bigram-Backcopy (softpick.mechanism)
    python -m softpick mechanism_figure

--config files are merged over configs/default.yaml in order; --set key.path=value overrides
single keys. `python -m softpick <stage> --help` lists the options of one stage. The Snakemake
rules call run_stage() with the same arguments (workflow/scripts/stage.py).

Every stage starts its log with a header (stage_header: stage, variant, config digest, inputs and
their sha256, device, package versions, git commit), verifies the data it reads
(softpick.data.verify_data_dir) and ends with its wall time; progress bars redraw at most every
PROGRESS_INTERVAL_S seconds, one line each, when the output is not a terminal.
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

from .config import REPO_ROOT, check_device_available, load_config, run_paths

STAGES = ("data", "train", "import", "evaluate", "quantize", "analyze", "dynamics", "knockout", "passkey", "figures", "mechanism",
          "mechanism_figure")
STAGE_HELP = {
    "data": "corpus -> tokenizer -> token files + manifest (results/<run>/data/)",
    "train": "pretrain one attention variant (results/<run>/models/<variant>/)",
    "import": "import the fla checkpoint of config models_from.<variant> instead of training (softpick.importer)",
    "evaluate": "lm-eval zero-shot tasks + held-out perplexity of one model",
    "quantize": "weight-only quantization of one model at one bit width, then the same evaluation",
    "analyze": "sink rate, kurtosis, activations and attention sparsity of one model",
    "dynamics": "the analysis metrics and validation loss at every weight snapshot of one training",
    "knockout": "validation loss with the first token's weight zeroed in the sink heads vs random heads",
    "passkey": "passkey retrieval accuracy of one model at several prompt lengths",
    "figures": "every figure and table of the run",
    "mechanism": "Bigram-Backcopy: train a 1-layer model on the synthetic task, measure how its attention sink forms",
    "mechanism_figure": "the mechanism figure of every variant",
}
MODEL_STAGES = ("train", "evaluate", "quantize", "analyze", "dynamics", "knockout", "passkey")  # take --variant; use config 'device'
VARIANT_STAGES = (*MODEL_STAGES, "import", "mechanism")  # take --variant
# The config sections each stage's work depends on: their sha256 is the header's stage digest.
STAGE_SECTIONS = {
    "data": ("seed", "data"),
    "train": ("seed", "device", "data", "model", "train"),
    "import": ("models_from", "model", "train"),
    "evaluate": ("device", "eval"),
    "quantize": ("device", "quantize", "eval"),
    "analyze": ("device", "analysis"),
    "dynamics": ("device", "analysis", "dynamics", "train"),
    "knockout": ("device", "analysis", "knockout", "train"),
    "passkey": ("device", "passkey"),
    "figures": ("run_name", "variants", "quantize"),
    "mechanism": ("seed", "mechanism"),
    "mechanism_figure": ("variants",),
}
# Data splits each stage reads (verified against the manifest before it starts); val_docs.jsonl and
# the tokenizer are verified for all of them.
STAGE_SPLITS = {"train": ("train", "val"), "evaluate": (), "quantize": (), "analyze": ("val",), "dynamics": ("val",),
                "knockout": ("val",), "passkey": ()}
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


def run_stage(stage: str, config: dict, *, variant: str | None = None, bits: int | None = None,
              method: str | None = None, root: str | Path = ".", inputs: list[str] | None = None) -> None:
    """Run one stage of the run described by `config`, reading and writing the standard layout.

    Prints the stage header first (inputs: the Snakemake rule's, else the stage's files in the layout),
    checks the device and the data before any work, and the wall time at the end."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; expected one of {STAGES}")
    paths = run_paths(config, root)
    if stage in VARIANT_STAGES and variant not in config["variants"]:
        raise ValueError(f"--variant must be one of config 'variants' {config['variants']}, got {variant!r}")
    if stage in MODEL_STAGES:
        check_device_available(config)  # names the key; 'auto' falls back to the CPU
    if stage == "quantize":
        from .quantize import quantize_jobs

        jobs = quantize_jobs(config["quantize"])
        if (method, bits) not in jobs:
            raise ValueError(f"--method / --bits must be one of the config's quantize jobs "
                             f"{', '.join(f'{m} {b}' for m, b in jobs)}; got {method!r} {bits!r}")
    t0 = time.perf_counter()
    if _is_rank_zero():
        if inputs is None:
            inputs = default_inputs(stage, paths, variant)
        print(stage_header(stage, config, variant=variant, bits=bits, method=method, inputs=inputs), file=sys.stderr,
              flush=True)
    if stage in STAGE_SPLITS:
        from .data import verify_data_dir

        verify_data_dir(paths["data"], STAGE_SPLITS[stage])
    _run(stage, config, paths, variant, bits, method)
    if _is_rank_zero():
        print(f"softpick {stage}: done in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)


def _run(stage: str, config: dict, paths: dict, variant: str | None, bits: int | None, method: str | None) -> None:
    model_dir = paths["models"] / variant if variant else None
    val_docs = paths["data"] / "val_docs.jsonl"
    device = config["device"]
    if stage == "data":
        from .data import prepare_data  # every data.source (softpick.data.sources)

        prepare_data(config["data"], paths["data"], seed=config["seed"])
    elif stage == "train":
        from .train import train

        train(config, variant, paths["data"], model_dir)
    elif stage == "import":
        from .importer import import_stage

        import_stage(config, variant, model_dir, paths["data"])
    elif stage == "evaluate":
        from .evaluate import evaluate_dir

        _require(model_dir / "config.json", "train")
        evaluate_dir(model_dir, config["eval"], val_docs, paths["eval"] / f"{variant}.json", device=_device(device))
    elif stage == "quantize":
        from .quantize import quantize_and_evaluate

        _require(model_dir / "config.json", "train")
        out = paths["quant"] / variant / f"{method}_{bits}bit.json"
        quantize_and_evaluate(model_dir, config["quantize"], config["eval"], val_docs, out, device=_device(device),
                              bits=bits, method=method, data_dir=paths["data"])
    elif stage == "analyze":
        from .analysis import run_analysis

        _require(model_dir / "config.json", "train")
        run_analysis(model_dir, paths["data"], config["analysis"], paths["analysis"] / f"{variant}.json",
                     paths["analysis"] / f"{variant}.npz", device=_device(device))
    elif stage == "dynamics":
        from .dynamics import run_dynamics

        _require(model_dir / "snapshots.json", "train")
        run_dynamics(model_dir, paths["data"], config, paths["results"] / "dynamics" / f"{variant}.json",
                     device=_device(device))
    elif stage == "knockout":
        from .knockout import run_knockout

        _require(model_dir / "config.json", "train")
        run_knockout(model_dir, paths["data"], config, paths["results"] / "knockout" / f"{variant}.json",
                     device=_device(device))
    elif stage == "passkey":
        from .passkey import run_passkey

        _require(model_dir / "config.json", "train")
        _require(paths["data"] / "tokenizer" / "tokenizer.json", "data")
        run_passkey(model_dir, paths["data"], config.get("passkey", {}), paths["results"] / "passkey" / f"{variant}.json",
                    variant=variant, seed=config["seed"], train_seq_len=config["train"]["seq_len"], device=_device(device))
    elif stage == "figures":
        from .figures import make_all

        make_all(paths["results"], paths["figures"], config["variants"], table_dir=paths["tables"],
                 run_label=config["run_name"], strict=True)
    elif stage == "mechanism":
        from .mechanism import run_mechanism

        _require(paths["data"] / "manifest.json", "data")
        run_mechanism(config, variant, paths["data"], paths["results"] / "mechanism" / f"{variant}.json")
    elif stage == "mechanism_figure":
        from .figures.mechanism import plot_mechanism

        jsons = {v: paths["results"] / "mechanism" / f"{v}.json" for v in config["variants"]}
        for v, p in jsons.items():
            _require(p, f"mechanism --variant {v}")
        plot_mechanism(jsons, paths["figures"] / "mechanism")
    else:
        raise ValueError(f"unknown stage {stage!r}; expected one of {STAGES}")


# ----------------------------------------------------------------------------- the log header
def _is_rank_zero() -> bool:
    return os.environ.get("RANK", "0") in ("", "0")


def config_digest(config: dict, stage: str | None = None) -> str:
    """sha256 of the resolved config (canonical JSON), of the sections `stage` depends on when given."""
    part = config if stage is None else {k: config.get(k) for k in STAGE_SECTIONS[stage]}
    return hashlib.sha256(json.dumps(part, sort_keys=True, default=str).encode()).hexdigest()


def default_inputs(stage: str, paths: dict, variant: str | None) -> list[str]:
    """The files a stage reads, in the standard layout (what the Snakemake rule lists as input)."""
    data, model_dir = paths["data"], paths["models"] / (variant or "")
    model = [model_dir / "config.json", model_dir / "model.safetensors"]
    found = {
        "data": [],
        "import": [],
        "train": [data / "manifest.json", data / "tokens_train.npy", data / "tokens_val.npy"],
        "evaluate": [*model, data / "val_docs.jsonl"],
        "quantize": [*model, data / "val_docs.jsonl"],
        "analyze": [*model, data / "tokens_val.npy", data / "docs_val.npy"],
        "dynamics": [*model, model_dir / "snapshots.json", data / "tokens_val.npy", data / "docs_val.npy"],
        "knockout": [*model, data / "tokens_val.npy"],
        "passkey": [*model, data / "tokenizer" / "tokenizer.json"],
        "mechanism": [data / "manifest.json", data / "tokens_train.npy", data / "docs_train.npy"],
        "mechanism_figure": sorted((paths["results"] / "mechanism").glob("*.json")),
        "figures": sorted(p for sub in ("eval", "quant", "analysis", "dynamics", "knockout")
                          for p in (paths["results"] / sub).rglob("*.json")),
    }[stage]
    return [str(p) for p in found]


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
    if stage not in MODEL_STAGES:
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
        f"config digest  {config_digest(config, stage)}  (sha256 of sections {', '.join(STAGE_SECTIONS[stage])})",
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


def _device(name: str) -> str:
    from .train import resolve_device

    return str(resolve_device(name))


def _require(path: Path, stage: str) -> None:
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run the '{stage}' stage first (or `snakemake --cores all`)")


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
    """`softpick <stage> [options]`: one subcommand per stage, each with its own --help."""
    parser = argparse.ArgumentParser(prog="softpick", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", action="append", default=[], metavar="FILE",
                        help="YAML merged over configs/default.yaml (repeatable, in order)")
    common.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one key, e.g. --set train.max_steps=50 (value parsed as YAML; repeatable)")
    sub = parser.add_subparsers(dest="stage", required=True, metavar="STAGE")
    kinds = attention_kinds()
    for stage in STAGES:
        p = sub.add_parser(stage, parents=[common], help=STAGE_HELP[stage], description=STAGE_HELP[stage])
        if stage in VARIANT_STAGES:
            p.add_argument("--variant", required=True, choices=kinds,
                           help="attention variant (one of config 'variants')")
        if stage == "quantize":
            methods, bits = quantize_choices()
            p.add_argument("--bits", type=int, required=True, choices=bits, help="bit width (one of config 'quantize.bits')")
            p.add_argument("--method", required=True, choices=methods, help="quantizer (one of config 'quantize.methods')")
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
                      method=getattr(args, "method", None))
    except (ValueError, FileNotFoundError, DataSourceUnavailableError) as err:
        print(f"softpick {args.stage}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
