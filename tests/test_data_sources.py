"""softpick.data.sources: each registered source on a tiny input, its errors (the bad key or missing file
named), the files it declares (the data rule's inputs, the manifest's corpus), the registry filling the
config schema's enum, and where the embedded corpus is found (checkout, repository, package)."""
from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import lzma
from pathlib import Path

import pytest

from softpick import config as C
from softpick import schema
from softpick.data import SOURCES, corpus_files, get_source, load_documents, normalize_data_config, prepare_data
from softpick.data import paths as P
from softpick.data.readers import DataIntegrityError, verify_data_dir

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "tests" / "data" / "golden_docs.jsonl"
RECORDS = [json.loads(line) for line in DOCS.read_text().splitlines()]
TEXTS = [r["text"] for r in RECORDS]
TINY_BPE = {"kind": "bpe", "vocab_size": 300, "train_sample_bytes": 0}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _parquet(path: Path, records: list[dict]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"id": [r.get("id", f"row{i}") for i, r in enumerate(records)],
                             "text": [r["text"] for r in records]}), path)
    return path


# ----------------------------------------------------------------------------- the registry and the schema
def test_registry_fills_the_schema_enum():
    raw = json.loads((ROOT / "workflow" / "schemas" / "data.schema.json").read_text())["properties"]["source"]
    assert "enum" not in raw and raw["x-enum-from"] == "data.sources"  # not listed by hand
    source = C.load_schema()["properties"]["data"]["properties"]["source"]
    assert source["enum"] == list(SOURCES) == ["embedded", "jsonl", "fineweb_edu", "slimpajama_val"]
    assert all(f"{name} (" in source["description"] for name in SOURCES)


def test_a_registered_source_is_a_valid_config_value(monkeypatch):
    extra = dataclasses.replace(SOURCES["jsonl"], name="my_jsonl")
    monkeypatch.setitem(SOURCES, "my_jsonl", extra)
    assert "my_jsonl" in C.load_schema()["properties"]["data"]["properties"]["source"]["enum"]
    cfg = normalize_data_config({"source": "my_jsonl", "path": str(DOCS)})
    assert get_source(cfg["source"]) is extra
    monkeypatch.delitem(SOURCES, "my_jsonl")
    with pytest.raises(C.ConfigError, match=r"config key 'data.source': 'my_jsonl' is not one of"):
        normalize_data_config({"source": "my_jsonl", "path": str(DOCS)})


def test_unknown_registry_in_a_schema_is_named():
    with pytest.raises(ValueError, match="unknown registry 'nope'"):
        schema._fill_enums({"properties": {"x": {"x-enum-from": "nope"}}})


# ----------------------------------------------------------------------------- each source on a tiny input
def test_embedded_reads_its_corpus_path(tmp_path):
    corpus = tmp_path / "corpus.jsonl.xz"
    with lzma.open(corpus, "wt", encoding="utf-8") as f:
        for r in RECORDS[:6]:
            f.write(json.dumps({"id": r.get("id", "x"), "source": "s", "title": "t", "text": r["text"]}) + "\n")
    cfg = {"corpus_path": str(corpus), "max_documents": 5}
    assert list(load_documents(cfg)) == TEXTS[:5]
    assert corpus_files(cfg) == [str(corpus)]
    m = prepare_data({**cfg, "val_documents": 1, "tokenizer": TINY_BPE}, tmp_path / "o", seed=0)
    assert m["n_documents"] == 5 and m["corpus"] == [{"path": str(corpus), "bytes": corpus.stat().st_size,
                                                      "sha256": _sha(corpus)}]


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz", ".parquet"])
def test_jsonl_reads_one_file(tmp_path, suffix):
    path = tmp_path / f"docs{suffix}"
    if suffix == ".parquet":
        _parquet(path, RECORDS)
    else:
        with (gzip.open if suffix.endswith(".gz") else open)(path, "wt", encoding="utf-8") as f:
            f.write(DOCS.read_text())
    cfg = {"source": "jsonl", "path": str(path)}
    assert list(load_documents(cfg)) == TEXTS
    assert corpus_files(cfg) == [str(path)]


def test_fineweb_edu_reads_a_directory_a_glob_or_a_list(tmp_path):
    d = tmp_path / "fw"
    d.mkdir()
    _parquet(d / "000.parquet", RECORDS[:7])
    _parquet(d / "001.parquet", RECORDS[7:])
    for path in (str(d), str(d / "*.parquet"), [str(d / "000.parquet"), str(d / "001.parquet")]):
        cfg = {"source": "fineweb_edu", "path": path}
        assert list(load_documents(cfg)) == TEXTS, path
        assert corpus_files(cfg) == [str(d / "000.parquet"), str(d / "001.parquet")]
    assert corpus_files({"source": "fineweb_edu"}) == []  # the hub: no local input


def test_slimpajama_val_keeps_dataset_order_and_records_its_files(tmp_path):
    """The first val_documents non-empty documents are the validation split; the local copy it read is
    listed in the manifest (and is the data rule's input), so an edit is caught like any corpus's."""
    tok = tmp_path / "tok"
    prepare_data({"source": "jsonl", "path": str(DOCS), "val_documents": 2, "tokenizer": TINY_BPE}, tmp_path / "t", 0)
    copy = tmp_path / "val.jsonl"
    copy.write_text(DOCS.read_text())
    (tmp_path / "t" / "tokenizer").rename(tok)
    cfg = {"source": "slimpajama_val", "path": str(copy), "val_documents": 3, "val_fraction": None,
           "max_documents": 8, "tokenizer": {"kind": "pretrained", "name": str(tok)}}
    kept = [t for t in TEXTS if t.strip()]
    assert list(load_documents(cfg)) == kept[:8]
    m = prepare_data(cfg, tmp_path / "o", seed=5)
    val = [json.loads(x)["text"] for x in (tmp_path / "o" / "val_docs.jsonl").read_text().splitlines()]
    assert val == kept[:3] and m["splits"]["train"]["n_documents"] == 5 and m["skipped_empty_documents"] == 1
    assert m["dataset"] is None and corpus_files(cfg) == [str(copy)]
    assert m["corpus"] == [{"path": str(copy), "bytes": copy.stat().st_size, "sha256": _sha(copy)}]
    copy.write_text(DOCS.read_text().replace("Sonnet", "SONNET", 1))
    with pytest.raises(DataIntegrityError, match=rf"corpus file {copy}: sha256 does not match"):
        verify_data_dir(tmp_path / "o")


# ----------------------------------------------------------------------------- errors name the key / file
@pytest.mark.parametrize("cfg, exc, named", [
    ({"source": "embedded", "corpus_path": "/no/corpus.jsonl.xz"}, FileNotFoundError, "data.corpus_path: .*/no/corpus"),
    ({"source": "jsonl"}, ValueError, "data.path is required when data.source is 'jsonl'"),
    ({"source": "jsonl", "path": "/no/docs.jsonl"}, FileNotFoundError, "data.path: .*/no/docs.jsonl"),
    ({"source": "jsonl", "path": str(DOCS.parent)}, FileNotFoundError, "data.path: file not found"),
    ({"source": "jsonl", "path": str(ROOT / "pyproject.toml")}, ValueError, "unsupported file type 'pyproject.toml'"),
    ({"source": "fineweb_edu", "path": "/no/fw"}, FileNotFoundError, "data.path: file not found: /no/fw"),
    ({"source": "fineweb_edu", "path": [str(DOCS), str(ROOT / "pyproject.toml")]}, ValueError,
     "data.path: files must all be"),
    ({"source": "slimpajama_val", "val_fraction": None, "tokenizer": {"kind": "pretrained", "name": "x"}}, ValueError,
     "data.val_documents is required when data.source is 'slimpajama_val'"),
    ({"source": "slimpajama_val", "val_documents": 4, "path": "/no/sp.jsonl", "tokenizer": {"kind": "pretrained", "name": "x"}},
     FileNotFoundError, "data.path: file not found: /no/sp.jsonl"),
    ({"source": "slimpajama_val", "val_documents": 4}, ValueError, "data.tokenizer: source 'slimpajama_val'"),
    ({"source": "jsonl", "path": str(DOCS), "nme": 1}, ValueError, "unknown config key 'data.nme'"),
    ({"source": "jsonl", "path": str(DOCS), "max_documents": "all"}, ValueError, "config key 'data.max_documents'"),
    ({"val_fraction": None}, ValueError, "data.val_fraction must be a number in \\(0, 1\\) when data.val_documents is null"),
])
def test_bad_config_names_the_key_or_file(tmp_path, cfg, exc, named):
    with pytest.raises(exc, match=named):
        prepare_data(cfg, tmp_path / "o", seed=0)
    assert not (tmp_path / "o").exists()


def test_bad_record_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "fine"}\n{"text": 3}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: record has no string 'text' field"):
        list(load_documents({"source": "jsonl", "path": str(path)}))
    pq = _parquet(tmp_path / "no_text.parquet", RECORDS[:2])
    import pyarrow.parquet

    pyarrow.parquet.write_table(pyarrow.parquet.read_table(pq).rename_columns(["id", "body"]), pq)
    with pytest.raises(ValueError, match=r"no_text.parquet: parquet file has no 'text' column"):
        list(load_documents({"source": "jsonl", "path": str(pq)}))


# ----------------------------------------------------------------------------- where the embedded corpus is found
def test_embedded_corpus_found_in_checkout_repository_or_package(tmp_path, monkeypatch):
    default = "data/corpus/corpus.jsonl.xz"
    packaged = P.PACKAGE_DIR / "_resources" / "corpus" / "corpus.jsonl.xz"
    assert packaged.is_file() and _sha(packaged) == _sha(ROOT / default)
    monkeypatch.chdir(tmp_path)
    assert P.resolve_path(default) == ROOT / default  # the repository of this source tree
    monkeypatch.setattr(P, "REPO_ROOT", None)  # an installed copy: no source tree
    assert P.resolve_path(default) == packaged
    assert P.shown_path(P.resolve_path(default)) == default  # the manifest / data rule name it as configured
    assert corpus_files({}) == [default]
    own = tmp_path / default  # a checkout in the working directory takes precedence
    own.parent.mkdir(parents=True)
    own.write_bytes(b"")
    assert P.resolve_path(default) == Path(default) and corpus_files({}) == [default]
    assert P.resolve_path("data/corpus/other.jsonl") == Path("data/corpus/other.jsonl")  # missing: as given
