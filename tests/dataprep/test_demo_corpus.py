"""The offline demo corpus (dataprep/prepare_demo.sh, dataprep/build_demo.py): a real ``--small`` build checked for
manifests of both shapes, exact sums (mix = refs, musicbg = stems), disjoint splits, headers and determinism; plus
unit tests of the MIDI writer, the composer, the sentence generator and the loudness helpers (no apt needed)."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from dataprep.build_demo import (
    DEFAULT_SOUNDFONT,
    SFX_SOURCES,
    _split_by_rank,
    active_rms,
    normalize,
    to_pcm16,
    trim_silence,
    write_pcm16,
)
from dataprep.demo_music import PPQ, STEMS, _vlq, compose_song, midi_bytes
from dataprep.demo_speech import SPEAKERS, make_sentences, speakers_for
from datasets.manifest import load_manifest, ref_prompt, validate_manifest

ROOT = Path(__file__).resolve().parents[2]
SMALL_PACKAGES = "espeak-ng fluidsynth timgm6mb-soundfont sound-theme-freedesktop"
MANIFESTS = ("demo_pools", "demo_cass", "demo_mss", "demo_ss", "demo_uss", "demo_se")
SEED = 5


def _small_build_possible() -> bool:
    return (shutil.which("espeak-ng") is not None and shutil.which("fluidsynth") is not None
            and DEFAULT_SOUNDFONT.is_file() and SFX_SOURCES[0].root.is_dir())


needs_apt = pytest.mark.skipif(
    not _small_build_possible(),
    reason=f"the demo corpus needs the Debian packages {SMALL_PACKAGES} "
           "(bash dataprep/prepare_demo.sh --small --install)")


def _run_script(args: list[str], json_dir: Path, **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "JSON_DIR": str(json_dir), "PYTHON": sys.executable, **env}
    return subprocess.run(["bash", "dataprep/prepare_demo.sh", *args], cwd=ROOT, env=full_env, capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def corpora(tmp_path_factory) -> dict[str, Path]:
    """Two ``--small`` builds with the same seed: ``a`` through the shell script, ``b`` through the Python builder."""
    if not _small_build_possible():
        pytest.skip(f"the demo corpus needs the Debian packages {SMALL_PACKAGES}")
    tmp = tmp_path_factory.mktemp("demo")
    result = _run_script(["--small", "--seed", str(SEED), "--out", str(tmp / "a"), "--jobs", "2"], tmp / "a_json")
    assert result.returncode == 0, result.stderr
    result = subprocess.run([sys.executable, "-m", "dataprep.build_demo", "--small", "--seed", str(SEED), "--out",
                             str(tmp / "b"), "--json-dir", str(tmp / "b_json"), "--jobs", "1"], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return {"a": tmp / "a", "a_json": tmp / "a_json", "b": tmp / "b", "b_json": tmp / "b_json"}


def _index(corpus: Path, step: str) -> dict:
    return json.loads((corpus / step / "index.json").read_text())


def _read(path: str | Path) -> tuple[np.ndarray, int]:
    data, sr = sf.read(str(path), dtype="float64")
    return data, sr


# ---------------------------------------------------------------------------------------------------------------
# the --small build


@needs_apt
def test_manifests_of_both_shapes_are_valid(corpora):
    json_dir = corpora["a_json"]
    assert sorted(p.stem for p in json_dir.glob("*.json")) == sorted(MANIFESTS)
    for name in MANIFESTS:
        report = validate_manifest(json_dir / f"{name}.json", check_audio=True)
        assert report.ok, report.format()
    pools = load_manifest(json_dir / "demo_pools.json")
    assert pools.shapes == {"train": "pool", "valid": "pool", "test": "pool"}
    assert set(pools.split("train")) == {"speech", "sfx", "sfxbg", "drums", "bass", "vocals", "other", "musicbg"}
    expected = {"cass": ["speech_1", "sfxbg_1", "musicbg_1"], "mss": ["drums_1", "bass_1", "vocals_1", "other_1"],
                "ss": ["speech_1", "speech_2"], "se": ["speech_1", "sfxbg_1"]}
    for task in ("cass", "mss", "ss", "uss", "se"):
        manifest = load_manifest(json_dir / f"demo_{task}.json")
        assert manifest.shapes == {"train": "empty", "valid": "mixtures", "test": "mixtures"}
        assert len(manifest.split("valid")) >= 1 and len(manifest.split("test")) >= 2
        for entry in (*manifest.split("valid").values(), *manifest.split("test").values()):
            assert entry["dataset_name"] == f"demo_{task}"
            assert entry["sample_rate"] == (16000 if task == "ss" else 48000)
            assert list(entry) == ["mix", "ref", "sample_rate", "num_samples", "dataset_name"]
            if task == "uss":
                k = len(entry["ref"])
                assert 2 <= k <= 4 and list(entry["ref"]) == [f"sfx_{i}" for i in range(1, k + 1)]
            else:
                assert list(entry["ref"]) == expected[task]


@needs_apt
def test_mix_is_the_sum_of_its_references(corpora):
    for task in ("cass", "mss", "ss", "uss", "se"):
        manifest = load_manifest(corpora["a_json"] / f"demo_{task}.json")
        for split in ("valid", "test"):
            for item_id, entry in manifest.split(split).items():
                mix, sr = _read(entry["mix"])
                assert sr == entry["sample_rate"] and len(mix) == entry["num_samples"], item_id
                refs = [_read(p)[0] for p in entry["ref"].values()]
                assert all(len(r) == len(mix) for r in refs)
                assert all(np.sqrt(np.mean(r ** 2)) > 1e-3 for r in refs), f"{item_id}: a silent reference"
                np.testing.assert_allclose(np.sum(refs, axis=0), mix, atol=1e-4, rtol=0)
                assert np.abs(mix).max() < 1.0


@needs_apt
def test_stems_of_a_song_have_equal_length_and_sum_to_musicbg(corpora):
    corpus = corpora["a"]
    songs = _index(corpus, "music")["songs"]
    assert sorted({s["split"] for s in songs}) == ["test", "train", "valid"]
    for song in songs:
        stems = {k: _read(corpus / song["files"][k]) for k in (*STEMS, "musicbg")}
        assert {sr for _, sr in stems.values()} == {48000}
        assert {len(x) for x, _ in stems.values()} == {song["num_samples"]}
        for stem in STEMS:
            assert active_rms(stems[stem][0], 48000) > 1e-3, f"{song['id']}: silent {stem}"
        np.testing.assert_allclose(sum(stems[k][0] for k in STEMS), stems["musicbg"][0], atol=1e-4, rtol=0)
        assert (corpus / song["midi"]).read_bytes()[:4] == b"MThd"


@needs_apt
def test_speakers_and_clips_are_disjoint_across_splits(corpora):
    corpus = corpora["a"]
    speakers = {split: {u["speaker"] for u in _index(corpus, "speech")["utterances"] if u["split"] == split}
                for split in ("train", "valid", "test")}
    assert all(speakers.values())
    assert not (speakers["train"] & speakers["valid"] or speakers["train"] & speakers["test"]
                or speakers["valid"] & speakers["test"])
    assert len(speakers["test"]) >= 2 and len(speakers["valid"]) >= 2  # speech+speech needs two voices
    clips = _index(corpus, "sfx")["clips"]
    by_split = {split: [c for c in clips if c["split"] == split] for split in ("train", "valid", "test")}
    assert all(by_split.values())
    digests = {split: {hashlib.sha1((corpus / c["path"]).read_bytes()[44:]).hexdigest() for c in items}
               for split, items in by_split.items()}
    sources = {split: {c["source"] for c in items} for split, items in by_split.items()}
    for a, b in (("train", "valid"), ("train", "test"), ("valid", "test")):
        assert not sources[a] & sources[b] and not digests[a] & digests[b]
    # the fixed test mixtures use test material only
    utterance_split = {u["path"]: u["split"] for u in _index(corpus, "speech")["utterances"]}
    clip_split = {c["path"]: c["split"] for c in clips}
    bed_events = {b["path"]: b["events"] for b in _index(corpus, "sfxbg")["beds"]}
    for task, splits in _index(corpus, "mixtures")["tasks"].items():
        for split, items in splits.items():
            for entry in items.values():
                for key, origin in entry["origin"].items():
                    if ref_prompt(key) == "speech":
                        assert {utterance_split[p] for p in origin} == {split}, (task, key)
                    elif ref_prompt(key) == "sfx":
                        assert clip_split[origin[0]] == split
                    elif ref_prompt(key) == "sfxbg":
                        assert f"/{split}/" in origin[0]
                        assert {clip_split[p] for p in bed_events[origin[0]]} == {split}
                    else:
                        assert f"music/{split}/" in origin


@needs_apt
def test_rates_channels_and_sample_format(corpora):
    pools = load_manifest(corpora["a_json"] / "demo_pools.json")
    for split in ("train", "valid", "test"):
        for prompt, entries in pools.split(split).items():
            for entry in entries:
                info = sf.info(entry["path"])
                assert info.samplerate == entry["sample_rate"] == (16000 if prompt == "speech" else 48000)
                assert info.frames == entry["num_samples"] and info.channels == 1 and info.subtype == "PCM_16"


@needs_apt
def test_same_seed_gives_identical_manifests_and_audio(corpora):
    for name in MANIFESTS:
        text_a = (corpora["a_json"] / f"{name}.json").read_text().replace(str(corpora["a"]), "ROOT")
        text_b = (corpora["b_json"] / f"{name}.json").read_text().replace(str(corpora["b"]), "ROOT")
        assert text_a == text_b, name

    def digests(root: Path) -> dict[str, str]:
        return {p.relative_to(root).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest()
                for p in sorted(root.rglob("*")) if p.is_file()}

    files_a, files_b = digests(corpora["a"]), digests(corpora["b"])
    assert len(files_a) > 50 and files_a == files_b


@needs_apt
def test_rerun_skips_every_step_and_other_settings_are_refused(corpora):
    out, json_dir = corpora["a"], corpora["a_json"]
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.wav")}
    result = _run_script(["--small", "--seed", str(SEED), "--out", str(out)], json_dir)
    assert result.returncode == 0, result.stderr
    for step in ("speech", "sfx", "music", "sfxbg", "mixtures", "manifests"):
        assert f"skip: {step}" in result.stdout
    assert "[demo] step" not in result.stdout
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.wav")} == before
    result = _run_script(["--small", "--seed", str(SEED + 1), "--out", str(out)], json_dir)
    assert result.returncode == 1 and "built with other settings" in result.stderr


# ---------------------------------------------------------------------------------------------------------------
# the script's checks (no apt needed)


def test_missing_package_is_named_with_the_install_command(tmp_path):
    result = _run_script(["--small", "--out", str(tmp_path / "demo")], tmp_path / "json",
                         SOUNDFONT=str(tmp_path / "missing.sf2"))
    assert result.returncode == 1
    assert "missing Debian package(s): " in result.stderr and "timgm6mb-soundfont" in result.stderr
    assert "--install" in result.stderr and "apt-get install" in result.stderr
    assert not (tmp_path / "demo").exists()


def test_install_option_runs_apt_get_for_the_missing_packages(tmp_path):
    bin_dir, soundfont, log = tmp_path / "bin", tmp_path / "gm.sf2", tmp_path / "apt.log"
    bin_dir.mkdir()
    (bin_dir / "apt-get").write_text(f'#!/usr/bin/env bash\necho "$*" >>"{log}"\n'
                                     f'[[ "$1" == install ]] && touch "{soundfont}"\nexit 0\n')
    (bin_dir / "sudo").write_text('#!/usr/bin/env bash\nexec "$@"\n')
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    out = tmp_path / "demo"
    out.mkdir()
    (out / "settings.json").write_text('{"format": 1, "seed": 99, "small": true}\n')  # stops the build after it
    result = _run_script(["--small", "--install", "--out", str(out)], tmp_path / "json", SOUNDFONT=str(soundfont),
                         PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    calls = log.read_text().splitlines()
    assert calls[0] == "update -qq"
    assert calls[1].startswith("install -y -qq --no-install-recommends") and "timgm6mb-soundfont" in calls[1]
    assert soundfont.is_file() and result.returncode == 1
    assert "built with other settings" in result.stderr or "still missing" in result.stderr


@pytest.mark.parametrize("args, message", [(["--seed", "x"], "--seed needs a non-negative integer"),
                                           (["--jobs", "0"], "--jobs needs a positive integer"),
                                           (["--bogus"], "unknown argument '--bogus'")])
def test_bad_arguments_stop_with_a_message(tmp_path, args, message):
    result = _run_script(args, tmp_path)
    assert result.returncode == 1 and message in result.stderr


# ---------------------------------------------------------------------------------------------------------------
# building blocks


def test_vlq_encoding_matches_the_midi_specification():
    assert [_vlq(v) for v in (0, 0x40, 0x7F, 0x80, 0x2000, 0x3FFF, 0x4000, 0x0FFFFFFF)] == [
        b"\x00", b"\x40", b"\x7f", b"\x81\x00", b"\xc0\x00", b"\xff\x7f", b"\x81\x80\x00", b"\xff\xff\xff\x7f"]


def _parse_smf(data: bytes) -> tuple[tuple[int, int, int], list[list[tuple[int, bytes]]]]:
    """Minimal SMF reader for the writer's output: header and per-track ``(absolute tick, message)``."""
    assert data[:4] == b"MThd" and int.from_bytes(data[4:8], "big") == 6
    fmt, ntracks, division = (int.from_bytes(data[8 + 2 * i:10 + 2 * i], "big") for i in range(3))
    pos, tracks = 14, []
    for _ in range(ntracks):
        assert data[pos:pos + 4] == b"MTrk"
        end = pos + 8 + int.from_bytes(data[pos + 4:pos + 8], "big")
        pos, tick, events = pos + 8, 0, []
        while pos < end:
            delta = 0
            while True:
                byte = data[pos]
                pos += 1
                delta = (delta << 7) | (byte & 0x7F)
                if byte < 0x80:
                    break
            tick += delta
            status = data[pos]
            if status == 0xFF:
                length = data[pos + 2]
                msg, pos = data[pos:pos + 3 + length], pos + 3 + length
            else:
                size = 2 if status & 0xF0 == 0xC0 else 3
                msg, pos = data[pos:pos + size], pos + size
            events.append((tick, msg))
        assert pos == end
        tracks.append(events)
    return (fmt, ntracks, division), tracks


def test_midi_file_round_trips_through_a_reader():
    song = compose_song(np.random.default_rng(1), bars=4)
    end = song.bars * 4 * PPQ
    header, tracks = _parse_smf(midi_bytes(song.parts, song.tempo, end))
    assert header == (1, 1 + len(song.parts), PPQ)
    tempo = [m for _, m in tracks[0] if m[:2] == b"\xff\x51"][0]
    assert int.from_bytes(tempo[3:6], "big") == round(60_000_000 / song.tempo)
    assert tracks[0][-1] == (end, b"\xff\x2f\x00")
    for part, events in zip(song.parts, tracks[1:], strict=True):
        assert events[0] == (0, bytes((0xC0 | part.channel, part.program)))
        ons = sorted((t, m[1]) for t, m in events if m[0] == 0x90 | part.channel)
        offs = [(t, m[1]) for t, m in events if m[0] == 0x80 | part.channel]
        assert ons == sorted((n.start, n.pitch) for n in part.notes)
        assert len(offs) == len(part.notes) and max(t for t, _ in offs) <= end + PPQ


def test_composed_songs_play_every_stem_in_every_bar_and_depend_on_the_seed():
    for seed in range(6):
        song = compose_song(np.random.default_rng(seed), bars=8)
        assert 84 <= song.tempo <= 140 and song.seconds == pytest.approx(8 * 4 * 60 / song.tempo)
        for stem in STEMS:
            parts = song.stem_parts(stem)
            assert parts, stem
            bars = {n.start // (4 * PPQ) for p in parts for n in p.notes}
            assert bars == set(range(8)), (seed, stem)
            assert all(0 <= n.pitch <= 127 and 1 <= n.velocity <= 127 for p in parts for n in p.notes)
        assert [p.channel for p in song.stem_parts("drums")] == [9]
        assert all(p.channel != 9 for p in song.parts if p.stem != "drums")
        assert song.stem_parts("vocals")[0].program in (52, 53, 54, 85)
    assert compose_song(np.random.default_rng(3)).describe() == compose_song(np.random.default_rng(3)).describe()
    assert len({json.dumps(compose_song(np.random.default_rng(s)).describe()) for s in range(6)}) == 6


def test_sentences_are_distinct_and_seeded():
    first = make_sentences(np.random.default_rng(0), 400)
    assert len(set(first)) == 400 and all(s[-1] in ".?" for s in first)
    assert make_sentences(np.random.default_rng(0), 400) == first
    assert make_sentences(np.random.default_rng(1), 400) != first


def test_speakers_are_assigned_to_one_split_each():
    assert len({s.name for s in SPEAKERS}) == len(SPEAKERS)
    assert len({(s.engine, s.voice) for s in SPEAKERS}) == len(SPEAKERS)
    small = speakers_for(True)
    assert {s.engine for s in small} == {"espeak-ng"}
    assert [sum(s.split == split for s in small) for split in ("train", "valid", "test")] == [3, 2, 2]
    assert {s.engine for s in speakers_for(False)} == {"flite", "espeak-ng"}


def test_active_rms_normalize_and_trim():
    sr = 16000
    t = np.arange(sr) / sr
    tone = 0.5 * np.sin(2 * np.pi * 250 * t)
    assert active_rms(tone, sr) == pytest.approx(0.5 / np.sqrt(2), rel=1e-3)
    half = np.concatenate([tone, np.zeros(sr)])  # silence is not counted
    assert active_rms(half, sr) == pytest.approx(0.5 / np.sqrt(2), rel=1e-3)
    assert active_rms(np.zeros(100), sr) == 0.0
    assert active_rms(normalize(half, sr, -20.0), sr) == pytest.approx(0.1, rel=1e-3)
    loud = normalize(half, sr, 0.0, peak=0.9)  # the peak limit wins over the target
    assert np.abs(loud).max() == pytest.approx(0.9)
    padded = np.concatenate([np.zeros(sr), tone, np.zeros(sr)])
    assert len(trim_silence(padded, sr, margin=0.05)) == pytest.approx(sr + 2 * 800, abs=20)


def test_pcm16_writing_is_exact(tmp_path):
    x = np.array([0.0, 0.5, -0.5, -1.0, 0.99999, 2.0, -2.0, 1 / 32768])
    assert to_pcm16(x).tolist() == [0, 16384, -16384, -32768, 32767, 32767, -32768, 1]
    rate, n = write_pcm16(tmp_path / "a.wav", x, 48000)
    data, sr = sf.read(tmp_path / "a.wav", dtype="int16")
    assert (rate, n, sr) == (48000, 8, 48000) and data.tolist() == to_pcm16(x).tolist()
    assert sf.info(tmp_path / "a.wav").subtype == "PCM_16"


def test_split_by_rank_gives_fixed_proportions():
    names = [f"pkg/clip{i}.wav" for i in range(40)]
    splits = _split_by_rank(names)
    assert [splits.count(s) for s in ("train", "valid", "test")] == [28, 4, 8]
    assert _split_by_rank(names) == splits
