"""separate.py over many files (separation/corpus.py): mirrored outputs, done files skipped, one log line per file,
bad files logged and skipped, a kill mid-list finished by the rerun, and 2 processes under torchrun sharing the
work with outputs equal to one process's."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from separate import main
from separation import corpus as corpus_mod
from separation.corpus import balance, collect_inputs, mirrored_dirs
from separation.separator import MARKER_NAME
from tests.helpers import tone_noise, write_wav

ROOT = Path(__file__).resolve().parents[2]
PROMPTS = ["--prompts", "speech", "sfx"]


def make_folder(root: Path, n: int = 6) -> list[Path]:
    """``n`` short files over three folders, with names that clash between folders (``a/x.wav``, ``b/x.wav``)."""
    files = []
    for i in range(n):
        sub = "abc"[i % 3]
        name = f"x{i // 3}.{'flac' if i % 2 else 'wav'}"
        (root / sub).mkdir(parents=True, exist_ok=True)
        files.append(write_wav(root / sub / name, tone_noise(4000 + 800 * i, 16000, seed=i), 16000))
    return files


def log_lines(out: Path) -> list[dict]:
    path = out / "separation_log.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def stems(out: Path) -> dict[str, np.ndarray]:
    """{output folder/wav file: samples} of every output set under ``out``."""
    return {str(p.relative_to(out)): sf.read(p, dtype="float32")[0] for p in sorted(out.rglob("wav/*.wav"))}


def complete_sets(out: Path) -> list[Path]:
    """The output folders under ``out`` that hold a marker (a complete set); each must have its whole wav/."""
    done = []
    for marker in sorted(out.rglob(MARKER_NAME)):
        folder = marker.parent
        assert sorted(p.name for p in (folder / "wav").iterdir()) == ["mix.wav", "sfx1.wav", "speech0.wav"]
        done.append(folder)
    return done


def cli(tiny_ckpt, inputs, out, *extra):
    return ["--ckpt_path", str(tiny_ckpt), "--audio_path", *map(str, inputs), *PROMPTS, "--no_spectrograms",
            "--audio_output_dir", str(out), "--quiet", *extra]


def test_inputs_outputs_and_shares():
    assert balance([3.0, 3.0, 1.0, 1.0, 2.0], 2) == [[0, 4], [1, 2, 3]]  # 5 and 5 seconds
    assert balance([1.0], 3) == [[0], [], []]
    dirs = mirrored_dirs([Path("/d/a/x.wav"), Path("/d/b/x.wav"), Path("/d/b/x.flac"), Path("/d/b/s/y.ogg")],
                         Path("out"))
    assert [str(d) for d in dirs] == ["out/a/x", "out/b/x", "out/b/x_flac", "out/b/s/y"]


def test_a_folder_is_searched_recursively_and_a_rerun_skips_what_is_done(tmp_path, tiny_ckpt, capsys):
    files = make_folder(tmp_path / "in")
    out = tmp_path / "out"
    assert main(cli(tiny_ckpt, [tmp_path / "in"], out)) == 0
    assert sorted(str(d.relative_to(out)) for d in complete_sets(out)) == [
        "a/x0", "a/x1", "b/x0", "b/x1", "c/x0", "c/x1"]  # equal names in different folders: no collision
    first = log_lines(out)
    assert sorted(x["input"] for x in first) == sorted(map(str, files))
    assert {x["status"] for x in first} == {"done"} and all(x["duration"] > 0 for x in first)
    before = stems(out)
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("wav/*.wav")}
    assert main(cli(tiny_ckpt, [tmp_path / "in"], out)) == 0  # the same command again: nothing to do
    assert [x["status"] for x in log_lines(out)[len(first):]] == ["skipped"] * len(files)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("wav/*.wav")} == mtimes
    assert main(cli(tiny_ckpt, [tmp_path / "in"], out, "--overwrite")) == 0  # --overwrite redoes them
    assert [x["status"] for x in log_lines(out)[2 * len(files):]] == ["done"] * len(files)
    assert all(np.array_equal(v, before[k]) for k, v in stems(out).items())
    write_wav(files[0], tone_noise(4000, 16000, seed=99), 16000)  # a changed input is not done any more
    assert main(cli(tiny_ckpt, [tmp_path / "in"], out)) == 0
    assert sorted(x["status"] for x in log_lines(out)[3 * len(files):]) == ["done"] + ["skipped"] * 5
    capsys.readouterr()


def test_file_list_and_manifest_inputs(tmp_path, tiny_ckpt):
    files = make_folder(tmp_path / "in", 3)
    listing = tmp_path / "list.txt"
    listing.write_text(f"# inputs\n{files[0]}\n\nin/{files[1].relative_to(tmp_path / 'in')}\n"
                       f"{tmp_path / 'missing.wav'}\n")
    paths, corpus = collect_inputs([], str(listing))
    assert corpus and paths[1] == tmp_path / "in" / "b" / "x0.flac"
    out = tmp_path / "out"
    assert main(["--ckpt_path", str(tiny_ckpt), *PROMPTS, "--no_spectrograms", "--audio_output_dir", str(out),
                 "--quiet", "--file_list", str(listing)]) == 1  # the missing file is logged, the others separated
    status = {Path(x["input"]).name: x["status"] for x in log_lines(out)}
    assert status == {"x0.wav": "done", "x0.flac": "done", "missing.wav": "error"}
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps({"test": {f"m{i}": {"mix": str(f), "ref": {"speech_1": str(f)},
                                                       "sample_rate": 16000, "num_samples": sf.info(f).frames,
                                                       "dataset_name": "t"} for i, f in enumerate(files)}}))
    assert collect_inputs([], None, str(manifest))[0] == files


def test_a_full_disk_stops_the_run_and_presents_nothing_half_written_as_done(tmp_path, tiny_ckpt, capsys,
                                                                             monkeypatch):
    make_folder(tmp_path / "in", 4)
    out = tmp_path / "out"
    from separation import separator as separator_mod

    real, calls = separator_mod.write_audio, []

    def full(path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 5:  # in the second file's set
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(separator_mod, "write_audio", full)
    assert main(cli(tiny_ckpt, [tmp_path / "in"], out)) == 1
    err = capsys.readouterr().err
    assert "No space left on device" in err
    assert len(complete_sets(out)) == 1 and [x["status"] for x in log_lines(out)] == ["done", "error"]
    assert not list(out.rglob(".separating-*"))  # the half-written set was not swapped in, nor left


KILLER = """
import sys, time
sys.argv[0] = "separate.py"
from separation import separator
real = separator.write_outputs
def slow(*args, **kwargs):
    time.sleep(0.4)
    return real(*args, **kwargs)
separator.write_outputs = slow
import separate
sys.exit(separate.main(sys.argv[1:]))
"""


def test_a_run_killed_mid_list_is_finished_by_the_rerun(tmp_path, tiny_ckpt):
    files = make_folder(tmp_path / "in", 9)
    out, clean = tmp_path / "out", tmp_path / "clean"
    assert main(cli(tiny_ckpt, [tmp_path / "in"], clean)) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", KILLER, *cli(tiny_ckpt, [tmp_path / "in"], out)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while len(log_lines(out)) < 3 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    done = [x["input"] for x in log_lines(out)]
    assert 3 <= len(done) < len(files)
    assert len(complete_sets(out)) >= len(done)  # every logged file is complete (one more may be, unlogged)
    assert main(cli(tiny_ckpt, [tmp_path / "in"], out)) == 0
    rerun = log_lines(out)[len(done):]
    assert sorted(x["input"] for x in rerun if x["status"] == "skipped") == sorted(done)
    assert len(rerun) == len(files) and not list(out.rglob(".separating-*"))
    got, want = stems(out), stems(clean)
    assert got.keys() == want.keys() and all(np.array_equal(got[k], want[k]) for k in want)


@pytest.mark.skipif(sys.platform != "linux", reason="torchrun with gloo on Linux")
def test_two_processes_under_torchrun_separate_each_file_once_as_one_process_does(tmp_path, tiny_ckpt):
    files = make_folder(tmp_path / "in", 7)
    one, two = tmp_path / "one", tmp_path / "two"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    base = [sys.executable, "separate.py"]
    single = subprocess.run([*base, *cli(tiny_ckpt, [tmp_path / "in"], one)], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "separate.py", *cli(tiny_ckpt, [tmp_path / "in"], two)[:-1]], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    summary = [line for line in run.stdout.splitlines() if "file(s)" in line]
    assert len(summary) == 1 and "7 separated" in summary[0] and "2 process(es)" in summary[0]  # printed once
    lines = log_lines(two)
    assert sorted(x["input"] for x in lines) == sorted(map(str, files))  # each file exactly once
    assert {x["status"] for x in lines} == {"done"} and not list(two.glob("separation_log.rank*"))
    got, want = stems(two), stems(one)
    assert got.keys() == want.keys() and len(want) == 3 * len(files)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], atol=1e-4 * np.abs(want[k]).max() + 1e-7)
    assert corpus_mod.LOG_NAME == "separation_log.jsonl"
