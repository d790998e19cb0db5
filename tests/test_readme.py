"""The README and the documents under ``docs/`` run and lead somewhere.

- Every Python and shell snippet (a fenced block in ``python``, ``sh`` or ``bash``) runs as written in a fresh copy of
  the repository (the bundled files only), or is marked, just above its fence, with what it needs
  (``<!-- needs: ... -->``: network, GPUs, corpora, hours). Blocks in another language (``text``, ``bibtex``, a
  bare fence) are illustrations and are not run. The README's first API snippet runs from a folder outside the
  repository, with the repository on ``PYTHONPATH`` (model names are found from any working directory).
- Every relative link of these files names an existing file, and its ``#anchor`` a heading of that file (GitHub's
  heading ids).
- The README stays a newcomer's page (at most 300 lines), and no document tells how the software was developed.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CODE_LANGS = {"python", "sh", "bash"}
FENCE = re.compile(r"(?:<!-- needs: (?P<needs>[^>]*?) -->\n)?```(?P<lang>\w*)\n(?P<body>.*?)```", re.S)
# what a fresh clone does not hold (caches, runs, built corpora and manifests); everything else is copied
ANYWHERE = {".git", "__pycache__", ".ruff_cache", ".pytest_cache"}
AT = {ROOT: {"exp", "demo", "out", "out_onnx", "audio_outputs"}, ROOT / "datasets": {"json_files"}}
#: what running a snippet leaves, checked after it ran: (text of the snippet, folder, the files it holds)
OUTPUTS = [
    ("separate_file(", "out/wav", ["mix.wav", "musicbg2.wav", "residual.wav", "sfxbg1.wav", "speech0.wav"]),
    ("--audio_output_dir out/demo_cass", "out/demo_cass/wav",
     ["mix.wav", "musicbg3.wav", "sfx1.wav", "sfx2.wav", "speech0.wav"]),
    ("--audio_output_dir out_onnx", "out_onnx/wav", ["mix.wav", "musicbg2.wav", "sfxbg1.wav", "speech0.wav"]),
]


def not_in_a_clone(folder: str, names: list[str]) -> set[str]:
    at = AT.get(Path(folder), set())
    return {n for n in names if n in ANYWHERE or n in at or (Path(folder) == ROOT and n.endswith(".onnx"))}


def name(doc: Path) -> str:
    return doc.relative_to(ROOT).as_posix()


def snippets() -> list[tuple[str, int, str, str, str | None]]:
    """``(document, line, language, code, needs)`` of every code block in a runnable language."""
    out = []
    for doc in DOCUMENTS:
        text = doc.read_text(encoding="utf-8")
        for m in FENCE.finditer(text):
            if m["lang"] in CODE_LANGS:
                out.append((name(doc), text[: m.start("lang")].count("\n") + 1, m["lang"], m["body"], m["needs"]))
    return out


SNIPPETS = snippets()
#: the README's first runnable API snippet: run from another folder (below) rather than in the copy
API = next(s for s in SNIPPETS if s[0] == "README.md" and s[2] == "python" and s[4] is None and "load_model(" in s[3])
IN_THE_COPY = [s for s in SNIPPETS if s is not API]


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    """A copy of the repository as a fresh clone has it."""
    dest = tmp_path_factory.mktemp("readme") / "tuss"
    shutil.copytree(ROOT, dest, ignore=not_in_a_clone)
    return dest


def test_the_readme_has_runnable_snippets_and_marks_the_others():
    readme = [s for s in SNIPPETS if s[0] == "README.md"]
    assert len(readme) >= 8
    runnable = [s for s in readme if s[4] is None]
    assert {lang for _, _, lang, _, _ in runnable} >= {"python", "sh"}  # both kinds actually run below
    assert len(runnable) >= 4
    for doc, line, _, _, needs in SNIPPETS:
        assert needs is None or len(needs.strip()) > 10, f"{doc} line {line}: say exactly what the snippet needs"


@pytest.mark.parametrize(("doc", "line", "lang", "code", "needs"), IN_THE_COPY,
                         ids=[f"{s[0]}:{s[1]}" for s in IN_THE_COPY])
def test_snippet_runs_as_written(clone, doc, line, lang, code, needs):
    if needs is not None:
        pytest.skip(f"{doc} line {line} needs: {needs}")
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    if lang == "python":
        script = clone / f"snippet_{Path(doc).stem}_{line}.py"
        script.write_text(code)
        cmd = [sys.executable, str(script)]
    else:
        cmd = ["bash", "-euo", "pipefail", "-c", code]
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"  # `python` is this interpreter
    proc = subprocess.run(cmd, cwd=clone, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{doc} line {line} failed:\n{proc.stderr[-3000:]}"
    for marker, folder, files in OUTPUTS:
        if marker in code:
            assert sorted(p.name for p in (clone / folder).iterdir()) == files, f"{doc} line {line}: {folder}"


def test_the_python_api_works_from_another_directory(clone, tmp_path):
    """The README's first API snippet as written, from a folder outside the repository, with the repository on
    PYTHONPATH (as the README says): the model is found by its name."""
    doc, line, _, code, _ = API
    script = tmp_path / "mine.py"
    script.write_text(code)
    env = {**os.environ, "PYTHONPATH": str(clone), "OMP_NUM_THREADS": "2"}
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, f"{doc} line {line} failed:\n{proc.stderr[-3000:]}"
    assert "torch.Size([1, 4, 288000])" in proc.stdout  # the output the snippet's comment promises


# ---------------------------------------------------------------------------------------------------------- links

LINK = re.compile(r"!?\[[^\]]*\]\((?P<target>[^)\s]+)\)")
HEADING = re.compile(r"^#{1,6} +(?P<title>.+?) *#*$", re.M)


def without_blocks(text: str) -> str:
    """``text`` with its fenced code blocks blanked (line numbers kept)."""
    return re.sub(r"^```.*?^```", lambda m: "\n" * m.group().count("\n"), text, flags=re.S | re.M)


def prose(text: str) -> str:
    """``text`` without its code: fenced blocks and inline code spans blanked (line numbers kept)."""
    return re.sub(r"`[^`\n]*`", "", without_blocks(text))


def anchors(path: Path) -> set[str]:
    """GitHub's ids of the headings of a Markdown file: lower case, punctuation dropped, spaces as hyphens, a
    repeated id numbered ``-1``, ``-2``, …"""
    seen: dict[str, int] = {}
    out = set()
    for m in HEADING.finditer(without_blocks(path.read_text(encoding="utf-8")) if path.suffix == ".md" else ""):
        title = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", m["title"])  # a link in a heading: its text
        slug = re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def test_the_heading_ids_are_githubs():
    assert anchors(ROOT / "README.md") >= {"python-api", "train-and-fine-tune", "onnx",
                                           "tuss--task-aware-unified-source-separation"}
    assert "demo-corpus-offline-built-from-debian-packages" in anchors(ROOT / "docs" / "data.md")
    assert "separating-audio-separatepy" in anchors(ROOT / "docs" / "separation.md")  # inline code: its text


@pytest.mark.parametrize("doc", DOCUMENTS, ids=name)
def test_relative_links_lead_to_a_file_and_heading(doc):
    text = prose(doc.read_text(encoding="utf-8"))
    problems, checked = [], 0
    for m in LINK.finditer(text):
        target = m["target"].strip("<>")
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        where = f"{name(doc)}:{text.count(chr(10), 0, m.start()) + 1}: {target}"
        path_part, _, anchor = target.partition("#")
        dest = (doc.parent / path_part).resolve() if path_part else doc
        checked += 1
        if not dest.exists():
            problems.append(f"{where}: no such file")
        elif ROOT not in dest.parents and dest != ROOT:
            problems.append(f"{where}: outside the repository")
        elif anchor and anchor not in anchors(dest):
            problems.append(f"{where}: {name(dest)} has no heading #{anchor}")
    assert not problems, "links that lead nowhere:\n" + "\n".join(problems)
    if doc.name == "README.md":
        assert checked >= 20, "the README links to every document"


def test_the_readme_links_every_document():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    missing = [name(d) for d in DOCUMENTS[1:] if f"]({name(d)})" not in readme]
    assert not missing, f"documents the README does not link: {missing}"


# ---------------------------------------------------------------------------------------------------------- wording

def test_the_readme_is_short():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= 300, f"README.md has {lines} lines; move details to docs/"


HISTORY = re.compile(r"\bissue [A-Z]\b|\b(?:[Tt]his|[Ll]ast|[Pp]revious|[Aa]nother|[Ee]arlier) session\b"
                     r"|\bcommit `[0-9a-f]{7,}`")


@pytest.mark.parametrize("doc", DOCUMENTS, ids=name)
def test_the_documents_describe_the_software_not_its_history(doc):
    text = doc.read_text(encoding="utf-8")
    found = [f"{name(doc)}:{text.count(chr(10), 0, m.start()) + 1}: {m.group()}" for m in HISTORY.finditer(text)]
    assert not found, "development history in the documentation:\n" + "\n".join(found)
