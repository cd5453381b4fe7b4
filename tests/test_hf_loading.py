"""An exported model loads with stock transformers: in a fresh process that cannot import softpick,
`AutoModelForCausalLM.from_pretrained(dir, trust_remote_code=True)` gives the in-process model's logits;
`import softpick` alone registers the Auto classes; generate() decodes with a KV cache."""
import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

from softpick.config import DEFAULT_CONFIG
from softpick.hf_export import AUTO_MAP, remote_code_files

IDS = [[1, 17, 99, 250, 3, 44, 7, 300], [1, 5, 6, 7, 8, 9, 10, 11]]


def export_tiny_model(out_dir: Path, data_dir: Path, kind: str, *, kv_heads: int | None = None) -> torch.nn.Module:
    """A randomly initialised model exported by the trainer's own export_model (as a finished run would)."""
    from transformers import AutoTokenizer

    from softpick.model import build_model
    from softpick.train_export import export_model

    config = yaml.safe_load(DEFAULT_CONFIG.read_text())
    config["model"].update(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                           num_key_value_heads=kv_heads)
    tokenizer = AutoTokenizer.from_pretrained(data_dir / "tokenizer")
    torch.manual_seed(3)
    model = build_model(config["model"], kind, len(tokenizer), 64)
    with torch.no_grad():  # not the initial ones: the loaded weights must really be the saved ones
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    log = out_dir.parent / f"{out_dir.name}_log.jsonl"
    log.write_text('{"step": 0}\n')
    export_model(model, tokenizer, out_dir, config, {"variant": kind}, log)
    return model.eval()


def fresh_python(code: str, tmp_path: Path, *, block_softpick: bool) -> subprocess.CompletedProcess:
    """Run code in a new interpreter whose PYTHONPATH lacks src/; optionally make `import softpick` fail
    (the venv may hold an editable install), with its own transformers module cache."""
    prologue = "import sys\nsys.modules['softpick'] = None  # the project is not available\n" if block_softpick else ""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_MODULES_CACHE=str(tmp_path / "hf_modules"), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1",
               TRANSFORMERS_VERBOSITY="error")
    return subprocess.run([sys.executable, "-c", prologue + textwrap.dedent(code)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_data_dir):
    root = tmp_path_factory.mktemp("hf")
    models = {}
    for kind, kv in (("softpick", 2), ("softmax", None), ("gated", None)):  # gated: a kind with learned parameters
        models[kind] = export_tiny_model(root / kind, tiny_data_dir, kind, kv_heads=kv)
    return root, models


def test_export_writes_generated_code_and_auto_map(exported):
    root, _ = exported
    d = root / "softpick"
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["auto_map"] == AUTO_MAP
    files = remote_code_files()
    assert {"modeling_softpick.py", "softpick_attention.py", "softpick_attention_reference.py",
            "softpick_attention_kinds_gated.py"} <= set(files)  # every attention kind comes along
    for name, text in files.items():  # byte-identical to what the source generates now
        assert (d / name).read_text() == text
        for node in ast.walk(ast.parse(text)):  # nothing left that imports the package
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                assert not any(m.split(".")[0] == "softpick" for m in mods), (name, node.lineno)
    assert not any("triton" in n for n in files)
    assert "raise ImportError" in files["softpick_attention.py"]  # the Triton import, rewritten


def test_trust_remote_code_in_a_process_without_softpick(exported, tmp_path):
    root, models = exported
    code = f"""
        import json, torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        out = {{}}
        for kind in ("softpick", "softmax", "gated"):
            d = {str(root)!r} + "/" + kind
            m = AutoModelForCausalLM.from_pretrained(d, trust_remote_code=True, dtype=torch.float32).eval()
            tok = AutoTokenizer.from_pretrained(d)
            ids = torch.tensor({IDS})
            with torch.no_grad():
                logits = m(ids).logits
            seen = []
            m.model.register_forward_pre_hook(lambda mod, a, kw: seen.append((a[0] if a else kw["input_ids"]).shape[1]),
                                              with_kwargs=True)
            cached = m.generate(ids, max_new_tokens=5, do_sample=False, eos_token_id=None, pad_token_id=0)
            steps = list(seen)
            plain = m.generate(ids, max_new_tokens=5, do_sample=False, use_cache=False, eos_token_id=None,
                               pad_token_id=0)
            out[kind] = {{"logits": logits.tolist(), "module": type(m).__module__, "steps": steps,
                         "same": torch.equal(cached, plain), "vocab": len(tok)}}
        import sys
        out["softpick_imported"] = sys.modules.get("softpick") is not None
        print("RESULT" + json.dumps(out))
    """
    proc = fresh_python(code, tmp_path, block_softpick=True)
    assert proc.returncode == 0, proc.stderr[-4000:]
    res = json.loads(proc.stdout.split("RESULT", 1)[1])
    assert res["softpick_imported"] is False
    for kind, model in models.items():
        r = res[kind]
        assert r["module"].startswith("transformers_modules") and r["module"].endswith("modeling_softpick"), r["module"]
        with torch.no_grad():
            expected = model(torch.tensor(IDS)).logits
        torch.testing.assert_close(torch.tensor(r["logits"]), expected, rtol=0, atol=1e-5)
        assert r["same"] and r["steps"] == [len(IDS[0]), 1, 1, 1, 1], r  # the KV cache: one new token per step
        assert r["vocab"] == model.config.vocab_size


def test_import_softpick_registers_the_auto_classes(exported, tmp_path):
    root, _ = exported
    d = str(root / "softmax")
    plain = "from transformers import AutoModelForCausalLM\nm = AutoModelForCausalLM.from_pretrained({d!r})\n"
    without = fresh_python(plain.format(d=d), tmp_path, block_softpick=True)
    assert without.returncode != 0 and "trust_remote_code" in without.stderr, without.stderr[-2000:]
    src = str(Path(__file__).resolve().parents[1] / "src")
    code = f"import sys; sys.path.insert(0, {src!r})\nimport softpick\n" + plain.format(d=d) + \
        "print('CLASS', type(m).__module__, type(m).__name__)\n"
    proc = fresh_python(code, tmp_path, block_softpick=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "CLASS softpick.model SoftpickForCausalLM" in proc.stdout


@pytest.mark.parametrize("kind", ["softmax", "softpick", "gated"])
def test_kv_cache_generation_matches_full_recompute(exported, kind):
    _, models = exported
    model = models[kind]
    ids = torch.tensor(IDS)
    mask = torch.ones_like(ids)
    mask[1, :3] = 0  # left padding in the second row
    seen = []
    hook = model.model.register_forward_pre_hook(
        lambda mod, a, kw: seen.append((a[0] if a else kw["input_ids"]).shape[1]), with_kwargs=True)
    try:
        cached = model.generate(ids, attention_mask=mask, max_new_tokens=6, do_sample=False, eos_token_id=None,
                                pad_token_id=0)
        steps, seen[:] = list(seen), []
        plain = model.generate(ids, attention_mask=mask, max_new_tokens=6, do_sample=False, use_cache=False,
                               eos_token_id=None, pad_token_id=0)
    finally:
        hook.remove()
    assert steps == [ids.shape[1]] + [1] * 5 and seen == list(range(ids.shape[1], ids.shape[1] + 6))
    assert torch.equal(cached, plain)
    # logits of a cached multi-token step equal the full forward's (float64: the reference path's precision)
    m64 = model.to(torch.float64)
    try:
        with torch.no_grad():
            full = m64(cached, attention_mask=torch.cat([mask, torch.ones(2, 6, dtype=mask.dtype)], 1)).logits
            first = m64(cached[:, :9], attention_mask=torch.cat([mask, torch.ones(2, 1, dtype=mask.dtype)], 1),
                        use_cache=True)
            step = m64(cached[:, 9:], attention_mask=torch.cat([mask, torch.ones(2, 6, dtype=mask.dtype)], 1),
                       cache=first.cache).logits
        torch.testing.assert_close(step, full[:, 9:], rtol=0, atol=1e-10)
    finally:
        model.to(torch.float32)


def test_save_pretrained_alone_carries_the_code(tmp_path):
    """A user's own save_pretrained (no train stage, no exporter call) loads with trust_remote_code where softpick
    is not importable: the model's and the config's directories carry the generated code and auto_map."""
    import stat

    from softpick.model import SoftpickConfig, SoftpickForCausalLM

    torch.manual_seed(5)
    model = SoftpickForCausalLM(SoftpickConfig(vocab_size=400, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                               num_key_value_heads=2, intermediate_size=64, attention_kind="gated")).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    model.save_pretrained(tmp_path / "model")
    model.config.save_pretrained(tmp_path / "config")  # the config alone, too
    assert json.loads((tmp_path / "model" / "config.json").read_text())["auto_map"] == AUTO_MAP
    assert stat.S_IMODE((tmp_path / "model" / "model.safetensors").stat().st_mode) == 0o666 & ~_umask()
    code = f"""
        import json, torch
        from transformers import AutoConfig, AutoModelForCausalLM
        m = AutoModelForCausalLM.from_pretrained({str(tmp_path / "model")!r}, trust_remote_code=True).eval()
        c = AutoConfig.from_pretrained({str(tmp_path / "config")!r}, trust_remote_code=True)
        with torch.no_grad():
            logits = m(torch.tensor({IDS})).logits
        print("RESULT" + json.dumps({{"logits": logits.tolist(), "module": type(m).__module__,
                                      "config": [type(c).__name__, c.attention_kind, c.num_key_value_heads]}}))
    """
    proc = fresh_python(code, tmp_path, block_softpick=True)
    assert proc.returncode == 0, proc.stderr[-4000:]
    res = json.loads(proc.stdout.split("RESULT", 1)[1])
    assert res["module"].startswith("transformers_modules") and res["config"] == ["SoftpickConfig", "gated", 2]
    with torch.no_grad():
        torch.testing.assert_close(torch.tensor(res["logits"]), model(torch.tensor(IDS)).logits, rtol=0, atol=1e-5)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
