"""What the pipeline checks before and after work (issue 9, items 2-7): corrupted data files are named,
non-finite models and metrics are errors, config mistakes fail when the Snakefile is parsed, artifacts
respect the umask, every stage log starts with a header, each CLI stage has its own help."""
from __future__ import annotations

import copy
import dataclasses
import io
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from softpick import cli
from softpick import data as D
from softpick.atomic import sha256_file, write_bytes_atomic
from softpick.config import ConfigError, load_config, validate_config
from softpick.stages.registry import REGISTRY

from conftest import run_concurrently

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def data_copy(tiny_data_dir, tmp_path):
    """A private copy of the tiny data directory, in the run layout results/<run>/data of a scratch root."""
    dst = tmp_path / "results" / "tiny" / "data"
    shutil.copytree(tiny_data_dir, dst)
    return dst


def _rewrite_manifest(data_dir: Path, name: str) -> None:
    """Record a file's current sha256 and size in the manifest (a manifest that agrees with a bad file)."""
    manifest = json.loads((data_dir / "manifest.json").read_text())
    manifest["files"][name] = sha256_file(data_dir / name)
    manifest["sizes"][name] = (data_dir / name).stat().st_size
    (data_dir / "manifest.json").write_text(json.dumps(manifest))


# ----------------------------------------------------------------------------- 2. data verified against the manifest
def test_intact_data_dir_verifies_and_records_sizes(data_copy):
    manifest = D.verify_data_dir(data_copy)
    assert manifest["sizes"]["tokens_train.npy"] == (data_copy / "tokens_train.npy").stat().st_size
    tokens, offsets = D.load_tokens(data_copy, "train")
    assert offsets[-1] == tokens.shape[0]


def _overwrite_with_other_ids(d: Path):
    tokens = np.load(d / "tokens_train.npy")
    np.save(d / "tokens_train.npy", np.roll(tokens, 7))  # same size, other valid ids


def _out_of_vocab(d: Path):
    tokens = np.load(d / "tokens_train.npy")
    tokens[10] = 60000
    np.save(d / "tokens_train.npy", tokens)
    _rewrite_manifest(d, "tokens_train.npy")  # even a manifest that agrees does not let it through


def _truncate(d: Path):
    path = d / "tokens_train.npy"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _empty(d: Path):
    (d / "tokens_train.npy").write_bytes(b"")


def _delete_tokenizer(d: Path):
    shutil.rmtree(d / "tokenizer")


def _corrupt_tokenizer(d: Path):
    (d / "tokenizer" / "tokenizer.json").write_text("{ not json")


def _broken_tokenizer_with_matching_manifest(d: Path):
    _corrupt_tokenizer(d)
    _rewrite_manifest(d, "tokenizer/tokenizer.json")


@pytest.mark.parametrize("corrupt, message", [
    (_overwrite_with_other_ids, r"tokens_train\.npy: sha256 .* does not match the manifest"),
    (_out_of_vocab, r"tokens_train\.npy holds 1 out-of-vocabulary token id\(s\) \(max 60000 >= the tokenizer's vocab size 512\)"),
    (_truncate, r"tokens_train\.npy is \d+ bytes, the manifest records \d+ \(truncated\)"),
    (_empty, r"tokens_train\.npy is empty \(0 bytes"),
    (_delete_tokenizer, r"tokenizer directory \S+/tokenizer is missing"),
    (_corrupt_tokenizer, r"tokenizer/tokenizer\.json is 10 bytes, the manifest records \d+"),
    (_broken_tokenizer_with_matching_manifest, r"tokenizer directory \S+/tokenizer is broken"),
])
def test_bad_data_file_is_named_before_training(data_copy, tiny_config, tmp_path, corrupt, message):
    """The train stage (load_tokens) refuses each corruption with one message naming the file and the fault,
    instead of training on it, an IndexError in the embedding, an mmap / EOF error or a hub error."""
    D.verify_data_dir(data_copy)  # verified once intact: the cache must not hide a later change
    corrupt(data_copy)
    from softpick.train import train

    with pytest.raises(ValueError, match=message) as err:
        train(copy.deepcopy(tiny_config), "softpick", data_copy, tmp_path / "model")
    assert isinstance(err.value, D.DataIntegrityError) and "rerun the data stage" in str(err.value)
    assert not (tmp_path / "model").exists()


def test_every_data_reading_stage_verifies_first(data_copy, tmp_path):
    """evaluate / quantize (val_docs.jsonl, tokenizer) and analyze (validation tokens) check the data
    before they load a model: the message names the file, not a missing model."""
    config = load_config(overrides=["run_name=tiny"])
    docs = data_copy / "val_docs.jsonl"
    docs.write_text(docs.read_text().replace("e", "a", 1))
    for stage, kwargs in (("evaluate", {}), ("quantize", {"bits": 4, "method": "hqq"})):
        with pytest.raises(ValueError, match=r"val_docs\.jsonl: sha256"):
            cli.run_stage(stage, config, variant="softpick", root=tmp_path, **kwargs)
    np.save(data_copy / "tokens_val.npy", np.roll(np.load(data_copy / "tokens_val.npy"), 3))
    with pytest.raises(ValueError, match=r"tokens_val\.npy: sha256"):
        cli.run_stage("analyze", config, variant="softpick", root=tmp_path)


# ----------------------------------------------------------------------------- 3. non-finite models and metrics
TINY_EVAL = {"tasks": ["arc_easy"], "limit": 2, "ppl_max_docs": 1, "batch_size": 4, "max_length": 64}
TINY_ANALYSIS = {"num_docs": 2, "max_len": 32, "batch_size": 2, "sink_eps": [0.3], "zero_threshold": 1e-5,
                 "example_doc": 0, "length_sweep": [16]}


@pytest.fixture
def model_dir(tiny_data_dir, tmp_path):
    from softpick.model import SoftpickConfig, SoftpickForCausalLM

    tokenizer = D.load_tokenizer(tiny_data_dir)
    torch.manual_seed(0)
    model = SoftpickForCausalLM(SoftpickConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                                               num_attention_heads=2, intermediate_size=64, attention_kind="softpick"))
    out = tmp_path / "model"
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def _poison(model_dir: Path, value: float = float("nan")) -> None:
    from safetensors.torch import load_file, save_file

    weights = load_file(model_dir / "model.safetensors")
    name = next(n for n in weights if "q_proj" in n)
    weights[name][0, :3] = value
    save_file(weights, model_dir / "model.safetensors", metadata={"format": "pt"})
    from softpick.hf_export import write_manifest

    write_manifest(model_dir)  # a manifest that agrees: the NaN is in the exported model itself


def test_nan_weights_fail_evaluate_analyze_and_quantize_writing_nothing(model_dir, tiny_data_dir, tmp_path):
    from softpick.analysis import run_analysis
    from softpick.evaluate import evaluate_dir
    from softpick.quantize import quantize_and_evaluate

    _poison(model_dir)
    out = tmp_path / "out"
    val_docs = tiny_data_dir / "val_docs.jsonl"
    with pytest.raises(ValueError, match=r"non-finite weights: model\.layers\.0\.self_attn\.q_proj\.weight \(3 of"):
        evaluate_dir(model_dir, TINY_EVAL, val_docs, out / "eval.json")
    with pytest.raises(ValueError, match=r"q_proj\.weight"):
        run_analysis(model_dir, tiny_data_dir, TINY_ANALYSIS, out / "a.json", out / "a.npz")
    with pytest.raises(ValueError, match=r"q_proj\.weight"):
        quantize_and_evaluate(model_dir, {"method": "hqq", "group_size": 32}, TINY_EVAL, val_docs, out / "q.json", bits=4)
    assert not out.exists() or not any(out.iterdir())


def test_inf_weight_is_named_too(model_dir):
    from softpick.loading import load_model_and_tokenizer

    _poison(model_dir, float("inf"))
    with pytest.raises(ValueError, match="NaN/inf") as err:
        load_model_and_tokenizer(model_dir)
    assert type(err.value).__name__ == "NonFiniteError"


def test_non_finite_metric_is_an_error_and_nothing_is_written(model_dir, tiny_data_dir, tmp_path, monkeypatch):
    from softpick import analysis, evaluate

    real = analysis.analyze_model

    def nan_kurtosis(*args, **kwargs):
        summary, arrays = real(*args, **kwargs)
        summary["kurtosis"] = float("nan")
        return summary, arrays

    monkeypatch.setattr(analysis, "analyze_model", nan_kurtosis)
    with pytest.raises(ValueError, match=r"kurtosis = nan"):
        analysis.run_analysis(model_dir, tiny_data_dir, TINY_ANALYSIS, tmp_path / "a.json", tmp_path / "a.npz")
    assert not (tmp_path / "a.json").exists() and not (tmp_path / "a.npz").exists()

    def null_perplexity(model, tokenizer, **kwargs):  # what evaluate_model makes of a NaN loss
        return {"tasks": {"arc_easy": {"acc": 0.5, "acc_stderr": None, "n": 2}},
                "perplexity": {"word_perplexity": None, "byte_perplexity": 3.0, "bits_per_byte": 1.5, "n_docs": 1}}

    monkeypatch.setattr(evaluate, "evaluate_model", null_perplexity)
    with pytest.raises(ValueError, match=r"perplexity\.word_perplexity = null"):
        evaluate.evaluate_dir(model_dir, TINY_EVAL, tiny_data_dir / "val_docs.jsonl", tmp_path / "e.json")
    assert not (tmp_path / "e.json").exists()


# ----------------------------------------------------------------------------- 4. config errors at parse time
def _write(tmp_path, text, name="override.yaml"):
    (tmp_path / name).write_text(text)
    return tmp_path / name


@pytest.mark.parametrize("run_name", ["..", ".", "a/b", "../data"])
def test_run_name_outside_results_is_rejected(run_name):
    with pytest.raises(ConfigError, match=r"config key 'run_name'"):
        load_config(overrides=[f"run_name={json.dumps(run_name)}"])


def test_exponent_floats_are_numbers(tmp_path):
    config = load_config([_write(tmp_path, "train:\n  lr: 1e-3\n  betas: [9e-1, 0.95]\nmodel:\n  rms_norm_eps: 1E-5\n")])
    assert config["train"]["lr"] == 0.001 and isinstance(config["train"]["lr"], float)
    assert config["train"]["betas"] == [0.9, 0.95] and config["model"]["rms_norm_eps"] == 1e-5
    assert load_config(overrides=["train.lr=1e-3"])["train"]["lr"] == 0.001
    raw = yaml.safe_load((REPO / "configs" / "default.yaml").read_text())  # what Snakemake hands the Snakefile
    raw["train"]["lr"] = "2e-3"
    validate_config(raw, check_device=False)
    assert raw["train"]["lr"] == 0.002  # converted in place: the Snakefile's config (and params) hold the number
    with pytest.raises(ConfigError, match=r"'train\.lr': 'fast' is not of type 'number'"):
        load_config(overrides=["train.lr=fast"])
    assert load_config(overrides=["run_name=1e3"])["run_name"] == "1e3"  # a string where the schema says string


def test_kv_heads_must_divide_heads():
    with pytest.raises(ConfigError, match=r"'model\.num_key_value_heads' \(3\) must divide 'model\.num_attention_heads' \(4\)"):
        load_config(overrides=["model.num_key_value_heads=3"])
    assert load_config(overrides=["model.num_key_value_heads=2"])["model"]["num_key_value_heads"] == 2


def test_group_size_must_divide_the_quantized_layers():
    with pytest.raises(ConfigError, match=r"'quantize\.group_size' \(48\) does not divide .*gate_proj \[352, 128\]"):
        load_config(overrides=["quantize.group_size=48"])
    load_config(overrides=["quantize.group_size=128"])  # 128 x 128 and 352 x 128 weights split evenly
    odd_vocab = ["data.tokenizer.vocab_size=4001", "model.hidden_size=64", "model.intermediate_size=256",
                 "quantize.group_size=128"]
    load_config(overrides=odd_vocab)  # the lm_head stays float by default
    with pytest.raises(ConfigError, match=r"lm_head \[4001, 64\]"):
        load_config(overrides=[*odd_vocab, "quantize.quantize_lm_head=true"])


def test_cuda_without_cuda_is_rejected_naming_the_key(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("SOFTPICK_SKIP_DEVICE_CHECK", raising=False)
    config = load_config(overrides=["device=cuda"])  # the CLI: checked by the stages that use the device
    with pytest.raises(ConfigError, match=r"config key 'device': 'cuda' but torch sees no CUDA device"):
        validate_config(config)
    with pytest.raises(ConfigError, match=r"config key 'device'"):
        cli.run_stage("analyze", config, variant="softpick", root="/nonexistent")
    validate_config(load_config(overrides=["device=auto"]))
    monkeypatch.setenv("SOFTPICK_SKIP_DEVICE_CHECK", "1")
    validate_config(config)


def _scratch_workflow(tmp_path: Path) -> Path:
    for name in ("Snakefile", "workflow", "configs", "data", "src"):
        os.symlink(REPO / name, tmp_path / name)
    return tmp_path


def _snakemake(work: Path, override: str, *args: str, name: str = "override.yaml") -> subprocess.CompletedProcess:
    (work / name).write_text(override)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "CUDA_VISIBLE_DEVICES": ""}
    env.pop("SOFTPICK_SKIP_DEVICE_CHECK", None)
    cmd = [sys.executable, "-m", "snakemake", "--cores", "1", "--configfile", "configs/test.yaml", name, *args]
    return subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=600, env=env)


@pytest.mark.slow
def test_snakemake_dry_run_rejects_bad_config_naming_the_key(tmp_path):
    """Each mistake fails `snakemake -n` (the Snakefile's parse), before any job; exponent floats pass."""
    work = _scratch_workflow(tmp_path)
    cases = {
        'run_name: ".."\n': "config key 'run_name'",
        "model: {num_key_value_heads: 3, num_attention_heads: 4, hidden_size: 32}\n": "config key 'model.num_key_value_heads'",
        "quantize: {group_size: 48}\n": "config key 'quantize.group_size'",
        "device: cuda\n": "config key 'device'",
    }
    overrides = [*cases, "train: {lr: 1e-3}\n"]  # dry runs (no lock, no log file): side by side
    *refused, proc = run_concurrently(*(partial(_snakemake, work, text, "-n", name=f"override{i}.yaml")
                                        for i, text in enumerate(overrides)))
    for (override, message), bad in zip(cases.items(), refused):
        assert bad.returncode != 0 and message in bad.stdout + bad.stderr, (override, bad.stderr[-2000:])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not (work / "results").exists()


# ----------------------------------------------------------------------------- 5. the umask
@pytest.mark.parametrize("umask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750)])
def test_artifacts_respect_the_umask(tmp_path, umask, file_mode, dir_mode):
    old = os.umask(umask)
    try:
        write_bytes_atomic(tmp_path / "table.md", b"| a |\n")
        D.prepare_data({"max_documents": 6, "val_documents": 2, "tokenizer": {"vocab_size": 300}},
                       tmp_path / "data", seed=0)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "table.md").stat().st_mode) == file_mode
    for name in ("manifest.json", "tokens_train.npy", "val_docs.jsonl", "tokenizer/tokenizer.json"):
        assert stat.S_IMODE((tmp_path / "data" / name).stat().st_mode) == file_mode, name
    assert stat.S_IMODE((tmp_path / "data" / "tokenizer").stat().st_mode) == dir_mode


# ----------------------------------------------------------------------------- 6. log headers and progress bars
@pytest.fixture
def restore_tqdm(monkeypatch):
    from tqdm import std

    monkeypatch.setattr(std.tqdm, "__init__", std.tqdm.__dict__["__init__"])
    monkeypatch.setattr(std.tqdm, "set_postfix", std.tqdm.__dict__["set_postfix"])
    monkeypatch.setattr(std.tqdm, "_softpick_interval", None, raising=False)


def test_stage_log_starts_with_header_and_has_the_stage_messages(tmp_path, monkeypatch, restore_tqdm):
    from softpick.config import DEFAULT_CONFIG

    monkeypatch.chdir(tmp_path)
    config = load_config([_write(tmp_path, "data:\n  max_documents: 8\n  val_documents: 2\n  val_fraction: null\n"
                                           "  tokenizer: {vocab_size: 300}\n")])
    with cli.redirect_output(tmp_path / "logs" / "data.log"):  # what workflow/scripts/stage.py does
        cli.run_stage("data", config)
    log = (tmp_path / "logs" / "data.log").read_text()
    head = log.splitlines()[:12]
    assert head[1].startswith("softpick stage data") and "run tiny" in head[1]
    digest = cli.config_digest(config, "data")
    assert f"config digest  {digest}" in log and digest != cli.config_digest(load_config(), "data")
    for field in ("device ", "versions       python", "torch ", "git commit", "inputs (0):"):
        assert field in log, field
    assert "loaded 8 documents" in log and "softpick data: done in" in log  # the stage's own INFO lines
    # the rule's inputs (stage.py passes them): each with its size and sha256
    header = cli.stage_header("evaluate", config, variant="softpick", inputs=[str(DEFAULT_CONFIG), "src/missing.py"])
    assert f"{DEFAULT_CONFIG} {DEFAULT_CONFIG.stat().st_size} bytes sha256 {sha256_file(DEFAULT_CONFIG)}" in header
    assert "src/missing.py (missing)" in header and "stage evaluate, variant softpick" in header


def test_progress_bars_redraw_at_a_log_friendly_rate(tmp_path, monkeypatch, restore_tqdm):
    from tqdm import std
    from tqdm.auto import tqdm

    monkeypatch.setattr(cli, "PROGRESS_INTERVAL_S", 0.5, raising=False)
    # tqdm's clock, advanced by the loop: the redraw count does not depend on the machine's speed.
    # Its monitor thread reads the real clock: none during this test (a later bar starts a new one).
    clock = [1000.0]
    monkeypatch.setattr(std, "time", lambda: clock[0])
    monkeypatch.setattr(std.tqdm, "monitor_interval", 0)
    if std.tqdm.monitor is not None:
        std.tqdm.monitor.exit()
    log = tmp_path / "train.log"
    with cli.redirect_output(log):
        bar = tqdm(total=150, desc="train softpick", dynamic_ncols=True)  # what train.py does
        for step in range(150):
            clock[0] += 0.01
            bar.update(1)
            bar.set_postfix(loss=f"{1 / (step + 1):.3f}")
        bar.close()
    lines = [line for line in log.read_text().splitlines() if "train softpick" in line]
    assert "\r" not in log.read_text()  # each redraw its own line
    assert 2 <= len(lines) <= 6, lines  # ~1.5 s at one redraw / 0.5 s (tqdm's default: one per 0.1 s)


def test_multi_rank_runs_print_one_header(monkeypatch, capsys):
    config = load_config()
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setitem(REGISTRY, "figures", dataclasses.replace(REGISTRY["figures"], run=lambda job: []))
    cli.run_stage("figures", config, root="/nonexistent")
    assert "softpick stage" not in capsys.readouterr().err
    monkeypatch.setenv("RANK", "0")
    cli.run_stage("figures", config, root="/nonexistent")
    assert "softpick stage figures" in capsys.readouterr().err


# ----------------------------------------------------------------------------- 7. the CLI
def _help(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == 0
    return capsys.readouterr().out


def test_each_stage_has_its_own_help_with_choices(capsys):
    from softpick.attention import KINDS
    from softpick.quantize import METHODS

    train_help = _help(["train", "--help"], capsys)
    assert train_help.startswith("usage: softpick train") and "{" + ",".join(KINDS) + "}" in train_help
    assert "--bits" not in train_help and "figures" not in train_help
    quant_help = _help(["quantize", "--help"], capsys)
    assert "--bits {8,4,3,2}" in quant_help and "--method {" + ",".join(sorted(METHODS)) + "}" in quant_help
    assert "--variant" not in _help(["figures", "--help"], capsys)
    top = _help(["--help"], capsys)
    assert all(stage in top for stage in REGISTRY)


@pytest.mark.parametrize("argv, message", [
    (["train", "--variant", "sparsemax"], "invalid choice: 'sparsemax'"),
    (["train"], "the following arguments are required: --variant"),
    (["quantize", "--variant", "softpick", "--bits", "5"], "invalid choice: 5"),
    (["quantize", "--variant", "softpick", "--bits", "4", "--method", "awq"], "invalid choice: 'awq'"),
    (["evaluate", "--variant", "softpick", "--bits", "4"], "unrecognized arguments: --bits 4"),
])
def test_bad_arguments_are_named_by_the_stage_parser(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_stage_invocation_of_the_docs_still_runs(tmp_path, monkeypatch, restore_tqdm, capsys):
    monkeypatch.chdir(tmp_path)
    rc = cli.main(["data", "--set", "data.max_documents=6", "--set", "data.val_documents=2", "--set", "data.val_fraction=null",
                   "--set", "data.tokenizer.vocab_size=300"])
    assert rc == 0, capsys.readouterr().err
    assert D.verify_data_dir(tmp_path / "results" / "tiny" / "data")["n_documents"] == 6


# ----------------------------------------------------------------------------- issue 15: exported model dirs checked
@pytest.fixture
def exported_run(data_copy):
    """A train-exported model (train_export.export_model) beside the data, in the layout results/tiny/ of a scratch root."""
    from test_hf_loading import export_tiny_model

    model_dir = data_copy.parent / "models" / "softpick"
    model_dir.parent.mkdir()
    export_tiny_model(model_dir, data_copy, "softpick")
    return data_copy.parents[2], model_dir


def _swap_weights(d: Path):
    from safetensors.torch import load_file, save_file

    weights = load_file(d / "model.safetensors")
    name = next(n for n in weights if "q_proj" in n)
    weights[name] = weights[name].flip(0).contiguous()  # finite, same shape and size
    save_file(weights, d / "model.safetensors", metadata={"format": "pt"})


def _swap_tokenizer_entry(d: Path):
    tok = json.loads((d / "tokenizer.json").read_text())
    vocab = tok["model"]["vocab"]
    a, b = sorted(vocab, key=vocab.get)[300:302]
    vocab[a], vocab[b] = vocab[b], vocab[a]
    (d / "tokenizer.json").write_text(json.dumps(tok, indent=2, ensure_ascii=False))


def _truncate_weights(d: Path):
    path = d / "model.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize("corrupt, message", [
    (_swap_weights, r"model\.safetensors: sha256 does not match the manifest"),
    (_swap_tokenizer_entry, r"tokenizer\.json: sha256 does not match the manifest"),
    (_truncate_weights, r"model\.safetensors is \d+ bytes, the manifest records \d+ \(truncated\)"),
    (lambda d: (d / "tokenizer_config.json").unlink(), r"tokenizer_config\.json is missing"),
    (lambda d: (d / "manifest.json").unlink(), r"manifest\.json is missing"),
])
def test_changed_model_file_is_named_by_every_loading_stage(exported_run, monkeypatch, capsys, restore_tqdm,
                                                            corrupt, message):
    """evaluate / quantize / analyze / passkey check the exported files against the manifest the train stage
    wrote last, before loading: one error naming the file, exit 2, nothing written."""
    root, model_dir = exported_run
    corrupt(model_dir)
    monkeypatch.chdir(root)
    small = ["--set", "eval.tasks=[arc_easy]", "--set", "eval.limit=2", "--set", "eval.ppl_max_docs=1"]
    for argv in (["evaluate"], ["quantize", "--method", "rtn", "--bits", "2"], ["analyze"], ["passkey"]):
        rc = cli.main([*argv, "--variant", "softpick", *small])
        err = capsys.readouterr().err
        assert rc == 2, (argv, err[-3000:])
        assert re.search(message, err) and "rerun the train stage" in err, (argv, err[-3000:])
        assert "Traceback" not in err
    assert sorted(p.name for p in (root / "results" / "tiny").iterdir()) == ["data", "models"]  # nothing written
    if (model_dir / "manifest.json").exists():  # it lists every file of the export
        listed = set(json.loads((model_dir / "manifest.json").read_text())["files"])
        assert {p.name for p in model_dir.iterdir()} - {"manifest.json"} <= listed


def test_non_finite_config_numbers_are_named():
    """YAML's .inf / .nan are numbers to the schema; validation refuses them naming the key."""
    for override, message in (("train.lr=.inf", "config key 'train.lr': inf is not a finite number"),
                              ("train.betas=[0.9, .nan]", "config key 'train.betas.1': nan is not a finite number"),
                              ("analysis.zero_threshold=-.inf", "config key 'analysis.zero_threshold': -inf is not")):
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_config(overrides=[override])
