"""The README runs: every Python and shell snippet runs as written in a fresh copy of the repository (the bundled
files only), or is marked, just above its fence, with what it needs (``<!-- needs: ... -->``); and the Python API
works from another working directory with the repository on the path."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
CODE_LANGS = {"python", "sh", "bash"}
FENCE = re.compile(r"(?:<!-- needs: (?P<needs>[^>]*?) -->\n)?```(?P<lang>\w*)\n(?P<body>.*?)```", re.S)
# what a fresh clone does not hold (caches, runs, built corpora and manifests); everything else is copied
ANYWHERE = {".git", "__pycache__", ".ruff_cache", ".pytest_cache"}
AT = {ROOT: {"exp", "demo"}, ROOT / "datasets": {"json_files"}}


def not_in_a_clone(folder: str, names: list[str]) -> set[str]:
    return {n for n in names if n in ANYWHERE or n in AT.get(Path(folder), set())}


def snippets() -> list[tuple[int, str, str, str | None]]:
    """``(line, language, code, needs)`` of every code block of the README in a runnable language."""
    out = []
    for m in FENCE.finditer(README):
        if m["lang"] in CODE_LANGS:
            out.append((README[: m.start("lang")].count("\n") + 1, m["lang"], m["body"], m["needs"]))
    return out


SNIPPETS = snippets()


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    """A copy of the repository as a fresh clone has it."""
    dest = tmp_path_factory.mktemp("readme") / "tuss"
    shutil.copytree(ROOT, dest, ignore=not_in_a_clone)
    return dest


def test_the_readme_has_runnable_snippets_and_marks_the_others():
    assert len(SNIPPETS) >= 10
    runnable = [s for s in SNIPPETS if s[3] is None]
    assert {lang for _, lang, _, _ in runnable} >= {"python", "sh"}  # both kinds actually run below
    for line, _, _, needs in SNIPPETS:
        assert needs is None or len(needs.strip()) > 10, f"README line {line}: say exactly what the snippet needs"


@pytest.mark.parametrize(("line", "lang", "code", "needs"), SNIPPETS, ids=[f"line{s[0]}" for s in SNIPPETS])
def test_readme_snippet_runs_as_written(clone, line, lang, code, needs):
    if needs is not None:
        pytest.skip(f"README line {line} needs: {needs}")
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    if lang == "python":
        script = clone / f"readme_snippet_{line}.py"
        script.write_text(code)
        cmd = [sys.executable, str(script)]
    else:
        cmd = ["bash", "-euo", "pipefail", "-c", code]
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"  # `python` is this interpreter
    proc = subprocess.run(cmd, cwd=clone, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"README line {line} failed:\n{proc.stderr[-3000:]}"
    if "print(est.shape)" in code:
        assert "torch.Size([1, 4, 288000])" in proc.stdout  # the output the snippet's comment promises
    if "separate_file(" in code:
        assert sorted(p.name for p in (clone / "out" / "wav").iterdir()) == [
            "mix.wav", "musicbg2.wav", "residual.wav", "sfxbg1.wav", "speech0.wav"]


def test_the_python_api_works_from_another_directory(clone, tmp_path):
    """The first API snippet, from a folder outside the repository, with the repository on PYTHONPATH and the model
    path given from there (as the README says)."""
    code = next(c for _, lang, c, needs in SNIPPETS if lang == "python" and needs is None and "load_model(" in c)
    model = clone / "pretrained_models" / "tuss.demo" / "checkpoints" / "model.pth"
    script = tmp_path / "mine.py"
    script.write_text(code.replace('"pretrained_models/tuss.demo/checkpoints/model.pth"', repr(str(model))))
    env = {**os.environ, "PYTHONPATH": str(clone), "OMP_NUM_THREADS": "2"}
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "torch.Size([1, 4, 288000])" in proc.stdout
