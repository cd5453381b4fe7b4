"""Command line for every pipeline stage, outside Snakemake:

    python -m softpick data      --config configs/default.yaml
    python -m softpick train     --config configs/default.yaml --variant softpick
    python -m softpick evaluate  --variant softpick
    python -m softpick quantize  --variant softpick --bits 4
    python -m softpick analyze   --variant softpick
    python -m softpick figures
    python -m softpick mechanism --variant softpick   # Bigram-Backcopy (softpick.mechanism)
    python -m softpick mechanism_figure

--config files are merged over configs/default.yaml in order; --set key.path=value overrides
single keys. The Snakemake rules call run_stage() with the same arguments (workflow/scripts/).
"""
from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

from .config import load_config, run_paths

STAGES = ("data", "train", "evaluate", "quantize", "analyze", "figures", "mechanism", "mechanism_figure")

# Where the figures stage finds each result under results/<run>/ (the Snakefile writes them there).
RESULT_LAYOUT = {
    "train_log": "models/{variant}/train_log.jsonl",
    "analysis_json": "analysis/{variant}.json",
    "analysis_npz": "analysis/{variant}.npz",
    "eval": "eval/{variant}.json",
    "quant_glob": "quant/{variant}/*bit.json",
}


def run_stage(stage: str, config: dict, *, variant: str | None = None, bits: int | None = None, root: str | Path = ".") -> None:
    """Run one stage of the run described by `config`, reading and writing the standard layout."""
    paths = run_paths(config, root)
    if stage in ("train", "evaluate", "quantize", "analyze", "mechanism"):
        if variant not in config["variants"]:
            raise ValueError(f"--variant must be one of config 'variants' {config['variants']}, got {variant!r}")
    model_dir = paths["models"] / variant if variant else None
    val_docs = paths["data"] / "val_docs.jsonl"
    device = config["device"]
    if stage == "data":
        from .data import prepare_data

        prepare_data(config["data"], paths["data"], seed=config["seed"])
    elif stage == "train":
        from .train import train

        _require(paths["data"] / "manifest.json", "data")
        train(config, variant, paths["data"], model_dir)
    elif stage == "evaluate":
        from .evaluate import evaluate_dir

        _require(model_dir / "config.json", "train")
        evaluate_dir(model_dir, config["eval"], val_docs, paths["eval"] / f"{variant}.json", device=_device(device))
    elif stage == "quantize":
        from .quantize import quantize_and_evaluate

        if bits not in config["quantize"]["bits"]:
            raise ValueError(f"--bits must be one of config 'quantize.bits' {config['quantize']['bits']}, got {bits!r}")
        _require(model_dir / "config.json", "train")
        out = paths["quant"] / variant / f"{config['quantize']['method']}_{bits}bit.json"
        quantize_and_evaluate(model_dir, config["quantize"], config["eval"], val_docs, out, device=_device(device), bits=bits)
    elif stage == "analyze":
        from .analysis import run_analysis

        _require(model_dir / "config.json", "train")
        run_analysis(model_dir, paths["data"], config["analysis"], paths["analysis"] / f"{variant}.json",
                     paths["analysis"] / f"{variant}.npz", device=_device(device))
    elif stage == "figures":
        from .plots import make_all

        make_all(paths["results"], paths["figures"], config["variants"], layout=RESULT_LAYOUT,
                 table_dir=paths["tables"], run_label=config["run_name"], strict=True)
    elif stage == "mechanism":
        from .mechanism import run_mechanism

        _require(paths["data"] / "manifest.json", "data")
        run_mechanism(config, variant, paths["data"], paths["results"] / "mechanism" / f"{variant}.json")
    elif stage == "mechanism_figure":
        from .mechanism import plot_mechanism

        jsons = {v: paths["results"] / "mechanism" / f"{v}.json" for v in config["variants"]}
        for v, p in jsons.items():
            _require(p, f"mechanism --variant {v}")
        plot_mechanism(jsons, paths["figures"] / "mechanism")
    else:
        raise ValueError(f"unknown stage {stage!r}; expected one of {STAGES}")


def _device(name: str) -> str:
    from .train import resolve_device

    return str(resolve_device(name))


def _require(path: Path, stage: str) -> None:
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run the '{stage}' stage first (or `snakemake --cores all`)")


@contextlib.contextmanager
def redirect_output(log_path: str | Path):
    """Send this process's stdout / stderr (progress bars included) to log_path."""
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w", buffering=1) as fh, contextlib.redirect_stdout(fh), contextlib.redirect_stderr(fh):
        import logging

        handler = logging.StreamHandler(fh)
        logging.getLogger().addHandler(handler)
        try:
            yield
        except BaseException:
            import traceback

            traceback.print_exc(file=fh)  # the log tells the whole story, not only Snakemake's terminal
            raise
        finally:
            logging.getLogger().removeHandler(handler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="softpick", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=STAGES)
    parser.add_argument("--config", action="append", default=[], help="YAML merged over configs/default.yaml (repeatable)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one key, e.g. train.max_steps=50")
    parser.add_argument("--variant", help="attention variant (softmax | softpick) for train / evaluate / quantize / analyze")
    parser.add_argument("--bits", type=int, help="bit width for quantize")
    args = parser.parse_args(argv)
    from .data import DataSourceUnavailableError

    try:
        config = load_config(args.config, args.set)
        run_stage(args.stage, config, variant=args.variant, bits=args.bits)
    except (ValueError, FileNotFoundError, DataSourceUnavailableError) as err:
        print(f"softpick {args.stage}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
