"""softpick.importer: fla `transformer` checkpoints (the authors' released models) as our model.

Every checkpoint here is written by the test itself in fla's layout (config.json with model_type
"transformer" and attn_impl, weights under fla's names in safetensors); the imported model's logits
are compared with an independent float64 forward written from fla's definitions (RMSNorm, rotate-half
RoPE, SwiGLU, the fork's attention functions)."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file

from softpick.fla_config import ATTN_IMPL_KINDS, CheckpointFormatError
from softpick.fla_source import ImportSourceError, parse_source
from softpick.importer import import_fla_transformer, import_stage

ROOT = Path(__file__).resolve().parents[1]
SHAPE = dict(hidden_size=32, num_hidden_layers=2, num_heads=4, vocab_size=300, max_position_embeddings=64)


# ----------------------------------------------------------------------------- an fla checkpoint, by hand
def fla_mlp_width(hidden: int, ratio: int = 4) -> int:
    """fla GatedMLP: intermediate_size null -> the multiple of 256 at or above int(hidden * ratio * 2 / 3)."""
    return 256 * math.ceil(int(hidden * ratio * 2 / 3) / 256)


def write_fla_checkpoint(path: Path, attn_impl: str | None, *, seed: int = 0, num_kv_heads: int | None = None,
                         extra_config: dict | None = None, extra_tensors: dict | None = None, tied: bool = False) -> dict:
    """config.json + model.safetensors as fla's TransformerForCausalLM.save_pretrained writes them."""
    path.mkdir(parents=True, exist_ok=True)
    cfg = {"model_type": "transformer", "architectures": ["TransformerForCausalLM"], **SHAPE, "num_kv_heads": num_kv_heads,
           "hidden_ratio": 4, "intermediate_size": None, "hidden_act": "swish", "rope_theta": 10000.0, "norm_eps": 1e-6,
           "initializer_range": 0.006, "fuse_norm": True, "fuse_swiglu": True, "fuse_cross_entropy": True,
           "tie_word_embeddings": tied, "bos_token_id": 1, "eos_token_id": 2, "qk_norm": False, "qkv_bias": False,
           "window_size": None, "use_cache": True, **(extra_config or {})}
    if attn_impl is not None:
        cfg["attn_impl"] = attn_impl
    g = torch.Generator().manual_seed(seed)
    C, H, V = SHAPE["hidden_size"], SHAPE["num_heads"], SHAPE["vocab_size"]
    D, Hkv, M = C // H, num_kv_heads or H, fla_mlp_width(C)

    def w(*shape, std=0.25):
        return torch.randn(*shape, generator=g) * std

    sd = {"model.embeddings.weight": w(V, C, std=1.0), "model.norm.weight": 1 + w(C, std=0.2)}
    if not tied:
        sd["lm_head.weight"] = w(V, C)
    for i in range(SHAPE["num_hidden_layers"]):
        p = f"model.layers.{i}."
        sd.update({p + "attn_norm.weight": 1 + w(C, std=0.2), p + "mlp_norm.weight": 1 + w(C, std=0.2),
                   p + "attn.q_proj.weight": w(C, C, std=0.6), p + "attn.k_proj.weight": w(Hkv * D, C, std=0.6),
                   p + "attn.v_proj.weight": w(Hkv * D, C), p + "attn.o_proj.weight": w(C, C),
                   p + "mlp.gate_proj.weight": w(M, C), p + "mlp.up_proj.weight": w(M, C), p + "mlp.down_proj.weight": w(C, M)})
        if attn_impl is not None and "scaled" in attn_impl:  # the fork's per-head s [H, 1] and its logn buffer
            sd[p + "attn.s"] = 0.3 + w(H, 1, std=0.1)
            sd[p + "attn.logn"] = torch.log(torch.arange(2, SHAPE["max_position_embeddings"] * 4 + 2,
                                                         dtype=torch.float32))[:, None, None]
    sd.update(extra_tensors or {})
    (path / "config.json").write_text(json.dumps(cfg, indent=2))
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path / "model.safetensors"), metadata={"format": "pt"})
    return {"config": cfg, "state_dict": sd}


# ----------------------------------------------------------------------------- fla's forward, in float64
def _softpick(x):  # the fork's naive softpick: relu(e^x - 1) / (sum |e^x - 1| + 1e-8), rescaled by the row max
    m = x.max(-1, keepdim=True).values
    e = torch.exp(x - m) - torch.exp(-m)
    return torch.relu(e) / (torch.where(torch.isfinite(x), e.abs(), 0).sum(-1, keepdim=True) + 1e-8)


def _rectified(x):  # the fork's naive_rectified_attn: negative scores to -inf, softmax, empty rows 0
    return torch.nan_to_num(torch.softmax(torch.where(x >= 0, x, float("-inf")), -1), nan=0.0)


def _relu_softpick_1(x, unscaled_eps=None):
    """The fork's relusoftpick1: relu(e^x - 1) / (sum relu(e^x - 1) + 1e-8), both rescaled by e^-max; with
    unscaled_eps, eps joins the unscaled denominator instead (where softpick.attention puts its EPS)."""
    m = x.max(-1, keepdim=True).values
    r = torch.where(torch.isfinite(x), torch.relu(torch.exp(x - m) - torch.exp(-m)), 0)
    return r / (r.sum(-1, keepdim=True) + (1e-8 if unscaled_eps is None else unscaled_eps * torch.exp(-m)))


def _softmax_plus_one(x):
    m = x.max(-1, keepdim=True).values
    e = torch.exp(x - m)
    return e / (torch.exp(-m) + e.sum(-1, keepdim=True))


WEIGHTS = {"softmax": lambda x: torch.softmax(x, -1), "softpick": _softpick, "scaled_softpick": _softpick,
           "rectified_softmax": _rectified, "relu_softmax": _relu_softpick_1, "softmax_plus_one": _softmax_plus_one}


def fla_reference_logits(ckpt: dict, ids: torch.Tensor, kind: str) -> torch.Tensor:
    """TransformerForCausalLM.forward in float64, written from fla's modules and the fork's attention."""
    cfg, sd = ckpt["config"], {k: v.double() for k, v in ckpt["state_dict"].items()}
    C, H = cfg["hidden_size"], cfg["num_heads"]
    D, Hkv, eps = C // H, cfg["num_kv_heads"] or H, cfg["norm_eps"]
    T = ids.shape[1]

    def rms(x, wt):  # fla.modules.RMSNorm: x * rsqrt(mean(x^2) + eps) * weight
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * wt

    inv_freq = 1.0 / cfg["rope_theta"] ** (torch.arange(0, D, 2, dtype=torch.float64) / D)
    ang = torch.outer(torch.arange(T, dtype=torch.float64), inv_freq)  # [T, D/2]
    cos, sin = ang.cos()[:, None], ang.sin()[:, None]  # broadcast over heads

    def rope(x):  # fla RotaryEmbedding, interleaved=False: first half / second half pairs
        x1, x2 = x[..., : D // 2], x[..., D // 2:]
        return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1)

    causal = torch.ones(T, T, dtype=torch.bool).tril()
    x = sd["model.embeddings.weight"][ids]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = rms(x, sd[p + "attn_norm.weight"])
        q = (h @ sd[p + "attn.q_proj.weight"].T).view(*ids.shape, H, D)
        k = (h @ sd[p + "attn.k_proj.weight"].T).view(*ids.shape, Hkv, D)
        v = (h @ sd[p + "attn.v_proj.weight"].T).view(*ids.shape, Hkv, D)
        q, k = rope(q), rope(k)
        if kind == "scaled_softpick":  # the fork: q * s * logn[k_len - q_len : k_len], logn[n] = log(n + 2)
            q = q * sd[p + "attn.s"].view(1, 1, H, 1) * torch.log(torch.arange(T, dtype=torch.float64) + 2).view(1, T, 1, 1)
        group = H // Hkv
        out = torch.empty_like(q)
        for head in range(H):  # query head h reads key / value head h // group (flash-attn / fla GQA)
            s = q[:, :, head] @ k[:, :, head // group].transpose(-1, -2) * D ** -0.5
            s = s.masked_fill(~causal, float("-inf"))
            out[:, :, head] = WEIGHTS[kind](s) @ v[:, :, head // group]
        x = x + out.reshape(*ids.shape, C) @ sd[p + "attn.o_proj.weight"].T
        h = rms(x, sd[p + "mlp_norm.weight"])
        gate, up = h @ sd[p + "mlp.gate_proj.weight"].T, h @ sd[p + "mlp.up_proj.weight"].T
        x = x + (gate * torch.sigmoid(gate) * up) @ sd[p + "mlp.down_proj.weight"].T
    head = sd.get("lm_head.weight", sd["model.embeddings.weight"])
    return rms(x, sd["model.norm.weight"]) @ head.T


def our_logits(model, ids):
    model = model.double().eval()
    model.config.attention_backend = "torch"
    with torch.no_grad():
        return model(ids).logits


IDS = torch.tensor([[1, 5, 17, 42, 3, 88, 23, 9, 61, 7, 30, 2], [1, 64, 8, 8, 95, 12, 40, 33, 71, 2, 14, 50]])


# ----------------------------------------------------------------------------- logits match fla's definition
@pytest.mark.parametrize("attn_impl, kind, kv_heads", [
    (None, "softmax", None),                       # upstream fla: no attn_impl = softmax
    ("parallel_attn", "softmax", None),
    ("parallel_softpick_attn", "softpick", None),
    ("naive_softpick_attn", "softpick", 2),        # GQA: 2 key / value heads for 4 query heads
    ("parallel_scaled_softpick_attn", "scaled_softpick", None),
    ("parallel_rectified_attn", "rectified_softmax", None),
    ("naive_relu_softpick_1_attn", "relu_softmax", None),
    ("naive_softmax_plus_one_attn", "softmax_plus_one", None),
])
def test_imported_logits_match_fla_reference(tmp_path, attn_impl, kind, kv_heads):
    ckpt = write_fla_checkpoint(tmp_path / "fla", attn_impl, num_kv_heads=kv_heads)
    model = import_fla_transformer(str(tmp_path / "fla"), tmp_path / "out")
    assert model.config.attention_kind == kind and ATTN_IMPL_KINDS.get(attn_impl, "softmax") == kind
    assert model.config.intermediate_size == fla_mlp_width(32) == 256
    ref = fla_reference_logits(ckpt, IDS, kind)
    ours = our_logits(model, IDS)
    err = (ours - ref).abs().max().item()
    print(f"{attn_impl}: max |logit diff| {err:.2e} (logit scale {ref.abs().max().item():.1f})")
    scale = max(1.0, ref.abs().max().item())
    if kind == "relu_softmax":  # rows with a tiny positive sum feel where eps sits (1e-8 rescaled vs 1e-6 unscaled)
        assert err < 1e-4 * scale
        WEIGHTS["relu_softmax"] = lambda x: _relu_softpick_1(x, unscaled_eps=1e-6)
        try:
            err = (ours - fla_reference_logits(ckpt, IDS, kind)).abs().max().item()
        finally:
            WEIGHTS["relu_softmax"] = _relu_softpick_1
    assert err < 5e-6 * scale  # float32 weights and norms against float64
    if kind != "softmax":  # the trap: this checkpoint run as softmax gives other logits
        assert (ours - fla_reference_logits(ckpt, IDS, "softmax")).abs().max() > 1e-2
    # the saved directory reloads through the Auto classes, same logits
    from transformers import AutoModelForCausalLM

    import softpick.model  # noqa: F401  (registers the config)

    again = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    assert torch.allclose(our_logits(again, IDS), ours, atol=1e-6)
    assert json.loads((tmp_path / "out" / "config.json").read_text())["imported_from"]["attn_impl"] == attn_impl


def test_tied_embeddings_and_pytorch_bin(tmp_path):
    ckpt = write_fla_checkpoint(tmp_path / "fla", "parallel_softpick_attn", tied=True)
    sd = load = ckpt["state_dict"]
    (tmp_path / "fla" / "model.safetensors").unlink()
    torch.save(load, tmp_path / "fla" / "pytorch_model.bin")
    model = import_fla_transformer(str(tmp_path / "fla"), tmp_path / "out")
    assert torch.equal(model.lm_head.weight, sd["model.embeddings.weight"])
    assert (our_logits(model, IDS) - fla_reference_logits(ckpt, IDS, "softpick")).abs().max() < 1e-4


# ----------------------------------------------------------------------------- refusals, by name
def test_unknown_attn_impl_is_refused_by_name(tmp_path):
    write_fla_checkpoint(tmp_path / "fla", "parallel_gated_attn")
    with pytest.raises(CheckpointFormatError, match="parallel_gated_attn"):
        import_fla_transformer(str(tmp_path / "fla"), tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("extra, match", [
    ({"extra_config": {"qk_norm": True}}, "qk_norm"),
    ({"extra_config": {"window_size": 512}}, "window_size"),
    ({"extra_tensors": {"model.layers.0.attn.q_norm.weight": torch.ones(8)}}, "model.layers.0.attn.q_norm.weight"),
    ({"extra_config": {"model_type": "llama"}}, "model_type"),
])
def test_what_our_model_cannot_run_is_refused(tmp_path, extra, match):
    write_fla_checkpoint(tmp_path / "fla", "parallel_attn", **extra)
    with pytest.raises(CheckpointFormatError, match=match):
        import_fla_transformer(str(tmp_path / "fla"), tmp_path / "out")


def test_a_softpick_checkpoint_is_not_imported_as_softmax(tmp_path):
    write_fla_checkpoint(tmp_path / "fla", "parallel_softpick_attn")
    with pytest.raises(CheckpointFormatError, match="'softpick', not 'softmax'"):
        import_fla_transformer(str(tmp_path / "fla"), tmp_path / "out", expect_kind="softmax")
    write_fla_checkpoint(tmp_path / "up", None)  # upstream fla (no attn_impl) under a softpick variant: the trap
    with pytest.raises(CheckpointFormatError, match="upstream fla"):
        import_fla_transformer(str(tmp_path / "up"), tmp_path / "out", expect_kind="softpick")


def test_sources_are_directories_or_hub_ids(tmp_path):
    assert parse_source("zaydzuhri/softpick-340M-4096-model") == ("zaydzuhri/softpick-340M-4096-model", None, None)
    assert parse_source("owner/name@abc123")[:2] == ("owner/name", "abc123")
    assert parse_source(str(tmp_path))[2] == tmp_path
    for bad in ("./missing/dir", "/no/such/dir", "just-a-name", "a/b/c"):
        with pytest.raises((FileNotFoundError, ValueError), match="models_from.x"):
            parse_source(bad, "models_from.x")


# ----------------------------------------------------------------------------- offline
def test_offline_hub_id_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ImportSourceError) as err:
        import_fla_transformer("zaydzuhri/softpick-340M-4096-model", tmp_path / "out", key="models_from.softpick")
    text = str(err.value)
    assert "zaydzuhri/softpick-340M-4096-model" in text and "HF_HUB_OFFLINE" in text
    assert "models_from.softpick: DIR" in text and "hf download" in text
    assert not (tmp_path / "out").exists()


def _env(tmp_path):
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home"), "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]),
            "SOFTPICK_SKIP_DEVICE_CHECK": "1", "OMP_NUM_THREADS": "1"}


def test_cli_import_offline_exits_2_naming_the_hub_id(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "softpick", "import", "--config", str(ROOT / "configs" / "authors-340m.yaml"),
                           "--variant", "softpick"], capture_output=True, text=True, cwd=tmp_path, env=_env(tmp_path),
                          timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert "zaydzuhri/softpick-340M-4096-model" in proc.stderr and "models_from.softpick" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "results").exists()  # failed before any work


def test_snakemake_dry_run_offline_fails_at_once_naming_the_hub_id(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--configfile", "configs/authors-340m.yaml"],
                          capture_output=True, text=True, cwd=ROOT, env=_env(tmp_path), timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "zaydzuhri/vanilla-340M-4096-model" in out and "models_from.softmax" in out
    assert "Traceback" not in out


def test_snakemake_imports_instead_of_training(tmp_path):
    """With local checkpoints the DAG has import_model jobs and no train job."""
    for v, impl in (("softmax", "parallel_attn"), ("softpick", "parallel_softpick_attn")):
        write_fla_checkpoint(tmp_path / v, impl)
    override = tmp_path / "local.yaml"
    override.write_text(yaml.safe_dump({"run_name": "test-import-dag", "models_from": {v: str(tmp_path / v) for v in ("softmax", "softpick")}}))
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--configfile", "configs/authors-340m.yaml", str(override)],
                          capture_output=True, text=True, cwd=ROOT, env=_env(tmp_path), timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    jobs = {line.split()[0]: int(line.split()[1]) for line in out.splitlines()
            if len(line.split()) == 2 and line.split()[1].isdigit()}
    print({k: v for k, v in jobs.items() if k in ("import_model", "train", "data", "analyze")})
    assert jobs.get("import_model") == 2 and "train" not in jobs


# ----------------------------------------------------------------------------- the import stage
def _run_config(tmp_path, tiny_config, sources: dict) -> dict:
    cfg = {**tiny_config, "run_name": "imported", "variants": list(sources), "models_from": sources}
    cfg["model"] = {**cfg["model"], "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
                    "intermediate_size": 256}
    cfg["quantize"] = {**cfg["quantize"], "group_size": 32}
    return cfg


def _tokenizer(path: Path, vocab_size: int = 280, words: str = "the cat sat on the mat and the dog ran") -> Path:
    from softpick.data import train_bpe_tokenizer

    train_bpe_tokenizer([words] * 20, vocab_size).save_pretrained(str(path))
    return path


def test_import_stage_writes_what_the_train_stage_writes(tmp_path, tiny_config):
    from softpick.cli import main
    from softpick.dynamics import list_snapshots, load_snapshot

    ckpt = write_fla_checkpoint(tmp_path / "fla", "parallel_softpick_attn")
    _tokenizer(tmp_path / "results" / "imported" / "data" / "tokenizer")  # the data stage's (the checkpoint has none)
    cfg = _run_config(tmp_path, tiny_config, {"softpick": str(tmp_path / "fla")})
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert main(["import", "--config", str(tmp_path / "run.yaml"), "--variant", "softpick"]) == 0
    finally:
        os.chdir(cwd)
    model_dir = tmp_path / "results" / "imported" / "models" / "softpick"
    for name in ("config.json", "model.safetensors", "train_log.jsonl", "train_summary.json", "snapshots.json",
                 "modeling_softpick.py", "tokenizer.json"):
        assert (model_dir / name).is_file(), name
    summary = json.loads((model_dir / "train_summary.json").read_text())
    assert summary["imported_from"]["attn_impl"] == "parallel_softpick_attn" and summary["final_val_loss"] is None
    assert summary["steps"] == cfg["train"]["max_steps"]
    snap = list_snapshots(model_dir)  # the imported weights are the one snapshot (the dynamics stage reads it)
    assert len(snap) == 1 and snap[0]["file"] == "model.safetensors"
    model = load_snapshot(model_dir, snap[0])
    assert (our_logits(model, IDS) - fla_reference_logits(ckpt, IDS, "softpick")).abs().max() < 1e-4


def test_import_stage_checks_the_model_section(tmp_path, tiny_config):
    write_fla_checkpoint(tmp_path / "fla", "parallel_attn")
    cfg = _run_config(tmp_path, tiny_config, {"softmax": str(tmp_path / "fla")})
    cfg["model"]["hidden_size"] = 64
    with pytest.raises(CheckpointFormatError, match="'model.hidden_size' is 64"):
        import_stage(cfg, "softmax", tmp_path / "models" / "softmax")
    assert not (tmp_path / "models" / "softmax").exists()


def test_import_stage_tokenizer_comes_from_the_checkpoint_or_the_data_stage(tmp_path, tiny_config):
    write_fla_checkpoint(tmp_path / "fla", "parallel_attn")
    cfg = _run_config(tmp_path, tiny_config, {"softmax": str(tmp_path / "fla")})
    with pytest.raises(FileNotFoundError, match="run the data stage first"):  # neither: nothing for evaluate to read
        import_stage(cfg, "softmax", tmp_path / "models" / "softmax", tmp_path / "data")
    _tokenizer(tmp_path / "fla")  # the checkpoint's own ...
    _tokenizer(tmp_path / "data" / "tokenizer", words="completely different words here for another vocabulary")
    with pytest.raises(CheckpointFormatError, match="not the run's data tokenizer"):  # ... must be the data's
        import_stage(cfg, "softmax", tmp_path / "models" / "softmax", tmp_path / "data")
    _tokenizer(tmp_path / "data" / "tokenizer")
    import_stage(cfg, "softmax", tmp_path / "models" / "softmax", tmp_path / "data")
    assert (tmp_path / "models" / "softmax" / "tokenizer.json").is_file()


def test_models_from_must_cover_exactly_the_variants(tiny_config):
    from softpick.config import ConfigError
    from softpick.importer import models_from_sources

    with pytest.raises(ConfigError, match="'models_from' names gated"):
        models_from_sources({**tiny_config, "models_from": {"softmax": "a/b", "softpick": "c/d", "gated": "e/f"}})
    with pytest.raises(ConfigError, match="no entry for variant\\(s\\) softpick"):
        models_from_sources({**tiny_config, "models_from": {"softmax": "a/b"}})
