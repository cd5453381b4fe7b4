"""The data stage's output, byte for byte: each source on a tiny input is run through the stage entry
(softpick.cli.run_stage "data") and the sha256 of every file it writes (token and offset files, the
tokenizer JSON, val_docs.jsonl) and the manifest's fields are compared with tests/data/data_golden.json.

A refactor of softpick.data must leave these unchanged. The recorded hashes depend on the tokenizers /
numpy versions of the environment; after a deliberate change of the output (or a new tokenizers release),
rewrite the file with `python tests/test_data_golden.py --write` and commit it with the reason.
"""
from __future__ import annotations

import copy
import hashlib
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "data" / "data_golden.json"
DOCS = "tests/data/golden_docs.jsonl"  # relative: found through the repository root from any directory
TOKENIZER_FROM = "embedded"  # slimpajama_val reads the tokenizer the embedded case trained
MASKED = "<tokenizer dir of the embedded case>"

# case -> (seed, data section); the embedded one is configs/test.yaml's setting
CASES: dict[str, tuple[int, dict]] = {
    "embedded": (1234, {"source": "embedded", "corpus_path": "data/corpus/corpus.jsonl.xz", "max_documents": 40,
                        "val_fraction": 0.1,
                        "tokenizer": {"kind": "bpe", "vocab_size": 512, "train_sample_bytes": 400_000}}),
    "jsonl": (7, {"source": "jsonl", "path": DOCS, "val_documents": 3, "val_fraction": None,
                  "tokenizer": {"kind": "bpe", "vocab_size": 300, "train_sample_bytes": 0}}),
    "fineweb_edu": (3, {"source": "fineweb_edu", "path": DOCS, "max_documents": 12, "val_fraction": 0.25,
                        "tokenizer": {"kind": "bpe", "vocab_size": 300, "train_sample_bytes": 5000}}),
    "slimpajama_val": (0, {"source": "slimpajama_val", "path": DOCS, "val_documents": 4, "val_fraction": None,
                           "max_documents": 10, "tokenizer": {"kind": "pretrained", "name": None}}),
}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _mask(manifest: dict, tokenizer_dir: str) -> dict:
    """The manifest with the machine-specific tokenizer directory replaced by a placeholder."""
    text = json.dumps(manifest, sort_keys=True).replace(json.dumps(tokenizer_dir)[1:-1], MASKED)
    return json.loads(text)


def run_cases(root: Path) -> dict:
    """Run every case through the data stage under root; return {case: {"manifest", "sha256"}}."""
    from softpick import cli
    from softpick.config import load_config

    base = load_config([str(ROOT / "configs" / "test.yaml")])
    out: dict = {}
    tokenizer_dir = str(root / "results" / TOKENIZER_FROM / "data" / "tokenizer")
    for case, (seed, data) in CASES.items():
        data = copy.deepcopy(data)
        if data["tokenizer"]["kind"] == "pretrained":
            data["tokenizer"]["name"] = tokenizer_dir
        config = {**copy.deepcopy(base), "run_name": case, "seed": seed, "data": data}
        cli.run_stage("data", config, root=root)
        data_dir = root / "results" / case / "data"
        manifest = json.loads((data_dir / "manifest.json").read_text())
        files = sorted(p for p in data_dir.rglob("*") if p.is_file() and p.name != "manifest.json")
        out[case] = {"manifest": _mask(manifest, tokenizer_dir),
                     "sha256": {p.relative_to(data_dir).as_posix(): _sha(p) for p in files}}
    return out


@pytest.fixture(scope="module")
def produced(tmp_path_factory):
    work = tmp_path_factory.mktemp("golden")
    mp = pytest.MonkeyPatch()
    mp.chdir(work)  # not the checkout: relative inputs are found through the repository root
    try:
        yield run_cases(work)
    finally:
        mp.undo()


@pytest.mark.parametrize("case", list(CASES))
def test_data_stage_output_is_unchanged(produced, case):
    expected = json.loads(GOLDEN.read_text())[case]
    got = produced[case]
    assert got["sha256"] == expected["sha256"], f"{case}: files differ from {GOLDEN.name}"
    for key in sorted(set(expected["manifest"]) | set(got["manifest"])):
        assert got["manifest"].get(key) == expected["manifest"].get(key), f"{case}: manifest key {key!r}"
    assert {"tokens_train.npy", "tokens_val.npy", "docs_train.npy", "docs_val.npy", "val_docs.jsonl",
            "tokenizer/tokenizer.json"} <= set(got["sha256"])
    assert all(got["sha256"][name] == sha for name, sha in got["manifest"]["files"].items())


if __name__ == "__main__":  # python tests/test_data_golden.py --write
    import tempfile

    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python tests/test_data_golden.py --write")
    import os

    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        GOLDEN.write_text(json.dumps(run_cases(Path(tmp)), indent=1, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN}")
