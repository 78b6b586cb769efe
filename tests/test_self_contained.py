"""The repository stands on its own: its text names no path outside it, and its citations of
the method document point at sections that exist.

Scanned: every tracked text file (``git ls-files``) of the kinds in ``SCANNED_SUFFIXES`` and
``SCANNED_NAMES``. The rules, each a function on one file's text (shown to fire on planted lines):

(a) The method document is ``docs/method.md``: outside ``docs/`` every mention says so; inside
    ``docs/`` the relative ``method.md`` is right too.
(b) "docs/method.md section N" (or "sections N and M", or "method.md N.M") names a section
    or subsection that exists: a ``## N.`` or ``### N.M`` heading of docs/method.md.
(c) No path outside the repository: ``../shared``, ``/work/``, a home directory
    (``/home/<user>``, ``/Users/<user>``, ``/root/``), or a relative markdown link that climbs
    out of the repository from the file's folder. (``~/.config/attrivue``, where the client
    keeps its token on the user's machine, is not a path of this repository's author.)
"""

from __future__ import annotations

import posixpath
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
METHOD = "docs/method.md"
SCANNED_SUFFIXES = (".py", ".md", ".ts", ".tsx", ".toml", ".yml", ".yaml", ".sh")
SCANNED_NAMES = ("Makefile", "Dockerfile")
# This file spells out the patterns it looks for.
NOT_SCANNED = ("tests/test_self_contained.py",)

_HEADING = re.compile(r"^(?:## (\d+)\.|### (\d+\.\d+)\b)", re.MULTILINE)
_MENTION = re.compile(r"method\.md")
_NUMBER = r"\d+(?:\.\d+)?"
_CITATION = re.compile(
    rf"method\.md,?[\s#/*]+(?:sections?\s+)?({_NUMBER}(?:(?:\s*,\s*|\s+and\s+|\s+or\s+){_NUMBER})*)"
)
_OUTSIDE = re.compile(r"\.\./shared\b|/work/|/home/\w|/Users/\w|/root/")
_MARKDOWN_LINK = re.compile(r"\]\(([^)\s]+)\)")


def method_sections(text: str) -> set[str]:
    """The section numbers of the method document: "3" for ``## 3. ...``, "6.1" for
    ``### 6.1 ...``."""
    return {a or b for a, b in _HEADING.findall(text)}


def _line(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def method_mentions(path: str, text: str) -> list[str]:
    """Rule (a): mentions of method.md that do not say ``docs/method.md`` (outside docs/)."""
    if path.startswith("docs/"):
        return []
    return [
        f"{path}:{_line(text, m.start())}: say {METHOD}"
        for m in _MENTION.finditer(text)
        if text[max(0, m.start() - 5) : m.start()] != "docs/"
    ]


def missing_sections(path: str, text: str, sections: set[str]) -> list[str]:
    """Rule (b): cited sections of the method document that it does not have."""
    found = []
    for m in _CITATION.finditer(text):
        for number in re.findall(_NUMBER, m.group(1)):
            if number not in sections:
                found.append(f"{path}:{_line(text, m.start())}: {METHOD} has no section {number}")
    return found


def outside_paths(path: str, text: str) -> list[str]:
    """Rule (c): paths that lead out of the repository."""
    found = [
        f"{path}:{_line(text, m.start())}: path outside the repository: {m.group(0)!r}"
        for m in _OUTSIDE.finditer(text)
    ]
    if path.endswith(".md"):
        for m in _MARKDOWN_LINK.finditer(text):
            target = m.group(1)
            if re.match(r"[a-z]+:|#|/", target):  # a URL, an anchor, or an absolute path
                continue
            resolved = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
            if resolved == ".." or resolved.startswith("../"):
                found.append(
                    f"{path}:{_line(text, m.start())}: link out of the repository: {target}"
                )
    return found


def problems(path: str, text: str, sections: set[str]) -> list[str]:
    return (
        method_mentions(path, text)
        + missing_sections(path, text, sections)
        + outside_paths(path, text)
    )


def tracked_text_files() -> list[str]:
    names = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split("\0")
    return [
        name
        for name in names
        if name
        and name not in NOT_SCANNED
        and (name.endswith(SCANNED_SUFFIXES) or Path(name).name in SCANNED_NAMES)
        and (REPO / name).is_file()
    ]


# -- the repository


@pytest.fixture(scope="module")
def sections() -> set[str]:
    return method_sections((REPO / METHOD).read_text(encoding="utf-8"))


def test_the_method_document_has_its_sections(sections: set[str]) -> None:
    assert {"1", "2", "3", "4", "5", "6", "6.1", "6.2", "6.3"} <= sections


def test_the_repository_is_self_contained(sections: set[str]) -> None:
    files = tracked_text_files()
    assert len(files) > 100 and "README.md" in files and "Makefile" in files
    found = []
    cited = 0
    for name in files:
        text = (REPO / name).read_text(encoding="utf-8")
        cited += len(_CITATION.findall(text))
        found += problems(name, text, sections)
    assert not found, "\n".join(found)
    assert cited > 20  # the citations are there, and the pattern sees them


# -- each rule fires on a planted line

SECTIONS = {"1", "3", "6", "6.1"}


def test_a_bare_method_md_outside_docs_is_reported() -> None:
    text = '"""Signs (method.md section 1).\n\nSee docs/method.md section 3."""\n'
    assert method_mentions("worker/x.py", text) == ["worker/x.py:1: say docs/method.md"]
    assert method_mentions("docs/guide.md", "[the method](method.md), method.md 6.1") == []


def test_a_missing_section_is_reported() -> None:
    text = (
        "# docs/method.md section 3, docs/method.md sections 1 and 6.1\n"
        "# docs/method.md section 6.2: no such subsection\n"
        "// (method.md 4) and docs/method.md\n// section 7.\n"
    )
    assert missing_sections("a.ts", text, SECTIONS) == [
        "a.ts:2: docs/method.md has no section 6.2",
        "a.ts:3: docs/method.md has no section 4",
        "a.ts:3: docs/method.md has no section 7",
    ]
    assert missing_sections("a.py", "docs/method.md section 6.1.", SECTIONS) == []


def test_headings_give_the_sections() -> None:
    text = "# Title\n## 1. Signs\n## 6. Axes\n### 6.1 Training\n### Notes\n#### 6.2 deep\n"
    assert method_sections(text) == {"1", "6", "6.1"}


@pytest.mark.parametrize(
    "line",
    [
        "see ../shared/data for the files",
        "cd /work/main && make",
        "cached in /home/alice/.cache",
        "open /Users/bob/data.nii.gz",
        "written to /root/out",
    ],
)
def test_a_path_outside_the_repository_is_reported(line: str) -> None:
    assert len(outside_paths("scripts/run.sh", f"# {line}\n")) == 1


def test_a_markdown_link_out_of_the_repository_is_reported() -> None:
    text = "[ok](docs/method.md) [ok](#signs) [web](https://example.org/x) [out](../notes.md)\n"
    assert outside_paths("README.md", text) == [
        "README.md:1: link out of the repository: ../notes.md"
    ]
    # From docs/, one level up is the repository root: fine; two levels leave it.
    assert outside_paths("docs/a.md", "[up](../README.md)") == []
    assert len(outside_paths("docs/a.md", "[out](../../x.md)")) == 1
    assert outside_paths("docs/api-guide.md", "the token in `~/.config/attrivue/token`") == []


def test_problems_gathers_every_rule() -> None:
    text = "method.md section 9 in /work/x\n"
    assert len(problems("bench/x.py", text, SECTIONS)) == 3
