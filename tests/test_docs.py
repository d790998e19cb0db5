"""The design documents under ``docs/`` and the citations of them.

Every ``docs/<name>.md §N`` in the repository's code, configs, scripts and Markdown files must name an existing
document and one of its numbered sections (a ``## N.`` heading); and no file may point at design documents that are
not in the repository: a citation of the architecture or corpora document without its ``docs/`` folder, or a path
into the read-only reference folder beside the checkout.
"""

from __future__ import annotations

import os
import re
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
THIS = Path(__file__).resolve()

#: folders never scanned, wherever they are (caches, git's own data)
SKIP_NAMES = {".git", "__pycache__", ".pytest_cache", ".ruff_cache"}
#: folders never scanned below the root besides those ``.gitignore`` names (outputs and prepared data)
SKIP_ROOT_PATHS = {"exp", "datasets/json_files"}
#: files whose ``docs/<name>.md §N`` citations are checked
CITING_SUFFIXES = {".py", ".sh", ".yaml", ".yml", ".md"}
#: binary files (audio, weights, images) skipped without reading
BINARY_SUFFIXES = {".wav", ".flac", ".mp3", ".ogg", ".pth", ".pt", ".ckpt", ".png", ".jpg", ".gz", ".zip", ".pyc"}

#: ``docs/architecture.md §9``, ``docs/corpora.md §12, §14``, ``docs/architecture.md §1 and §12``, ``docs/corpora.md``
CITATION = re.compile(r"docs/(?P<doc>[A-Za-z0-9_.-]+?\.md)(?P<sections>(?:(?:\s*,\s*|\s+and\s+|\s+)§\d+)*)")
SECTION = re.compile(r"^## (\d+)\. ", re.MULTILINE)
#: a design document cited without its folder: ``architecture.md`` / ``corpora.md`` not preceded by ``docs/`` (a
#: Markdown link's target, ``](corpora.md)`` in a document beside it, is a relative path: tests/test_readme.py checks
#: that it resolves)
BARE_DOC = re.compile(r"(?<!docs/)(?<!\]\()\b(?:architecture|corpora)\.md\b")
#: paths into the reference folder outside the repository
OUTSIDE = re.compile(r"\.\./shared\b|\bshared/design\b")


def _ignored_root_paths() -> set[str]:
    """Root-anchored entries of ``.gitignore`` without wildcards (``/exp/``, ``/vctk``, ...): never tracked."""
    paths = set(SKIP_ROOT_PATHS)
    gitignore = ROOT / ".gitignore"
    if gitignore.is_file():
        for line in gitignore.read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if line.startswith("/") and not any(c in line for c in "*?[!"):
                paths.add(line.strip("/"))
    return paths


@cache
def repository_files() -> tuple[Path, ...]:
    """The text files of the working tree that git would track (sorted), this test file excluded."""
    ignored = _ignored_root_paths()
    found = []
    for folder, dirs, names in os.walk(ROOT):  # symlinked folders (linked corpora) are not followed
        rel = Path(folder).relative_to(ROOT)
        dirs[:] = sorted(d for d in dirs if d not in SKIP_NAMES and (rel / d).as_posix() not in ignored)
        for name in names:
            path = Path(folder) / name
            if path.suffix.lower() in BINARY_SUFFIXES or path.resolve() == THIS or not path.is_file():
                continue
            if (rel / name).as_posix() in ignored:
                continue
            found.append(path)
    return tuple(sorted(found))


@cache
def read_text(path: Path) -> str | None:
    """The file as UTF-8 text, or ``None`` for a binary file."""
    data = path.read_bytes()
    if b"\0" in data[:8192]:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


@cache
def sections(doc: str) -> frozenset[int] | None:
    """The numbers of the ``## N.`` headings of ``docs/<doc>``, or ``None`` when the document does not exist."""
    path = DOCS / doc
    if not path.is_file():
        return None
    return frozenset(int(n) for n in SECTION.findall(path.read_text(encoding="utf-8")))


def _where(path: Path, text: str, offset: int) -> str:
    return f"{path.relative_to(ROOT).as_posix()}:{text.count(chr(10), 0, offset) + 1}"


def citations() -> list[tuple[str, str, list[int]]]:
    """``(file:line, document, [section numbers])`` of every ``docs/<name>.md`` citation in a citing file."""
    out = []
    for path in repository_files():
        if path.suffix.lower() not in CITING_SUFFIXES:
            continue
        text = read_text(path)
        if text is None:
            continue
        for m in CITATION.finditer(text):
            numbers = [int(n) for n in re.findall(r"§(\d+)", m.group("sections"))]
            out.append((_where(path, text, m.start()), m.group("doc"), numbers))
    return out


def test_documents_number_their_sections_consecutively():
    for doc in ("architecture.md", "corpora.md"):
        text = (DOCS / doc).read_text(encoding="utf-8")
        numbers = [int(n) for n in SECTION.findall(text)]
        assert numbers, f"docs/{doc} has no '## N.' section"
        assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), f"docs/{doc}: sections {numbers}"
        assert numbers[0] in (0, 1), f"docs/{doc} starts at section {numbers[0]}"


def test_documents_cite_only_what_exists_in_the_repository():
    """The documents' and the README's own references to files of the repository (paths in backquotes with a
    folder) exist."""
    missing = []
    for path in (ROOT / "README.md", *sorted(DOCS.glob("*.md"))):
        text = path.read_text(encoding="utf-8")
        for m in re.finditer(r"`((?:nets|datasets|separation|training|utils|dataprep|configs|tests|docs|benchmarks|"
                             r"tools|examples)/[A-Za-z0-9_./-]+\.(?:py|sh|yaml|md|wav))`", text):
            if not (ROOT / m.group(1)).is_file():
                missing.append(f"{path.relative_to(ROOT).as_posix()}: {m.group(1)}")
    assert not missing, "documents name files that do not exist:\n" + "\n".join(missing)


def test_citations_name_an_existing_document_and_section():
    found = citations()
    assert len(found) >= 50, f"only {len(found)} citations found: is the pattern still right?"
    problems = []
    for where, doc, numbers in found:
        known = sections(doc)
        if known is None:
            problems.append(f"{where}: docs/{doc} does not exist")
            continue
        problems += [f"{where}: docs/{doc} has no section §{n} (its sections: {min(known)}-{max(known)})"
                     for n in numbers if n not in known]
    assert not problems, "citations that lead nowhere:\n" + "\n".join(problems)


def test_nothing_cites_design_documents_outside_docs():
    problems = []
    for path in repository_files():
        text = read_text(path)
        if text is None:
            continue
        for pattern, what in ((BARE_DOC, "cites a design document without docs/"),
                              (OUTSIDE, "points outside the repository")):
            for m in pattern.finditer(text):
                start, end = text.rfind("\n", 0, m.start()) + 1, text.find("\n", m.start())
                line = text[start : len(text) if end < 0 else end]
                problems.append(f"{_where(path, text, m.start())}: {what}: {line.strip()[:100]}")
    assert not problems, "\n".join(problems)
