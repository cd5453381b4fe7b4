"""What a stage declares (Stage) and what its run function receives (Job).

This module imports nothing of softpick: each stage's code (softpick.stages.code) is its own module,
this one and what its run function imports.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable


@dataclass(frozen=True)
class Arg:
    """One option of a stage's own: argparse.add_argument(*flags, **options)."""
    flags: tuple[str, ...]
    options: dict = field(default_factory=dict)


@dataclass
class Job:
    """One run of a stage: the resolved config, the run's layout (softpick.config.run_paths) and the arguments."""
    config: dict
    paths: dict[str, Path]
    variant: str | None = None
    method: str | None = None
    bits: int | None = None
    device: str | None = None  # resolved (cuda / cpu) for the stages that use the device, else None
    options: dict = field(default_factory=dict)  # the stage's own arguments (Stage.arguments), by dest

    @property
    def data_dir(self) -> Path:
        return self.paths["data"]

    @property
    def model_dir(self) -> Path:
        return self.paths["models"] / (self.variant or "")

    @property
    def results(self) -> Path:
        return self.paths["results"]


def no_inputs(job: Job) -> list[Path]:
    return []


@dataclass(frozen=True)
class Stage:
    """One pipeline stage: `softpick <name>` on the command line, a Snakemake rule in the workflow.

    run(job) does the work and returns the files it wrote (the CLI prints "wrote <path>" for each);
    inputs(job) lists the files it reads in the standard layout (the log header's inputs outside
    Snakemake). sections: the config sections its work depends on (the header's stage digest).
    splits: the data splits verified against the manifest before it starts (None: no data check;
    () verifies val_docs.jsonl and the tokenizer only)."""
    name: str
    help: str
    run: Callable[[Job], list[Path]]
    sections: tuple[str, ...]
    inputs: Callable[[Job], list[Path]] = no_inputs
    variant: bool = False  # takes --variant
    quantized: bool = False  # takes --method / --bits (a job of the config's quantize grid)
    device: bool = False  # runs on config 'device': checked before any work, resolved into Job.device
    splits: tuple[str, ...] | None = None
    arguments: tuple[Arg, ...] = ()
    rule: str | None = None  # the Snakemake rule that runs it (None: the stage's name)
    cli_only: bool = False  # no rule of its own (launch: run by the train rule's command)
    header: bool = True  # print the stage header and timing (launch: its train processes print theirs)

    @property
    def module(self) -> str:
        """The stage module (where its code list starts)."""
        return self.run.__module__

    @property
    def rule_name(self) -> str | None:
        return None if self.cli_only else (self.rule or self.name)


def require(path: Path, stage: str) -> Path:
    """path, or FileNotFoundError naming the stage that writes it."""
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run the '{stage}' stage first (or `snakemake --cores all`)")
    return path


def model_inputs(job: Job) -> list[Path]:
    return [job.model_dir / "config.json", job.model_dir / "model.safetensors"]


def manifest_files(directory: Path) -> list[Path]:
    """The files a manifest.json of `directory` lists, and the manifest itself (what a data / model stage wrote)."""
    import json

    manifest = directory / "manifest.json"
    return sorted(directory / name for name in json.loads(manifest.read_text())["files"]) + [manifest]
