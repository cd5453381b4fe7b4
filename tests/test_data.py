"""Tests for softpick.data: sources, split, tokenizer, token files, manifest, errors."""
from __future__ import annotations

import hashlib
import json
import lzma
import os
import re
from pathlib import Path

import numpy as np
import pytest

from softpick import data as D

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO / "data" / "corpus" / "corpus.jsonl.xz"

SMALL = {
    "source": "embedded",
    "max_documents": 40,
    "val_fraction": 0.2,
    "tokenizer": {"kind": "bpe", "vocab_size": 512, "train_sample_bytes": 300_000},
}


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _corpus_head(n: int) -> list[dict]:
    out = []
    with lzma.open(CORPUS, "rt", encoding="utf-8") as f:
        for line in f:
            out.append(json.loads(line))
            if len(out) == n:
                break
    return out


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    out = tmp_path_factory.mktemp("prep")
    manifest = D.prepare_data(SMALL, out, seed=123)
    return out, manifest


# ---------------------------------------------------------------- corpus


def test_embedded_corpus_schema():
    docs = _corpus_head(1000)
    assert len(docs) >= 500
    ids = [d["id"] for d in docs]
    assert len(set(ids)) == len(ids)
    assert {d["source"] for d in docs} >= {"shakespeare", "sotu", "moby_dick"}
    for d in docs:
        assert set(d) == {"id", "source", "title", "text"}
        assert d["text"] and d["text"] == d["text"].strip()
        assert "\r" not in d["text"] and "\n\n\n" not in d["text"]


def test_load_documents_max_documents():
    texts = list(D.load_documents({"max_documents": 7}))
    assert len(texts) == 7 and all(isinstance(t, str) and t for t in texts)
    assert texts == [d["text"] for d in _corpus_head(7)]


# ---------------------------------------------------------------- split


def test_split_documents_disjoint_and_seeded():
    tr, va = D.split_documents(100, seed=1, val_fraction=0.1)
    assert len(va) == 10 and len(tr) == 90
    assert not set(tr) & set(va) and set(tr) | set(va) == set(range(100))
    tr2, va2 = D.split_documents(100, seed=1, val_fraction=0.1)
    assert np.array_equal(va, va2) and np.array_equal(tr, tr2)
    _, va3 = D.split_documents(100, seed=2, val_fraction=0.1)
    assert not np.array_equal(va, va3)
    _, va4 = D.split_documents(100, seed=1, val_documents=3)
    assert len(va4) == 3


def test_prepared_split_no_overlap(prepared):
    out, m = prepared
    assert m["splits"]["train"]["n_documents"] + m["splits"]["val"]["n_documents"] == 40
    assert m["splits"]["val"]["n_documents"] == 8
    head = {d["id"]: d["text"] for d in _corpus_head(40)}
    val = [json.loads(line) for line in (out / "val_docs.jsonl").read_text("utf-8").splitlines()]
    assert len(val) == 8 and len({v["id"] for v in val}) == 8
    assert all(head[v["id"]] == v["text"] for v in val)
    # documents in the two splits are disjoint (compare token sequences of whole documents)
    tr, va = D.TokenDataset(out, "train"), D.TokenDataset(out, "val")
    train_docs = {tr[i].tobytes() for i in range(len(tr))}
    assert not any(va[i].tobytes() in train_docs for i in range(len(va)))
    # val token files are the val_docs.jsonl texts, in order
    tok = D.load_tokenizer(out)
    for i in (0, len(va) - 1):
        ids = tok(val[i]["text"], add_special_tokens=False)["input_ids"]
        assert va[i][1:-1].tolist() == ids


# ---------------------------------------------------------------- files + manifest


def test_manifest_matches_files(prepared):
    out, m = prepared
    assert json.loads((out / "manifest.json").read_text()) == m
    for rel, sha in m["files"].items():
        assert _sha(out / rel) == sha, rel
    assert {"tokens_train.npy", "docs_train.npy", "tokens_val.npy", "docs_val.npy", "val_docs.jsonl",
            "tokenizer/tokenizer.json"} <= set(m["files"])
    for split in D.SPLITS:
        s = m["splits"][split]
        tokens, offsets = D.load_tokens(out, split)
        assert isinstance(tokens, np.memmap) and tokens.ndim == 1
        assert tokens.dtype == np.uint16 and s["dtype"] == "uint16"
        assert offsets.dtype == np.int64 and len(offsets) == s["n_documents"] + 1
        assert offsets[0] == 0 and offsets[-1] == tokens.size == s["n_tokens"]
    val = [json.loads(x) for x in (out / "val_docs.jsonl").read_text("utf-8").splitlines()]
    assert m["splits"]["val"]["n_bytes"] == sum(len(v["text"].encode()) for v in val)
    t = m["tokenizer"]
    assert (t["kind"], t["vocab_size"], t["bos_token_id"], t["eos_token_id"], t["unk_token_id"], t["pad_token_id"]) \
        == ("bpe", 512, 1, 2, 0, 3)
    assert m["seed"] == 123 and m["source"] == "embedded" and m["config"]["max_documents"] == 40
    assert not list(out.glob(".*tmp*")), "temporary files left behind"


def test_bos_eos_framing(prepared):
    out, _ = prepared
    for split in D.SPLITS:
        ds = D.TokenDataset(out, split)
        assert len(ds) > 0
        for i in range(len(ds)):
            doc = np.asarray(ds[i])
            assert doc[0] == 1 and doc[-1] == 2 and len(doc) > 2
            assert not np.isin(doc[1:-1], [0, 1, 2, 3]).any()


def test_tokenizer_roundtrip(prepared):
    out, _ = prepared
    tok = D.load_tokenizer(out)
    assert (tok.bos_token, tok.eos_token, tok.unk_token, tok.pad_token) == ("<s>", "</s>", "<unk>", "<pad>")
    assert (tok.bos_token_id, tok.eos_token_id, tok.unk_token_id, tok.pad_token_id) == (1, 2, 0, 3)
    s = "Call me Ishmael. Some years ago — never mind how long."
    enc = tok(s)["input_ids"]
    assert enc[0] == 1  # BOS prepended like Llama-2
    assert tok.decode(enc, skip_special_tokens=True) == s


def test_literal_special_token_text_is_not_a_special_id(tmp_path):
    p = tmp_path / "docs.jsonl"
    texts = [f"doc {i}: some <s>struck</s> html and words </s> more words" for i in range(12)]
    p.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    D.prepare_data({"source": "jsonl", "path": str(p), "val_documents": 2,
                    "tokenizer": {"vocab_size": 300}}, tmp_path / "o", seed=0)
    tokens, offsets = D.load_tokens(tmp_path / "o", "train")
    assert int((np.asarray(tokens) == 1).sum()) == len(offsets) - 1
    assert int((np.asarray(tokens) == 2).sum()) == len(offsets) - 1


def test_determinism(prepared, tmp_path):
    out, m = prepared
    m2 = D.prepare_data(SMALL, tmp_path, seed=123)
    assert m2 == m
    for rel in m["files"]:
        assert (out / rel).read_bytes() == (tmp_path / rel).read_bytes(), rel
    assert (out / "manifest.json").read_bytes() == (tmp_path / "manifest.json").read_bytes()


# ---------------------------------------------------------------- other sources


def test_jsonl_source(tmp_path):
    docs = _corpus_head(20)
    p = tmp_path / "in.jsonl"
    p.write_text("".join(json.dumps({"id": f"x{i}", "text": d["text"]}) + "\n" for i, d in enumerate(docs)))
    m = D.prepare_data({"source": "jsonl", "path": str(p), "val_documents": 4,
                        "tokenizer": {"vocab_size": 400, "train_sample_bytes": 200_000}}, tmp_path / "o", seed=0)
    assert m["splits"]["val"]["n_documents"] == 4 and m["splits"]["train"]["n_documents"] == 16
    val_ids = [json.loads(x)["id"] for x in (tmp_path / "o" / "val_docs.jsonl").read_text().splitlines()]
    assert all(v.startswith("x") for v in val_ids)


def _fineweb_table(n: int):
    import pyarrow as pa

    docs = _corpus_head(n)
    return pa.table({
        "text": [d["text"] for d in docs],
        "id": [f"<urn:uuid:{i:08d}>" for i in range(n)],
        "dump": ["CC-MAIN-2024-10"] * n,
        "url": [f"https://example.org/{i}" for i in range(n)],
        "file_path": ["s3://commoncrawl/x.warc.gz"] * n,
        "language": ["en"] * n,
        "language_score": [0.97] * n,
        "token_count": [len(d["text"]) // 4 for d in docs],
        "score": [3.1] * n,
        "int_score": [3] * n,
    })


def test_fineweb_edu_local_parquet(tmp_path):
    import pyarrow.parquet as pq

    d = tmp_path / "sample" / "100BT"
    d.mkdir(parents=True)
    tbl = _fineweb_table(24)
    pq.write_table(tbl.slice(0, 12), d / "000_00000.parquet")
    pq.write_table(tbl.slice(12), d / "001_00000.parquet")
    cfg = {"source": "fineweb_edu", "path": str(tmp_path), "max_documents": 20, "val_documents": 4,
           "tokenizer": {"vocab_size": 400, "train_sample_bytes": 200_000}}
    texts = list(D.load_documents(cfg))
    assert texts == tbl.column("text").to_pylist()[:20]
    m = D.prepare_data(cfg, tmp_path / "o", seed=0)
    assert m["source"] == "fineweb_edu" and m["n_documents"] == 20
    val = [json.loads(x) for x in (tmp_path / "o" / "val_docs.jsonl").read_text().splitlines()]
    assert all(v["id"].startswith("<urn:uuid:") for v in val)
    # the same parquet file through the plain "jsonl" source (parquet reader)
    m2 = D.prepare_data({"source": "jsonl", "path": str(d / "000_00000.parquet"), "val_documents": 2,
                         "tokenizer": {"vocab_size": 300}}, tmp_path / "o2", seed=0)
    assert m2["n_documents"] == 12


def test_fineweb_edu_local_jsonl(tmp_path):
    tbl = _fineweb_table(10).to_pylist()
    p = tmp_path / "fw.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in tbl))
    texts = list(D.load_documents({"source": "fineweb_edu", "path": str(p)}))
    assert texts == [r["text"] for r in tbl]


def test_fineweb_edu_hub_offline_fails_fast(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(D.DataSourceUnavailableError) as ei:
        next(iter(D.load_documents({"source": "fineweb_edu"})))
    msg = str(ei.value)
    assert "HuggingFaceFW/fineweb-edu" in msg and "sample-100BT" in msg and "HF_HUB_OFFLINE" in msg


def test_fineweb_edu_hub_unreachable_fails_fast(monkeypatch):
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: connection refused
    with pytest.raises(D.DataSourceUnavailableError, match=r"HuggingFaceFW/fineweb-edu.*unreachable"):
        next(iter(D.load_documents({"source": "fineweb_edu"})))


def test_pretrained_tokenizer_offline_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    name = "meta-llama/Llama-2-7b-hf-not-cached"
    with pytest.raises(D.DataSourceUnavailableError, match="Llama-2-7b-hf-not-cached"):
        D.prepare_data({"max_documents": 4, "tokenizer": {"kind": "pretrained", "name": name}}, tmp_path / "o", seed=0)
    assert not (tmp_path / "o" / "tokens_train.npy").exists()


def test_pretrained_tokenizer_local_dir(prepared, tmp_path):
    out, _ = prepared
    m = D.prepare_data({"max_documents": 10, "val_documents": 2,
                        "tokenizer": {"kind": "pretrained", "name": str(out / "tokenizer")}}, tmp_path, seed=0)
    assert m["tokenizer"]["kind"] == "pretrained" and m["tokenizer"]["vocab_size"] == 512
    assert D.TokenDataset(tmp_path, "val")[0][0] == 1


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("cfg, exc, pattern", [
    ({"bogus": 1}, ValueError, "bogus"),
    ({"tokenizer": {"vocab": 100}}, ValueError, "vocab"),
    ({"source": "web"}, ValueError, "data.source"),
    ({"val_fraction": 1.5}, ValueError, "val_fraction"),
    ({"val_fraction": 0.1, "val_documents": 3}, ValueError, "val_documents"),
    ({"max_documents": 0}, ValueError, "max_documents"),
    ({"tokenizer": {"kind": "wordpiece"}}, ValueError, "tokenizer.kind"),
    ({"tokenizer": {"vocab_size": 10}}, ValueError, "vocab_size"),
    ({"tokenizer": {"kind": "pretrained"}}, ValueError, "tokenizer.name"),
    ({"source": "jsonl"}, ValueError, "data.path"),
    ({"source": "jsonl", "path": "/nonexistent/file.jsonl"}, FileNotFoundError, "/nonexistent/file.jsonl"),
    ({"corpus_path": "/nonexistent/corpus.jsonl.xz"}, FileNotFoundError, "corpus_path"),
    ({"source": "fineweb_edu", "path": "/nonexistent/fw/*.parquet"}, FileNotFoundError, "nonexistent"),
])
def test_config_errors_before_work(tmp_path, cfg, exc, pattern):
    out = tmp_path / "never"
    with pytest.raises(exc, match=pattern):
        D.prepare_data(cfg, out, seed=0)
    assert not out.exists()


def test_bad_records(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"text": "ok"}\n{"body": "no text"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2"):
        list(D.load_documents({"source": "jsonl", "path": str(p)}))
    with pytest.raises(ValueError, match="seed"):
        D.prepare_data({}, tmp_path / "o", seed="zero")


def test_schema_matches_defaults():
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((REPO / "workflow" / "schemas" / "data.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    v = jsonschema.Draft202012Validator(schema)
    assert not list(v.iter_errors(D.DEFAULTS))
    assert not list(v.iter_errors(SMALL))
    assert set(schema["properties"]) == set(D.DEFAULTS)
    assert set(schema["properties"]["tokenizer"]["properties"]) == set(D.DEFAULTS["tokenizer"])
    assert list(v.iter_errors({"bogus": 1}))


def test_cli_small_fineweb_offline_is_one_clear_error(tmp_path, monkeypatch):
    """configs/small-fineweb.yaml without the hub: exit 2, the missing resource named, no traceback."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "softpick", "data", "--config", str(root / "configs/small.yaml"),
                           "--config", str(root / "configs/small-fineweb.yaml")],
                          capture_output=True, text=True, cwd=tmp_path, env=env)
    assert proc.returncode == 2, proc.stderr
    assert "Llama-2-7b-hf" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "results" / "small-fineweb" / "data" / "tokens_train.npy").exists()


# ---------------------------------------------------------------- the corpus as an input (issue 15)


def test_manifest_records_the_corpus_and_verify_refuses_an_edit(tmp_path):
    docs = _corpus_head(12)
    corpus = tmp_path / "in.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"x{i}", "text": d["text"]}) + "\n" for i, d in enumerate(docs)))
    out = tmp_path / "o"
    m = D.prepare_data({"source": "jsonl", "path": str(corpus), "val_documents": 2,
                        "tokenizer": {"vocab_size": 300, "train_sample_bytes": 100_000}}, out, seed=0)
    assert m["corpus"] == [{"path": str(corpus), "bytes": corpus.stat().st_size, "sha256": _sha(corpus)}]
    assert json.loads((out / "manifest.json").read_text())["corpus"] == m["corpus"]
    D.verify_data_dir(out)
    # one document's text replaced in place, same length: only the sha256 tells
    text = corpus.read_text()
    lines = text.splitlines(keepends=True)
    at = lines[3].index('"text": "') + 9
    lines[3] = lines[3][:at] + lines[3][at:].replace("e", "E", 1)
    corpus.write_text("".join(lines))
    assert corpus.stat().st_size == m["corpus"][0]["bytes"]
    with pytest.raises(D.DataIntegrityError, match=rf"corpus file {corpus}: sha256 does not match the manifest"):
        D.verify_data_dir(out)
    corpus.write_text(text + json.dumps({"text": "one more"}) + "\n")
    with pytest.raises(D.DataIntegrityError, match=rf"corpus file {corpus} is \d+ bytes, the manifest records"):
        D.load_tokens(out, "train")
    corpus.unlink()  # results taken to a machine without the corpus: nothing to compare
    D.verify_data_dir(out)


def test_embedded_corpus_is_recorded_relative_to_the_checkout(prepared):
    _, m = prepared
    assert m["corpus"] == [{"path": "data/corpus/corpus.jsonl.xz", "bytes": CORPUS.stat().st_size,
                            "sha256": _sha(CORPUS)}]


def _data_dry_run(work: Path) -> str:
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--configfile",
                           "configs/default.yaml", "override.yaml", "--", "data"],
                          cwd=work, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def test_editing_a_jsonl_corpus_reruns_the_data_stage(tmp_path):
    """data.source jsonl: the corpus is an input of the data rule, so replacing a document's text after
    the data stage ran schedules it again (before: 'Nothing to be done' and the old tokens flowed on)."""
    import time

    import yaml

    work = tmp_path / "work"
    work.mkdir()
    for name in ("Snakefile", "workflow", "configs", "data", "src"):
        os.symlink(REPO / name, work / name)
    corpus = work / "my_corpus.jsonl"
    docs = _corpus_head(12)
    corpus.write_text("".join(json.dumps({"text": d["text"]}) + "\n" for d in docs))
    (work / "override.yaml").write_text(yaml.safe_dump(
        {"run_name": "corpus-edit", "data": {"source": "jsonl", "path": "my_corpus.jsonl"}}))
    # the data stage's outputs, newer than every input (as after a run)
    outputs = [f"results/corpus-edit/data/{name}" for name in
               ("manifest.json", "tokens_train.npy", "tokens_val.npy", "val_docs.jsonl", "tokenizer/tokenizer.json")]
    later = time.time() + 100
    for name in outputs + ["logs/corpus-edit/benchmarks/data.tsv"]:
        path = work / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}")
        os.utime(path, (later, later))
    lines = corpus.read_text().splitlines(keepends=True)
    corpus.write_text("".join([json.dumps({"text": "A replaced document."}) + "\n"] + lines[1:]))
    os.utime(corpus, (later + 50, later + 50))  # the edit: newer than the outputs
    jobs = _data_dry_run(work)
    # the only reason: the edited corpus (the outputs are otherwise complete and up to date)
    assert re.search(r"reason: Updated input files: my_corpus\.jsonl\n", jobs), jobs
