"""The documentation holds together: README links every docs/ page, every relative link of README and docs/
resolves to a file of the checkout (and to a heading, when it names an anchor), README stays a few screens, and
no tracked file points outside the repository at the notes the project was built from."""
from __future__ import annotations

import ast
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = REPO / "docs"
README_MAX_BYTES = 8 * 1024
# spelled in pieces so that this file does not match itself
OUTSIDE_REFERENCES = ("PAPER" + ".md", ".." + "/shared")

FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.S | re.M)
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1", re.S)
LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)


def doc_pages() -> list[Path]:
    return sorted(DOCS.glob("*.md"))


def markdown_files() -> list[Path]:
    return [README, *doc_pages()]


def prose(text: str) -> str:
    """The text without fenced code blocks and code spans, where brackets are not links."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def links(path: Path) -> list[str]:
    return LINK.findall(prose(path.read_text(encoding="utf-8")))


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: link text kept, markup and punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for heading in HEADING.findall(FENCE.sub("", path.read_text(encoding="utf-8"))):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def broken_links(path: Path, root: Path = REPO) -> list[str]:
    problems = []
    for target in links(path):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto: ...
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if root.resolve() not in (dest, *dest.parents):
            problems.append(f"{target}: outside the repository")
        elif not dest.exists():
            problems.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            problems.append(f"{target}: no heading with anchor #{anchor} in {dest.relative_to(root.resolve())}")
    return problems


def test_slug_follows_github():
    assert slug("Why `snakemake --touch`") == "why-snakemake---touch"
    assert slug("The mechanism (Bigram-Backcopy)") == "the-mechanism-bigram-backcopy"
    assert slug("Quantization (v4 Fig. 3, Tables 8–10)") == "quantization-v4-fig-3-tables-810"
    assert slug("With the lm_eval command line") == "with-the-lm_eval-command-line"
    assert slug("How to add …") == "how-to-add-"


def test_the_checker_finds_broken_links(tmp_path):
    (tmp_path / "a.md").write_text("# Title\n\n## Part two\n\n[ok](#part-two) [ok](b.md) [bad](#nope) [gone](c.md) [up](../x.md)\n"
                                   "`[code](d.md)` and\n```\n[fenced](e.md)\n```\n[web](https://example.org)\n")
    (tmp_path / "b.md").write_text("# B\n")
    assert broken_links(tmp_path / "a.md", root=tmp_path) == ["#nope: no heading with anchor #nope in a.md", "c.md: no such file",
                                                           "../x.md: outside the repository"]


def test_readme_links_every_docs_page():
    assert doc_pages(), "docs/ has no pages"
    linked = {(README.parent / t.partition("#")[0]).resolve() for t in links(README)}
    missing = [p.name for p in doc_pages() if p.resolve() not in linked]
    assert not missing, f"README.md does not link docs/{', docs/'.join(missing)}"


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(path):
    assert not broken_links(path), f"{path.relative_to(REPO)}: " + "; ".join(broken_links(path))


def test_readme_stays_short():
    size = len(README.read_bytes())
    assert size <= README_MAX_BYTES, f"README.md is {size} bytes, over {README_MAX_BYTES}: move details to docs/"


def tracked_files() -> list[Path]:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    return [REPO / name for name in out.decode().split("\0") if name]


def test_no_tracked_file_refers_outside_the_repository():
    offenders = []
    for path in tracked_files():
        if path.is_symlink() or not path.is_file():
            continue
        data = path.read_bytes()
        offenders += [f"{path.relative_to(REPO)}: {ref}" for ref in OUTSIDE_REFERENCES if ref.encode() in data]
    assert not offenders, "files refer to notes outside the repository (cite docs/paper.md instead): " + ", ".join(offenders)


# Backticked repository paths and softpick modules named in README / docs must exist in the checkout.
REPO_PATH = re.compile(r"""(?<![\w./~-])((?:src|workflow|configs|scripts|tests|benchmarks|results|figures|data)/[^\s`'"()\[\]]*)""")
MODULE = re.compile(r"(?<![\w./-])(softpick(?:\.\w+)+)")
# run directories written by a run (not committed): a path under one is checked only when the run is in the checkout
RUN_OUTPUT_ROOTS = ("results", "figures")
GENERATED = ("data/corpus-large/corpus.jsonl.xz",)  # built by scripts/build_large_corpus.py, ignored by git


def backticked(text: str) -> list[str]:
    return [m.group(0).strip("`") for m in CODE_SPAN.finditer(text)]


def named_paths(text: str) -> list[str]:
    out = []
    for span in backticked(FENCE.sub("", text)):
        span = re.sub(r"--out[=\s]+\S+", "", span)  # what a command writes need not exist yet
        out += [p.rstrip(".,:;)") for p in REPO_PATH.findall(span)]
    return out


def named_modules(text: str) -> list[str]:
    return [m.rstrip(".") for span in backticked(FENCE.sub("", text)) for m in MODULE.findall(span)]


def is_pattern(path: str) -> bool:
    return any(c in path for c in "<>*{}[]") or "…" in path or "..." in path


def path_problem(path: str, root: Path = REPO) -> str | None:
    if is_pattern(path) or path in GENERATED:
        return None
    parts = path.rstrip("/").split("/")
    if parts[0] in RUN_OUTPUT_ROOTS and len(parts) > 1 and not (root / parts[0] / parts[1]).exists():
        return None  # a run's output that this checkout does not carry (results/tiny/ ...)
    return None if (root / path).exists() else f"{path}: no such file or directory"


def top_level_names(source: Path) -> dict[str, ast.AST]:
    names: dict[str, ast.AST] = {}
    for node in ast.parse(source.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names[node.name] = node
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                for leaf in ast.walk(target):
                    if isinstance(leaf, ast.Name):
                        names[leaf.id] = node
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                names[(alias.asname or alias.name).split(".")[0]] = node
    return names


def module_problem(dotted: str, root: Path = REPO) -> str | None:
    """softpick.a.b[.name[.attr]]: the longest module prefix must be a file of src/, the next name defined in it
    (and, for a class, the name after it one of its members)."""
    parts = dotted.split(".")
    base = root / "src"
    i = 0
    while i < len(parts) and ((base / parts[i]).is_dir() or (base / f"{parts[i]}.py").is_file()):
        base = base / parts[i]
        i += 1
    if i == len(parts):
        return None
    source = base / "__init__.py" if base.is_dir() else base.with_suffix(".py")
    if not source.is_file():
        return f"{dotted}: no module {'.'.join(parts[:i])}"
    names = top_level_names(source)
    node = names.get(parts[i])
    if node is None:
        return f"{dotted}: {'.'.join(parts[:i])} defines no {parts[i]}"
    if i + 1 < len(parts) and isinstance(node, ast.ClassDef):
        members = {n.name for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
        members |= {leaf.id for n in node.body if isinstance(n, (ast.Assign, ast.AnnAssign))
                    for leaf in ast.walk(n) if isinstance(leaf, ast.Name)}
        if parts[i + 1] not in members:
            return f"{dotted}: class {parts[i]} has no {parts[i + 1]}"
    return None


def stale_names(path: Path, root: Path = REPO) -> list[str]:
    text = path.read_text(encoding="utf-8")
    problems = [path_problem(p, root) for p in named_paths(text)]
    problems += [module_problem(m, root) for m in named_modules(text)]
    return sorted({p for p in problems if p})


def test_the_name_checker_finds_stale_names(tmp_path):
    (tmp_path / "src" / "softpick" / "pkg").mkdir(parents=True)
    (tmp_path / "src" / "softpick" / "__init__.py").write_text("")
    (tmp_path / "src" / "softpick" / "pkg" / "__init__.py").write_text("")
    (tmp_path / "src" / "softpick" / "pkg" / "mod.py").write_text("class Thing:\n    def go(self): ...\nVALUE = 1\n")
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "a.yaml").write_text("")
    (tmp_path / "results" / "kept").mkdir(parents=True)
    (tmp_path / "page.md").write_text(
        "`configs/a.yaml` `configs/b.yaml` `results/tiny/x.json` `results/kept/x.json` `configs/<scale>.yaml`\n"
        "`softpick.pkg.mod.Thing.go` `softpick.pkg.mod.VALUE` `softpick.pkg.mod.gone` `softpick.pkg.mod.Thing.stop`\n"
        "`python -m softpick.pkg` `softpick.nothing` `tool --out configs/new`\n```\nconfigs/c.yaml softpick.fenced\n```\n")
    assert stale_names(tmp_path / "page.md", root=tmp_path) == [
        "configs/b.yaml: no such file or directory", "results/kept/x.json: no such file or directory",
        "softpick.nothing: softpick defines no nothing", "softpick.pkg.mod.Thing.stop: class Thing has no stop",
        "softpick.pkg.mod.gone: softpick.pkg.mod defines no gone"]


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_backticked_repository_names_exist(path):
    stale = stale_names(path)
    assert not stale, f"{path.relative_to(REPO)} names what the checkout lacks: " + "; ".join(stale)
