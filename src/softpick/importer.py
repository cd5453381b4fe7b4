"""The authors' released models (fla `transformer` checkpoints) as SoftpickForCausalLM.

`import_fla_transformer(src, out_dir)` reads an fla checkpoint (a Hugging Face Hub id, optionally
`owner/name@revision`, or a local directory holding config.json and model*.safetensors or
pytorch_model*.bin), maps its config and weights onto this package's model and saves it with
save_pretrained (plus the tokenizer when the checkpoint ships one, plus the remote code of
softpick.hf_export). The pipeline's `import` stage (`import_stage`) does this for one variant of a
run whose config has a `models_from` section (variant -> Hub id or local directory) and writes what
the train stage would (train_log.jsonl, train_summary.json, snapshots.json), so every downstream
stage runs on the imported model unchanged. The checkpoint's config is mapped by softpick.fla_config,
its weights by softpick.fla_weights; softpick.fla_source finds it (Hub or local directory).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import torch

from .data import DataSourceUnavailableError
from .fla_config import CheckpointFormatError, read_fla_config, softpick_config
from .fla_source import TOKENIZER_FILES, check_hub, fetch_checkpoint, parse_source
from .fla_weights import convert_state_dict, load_state_dict

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- the import
def import_fla_transformer(src: str | Path, out_dir: str | Path, *, key: str = "source", expect_kind: str | None = None,
                           model_cfg: dict | None = None):
    """Import fla checkpoint `src` (Hub id[@revision] or local directory) into out_dir; return the model.

    expect_kind: refuse a checkpoint whose attention is another kind (e.g. a softpick checkpoint under the
    variant softmax). model_cfg: the run's `model` section; each key it sets must match the checkpoint.
    """
    ckpt, revision = fetch_checkpoint(str(src), key)
    return _import_dir(ckpt, out_dir, source=str(src), revision=revision, key=key, expect_kind=expect_kind,
                       model_cfg=model_cfg)


def _import_dir(ckpt: Path, out_dir: str | Path, *, source: str, revision: str | None, key: str,
                expect_kind: str | None, model_cfg: dict | None):
    from .finite import check_finite_model
    from .model import SoftpickForCausalLM

    fla_cfg = read_fla_config(ckpt)
    where = f"{key} ({source})"
    config, impl = softpick_config(fla_cfg, where, provenance={"source": source, "revision": revision})
    if expect_kind is not None and config.attention_kind != expect_kind:
        raise CheckpointFormatError(
            f"{where}: attn_impl {impl!r} is the attention kind {config.attention_kind!r}, not {expect_kind!r}"
            + (" (no attn_impl: an upstream fla checkpoint, softmax)" if impl is None else ""))
    _check_model_section(config, model_cfg or {}, where)
    tied = bool(fla_cfg.get("tie_word_embeddings", False))
    sd = convert_state_dict(load_state_dict(ckpt), config, where, tied=tied)
    with torch.device("meta"):
        expected = SoftpickForCausalLM(config).state_dict()
    missing = sorted(set(expected) - set(sd))
    if missing:
        raise CheckpointFormatError(f"{where}: the checkpoint lacks tensors the model needs: {', '.join(missing[:12])}")
    bad = [f"{n} {list(sd[n].shape)} (expected {list(t.shape)})" for n, t in expected.items() if sd[n].shape != t.shape]
    if bad:
        raise CheckpointFormatError(f"{where}: tensor shapes do not match the config: {'; '.join(bad[:8])}")
    model = SoftpickForCausalLM(config)
    model.load_state_dict({n: t.to(torch.float32) for n, t in sd.items()}, strict=True)
    model.eval()
    check_finite_model(model, where)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    _copy_tokenizer(ckpt, out_dir, where)  # save_pretrained wrote the modeling code + auto_map
    log.info("%s: imported attn_impl %s as %s (%d layers, hidden %d, %d heads, MLP %d) into %s", where,
             impl, config.attention_kind, config.num_hidden_layers, config.hidden_size, config.num_attention_heads,
             config.intermediate_size, out_dir)
    return model


def _check_model_section(config, model_cfg: dict, where: str) -> None:
    """Each key the run's `model` section sets must describe the checkpoint (the quantize checks use it)."""
    ours = {"hidden_size": config.hidden_size, "num_hidden_layers": config.num_hidden_layers,
            "num_attention_heads": config.num_attention_heads, "intermediate_size": config.intermediate_size,
            "num_key_value_heads": config.num_key_value_heads, "rope_theta": config.rope_theta,
            "rms_norm_eps": config.rms_norm_eps}
    for k, v in model_cfg.items():
        if k not in ours or v is None:
            continue
        if (float(v) != float(ours[k])) if isinstance(v, float) or isinstance(ours[k], float) else v != ours[k]:
            raise CheckpointFormatError(f"config key 'model.{k}' is {v!r} but {where} has {ours[k]!r}: "
                                        f"set model.{k}: {ours[k]!r} (the model section describes the imported model)")


def _copy_tokenizer(ckpt: Path, out_dir: Path, where: str) -> None:
    if not any((ckpt / f).is_file() for f in TOKENIZER_FILES):
        log.info("%s ships no tokenizer (the data stage's tokenizer is the one used)", where)
        return
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(ckpt))
    except Exception as err:  # e.g. a slow tokenizer whose backend is not installed
        log.warning("%s: its tokenizer does not load (%s: %s); not copied", where, type(err).__name__, err)
        return
    tok.save_pretrained(str(out_dir))


# ----------------------------------------------------------------------------- the pipeline stage
def models_from_sources(config: dict) -> dict[str, str]:
    """config `models_from` checked against `variants`: every variant imported, nothing else named."""
    from .errors import ConfigError

    sources = config.get("models_from") or {}
    extra = sorted(set(sources) - set(config["variants"]))
    if extra:
        raise ConfigError(f"config key 'models_from' names {', '.join(extra)}, not in 'variants' {config['variants']}")
    missing = [v for v in config["variants"] if v not in sources]
    if sources and missing:
        raise ConfigError(f"config key 'models_from' has no entry for variant(s) {', '.join(missing)}: a run imports "
                          "every variant or trains every variant (add them or drop them from 'variants')")
    for v, src in sources.items():
        parse_source(src, f"models_from.{v}")  # names the key when neither a directory nor a Hub id
    return dict(sources)


def hub_problem(config: dict, models_dir: str | Path) -> str | None:
    """The first reason the import cannot start (for the Snakefile, at parse time): a variant whose model is
    not imported yet and whose Hub checkpoint is neither cached nor reachable; None when all is well."""
    try:
        sources = models_from_sources(config)
        for v, src in sources.items():
            if (Path(models_dir) / v / "config.json").is_file():
                continue
            repo, revision, local = parse_source(src, f"models_from.{v}")
            if local is None:
                check_hub(repo, revision, f"models_from.{v}")
    except (ValueError, FileNotFoundError, DataSourceUnavailableError) as err:
        return str(err)
    return None


def trained_steps(config: dict) -> tuple[int | None, int | None]:
    """(steps, tokens) of the training that made the imported weights, from the run's `train` section."""
    t = config.get("train") or {}
    steps = t.get("max_steps")
    tokens = steps * t["global_batch_size"] * t["seq_len"] if steps and t.get("global_batch_size") and t.get("seq_len") else None
    return steps, tokens


def _settle_tokenizer(model_dir: Path, data_dir: Path | None, vocab_size: int, where: str) -> None:
    """The model directory's tokenizer (evaluate / passkey read it): the checkpoint's, else the run's data
    tokenizer; when both exist they must be the same vocabulary, and it must fit the embedding."""
    from transformers import AutoTokenizer

    data_tok = data_dir / "tokenizer" if data_dir is not None and (data_dir / "tokenizer").is_dir() else None
    has_own = any((model_dir / f).is_file() for f in ("tokenizer.json", "tokenizer.model"))
    if not has_own and data_tok is None:
        raise FileNotFoundError(f"{where} ships no tokenizer and {data_dir}/tokenizer does not exist yet: run the data "
                                "stage first (its tokenizer is then copied beside the model)")
    tok = AutoTokenizer.from_pretrained(str(model_dir if has_own else data_tok))
    if not has_own:
        tok.save_pretrained(str(model_dir))
    elif data_tok is not None and AutoTokenizer.from_pretrained(str(data_tok)).get_vocab() != tok.get_vocab():
        raise CheckpointFormatError(f"{where}: its tokenizer is not the run's data tokenizer ({data_tok}, config key "
                                    "'data.tokenizer.name'): the analysis would feed the model another vocabulary")
    if len(tok) > vocab_size:
        raise CheckpointFormatError(f"{where}: the tokenizer has {len(tok)} tokens, the embedding {vocab_size}")


def import_stage(config: dict, variant: str, model_dir: str | Path, data_dir: str | Path | None = None) -> dict:
    """The `import` stage: models_from[variant] -> model_dir, with the train stage's other outputs:
    train_log.jsonl (one record, no losses), train_summary.json (imported_from, steps, tokens) and
    snapshots.json listing the imported weights as the one snapshot (the final step of the authors'
    training), so the dynamics stage measures the released model. The tokenizer beside it is the
    checkpoint's (checked against data_dir's, when that exists) or else data_dir's. Written to a temp
    directory beside model_dir, then swapped in: never a half-written model."""
    import yaml

    from .atomic import sha256_file, write_json_atomic
    from .errors import ConfigError
    from .train_export import git_commit

    sources = models_from_sources(config)
    if variant not in sources:
        raise ConfigError(f"config has no 'models_from.{variant}': nothing to import (the train stage builds this model)")
    key, src = f"models_from.{variant}", sources[variant]
    ckpt, revision = fetch_checkpoint(src, key)  # the Hub / the directory first: fail before any work
    model_dir = Path(model_dir)
    tmp = model_dir.parent / f".{model_dir.name}.import-tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        model = _import_dir(ckpt, tmp, source=src, revision=revision, key=key, expect_kind=variant,
                            model_cfg=config.get("model"))
        _settle_tokenizer(tmp, Path(data_dir) if data_dir is not None else None, model.config.vocab_size, f"{key} ({src})")
        steps, tokens = trained_steps(config)
        imported = {"source": src, **{k: v for k, v in model.config.imported_from.items() if k != "source"}}
        summary = {"variant": variant, "imported_from": imported, "steps": steps, "tokens": tokens,
                   "parameters": sum(p.numel() for p in model.parameters()), "final_loss": None, "final_val_loss": None,
                   "git_commit": git_commit(), "note": "weights imported, not trained here (softpick.importer)"}
        (tmp / "train_log.jsonl").write_text(json.dumps({"imported": True, **imported, "steps": steps, "tokens": tokens}) + "\n")
        write_json_atomic(tmp / "train_summary.json", summary)
        (tmp / "resolved_config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        snaps = [{"step": steps, "tokens": tokens, "file": "model.safetensors", "sha256": sha256_file(tmp / "model.safetensors")}]
        write_json_atomic(tmp / "snapshots.json", {"snapshot_every": 0, "imported": True,
                                                   "snapshots": snaps if steps is not None else []})
        from .hf_export import write_manifest

        write_manifest(tmp)  # last: every file above, checked where the model is loaded
        if model_dir.exists():
            shutil.rmtree(model_dir)
        os.replace(tmp, model_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return summary


__all__ = ["import_fla_transformer", "import_stage", "hub_problem", "models_from_sources", "trained_steps"]
