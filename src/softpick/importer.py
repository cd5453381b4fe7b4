"""The authors' released models (fla `transformer` checkpoints) as SoftpickForCausalLM.

`import_fla_transformer(src, out_dir)` reads an fla checkpoint (a Hugging Face Hub id, optionally
`owner/name@revision`, or a local directory holding config.json and model*.safetensors or
pytorch_model*.bin), maps its config and weights onto this package's model and saves it with
save_pretrained (plus the tokenizer when the checkpoint ships one, plus the remote code of
softpick.hf_export). The pipeline's `import` stage (`import_stage`) does this for one variant of a
run whose config has a `models_from` section (variant -> Hub id or local directory) and writes what
the train stage would (train_log.jsonl, train_summary.json, snapshots.json), so every downstream
stage runs on the imported model unchanged.

What fla's code defines (fla/models/transformer, fla/layers/attn.py, fla/modules; the authors' fork
of fla for `attn_impl`):
  * pre-RMSNorm blocks, y = x / sqrt(mean(x^2) + norm_eps) * w (fused or nn.RMSNorm, same math);
  * RoPE through fla.modules.RotaryEmbedding with interleaved=False, i.e. the rotate-half (GPT-NeoX)
    convention over the whole head, inv_freq = rope_theta^(-2i/d): the convention of softpick.model;
  * attention scale head_dim^-0.5, GQA key/value head = query head // (num_heads / num_kv_heads);
  * SwiGLU MLP down(silu(gate(x)) * up(x)); intermediate_size, when null, is the multiple of 256 at
    or above int(hidden_size * hidden_ratio * 2 / 3) (hidden_ratio null = 4);
  * untied lm_head unless tie_word_embeddings.
Upstream fla has no `attn_impl` (its layer always runs flash-attn softmax); only the authors' fork
reads it. A checkpoint without attn_impl therefore is softmax (logged); an attn_impl not in
ATTN_IMPL_KINDS is refused by name, never replaced by another attention.
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import socket
from pathlib import Path
from urllib.parse import urlparse

import torch

from .data import DataSourceUnavailableError

log = logging.getLogger(__name__)

FLA_MODEL_TYPE = "transformer"
# attn_impl (the authors' fla fork) -> our attention kind. naive_* are the materialised versions the
# authors' analysis swaps in; parallel_* their Triton kernels; flash_attn the fork's default (softmax).
ATTN_IMPL_KINDS: dict[str, str] = {
    "flash_attn": "softmax",
    "parallel_attn": "softmax",
    "naive_attn": "softmax",
    "parallel_softpick_attn": "softpick",
    "naive_softpick_attn": "softpick",
    "parallel_scaled_softpick_attn": "scaled_softpick",
    "naive_scaled_softpick_attn": "scaled_softpick",
    "parallel_rectified_attn": "rectified_softmax",
    "naive_rectified_attn": "rectified_softmax",
    "parallel_relu_softpick_1_attn": "relu_softmax",
    "naive_relu_softpick_1_attn": "relu_softmax",
    "parallel_softmax_plus_one_attn": "softmax_plus_one",
    "naive_softmax_plus_one_attn": "softmax_plus_one",
}
# fla's TransformerConfig defaults: what a config.json without the key means
FLA_DEFAULTS: dict = {
    "hidden_size": 2048, "num_hidden_layers": 24, "num_heads": 32, "num_kv_heads": None, "qkv_bias": False,
    "qk_norm": False, "window_size": None, "rope_theta": 10000.0, "max_position_embeddings": 2048,
    "hidden_ratio": 4, "intermediate_size": None, "hidden_act": "swish", "initializer_range": 0.006,
    "norm_eps": 1e-6, "pad_token_id": None, "bos_token_id": 1, "eos_token_id": 2, "tie_word_embeddings": False,
    "vocab_size": 32000, "attnres_block_size": None,
}
# keys whose other values change the forward pass in a way our model does not implement: key -> the value we run
UNSUPPORTED = {"qk_norm": False, "qkv_bias": False, "window_size": None, "attnres_block_size": None,
               "hidden_act": "swish", "use_myopic_loss": False}
REQUIRED_NUMBERS = ("hidden_size", "num_hidden_layers", "num_heads", "vocab_size", "rope_theta", "norm_eps",
                    "max_position_embeddings", "initializer_range")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json")
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")


class ImportSourceError(DataSourceUnavailableError):
    """The checkpoint cannot be fetched (Hub offline, unreachable, or no such repository)."""


class CheckpointFormatError(ValueError):
    """The checkpoint is not an fla transformer this importer can map; the message names the key / tensor."""


# ----------------------------------------------------------------------------- where the checkpoint is
def parse_source(src: str, key: str = "source") -> tuple[str, str | None, Path | None]:
    """(Hub id, revision, None) or (src, None, local directory). Raises ValueError / FileNotFoundError naming `key`."""
    if not isinstance(src, str) or not src.strip():
        raise ValueError(f"{key}: expected a Hub id (owner/name[@revision]) or a local directory, got {src!r}")
    path = Path(src).expanduser()
    if path.is_dir():
        return src, None, path
    if path.exists():
        raise ValueError(f"{key}: {src} is a file; give the directory holding config.json and the weights")
    repo, at, revision = src.partition("@")
    if HUB_ID.match(repo) and not src.startswith((".", "/", "~")) and (not at or revision):
        return repo, revision or None, None
    raise FileNotFoundError(f"{key}: {src} is neither an existing directory nor a Hub id (owner/name[@revision])")


def _offline_var() -> str | None:
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
            return var
    return None


def _cached_snapshot(repo: str, revision: str | None) -> Path | None:
    """The checkpoint from the local Hugging Face cache (no network), when it holds config.json and weights."""
    from huggingface_hub import snapshot_download

    try:
        path = Path(snapshot_download(repo, revision=revision, local_files_only=True))
    except Exception:  # not cached (LocalEntryNotFoundError and relatives)
        return None
    return path if (path / "config.json").is_file() and _weight_files(path, required=False) else None


def _unavailable(repo: str, key: str, why: str) -> ImportSourceError:
    return ImportSourceError(
        f"{key}: '{repo}' is not a local directory, and the Hugging Face Hub checkpoint of that name cannot be fetched: {why}. On a machine with Hub access run "
        f"`hf download {repo} --local-dir DIR`, copy DIR here and point the config at it ({key}: DIR, or "
        f"--set {key}=DIR with python -m softpick).")


def check_hub(repo: str, revision: str | None = None, key: str = "source", timeout: float = 5.0) -> Path | None:
    """Fail fast when `repo` is needed from the Hub and the Hub is off or unreachable; returns the cached
    snapshot when the local cache already holds it (then no network is needed)."""
    cached = _cached_snapshot(repo, revision)
    if cached is not None:
        return cached
    var = _offline_var()
    if var:
        raise _unavailable(repo, key, f"{var}=1 (offline mode) and it is not in the local cache")
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    url = urlparse(endpoint)
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as err:
        raise _unavailable(repo, key, f"{endpoint} is unreachable ({host}:{port}: {err})") from None
    return None


def fetch_checkpoint(src: str, key: str = "source") -> tuple[Path, str | None]:
    """The local directory of checkpoint `src` (downloaded from the Hub when needed) and its revision."""
    repo, revision, local = parse_source(src, key)
    if local is not None:
        return local, None
    cached = check_hub(repo, revision, key)
    if cached is not None:
        log.info("%s: %s from the local Hugging Face cache (%s)", key, repo, cached)
        return cached, revision
    from huggingface_hub import HfApi, snapshot_download

    try:
        files = HfApi().list_repo_files(repo, revision=revision)
    except Exception as err:  # RepositoryNotFoundError, GatedRepoError, HTTP errors
        raise _unavailable(repo, key, f"{type(err).__name__}: {err}") from None
    weights = [f for f in files if f.endswith(".safetensors") or f == "model.safetensors.index.json"]
    if not weights:
        weights = [f for f in files if re.fullmatch(r"pytorch_model.*\.bin(\.index\.json)?", f)]
    if "config.json" not in files or not weights:
        raise CheckpointFormatError(f"{key}: Hub repository {repo} has no config.json and model weights "
                                    f"(files: {', '.join(sorted(files)[:20])})")
    wanted = ["config.json", *weights, *(f for f in files if f in TOKENIZER_FILES)]
    log.info("%s: downloading %s (%s)", key, repo, ", ".join(wanted))
    try:
        path = snapshot_download(repo, revision=revision, allow_patterns=wanted)
    except Exception as err:
        raise _unavailable(repo, key, f"download failed: {type(err).__name__}: {err}") from None
    return Path(path), revision


# ----------------------------------------------------------------------------- config
def read_fla_config(ckpt_dir: Path) -> dict:
    path = Path(ckpt_dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: not a transformers checkpoint directory")
    try:
        cfg = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointFormatError(f"{path} is not valid JSON ({err})") from None
    if cfg.get("model_type") != FLA_MODEL_TYPE:
        raise CheckpointFormatError(f"{path}: model_type {cfg.get('model_type')!r} is not fla's {FLA_MODEL_TYPE!r}")
    return cfg


def attention_kind(fla_cfg: dict, where: str = "config.json") -> tuple[str, str | None]:
    """(our kind, attn_impl) of an fla config; an unknown attn_impl is refused by name."""
    impl = fla_cfg.get("attn_impl")
    if impl is None:
        log.info("%s has no attn_impl: an upstream fla transformer, whose attention is always softmax "
                 "(flash-attn); importing it as softmax", where)
        return "softmax", None
    if impl not in ATTN_IMPL_KINDS:
        raise CheckpointFormatError(
            f"{where}: attn_impl {impl!r} has no equivalent attention kind here; known: {', '.join(sorted(ATTN_IMPL_KINDS))}")
    return ATTN_IMPL_KINDS[impl], impl


def fla_intermediate_size(hidden_size: int, hidden_ratio, intermediate_size) -> int:
    """fla's GatedMLP width: intermediate_size, else 256 * ceil(int(hidden * ratio * 2/3) / 256)."""
    if intermediate_size is not None:
        return int(intermediate_size)
    ratio = 4 if hidden_ratio is None else hidden_ratio
    return 256 * math.ceil(int(hidden_size * ratio * 2 / 3) / 256)


def softpick_config(fla_cfg: dict, where: str = "config.json", provenance: dict | None = None):
    """The SoftpickConfig equivalent to an fla transformer config (refusing what our model cannot run)."""
    from .model import SoftpickConfig

    c = {**FLA_DEFAULTS, **{k: v for k, v in fla_cfg.items() if k in FLA_DEFAULTS}}
    for k, ours in UNSUPPORTED.items():
        value = fla_cfg.get(k)
        if value is not None and value != ours:
            raise CheckpointFormatError(f"{where}: {k} = {value!r} is not supported (the model here implements {k} = {ours!r})")
    for k in REQUIRED_NUMBERS:
        if not isinstance(c[k], (int, float)) or isinstance(c[k], bool) or c[k] <= 0:
            raise CheckpointFormatError(f"{where}: {k} = {c[k]!r} is not a positive number")
    kind, impl = attention_kind(fla_cfg, where)
    hidden, heads = int(c["hidden_size"]), int(c["num_heads"])
    if hidden % heads:
        raise CheckpointFormatError(f"{where}: hidden_size {hidden} is not divisible by num_heads {heads}")
    return SoftpickConfig(
        vocab_size=int(c["vocab_size"]), hidden_size=hidden, num_hidden_layers=int(c["num_hidden_layers"]),
        num_attention_heads=heads, num_key_value_heads=c["num_kv_heads"],
        intermediate_size=fla_intermediate_size(hidden, c["hidden_ratio"], c["intermediate_size"]),
        max_position_embeddings=int(c["max_position_embeddings"]), rope_theta=float(c["rope_theta"]),
        rms_norm_eps=float(c["norm_eps"]), initializer_range=float(c["initializer_range"]), attention_kind=kind,
        bos_token_id=c["bos_token_id"], eos_token_id=c["eos_token_id"], pad_token_id=c["pad_token_id"],
        imported_from={"attn_impl": impl, "model_type": FLA_MODEL_TYPE, **(provenance or {})},
    ), impl


# ----------------------------------------------------------------------------- weights
def _weight_files(ckpt_dir: Path, required: bool = True) -> list[Path]:
    """The weight files of a checkpoint: safetensors (single or sharded) first, else pytorch_model*.bin."""
    ckpt_dir = Path(ckpt_dir)
    for single, index in (("model.safetensors", "model.safetensors.index.json"),
                          ("pytorch_model.bin", "pytorch_model.bin.index.json")):
        if (ckpt_dir / single).is_file():
            return [ckpt_dir / single]
        if (ckpt_dir / index).is_file():
            shards = sorted(set(json.loads((ckpt_dir / index).read_text())["weight_map"].values()))
            missing = [s for s in shards if not (ckpt_dir / s).is_file()]
            if missing and required:
                raise FileNotFoundError(f"{ckpt_dir / index} lists shards that are missing: {', '.join(missing)}")
            return [ckpt_dir / s for s in shards]
    if required:
        raise FileNotFoundError(f"{ckpt_dir}: no model weights ({' / '.join(WEIGHT_FILES)})")
    return []


def load_state_dict(ckpt_dir: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for path in _weight_files(ckpt_dir):
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            out.update(load_file(str(path)))
        else:
            out.update(torch.load(path, map_location="cpu", weights_only=True))
    return out


_LAYER = re.compile(r"^model\.layers\.(\d+)\.(.+)$")
_LAYER_NAMES = {  # fla name inside a block -> ours
    "attn_norm.weight": "input_layernorm.weight",
    "mlp_norm.weight": "post_attention_layernorm.weight",
    **{f"attn.{p}_proj.weight": f"self_attn.{p}_proj.weight" for p in "qkvo"},
    **{f"mlp.{p}_proj.weight": f"mlp.{p}_proj.weight" for p in ("gate", "up", "down")},
    "attn.s": "self_attn.kind_params.length_scale",  # scaled softpick: s_h, [H, 1] in fla
}
_TOP_NAMES = {"model.embeddings.weight": "model.embed_tokens.weight", "model.norm.weight": "model.norm.weight",
              "lm_head.weight": "lm_head.weight"}


def convert_state_dict(fla_sd: dict[str, torch.Tensor], config, where: str = "checkpoint",
                       tied: bool = False) -> dict[str, torch.Tensor]:
    """fla tensor names -> SoftpickForCausalLM's. Every tensor is used or explained: rotary inv_freq and the
    scaled kinds' logn table (checked against log(n + 2)) are derived; anything else unknown is refused.
    tied (fla's tie_word_embeddings): without lm_head.weight the head is a copy of the embedding."""
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for name, tensor in fla_sd.items():
        m = _LAYER.match(name)
        if name in _TOP_NAMES:
            out[_TOP_NAMES[name]] = tensor
        elif m and m.group(2) in _LAYER_NAMES:
            if m.group(2) == "attn.s":
                if config.attention_kind != "scaled_softpick":
                    unknown.append(name)
                    continue
                tensor = tensor.reshape(-1)
            out[f"model.layers.{m.group(1)}.{_LAYER_NAMES[m.group(2)]}"] = tensor
        elif m and m.group(2) == "attn.logn":
            expected = torch.log(torch.arange(2, tensor.shape[0] + 2, dtype=torch.float64))
            if not torch.allclose(tensor.reshape(-1).double(), expected, rtol=1e-3, atol=1e-3):
                raise CheckpointFormatError(f"{where}: {name} is not log(n + 2), the length factor our scaled softpick computes")
        elif m and m.group(2).endswith("rotary.inv_freq"):
            continue  # recomputed from rope_theta
        else:
            unknown.append(name)
    if unknown:
        raise CheckpointFormatError(f"{where}: tensors with no place in the model here: {', '.join(sorted(unknown)[:12])}"
                                    + (f" (and {len(unknown) - 12} more)" if len(unknown) > 12 else ""))
    if "lm_head.weight" not in out and "model.embed_tokens.weight" in out:
        if not tied:
            raise CheckpointFormatError(f"{where}: lm_head.weight is missing and tie_word_embeddings is false")
        log.info("%s: tie_word_embeddings: lm_head gets a copy of the embedding (our model is untied)", where)
        out["lm_head.weight"] = out["model.embed_tokens.weight"].clone()
    return out


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


__all__ = ["ATTN_IMPL_KINDS", "FLA_DEFAULTS", "ImportSourceError", "CheckpointFormatError", "import_fla_transformer",
           "import_stage", "softpick_config", "convert_state_dict", "load_state_dict", "fetch_checkpoint", "parse_source",
           "check_hub", "hub_problem", "models_from_sources", "attention_kind", "fla_intermediate_size"]
