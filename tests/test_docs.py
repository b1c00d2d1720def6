"""The documentation stays usable: every relative link resolves, the docs index lists every page, and
no page or source file records the machine it was written on or narrates the project's history."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
CODE_DIRS = ("core", "app", "bench", "scripts", "tests", "configs")
TEXT_SUFFIXES = {".md", ".py", ".yaml", ".yml", ".json", ".jsonl", ".sh", ".sbatch", ".txt", ".toml", ".cfg", ".ini"}

# The patterns are spelled so that this file does not match them itself (examples of what they catch:
# test_the_patterns_catch_what_they_are_meant_to).
# An absolute path of the machine a file was written on: under the work, root or home folders
# (a path relative to the checkout or under ~ is fine).
MACHINE_PATH = re.compile(r"(?<![\w.~-])/(?:wor[k]|roo[t]|hom[e]/[^/\s]+|User[s]/[^/\s]+)/")
# Narration of the work's history instead of the product: numbered or "this" sessions, withdrawn claims.
NARRATION = re.compile(
    r"\bsessions? \d|\b(?:this|that|last|previous|next|earlier|a later) session\b|"
    r"\b(?:is|was|were|are|been) withdrawn\b|\bwe (?:first|then) tried\b",
    re.IGNORECASE,
)
LINK = re.compile(r"!?\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"`[^`\n]*`")


def _text_files() -> list[Path]:
    files = [ROOT / "README.md"]
    for folder in (DOCS, *(ROOT / d for d in CODE_DIRS)):
        for path in sorted(folder.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and \
                    (path.suffix.lower() in TEXT_SUFFIXES or path.parent.name == "cluster"):
                files.append(path)
    return files


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return ""


def _links(markdown: str) -> list[str]:
    """Link and image targets outside code blocks and code spans."""
    prose = CODE_SPAN.sub("", FENCE.sub("", markdown))
    return LINK.findall(prose)


def _offences(pattern: re.Pattern, files: list[Path]) -> list[str]:
    found = []
    for path in files:
        for number, line in enumerate(_read(path).splitlines(), 1):
            m = pattern.search(line)
            if m:
                found.append(f"{path.relative_to(ROOT)}:{number}: {m.group(0)!r} in {line.strip()[:120]!r}")
    return found


def test_the_patterns_catch_what_they_are_meant_to():
    """Guards the guards: the checks below must fail when such text is added."""
    for text in ("checkpoint: /wor" "k/runs/x/student.pt", "see /roo" "t/runs/teacher", "cd /hom" "e/alice/t3dnet",
                 "/User" "s/bob/data", "'/wor" "k/main/assets'"):
        assert MACHINE_PATH.search(text), text
    for text in ("../shared/data/x", "~/runs/t3dnet", "runs/work/x", "https://example.org/work/x", "/tmp/x.md",
                 "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4", "/shared/modelnet40_npy1024"):
        assert not MACHINE_PATH.search(text), text
    for text in ("measured in sessio" "n 4", "Sessio" "ns 2-3 runs", "written in this sessio" "n",
                 "the claim was withdraw" "n", "We first trie" "d a restart"):
        assert NARRATION.search(text), text
    for text in ("the end of a session", '@pytest.fixture(scope="session")', "onnx_session(path)",
                 "a SLURM job's 4 nodes"):
        assert not NARRATION.search(text), text
    assert _anchors("# A b\n## A b\n### Teacher: training\n```\n# not a heading\n```\n") == \
        {"a-b", "a-b-1", "teacher-training"}
    assert _links("[a](x.md) ![b](img/y.png \"t\") `[c](code.md)`\n```\n[d](fenced.md)\n```\n") == ["x.md", "img/y.png"]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_to_existing_files(page):
    broken = []
    for target in _links(page.read_text(encoding="utf-8")):
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.IGNORECASE) or target.startswith("#"):
            continue  # a URL (https:, mailto:) or an anchor on the same page
        path = target.split("#", 1)[0]
        if not (page.parent / path).exists():
            broken.append(target)
    assert not broken, f"{page.relative_to(ROOT)}: links to missing files: {broken}"


def _anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives a page's headings: lower case, punctuation dropped, spaces as
    hyphens, a repeated heading numbered (-1, -2, ...)."""
    anchors, counts = set(), {}
    for line in FENCE.sub("", markdown).splitlines():
        heading = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading:
            slug = re.sub(r"[^\w\- ]", "", heading.group(1).lower()).replace(" ", "-")
            n = counts.get(slug, 0)
            anchors.add(slug if n == 0 else f"{slug}-{n}")
            counts[slug] = n + 1
    return anchors


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_anchors_of_links_exist(page):
    broken = []
    for target in _links(page.read_text(encoding="utf-8")):
        if "#" not in target or re.match(r"[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):
            continue
        path, anchor = target.split("#", 1)
        linked = page.parent / path if path else page
        if linked.suffix == ".md" and linked.is_file() and anchor not in _anchors(linked.read_text(encoding="utf-8")):
            broken.append(target)
    assert not broken, f"{page.relative_to(ROOT)}: links to missing headings: {broken}"


def test_the_docs_index_lists_every_page():
    index = DOCS / "README.md"
    linked = {t.split("#", 1)[0] for t in _links(index.read_text(encoding="utf-8"))}
    missing = [p.name for p in sorted(DOCS.glob("*.md")) if p != index and p.name not in linked]
    assert not missing, f"docs/README.md does not list: {missing}"


def test_no_absolute_machine_paths():
    found = _offences(MACHINE_PATH, _text_files())
    assert not found, ("absolute paths of a machine (write them relative to the checkout or under ~):\n"
                       + "\n".join(found))


def test_no_history_narration():
    found = _offences(NARRATION, _text_files())
    assert not found, "narration of the work's history (say what the product does and what was measured):\n" \
        + "\n".join(found)
