"""The lm_eval command line evaluates an exported model like any Hub model: `--model hf` with
trust_remote_code, our task YAMLs through `--include_path` as shipped, in a process that cannot import
softpick; with the protocol flags of docs/loading.md it reproduces the pipeline's own evaluation."""
import json

import pytest

import softpick.evaluate as ev
from softpick.loading import load_model_and_tokenizer
from test_hf_loading import export_tiny_model, fresh_python

LIMIT = 4
# the command line of docs/loading.md (the pinned protocol of softpick.evaluate)
PROTOCOL_MODEL_ARGS = "dtype=float32,max_length=256,add_bos_token=False"
PROTOCOL_FLAGS = ["--num_fewshot", "0", "--batch_size", "8", "--seed", "1234", "--device", "cpu"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_data_dir):
    out = tmp_path_factory.mktemp("lm_eval_cli") / "softpick"
    export_tiny_model(out, tiny_data_dir, "softpick")
    return out


def test_lm_eval_cli_matches_the_pipeline(model_dir, tiny_data_dir, tmp_path):
    val_docs = tiny_data_dir / "val_docs.jsonl"
    argv = ["--model", "hf", "--model_args", f"pretrained={model_dir},trust_remote_code=True,{PROTOCOL_MODEL_ARGS}",
            "--tasks", "softpick_arc_easy,softpick_val_ppl", "--include_path", str(ev.tasks_dir()),
            *PROTOCOL_FLAGS, "--limit", str(LIMIT), "--metadata", json.dumps({"val_docs": str(val_docs)}),
            "--output_path", str(tmp_path / "out")]
    code = f"""
        import sys
        from lm_eval.__main__ import cli_evaluate
        sys.argv = ["lm_eval"] + {argv!r}
        cli_evaluate()
    """
    proc = fresh_python(code, tmp_path, block_softpick=True)  # the CLI, without softpick importable
    assert proc.returncode == 0, proc.stderr[-5000:]
    assert "softpick_arc_easy" in proc.stdout and "word_perplexity" in proc.stdout, proc.stdout[-3000:]
    (results_file,) = (tmp_path / "out").rglob("results_*.json")
    cli = json.loads(results_file.read_text())["results"]

    model, tokenizer = load_model_and_tokenizer(model_dir)
    ours = ev.evaluate_model(model, tokenizer, tasks=["arc_easy"], limit=LIMIT, val_docs=val_docs,
                             ppl_max_docs=LIMIT, batch_size=8, device="cpu", max_length=256)
    assert ours["tasks"]["arc_easy"]["n"] == LIMIT
    for metric in ("acc", "acc_norm"):
        assert cli["softpick_arc_easy"][f"{metric},none"] == pytest.approx(ours["tasks"]["arc_easy"][metric], abs=1e-9)
    for metric in ("word_perplexity", "byte_perplexity", "bits_per_byte"):
        assert cli["softpick_val_ppl"][f"{metric},none"] == pytest.approx(ours["perplexity"][metric], rel=1e-6)


def test_val_ppl_without_val_docs_names_the_metadata_key(tmp_path):
    code = f"""
        import sys
        sys.path.insert(0, {str(ev.tasks_dir())!r})
        import loader
        try:
            loader.load_val_docs("test")
        except ValueError as e:
            print("ERR", e)
    """
    proc = fresh_python(code, tmp_path, block_softpick=True)
    assert "ERR" in proc.stdout and "val_docs" in proc.stdout, proc.stderr[-2000:]


def test_loader_refuses_an_altered_task_file(tmp_path):
    data = tmp_path / "tasks"
    data.mkdir()
    src = ev.task_data_dir()
    manifest = json.loads((src / "manifest.json").read_text())
    (data / "manifest.json").write_text(json.dumps(manifest))
    name = manifest["tasks"]["arc_easy"]["file"]
    blob = bytearray((src / name).read_bytes())
    blob[100] ^= 1
    (data / name).write_bytes(bytes(blob))
    from softpick.lm_eval_tasks import loader

    with pytest.raises(ValueError, match=r"arc_easy\.jsonl\.xz: sha256 .* does not match"):
        loader.load_task("arc_easy", "test", task_data=str(data), doc_limit=2)
