"""python -m dataprep.build_folders: source pools and fixed mixtures from a user's folders (tiny generated audio;
split-sensitive files are written with a seed whose bytes hash into the wanted split)."""

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from dataprep.build_folders import main, split_of
from datasets.manifest import known_prompts, validate_manifest

REPO = Path(__file__).resolve().parents[2]
VALID, TEST = 0.3, 0.3
ARGS = ["--root", "data", "--name", "mine", "--json-dir", "json", "--valid-fraction", str(VALID),
        "--test-fraction", str(TEST), "--mixtures", "3", "--mix-seconds", "1"]
PROMPTS = known_prompts(["piano"])


def noise(path: Path, sr: int, seconds: float, channels: int = 1, seed: int = 0, scale: float = 0.1,
          fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    x = (scale * np.random.default_rng(seed).standard_normal((round(seconds * sr), channels))).astype(np.float32)
    sf.write(path, x, sr, format=fmt)
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def in_split(path: Path, split: str, first_seed: int, sr: int = 16000, seconds: float = 1.0,
             channels: int = 1) -> Path:
    """Noise at ``path`` whose bytes the builder puts into ``split`` (the seed is searched from ``first_seed``)."""
    for seed in range(first_seed, first_seed + 1000):
        noise(path, sr, seconds, channels, seed=seed)
        if split_of(digest(path), VALID, TEST) == split:
            return path
    raise AssertionError(f"no seed puts {path} into {split}")


@pytest.fixture
def tree(tmp_path, monkeypatch) -> Path:
    """``data/`` under the current directory: piano and speech recordings (stereo, 16/22.05/48 kHz, wav, flac,
    ogg), a silent, a too short, a non-audio and a duplicate file, a hidden one, and a given test mixture."""
    monkeypatch.chdir(tmp_path)
    root = Path("data")
    in_split(root / "piano" / "a.wav", "train", 100)
    in_split(root / "piano" / "sub" / "b.wav", "valid", 1000, sr=22050, seconds=1.2, channels=2)
    noise(root / "piano" / "c.flac", 22050, 1.0, seed=3, fmt="FLAC")
    in_split(root / "piano" / "d.wav", "test", 2000)
    noise(root / "piano" / "silent.wav", 16000, 1.0, scale=0.0)
    noise(root / "piano" / "short.wav", 16000, 0.2, seed=4)
    (root / "piano" / "broken.wav").write_text("not audio")
    (root / "piano" / "notes.txt").write_text("recorded in the kitchen")
    noise(root / "piano" / ".hidden.wav", 16000, 1.0, seed=5)
    in_split(root / "speech" / "e.wav", "train", 3000)
    noise(root / "speech" / "f.ogg", 16000, 1.0, seed=6, fmt="OGG")
    in_split(root / "speech" / "g.wav", "valid", 4000, sr=48000, channels=2)
    in_split(root / "speech" / "h.wav", "test", 5000)
    shutil.copy(root / "speech" / "e.wav", root / "speech" / "zdup.wav")
    for i, stem in enumerate(("mix", "piano", "speech_1", "speech_2")):
        noise(root / "_mixtures" / "test" / "x" / f"{stem}.wav", 16000, 1.0, seed=40 + i)
    return root


def splits_of(pools: dict) -> dict[str, str]:
    return {e["path"]: split for split, per_prompt in pools.items() for entries in per_prompt.values()
            for e in entries}


def test_build_from_folders(tree, capsys):
    assert main(ARGS) == 0
    out = capsys.readouterr().out
    pools_path, mixtures_path = Path("json/mine_pools.json"), Path("json/mine.json")
    for path in (pools_path, mixtures_path):
        report = validate_manifest(path, prompts=PROMPTS)
        assert report.ok, report.format()
    pools, mixtures = json.loads(pools_path.read_text()), json.loads(mixtures_path.read_text())

    # skipped files, counted per reason; hidden and non-audio files are not recordings
    assert "[mine] prompts: 2, audio files: 12, used: 8, skipped: 4" in out
    assert "1 silent (peak below -60 dBFS, skipped): piano/silent.wav" in out
    assert "1 shorter than 0.5 s (skipped): piano/short.wav (0.20 s)" in out
    assert "1 unreadable or not audio (skipped): piano/broken.wav" in out
    assert "1 duplicates (the same bytes as an earlier file, skipped): speech/zdup.wav (= speech/e.wav)" in out
    assert "piano/notes.txt" in out
    assert "python -m datasets.manifest check json/mine_pools.json json/mine.json --prompts piano" in out

    # each recording in the split of its content hash, paths as found, files used as they are
    where = splits_of(pools)
    names = ["piano/a.wav", "piano/c.flac", "piano/d.wav", "piano/sub/b.wav", "speech/e.wav", "speech/f.ogg",
             "speech/g.wav", "speech/h.wav"]
    assert sorted(where) == [f"data/{n}" for n in names]
    for path, split in where.items():
        assert split == split_of(digest(Path(path)), VALID, TEST)
    assert [where[f"data/{n}"] for n in ("piano/a.wav", "piano/sub/b.wav", "piano/d.wav")] == [
        "train", "valid", "test"]
    stereo = next(e for e in pools["valid"]["piano"] if e["path"] == "data/piano/sub/b.wav")
    assert stereo == {"path": "data/piano/sub/b.wav", "sample_rate": 22050, "num_samples": 26460,
                      "dataset_name": "mine"}

    # valid: generated mixtures, mix = sum of its 2+ distinct references; test: the given one
    assert list(mixtures) == ["valid", "test"] and len(mixtures["valid"]) == 3
    for item_id, entry in mixtures["valid"].items():
        assert entry["mix"] == f"data/_generated/valid/{item_id}/mix.wav"
        assert len(entry["ref"]) >= 2 and all(k.endswith("_1") for k in entry["ref"])
        assert entry["sample_rate"] == 48000 and entry["num_samples"] == 48000
        mix, sr = sf.read(entry["mix"], dtype="float32")
        refs = [sf.read(p, dtype="float32")[0] for p in entry["ref"].values()]
        np.testing.assert_allclose(mix, np.sum(refs, axis=0), atol=1e-6)
        assert 0.5 < np.abs(mix).max() <= 0.9 + 4 / 32768 and all(np.sqrt(np.mean(r ** 2)) > 0.01 for r in refs)
    given = "data/_mixtures/test/x"
    assert mixtures["test"] == {"x": {
        "mix": f"{given}/mix.wav",
        "ref": {"piano_1": f"{given}/piano.wav", "speech_1": f"{given}/speech_1.wav",
                "speech_2": f"{given}/speech_2.wav"},
        "sample_rate": 16000, "num_samples": 16000, "dataset_name": "mine"}}

    # a re-run with the same files: byte-identical manifests, no generated audio rewritten
    before = {p: p.read_bytes() for p in (pools_path, mixtures_path)}
    generated = {p: p.stat().st_mtime_ns for p in Path("data/_generated").rglob("*.wav")}
    assert len(generated) == sum(1 + len(e["ref"]) for e in mixtures["valid"].values())
    assert main(ARGS) == 0
    assert "0 of" in capsys.readouterr().out
    assert {p: p.read_bytes() for p in before} == before
    assert {p: p.stat().st_mtime_ns for p in generated} == generated

    # an added recording moves no other one
    noise(tree / "piano" / "new.wav", 16000, 1.0, seed=99)
    assert main(ARGS) == 0
    after = splits_of(json.loads(pools_path.read_text()))
    assert set(after) == set(where) | {"data/piano/new.wav"}
    assert all(after[p] == split for p, split in where.items())


def test_mp3_whose_header_length_is_not_exact_gets_a_wav_copy(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for prompt in ("piano", "drums"):
        noise(Path("data") / prompt / "a.wav", 16000, 1.0, seed=len(prompt))
    mp3 = Path("data/drums/loop.mp3")
    x = (0.1 * np.random.default_rng(0).standard_normal(44100 * 2)).astype(np.float32)
    sf.write(tmp_path / "cbr.mp3", x, 44100, format="MP3", bitrate_mode="CONSTANT", compression_level=0.5)
    data = (tmp_path / "cbr.mp3").read_bytes()
    header = int.from_bytes(data[:4], "big")  # MPEG-1 layer III: drop the first (Info) frame
    bitrate = (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)[(header >> 12) & 15]
    mp3.write_bytes(data[144 * bitrate * 1000 // 44100 + ((header >> 9) & 1):])
    with sf.SoundFile(str(mp3)) as f:
        exact = f.frames == len(f.read())
    assert main(["--root", "data", "--name", "mine", "--json-dir", "json", "--mixtures", "0"]) == 0
    assert validate_manifest("json/mine_pools.json", prompts=PROMPTS).ok
    pools = json.loads(Path("json/mine_pools.json").read_text())
    (entry,) = [e for split in pools.values() for e in split.get("drums", []) if "loop" in e["path"]]
    if exact:  # this libsndfile counts the frames exactly: the file is used as it is
        assert entry["path"] == mp3.as_posix()
    else:
        assert entry["path"].startswith("data/_generated/decoded/drums/loop-") and entry["path"].endswith(".wav")
        assert "1 recordings decoded to a WAV copy" in capsys.readouterr().out


def _run_fails(args: list[str], capsys) -> str:
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert not Path("json").exists() and not Path("data/_generated").exists()
    return err


@pytest.mark.parametrize(("setup", "extra", "named"), [
    (None, [], "root folder not found: data"),
    ("", [], "no prompt folder in data"),
    ("my_piano", [], "data/my_piano"),
    ("bad name", [], "data/bad name"),
    ("piano", ["--valid-fraction", "1"], "--valid-fraction 1 must be in [0, 1)"),
    ("piano", ["--valid-fraction", "0.5", "--test-fraction", "0.5"], "sum to 1"),
])
def test_input_errors_exit_2_and_write_nothing(tmp_path, monkeypatch, capsys, setup, extra, named):
    monkeypatch.chdir(tmp_path)
    if setup is not None:
        Path("data", setup).mkdir(parents=True)
        if setup:
            noise(Path("data", setup, "a.wav"), 16000, 1.0)
    assert named in _run_fails(["--root", "data", "--name", "mine", "--json-dir", "json", *extra], capsys)


def test_bad_given_mixtures_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    noise(Path("data/piano/a.wav"), 16000, 1.0)
    item = Path("data/_mixtures/valid/m1")
    noise(item / "piano.wav", 16000, 1.0)
    args = ["--root", "data", "--name", "mine", "--json-dir", "json"]
    assert "data/_mixtures/valid/m1 has no mix.wav" in _run_fails(args, capsys)
    noise(item / "mix.wav", 16000, 1.0)
    noise(item / "drums_1.wav", 16000, 1.0)
    assert "'drums' is not a prompt folder" in _run_fails(args, capsys)


def test_another_corpus_manifest_is_not_overwritten(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    noise(Path("data/piano/a.wav"), 16000, 1.0)
    other = Path("json/mine.json")
    other.parent.mkdir()
    other.write_text(json.dumps({"train": {"speech": [{"path": "x.wav", "sample_rate": 16000, "num_samples": 10,
                                                       "dataset_name": "vctk_speech"}]}}))
    assert main(["--root", "data", "--name", "mine", "--json-dir", "json"]) == 2
    assert "json/mine.json exists and is not a manifest of --name mine" in capsys.readouterr().err
    assert not Path("json/mine_pools.json").exists()


def test_command_line_error_is_one_line(tmp_path):
    (tmp_path / "data" / "my_piano").mkdir(parents=True)
    proc = subprocess.run([sys.executable, "-m", "dataprep.build_folders", "--root", str(tmp_path / "data"),
                           "--name", "mine", "--json-dir", str(tmp_path / "json")], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [proc.stderr.strip()] and proc.stderr.startswith("error: folder ")
    assert "my_piano" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "json").exists()
