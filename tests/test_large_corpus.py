"""scripts/build_large_corpus.py: the cleaners on tiny inline fixtures, dedup, the sha256 check and a
deterministic build from a tiny archive (no network, no external tools)."""
import hashlib
import importlib.util
import io
import json
import lzma
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("build_large_corpus", REPO / "scripts" / "build_large_corpus.py")
blc = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = blc  # dataclasses look their module up there
_spec.loader.exec_module(blc)


def _tgz(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


# --- Brown: POS tags -------------------------------------------------------------------------------

def test_strip_pos_tags_gives_running_text():
    tagged = ("\n\n\tThe/at Fulton/np-tl County/nn-tl jury/nn said/vbd ``/`` no/at evidence/nn ''/'' "
              "was/bedz found/vbn in/in Atlanta's/np$ election/nn ./.\n\n\n"
              "\tIt/pps did/dod n't/* end/vb ,/, though/cs ./.\n")
    out = blc.strip_pos_tags(tagged)
    assert out == ("The Fulton County jury said \u201cno evidence\u201d was found in Atlanta's election.\n\n"
                   "It didn't end, though.")
    assert "/" not in out


# --- SpamAssassin: headers and spam --------------------------------------------------------------

HAM = (b"From nobody Mon Sep  9 00:00:00 2002\nReturn-Path: <a@b.org>\nSubject: apt question\n"
       b"MIME-Version: 1.0\nContent-Type: multipart/alternative; boundary=\"XX\"\n\n"
       b"--XX\nContent-Type: text/plain; charset=us-ascii\n\nHow do I hold the kernel packages?\n"
       b"Thanks.\n-- \nsignature line\n--XX\nContent-Type: text/html\n\n<p>HTML copy</p>\n--XX--\n")
SPAM = b"Subject: WIN MONEY\nContent-Type: text/plain\n\nClick here to win a million dollars now.\n"


def test_mail_body_drops_headers_html_and_signature():
    body = blc.mail_body(HAM)
    assert "How do I hold the kernel packages?" in body
    for gone in ("Return-Path", "Subject:", "MIME-Version", "HTML copy", "signature line"):
        assert gone not in body
    assert blc.mail_body(b"Subject: x\nContent-Type: text/html\n\n<p>only html</p>\n") is None


def test_spam_assassin_keeps_ham_only(tmp_path):
    arc = _tgz(tmp_path / "sa.tgz", {"package/data/easy-ham-1/00001.abc.txt": HAM,
                                     "package/data/spam-1/00001.def.txt": SPAM,
                                     "package/data/easy-ham-1/00001.abc.json": b"{}"})
    docs = list(blc.extract_spam_assassin(blc.Unpacked(arc, tmp_path)))
    assert [d["id"] for d in docs] == ["spam_assassin_ham/easy-ham-1/00001"]
    assert "million dollars" not in json.dumps(docs)


# --- SWORD: OSIS / ThML markup, duplicate verses ------------------------------------------------------

def test_strip_markup_osis_and_thml():
    osis = ('<w lemma="strong:H0430">In</w> <w lemma="strong:H7225">beginning</w>, <w>God</w>'
            '<note placement="foot"><reference type="annotateRef">1:1 </reference>The Hebrew word is '
            '\u201cElohim\u201d.</note><w>created</w> the <hi type="bold">earth</hi>.')
    assert blc.normalise(blc.strip_markup(osis)) == "In beginning, God created the earth."
    thml = ('<p>See <scripRef passage="Gen 1:1">Genesis 1:1</scripRef>; it is <i>plain</i> &amp; clear'
            '<note n="1">a footnote</note>.</p><p>Second paragraph.</p>')
    assert blc.normalise(blc.strip_markup(thml)) == "See Genesis 1:1; it is plain & clear.\n\nSecond paragraph."


def test_sword_chapters_drop_duplicate_verses():
    block = '<div type="x-p"/>Verses 1-3 <hi>Light</hi> was made.<lb/>A second paragraph.'
    imp = ("$$$[ Testament 1 Heading ]\n\n$$$Genesis 1:1\n" + block + "\n$$$Genesis 1:2\n" + block
           + "\n$$$Genesis 1:3\n" + block + "\n$$$Genesis 2:1\nThe heavens were finished.\n"
           "$$$Genesis 2:2\nThe heavens were finished.\n")
    chapters = blc.sword_chapters(imp)
    assert chapters == [("Genesis 1", "Verses 1-3 Light was made.\nA second paragraph."),
                        ("Genesis 2", "The heavens were finished.")]


# --- RST ----------------------------------------------------------------------------------------------

RST = """.. SPDX-License-Identifier: GPL-2.0

.. _pci-howto:

==========
PCI howto
==========

.. toctree::
   :maxdepth: 1

   sysfs-pci
   msi-howto

Call :c:func:`pci_enable_device` before :ref:`touching it <pci-howto>`; see
`the spec <https://pcisig.com>`_.

.. note:: Read the errata.

.. kernel-doc:: drivers/pci/pci.c
   :export:

Done.
"""


def test_clean_rst():
    out = blc.normalise(blc.clean_rst(RST))
    assert out == ("PCI howto\n\nCall pci_enable_device before touching it; see\nthe spec.\n\n"
                   "Read the errata.\n\nDone.")


# --- other cleaners -------------------------------------------------------------------------------------

def test_clean_gcide_pod_asciidoc_wordnet():
    entry = ('Abjure \\Ab*jure"\\, v. t. [L. abjurare.]\n   1. To renounce upon oath; see {Jury}.\n'
             '      [1913 Webster]\n')
    assert blc.normalise(blc.clean_gcide(entry)) == "Abjure Abjure, v. t. [L. abjurare.]\n1. To renounce upon oath; see Jury."
    pod = "=head1 NAME\n\nperlfoo - use B<bold> and C<< $x->y >> see L<perlsyn|perlsyn/For>\n\n=over 4\n\n=item *\n\nOne E<lt>2\n\n=back\n\n=cut\n"
    assert blc.normalise(blc.clean_pod(pod)) == "NAME\n\nperlfoo - use bold and $x->y see perlsyn\n\nOne <2"
    adoc = "git-add(1)\n==========\n\n:doctype: manpage\n\nSee linkgit:git-rm[1].\n----\ncode\n----\n"
    assert blc.normalise(blc.clean_asciidoc(adoc)) == "git-add(1)\n\nSee git-rm(1).\ncode"
    line = "00001740 03 n 02 entity 0 physical_thing(a) 0 001 ~ 00001930 n 0000 | that which exists  \n"
    assert list(blc.wordnet_glosses("  1 licence header\n" + line)) == [(3, "entity, physical thing: that which exists")]
    page = ('<html><head><title>T</title></head><body><div class="navheader"><a>Prev</a></div>'
            '<p>Hello <b>world</b>.</p><div class="navfooter"><a>Next</a></div></body></html>')
    assert blc.normalise(blc.html_to_text(page)) == "Hello world."


def test_chunk_paragraphs_bounds_and_content():
    paras = [("word " * n).strip() for n in (30, 5, 60, 2, 70)]
    text = "\n\n".join(paras)
    pieces = blc.chunk_paragraphs(text, max_chars=400)
    assert len(pieces) > 1 and all(len(p) <= 400 for p in pieces)
    assert "\n\n".join(pieces) == text
    lines = "\n".join(f"line {i}" for i in range(200))  # one paragraph longer than the limit
    pieces = blc.chunk_paragraphs(lines, max_chars=100)
    assert all(len(p) <= 100 for p in pieces) and "\n".join(pieces) == lines


# --- dedup, near-empty --------------------------------------------------------------------------------

def test_finalise_and_deduplicate():
    long = "A sentence of reasonable length. " * 10
    raw = [blc.doc("s", "a", "A", long), blc.doc("s", "b", "B", "  " + long.replace(" ", "  ") + "\n\n\n"),
           blc.doc("t", "c", "C", "too short"), blc.doc("t", "d", "D", long + " More.")]
    kept, dropped = blc.deduplicate(blc.finalise(raw))
    assert [d["id"] for d in kept] == ["s/a", "t/d"]  # b equals a after normalisation; c is near-empty
    assert dropped == 1


# --- archives: sha256, deterministic build -----------------------------------------------------------

def _tiny_source(tmp_path: Path, monkeypatch) -> Path:
    arcdir = tmp_path / "archives"
    arcdir.mkdir()
    books = {f"package/gutenberg/author-book{i}.txt": (f"[Book {i}]\n\n" + f"Text of book {i}. " * 40).encode()
             for i in (2, 1, 3)}
    books["package/gutenberg/melville-moby_dick.txt"] = b"[Moby Dick]\n\n" + b"Call me Ishmael. " * 40
    books["package/gutenberg/author-copy.txt"] = books["package/gutenberg/author-book1.txt"]
    arc = _tgz(arcdir / "tiny-1.0.tgz", books)
    archive = blc.Archive("npm", "tiny", "1.0", arc.name, hashlib.sha256(arc.read_bytes()).hexdigest(), "CC0")
    monkeypatch.setattr(blc, "SOURCES", {"gutenberg": blc.Source(archive, blc.extract_gutenberg, "nothing")})
    return arcdir


def test_sha256_mismatch_names_the_archive(tmp_path, monkeypatch):
    arcdir = _tiny_source(tmp_path, monkeypatch)
    (arcdir / "tiny-1.0.tgz").write_bytes(b"corrupted")
    out = tmp_path / "out"
    with pytest.raises(blc.ArchiveError, match=r"sha256 mismatch for archive tiny-1\.0\.tgz"):
        blc.build(out, arcdir, None, log=lambda m: None)
    assert not (out / "corpus.jsonl.xz").exists()
    assert blc.main(["--archives", str(arcdir), "--out-dir", str(out)]) == 2
    (arcdir / "tiny-1.0.tgz").unlink()
    with pytest.raises(blc.ArchiveError, match=r"tiny-1\.0\.tgz .*not found"):
        blc.build(out, arcdir, None, log=lambda m: None)


def test_build_is_deterministic_and_readable_by_the_data_stage(tmp_path, monkeypatch):
    from softpick.data.sources.files import iter_jsonl as _iter_jsonl

    arcdir = _tiny_source(tmp_path, monkeypatch)
    m1 = blc.build(tmp_path / "a", arcdir, None, log=lambda m: None)
    m2 = blc.build(tmp_path / "b", arcdir, None, log=lambda m: None)
    a, b = (tmp_path / d / "corpus.jsonl.xz" for d in "ab")
    assert a.read_bytes() == b.read_bytes()
    assert m1["xz_sha256"] == m2["xz_sha256"] == hashlib.sha256(a.read_bytes()).hexdigest()
    recs = [json.loads(line) for line in lzma.open(a, "rt", encoding="utf-8")]
    assert [r["id"] for r in recs] == ["gutenberg/author-book1", "gutenberg/author-book2", "gutenberg/author-book3"]
    assert all(set(r) == {"id", "source", "title", "text"} and r["source"] == "gutenberg" for r in recs)
    assert m1["duplicates_dropped"] == 1 and m1["sources"]["gutenberg"]["documents"] == 3
    assert [i for i, _ in _iter_jsonl(a)] == [r["id"] for r in recs]
    assert "tiny-1.0.tgz" in (tmp_path / "a" / "SOURCES.md").read_text()


def test_boilerplate_lines_and_english_filter():
    pages = [blc.doc("h", f"p{i}", "P", f"Home\nAbout\nPage {i} explains topic {i} in detail.\nFooter") for i in range(30)]
    pages.append(blc.doc("h", "odd", "P", "Home\nA page that only shares the menu."))
    cleaned = blc.drop_boilerplate_lines(pages)
    assert cleaned[3]["text"] == "Page 3 explains topic 3 in detail."
    assert cleaned[-1]["text"] == "A page that only shares the menu."
    assert blc.drop_boilerplate_lines(pages[:5]) == pages[:5]  # too few pages to tell
    assert blc.looks_english("This is the manual of the package, and it explains how to use it in a document.")
    assert not blc.looks_english("Dieses Paket stellt Befehle bereit, mit denen man Glossen setzen kann.")
    assert not blc.looks_english("Ce paquet fournit des commandes pour composer des gloses interlinéaires.")


def _dry_run(tmp_path: Path, data: dict, name: str = "override.yaml") -> str:
    import subprocess

    import yaml

    override = tmp_path / name
    override.write_text(yaml.safe_dump({"run_name": f"lc-dag-{tmp_path.name}", "data": data}))
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--configfile",
                           "configs/default.yaml", str(override), "--", "data"],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def test_data_rule_needs_the_large_corpus_only_when_configured(tmp_path):
    """The tiny default never schedules the large-corpus build; corpus_path under data/corpus-large
    makes that file an input of the data job (built by large_corpus when it is missing)."""
    from conftest import run_concurrently

    tiny, large = run_concurrently(  # two dry runs side by side (no lock, no log file)
        lambda: _dry_run(tmp_path, {"corpus_path": "data/corpus/corpus.jsonl.xz"}, "tiny.yaml"),
        lambda: _dry_run(tmp_path, {"corpus_path": "data/corpus-large/corpus.jsonl.xz"}, "large.yaml"))
    assert "large_corpus" not in tiny and blc.OUT_DIR.name not in tiny
    data_job = large[large.index("rule data:"):]
    assert "data/corpus-large/corpus.jsonl.xz" in data_job.split("output:")[0]
    assert ("rule large_corpus:" in large) == (not (blc.OUT_DIR / "corpus.jsonl.xz").is_file())
