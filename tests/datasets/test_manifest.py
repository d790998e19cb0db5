"""Manifest writer, loader and checker (datasets/manifest.py)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from datasets.manifest import (
    ManifestError,
    load_manifest,
    main,
    mixture_entry,
    pool_entry,
    validate_manifest,
    write_manifest,
)

ROOT = Path(__file__).resolve().parents[2]


def tone(path: Path, sr: int, n: int, channels: int = 1) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(n) / sr
    x = 0.1 * np.sin(2 * np.pi * 440 * t)
    sf.write(path, np.stack([x] * channels, axis=1) if channels > 1 else x, sr)
    return path


@pytest.fixture
def tree(tmp_path, monkeypatch):
    """A pool manifest and a mixture manifest over real files, relative to tmp_path (the 'repository root')."""
    monkeypatch.chdir(tmp_path)
    tone(tmp_path / "a/s1.wav", 16000, 16000)
    tone(tmp_path / "a/s2.wav", 16000, 8000)
    tone(tmp_path / "b/mix.wav", 48000, 4800)
    tone(tmp_path / "b/speech.wav", 48000, 4800)
    tone(tmp_path / "b/noise.wav", 48000, 4800)
    pool = {"train": {"speech": [pool_entry("a/s1.wav", 16000, 16000, "toy"), pool_entry("a/s2.wav", 16000, 8000,
                                                                                         "toy")]},
            "valid": {}, "test": {}}
    mixtures = {"train": {}, "valid": {}, "test": {
        "m1": mixture_entry({"speech_1": "b/speech.wav", "sfxbg_1": "b/noise.wav"}, 48000, 4800, "toy",
                            mix="b/mix.wav")}}
    write_manifest(tmp_path / "pool.json", pool)
    write_manifest(tmp_path / "mix.json", mixtures)
    return tmp_path


def edit(path: Path, change) -> Path:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data, indent=4))
    return path


def test_written_format_and_shapes(tree):
    text = (tree / "pool.json").read_text()
    assert text.startswith('{\n    "train": {\n        "speech": [\n            {\n                "path": "a/s1.wav"')
    entry = json.loads(text)["train"]["speech"][0]
    assert list(entry) == ["path", "sample_rate", "num_samples", "dataset_name"]
    mix = json.loads((tree / "mix.json").read_text())
    assert list(mix) == ["train", "valid", "test"]
    assert list(mix["test"]["m1"]) == ["mix", "ref", "sample_rate", "num_samples", "dataset_name"]
    assert list(pool_entry("x.wav", 1, 2, "d", labels="l", mids="m")) == [
        "path", "sample_rate", "num_samples", "labels", "mids", "dataset_name"]
    assert load_manifest(tree / "pool.json").shape == "pool"
    assert load_manifest(tree / "mix.json").shape == "mixtures"
    sad = json.loads((tree / "mix.json").read_text())
    sad["train"] = json.loads((tree / "pool.json").read_text())["train"]
    loaded = load_manifest(write_manifest(tree / "sad.json", sad))
    assert (loaded.shape, loaded.shapes) == ("mixed", {"train": "pool", "valid": "empty", "test": "mixtures"})
    assert load_manifest(write_manifest(tree / "empty.json", {"train": {}})).shape == "empty"


def test_valid_manifests_and_summary(tree):
    report = validate_manifest(tree / "pool.json")
    assert report.ok, report.problems
    assert report.items == {"train": 2, "valid": 0, "test": 0}
    assert report.stats["train"]["speech"].count == 2
    assert report.stats["train"]["speech"].seconds == pytest.approx(1.5)
    assert report.files_checked == 2
    report = validate_manifest(tree / "mix.json")
    assert report.ok, report.problems
    assert report.items["test"] == 1
    assert {k: (v.count, round(v.seconds, 3)) for k, v in report.stats["test"].items()} == {
        "speech": (1, 0.1), "sfxbg": (1, 0.1)}
    text = report.format()
    assert "OK" in text and "sfxbg" in text


def test_catches_missing_file(tree):
    (tree / "a/s2.wav").unlink()
    report = validate_manifest(tree / "pool.json")
    assert not report.ok
    assert report.problems == ["train/speech[1]: file not found: a/s2.wav"]
    assert validate_manifest(tree / "pool.json", check_files=False, check_audio=False).ok


def test_catches_wrong_sample_rate_and_length(tree):
    edit(tree / "mix.json", lambda d: d["test"]["m1"].update(sample_rate=44100))
    problems = validate_manifest(tree / "mix.json").problems
    assert len(problems) == 3  # mix and both references
    assert problems[0] == "test/m1 mix: b/mix.wav has sample rate 48000 but the manifest says 44100"
    edit(tree / "pool.json", lambda d: d["train"]["speech"][0].update(num_samples=15999))
    assert validate_manifest(tree / "pool.json").problems == [
        "train/speech[0]: a/s1.wav has 16000 samples but the manifest says 15999"]
    assert validate_manifest(tree / "pool.json", check_audio=False).ok  # existence only


def test_catches_unknown_prompt_and_extends_prompts(tree):
    edit(tree / "pool.json", lambda d: d["train"].update(piano=d["train"].pop("speech")))
    problems = validate_manifest(tree / "pool.json").problems
    assert len(problems) == 1 and "unknown prompt 'piano'" in problems[0]
    assert validate_manifest(tree / "pool.json", prompts=("speech", "piano")).ok
    edit(tree / "mix.json", lambda d: d["test"]["m1"]["ref"].update(guitar_1="b/noise.wav"))
    assert "unknown prompt 'guitar' in reference 'guitar_1'" in validate_manifest(tree / "mix.json").problems[0]


@pytest.mark.parametrize("change, expected", [
    (lambda d: d["train"]["speech"][0].pop("sample_rate"), "train/speech[0]: missing key(s) sample_rate"),
    (lambda d: d["train"]["speech"][1].update(num_samples="8000"), "'num_samples' must be a positive integer"),
    (lambda d: d["train"]["speech"].append("a/s1.wav"), "train/speech[2]: entry must be an object"),
    (lambda d: d["train"]["speech"].append(dict(d["train"]["speech"][0])), "duplicate path a/s1.wav"),
    (lambda d: d.update(training={}), "unknown top-level key(s) 'training'"),
    (lambda d: d["train"].update(x={"ref": {}}), "train: a split must map prompts to lists"),
    (lambda d: d.update(test=[]), "test: a split must be a JSON object"),
])
def test_catches_malformed_pool(tree, change, expected):
    edit(tree / "pool.json", change)
    problems = validate_manifest(tree / "pool.json").problems
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize("change, expected", [
    (lambda d: d["test"]["m1"].pop("ref"), "test/m1: missing key(s) ref"),
    (lambda d: d["test"]["m1"]["ref"].update(speech="b/speech.wav"), "reference key 'speech' is not '<prompt>_<k>'"),
    (lambda d: d["test"]["m1"]["ref"].update(speech_0="b/speech.wav"), "reference key 'speech_0'"),
    (lambda d: d["test"]["m1"].update(ref={}), "'ref' must be a non-empty object"),
    (lambda d: d["test"]["m1"].update(dataset_name=3), "'dataset_name' must be a non-empty string"),
])
def test_catches_malformed_mixture(tree, change, expected):
    edit(tree / "mix.json", change)
    problems = validate_manifest(tree / "mix.json").problems
    assert any(expected in p for p in problems), problems
    with pytest.raises(ManifestError, match="is not a valid manifest"):
        load_manifest(tree / "mix.json")


def test_catches_duplicate_ids_and_bad_json(tree):
    text = (tree / "mix.json").read_text()
    entry = json.dumps(json.loads(text)["test"]["m1"])
    (tree / "dup.json").write_text('{"train": {}, "test": {"m1": ' + entry + ', "m1": ' + entry + "}}")
    problems = validate_manifest(tree / "dup.json").problems
    assert len(problems) == 1 and "duplicate key(s) 'm1'" in problems[0]
    (tree / "bad.json").write_text('{"train": ')
    assert "is not valid JSON" in validate_manifest(tree / "bad.json").problems[0]
    assert "manifest not found" in validate_manifest(tree / "nope.json").problems[0]


def test_unreadable_audio_reported_once(tree):
    (tree / "a/s1.wav").write_bytes(b"not audio")
    problems = validate_manifest(tree / "pool.json").problems
    assert len(problems) == 1 and "a/s1.wav: not a readable audio file" in problems[0]


def test_root_argument_and_absolute_paths(tree, monkeypatch):
    monkeypatch.chdir(tree / "a")
    assert not validate_manifest(tree / "pool.json").ok  # relative to the wrong directory
    assert validate_manifest(tree / "pool.json", root=tree).ok
    edit(tree / "pool.json", lambda d: d["train"]["speech"][0].update(path=str(tree / "a/s1.wav")))
    assert validate_manifest(tree / "pool.json", root=tree).ok


def test_write_refuses_invalid(tree):
    with pytest.raises(ManifestError, match="refusing to write .*unknown prompt 'piano'"):
        write_manifest(tree / "x.json", {"train": {"piano": []}})
    assert not (tree / "x.json").exists()
    (tree / "a/s1.wav").unlink()
    report = validate_manifest(tree / "pool.json")
    assert not report.ok and any("train/speech[0]: file not found" in p for p in report.problems)


def test_cli(tree, capsys):
    assert main(["check", str(tree / "pool.json"), str(tree / "mix.json")]) == 0
    out = capsys.readouterr().out
    assert "pool.json: OK" in out and "2 of 2 manifest(s) valid" in out
    edit(tree / "pool.json", lambda d: d["train"].update(piano=d["train"].pop("speech")))
    assert main(["check", str(tree / "pool.json")]) == 1
    assert "problem: train: unknown prompt 'piano'" in capsys.readouterr().out
    assert main(["check", str(tree / "pool.json"), "--prompts", "piano"]) == 0
    assert main(["check", str(tree / "pool.json"), "--prompts", "grand_piano"]) == 2
    assert "contain no '_'" in capsys.readouterr().err


def test_cli_module_entry_point(tree):
    (tree / "b/noise.wav").unlink()
    result = subprocess.run([sys.executable, "-m", "datasets.manifest", "check", "mix.json"], cwd=tree,
                            capture_output=True, text=True, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 1, result.stderr
    assert "test/m1 sfxbg_1: file not found: b/noise.wav" in result.stdout
