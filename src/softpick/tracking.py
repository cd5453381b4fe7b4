"""Where the trainer's per-step records go: train_log.jsonl, and optionally TensorBoard and W&B.

RunTracker owns the three sinks of one training run. Only rank 0 writes; every rank checks at
construction (before any collective) that the packages the config asks for import, so a missing
package fails every process at once with a ConfigError that names the key.

  train.tensorboard: true     scalars to <out>.tensorboard/ beside the model
  train.wandb: {project, entity, name, mode}
                              a W&B run (files under <out_dir.parent>/wandb/); its id is kept in
                              <checkpoints>/wandb_run_id, so a training resumed from a checkpoint
                              continues the same W&B run
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from .atomic import write_bytes_atomic
from .errors import ConfigError

TENSORBOARD_KEYS = ("loss", "lr", "grad_norm", "tokens_per_s", "mfu", "peak_mem_gib", "val_loss")
WANDB_KEYS = ("project", "entity", "name", "mode")
WANDB_MODES = ("online", "offline", "disabled")
WANDB_ID_FILE = "wandb_run_id"


def check_wandb_config(wcfg) -> dict | None:
    """train.wandb validated: None (off) or the settings dict. Raises ConfigError naming the key."""
    if wcfg is None:
        return None
    if not isinstance(wcfg, dict):
        raise ConfigError(f"config key 'train.wandb' must be null or a mapping with {WANDB_KEYS}, got {wcfg!r}")
    unknown = sorted(set(wcfg) - set(WANDB_KEYS))
    if unknown:
        raise ConfigError(f"config key 'train.wandb' has unknown keys {unknown}; allowed: {WANDB_KEYS}")
    if not isinstance(wcfg.get("project"), str) or not wcfg["project"]:
        raise ConfigError("config key 'train.wandb.project' is required (the W&B project name) when train.wandb is set")
    for key in ("entity", "name"):
        if wcfg.get(key) is not None and not isinstance(wcfg[key], str):
            raise ConfigError(f"config key 'train.wandb.{key}' must be a string or null, got {wcfg[key]!r}")
    if wcfg.get("mode") is not None and wcfg["mode"] not in WANDB_MODES:
        raise ConfigError(f"config key 'train.wandb.mode': {wcfg['mode']!r} is not one of {WANDB_MODES}")
    return wcfg


def truncate_log(log_path: Path, step: int) -> None:
    """Drop log records past the resumed step (they belong to the lost tail of a killed run)."""
    if not log_path.exists():
        return
    keep = [l for l in log_path.read_text().splitlines() if l.strip() and json.loads(l)["step"] <= step]
    tmp = log_path.with_suffix(".tmp")
    tmp.write_text("".join(l + "\n" for l in keep))
    os.replace(tmp, log_path)


class RunTracker:
    """The JSONL log, the optional TensorBoard writer and the optional W&B run of one training.

    __init__ (every rank, before any collective): checks the config and the imports; rank 0 also
    creates the TensorBoard writer. open(step) once the resumed step is known: rank 0 opens the
    JSONL log and starts (or resumes) the W&B run. log(record) per logged step; close_log() returns
    the records for the export; close(exit_code) ends everything and may be called more than once
    (the first call's exit code counts).
    """

    def __init__(self, config: dict, variant: str, out_dir: Path, ckpt_dir: Path, *, rank: int):
        tcfg = config["train"]
        self._wcfg = check_wandb_config(tcfg.get("wandb"))
        self.rank = rank
        self.log_path = out_dir.parent / f"{out_dir.name}.train_log.jsonl"
        self._config, self._variant, self._out_dir, self._ckpt_dir = config, variant, out_dir, ckpt_dir
        self._log_file = None
        self._writer = None
        self._wandb = None  # the module, rank 0 only
        self._wandb_run = None
        summary_writer = wandb = None
        if tcfg.get("tensorboard"):
            try:
                from torch.utils.tensorboard import SummaryWriter as summary_writer
            except ImportError as err:
                raise ConfigError("config key 'train.tensorboard' is true but tensorboard is not installed "
                                  "(pip install tensorboard)") from err
        if self._wcfg is not None:
            try:
                import wandb
            except ImportError as err:
                raise ConfigError("config key 'train.wandb' is set but wandb is not installed "
                                  "(pip install wandb, or pip install 'softpick[wandb]')") from err
        if rank == 0:
            self._wandb = wandb
            if summary_writer is not None:
                self._writer = summary_writer(str(out_dir.parent / f"{out_dir.name}.tensorboard"))

    def open(self, step: int) -> None:
        """Rank 0: the JSONL log without records past `step` (the resumed position), and the W&B run."""
        if self.rank != 0:
            return
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        truncate_log(self.log_path, step)
        self._log_file = open(self.log_path, "a")  # noqa: SIM115 (open for the whole run; close() closes it)
        if self._wandb is not None:
            self._wandb_run = self._init_wandb(resuming=step > 0)

    def _init_wandb(self, resuming: bool):
        # A resumed training continues the W&B run its checkpoints belong to; a fresh one starts a new run.
        # Steps past the last checkpoint of a crashed run are logged again after the resume; W&B keeps
        # its step monotonic and warns about (ignores) the repeats, whose values agree (exact resume).
        wcfg, id_file = self._wcfg, self._ckpt_dir / WANDB_ID_FILE
        run_id = id_file.read_text().strip() if resuming and id_file.exists() else None
        run = self._wandb.init(
            project=wcfg["project"], entity=wcfg.get("entity"),
            name=wcfg.get("name") or f"{self._config.get('run_name', 'softpick')}-{self._variant}",
            mode=wcfg.get("mode"), config=self._config, dir=str(self._out_dir.parent),
            id=run_id, resume="allow" if run_id else None,
        )
        write_bytes_atomic(id_file, (run.id + "\n").encode())
        return run

    def log(self, record: dict) -> None:
        """One record (a dict with 'step') to every open sink; no-op off rank 0."""
        if self.rank != 0:
            return
        step = record["step"]
        self._log_file.write(json.dumps(record) + "\n")
        self._log_file.flush()
        if self._writer is not None:
            for key in TENSORBOARD_KEYS:
                if record.get(key) is not None:
                    self._writer.add_scalar(f"train/{key}", record[key], step)
        if self._wandb_run is not None:
            numeric = {k: v for k, v in record.items()
                       if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}
            self._wandb_run.log(numeric, step=step)

    def close_log(self) -> list[dict]:
        """Close the JSONL log and return all its records (rank 0; [] elsewhere)."""
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self.rank != 0 or not self.log_path.exists():
            return []
        return [json.loads(l) for l in self.log_path.read_text().splitlines() if l.strip()]

    def summarize(self, summary: dict) -> None:
        """The run's final summary (final loss, steps, ...) into the W&B run summary."""
        if self._wandb_run is not None:
            self._wandb_run.summary.update(summary)

    def close(self, exit_code: int = 0) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._wandb_run is not None:
            run, self._wandb_run = self._wandb_run, None
            run.finish(exit_code=exit_code)
