"""One test per corpus builder: a small fake tree in the corpus's real layout (short audio made with soundfile), then
the manifest produced is checked (splits, prompts, ids, paths, sample rates, counts, dataset_name)."""

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from dataprep import (
    build_demand,
    build_dnr,
    build_fma,
    build_fsd50k,
    build_fuss,
    build_moisesdb,
    build_musdb,
    build_vctk,
    build_vctk_demand,
    build_wham_noise,
    build_whamr,
    build_wsj0,
)
from dataprep.common import DataprepError, window_starts
from datasets.manifest import validate_manifest


def noise(path: Path, sr: int, seconds: float, channels: int = 1, seed: int = 0, scale: float = 0.1,
          fmt: str | None = None) -> np.ndarray:
    """Write white noise (16-bit unless ``fmt``) and return what a reader gets back, ``(C, N)`` float32."""
    path.parent.mkdir(parents=True, exist_ok=True)
    x = (scale * np.random.default_rng(seed).standard_normal((int(round(seconds * sr)), channels))).astype(np.float32)
    sf.write(path, x, sr, format=fmt)
    return sf.read(path, dtype="float32", always_2d=True)[0].T


def pool_paths(manifest, split, prompt):
    return [e["path"] for e in manifest[split][prompt]]


@pytest.fixture
def root(tmp_path, monkeypatch):
    """tmp_path as the repository root: corpora are given as relative folders, as prepare_*.sh does."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_window_starts():
    assert window_starts(17 * 10, 80, 40).tolist() == [0, 40, 80]  # floor((170 - 80) / 40) + 1 = 3
    assert window_starts(80, 80, 40).tolist() == [0]
    assert window_starts(79, 80, 40).tolist() == []


def test_vctk(root):
    base = root / "vctk/VCTK-Corpus/wav48_silence_trimmed"
    for spk, utts in {"p225": 2, "p226": 1, "p232": 1, "p227": 1}.items():
        for u in range(1, utts + 1):
            noise(base / spk / f"{spk}_{u:03d}_mic1.flac", 48000, 0.05 * u)
            noise(base / spk / f"{spk}_{u:03d}_mic2.flac", 48000, 0.05)
    (base / "p228").mkdir()
    manifest, report = build_vctk.build(Path("vctk/VCTK-Corpus"))
    assert list(manifest) == ["train", "valid", "test"] and manifest["valid"] == manifest["test"] == {}
    assert list(manifest["train"]) == ["speech"]
    assert pool_paths(manifest, "train", "speech") == [
        "vctk/VCTK-Corpus/wav48_silence_trimmed/p225/p225_001_mic1.flac",
        "vctk/VCTK-Corpus/wav48_silence_trimmed/p225/p225_002_mic1.flac",
        "vctk/VCTK-Corpus/wav48_silence_trimmed/p227/p227_001_mic1.flac"]
    assert manifest["train"]["speech"][1] == {
        "path": "vctk/VCTK-Corpus/wav48_silence_trimmed/p225/p225_002_mic1.flac", "sample_rate": 48000,
        "num_samples": 4800, "dataset_name": "vctk_speech"}
    assert report.groups["held-out speakers skipped"] == ["p226", "p232"]
    assert report.num("speaker folders without *_mic1.flac files") == 1
    # the command line writes a manifest the checker accepts
    assert build_vctk.main(["--output", "out/vctk_48k.json"]) == 0
    assert json.loads((root / "out/vctk_48k.json").read_text()) == manifest
    assert validate_manifest("out/vctk_48k.json").ok
    with pytest.raises(DataprepError, match="VCTK 0.92 audio folder not found"):
        build_vctk.build(Path("missing"))


def test_demand(root):
    sr = 48000
    source = noise(root / "demand/DKITCHEN/ch01.wav", sr, 17.0)
    noise(root / "demand/DKITCHEN/ch02.wav", sr, 0.1)
    noise(root / "demand/DLIVING/ch01.wav", sr, 9.0)  # a test noise: held out
    noise(root / "demand/NFIELD/ch01.wav", sr, 5.0)  # shorter than a window
    (root / "demand/zip_files").mkdir()
    (root / "demand/notes").mkdir()
    manifest, report = build_demand.build(Path("demand"))
    assert list(manifest["train"]) == ["sfxbg"] and manifest["valid"] == manifest["test"] == {}
    entries = manifest["train"]["sfxbg"]
    assert [e["path"] for e in entries] == [f"demand/demand_48k_segment/DKITCHEN_{i:03d}.wav" for i in range(3)]
    assert {(e["sample_rate"], e["num_samples"], e["dataset_name"]) for e in entries} == {(sr, 8 * sr, "vctk_demand")}
    window, wsr = sf.read(root / entries[1]["path"], dtype="float32")
    assert wsr == sr and np.array_equal(window, source[0, 4 * sr: 12 * sr])  # 16-bit in, 16-bit out: exact
    assert report.groups["test noise types held out"] == ["DLIVING"]
    assert report.groups["folders without ch01.wav (ignored)"] == ["notes"]
    assert report.num("recordings shorter than 8 s (no window)") == 1
    assert report.num("noise types missing") == 15
    mtime = (root / entries[0]["path"]).stat().st_mtime_ns
    assert build_demand.build(Path("demand"))[0] == manifest  # a re-run reuses the finished windows
    assert (root / entries[0]["path"]).stat().st_mtime_ns == mtime


def test_vctk_demand(root):
    sr = 48000
    arrays = {}
    for subset, names in {"trainset_28spk_wav": ["p226_001", "p230_001", "p287_002"],
                          "testset_wav": ["p232_001", "p257_003"]}.items():
        for i, name in enumerate(names):
            clean = noise(root / f"vctk_demand/clean_{subset}/{name}.wav", sr, 0.1 + 0.01 * i, seed=i)
            noisy = noise(root / f"vctk_demand/noisy_{subset}/{name}.wav", sr, 0.1 + 0.01 * i, seed=10 + i)
            arrays[name] = noisy - clean
    (root / "vctk_demand/clean_testset_wav/p257_003.wav").unlink()
    manifest, report = build_vctk_demand.build(Path("vctk_demand"))
    assert manifest["train"] == {}
    assert list(manifest["valid"]) == ["p226_001.wav", "p287_002.wav"]
    assert list(manifest["test"]) == ["p232_001.wav"]
    assert manifest["test"]["p232_001.wav"] == {
        "mix": "vctk_demand/noisy_testset_wav/p232_001.wav",
        "ref": {"speech_1": "vctk_demand/clean_testset_wav/p232_001.wav",
                "sfxbg_1": "vctk_demand/noise_testset_wav/p232_001.wav"},
        "sample_rate": sr, "num_samples": 4800, "dataset_name": "vctk_demand"}
    assert manifest["valid"]["p287_002.wav"]["ref"]["sfxbg_1"] == "vctk_demand/noise_trainset_28spk_wav/p287_002.wav"
    written = sf.read(root / "vctk_demand/noise_trainset_28spk_wav/p287_002.wav", dtype="float32")[0]
    assert np.array_equal(written, arrays["p287_002"][0])  # noise = noisy - clean, exactly
    assert report.groups["noisy files without a clean file in clean_testset_wav (skipped)"] == ["p257_003.wav"]


def test_wsj0(root):
    wav = root / "wsj/wsj0_wav"
    noise(wav / "11-1.1/wsj0/si_tr_s/01t/01to030v.wav", 16000, 0.1)
    noise(wav / "11-1.1/wsj0/si_tr_s/01t/01to030w.wav", 16000, 0.2)
    noise(wav / "11-2.1/wsj0/si_tr_s/02c/02CC0201.wav", 16000, 0.3)  # upper case, as on some LDC copies
    noise(wav / "11-3.1/wsj0/si_dt_05/050/050a0501.wav", 16000, 0.1)  # no si_tr_s: not scanned
    lst = root / "mix_2_spk_tr.txt"
    lst.write_text("wsj0/si_tr_s/01t/01to030v.wav 1.2 wsj0/si_tr_s/02c/02cc0201.wav -1.2\n"
                   "wsj0/si_tr_s/02c/02cc0201.wav 0.5 wsj0/si_tr_s/01t/01to030w.wav -0.5\n"
                   "wsj0/si_tr_s/03a/03aa0101.wav 0.1 wsj0/si_tr_s/01t/01to030v.wav -0.1\n")
    manifest, report = build_wsj0.build(Path("wsj/wsj0_wav"), lst)
    assert manifest["valid"] == manifest["test"] == {}
    assert manifest["train"]["speech"] == [
        {"path": "wsj/wsj0_wav/11-1.1/wsj0/si_tr_s/01t/01to030v.wav", "sample_rate": 16000, "num_samples": 1600,
         "dataset_name": "wsj0"},
        {"path": "wsj/wsj0_wav/11-2.1/wsj0/si_tr_s/02c/02CC0201.wav", "sample_rate": 16000, "num_samples": 4800,
         "dataset_name": "wsj0"},
        {"path": "wsj/wsj0_wav/11-1.1/wsj0/si_tr_s/01t/01to030w.wav", "sample_rate": 16000, "num_samples": 3200,
         "dataset_name": "wsj0"}]
    assert report.groups["listed utterances missing from the converted tree"] == ["wsj0/si_tr_s/03a/03aa0101.wav"]
    lst.write_text("wsj0/si_tr_s/01t/01to030v.wav 1.2\n")
    with pytest.raises(DataprepError, match="expected 'path1 snr1 path2 snr2'"):
        build_wsj0.build(Path("wsj/wsj0_wav"), lst)


def test_wham_noise(root):
    base = root / "wham_noise_48k/high_res_wham"
    for name, seconds in {"a.wav": 13.0, "b.wav": 8.0, "c.wav": 9.0, "d.wav": 9.0}.items():
        noise(base / "audio" / name, 48000, seconds, channels=2)
    with open(base / "high_res_metadata.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["Filename", "Location, city", "WHAM! Split"])
        writer.writerow(["audio/a.wav", "Boston, MA", "Train"])  # a quoted comma does not shift the columns
        writer.writerow(["audio/b.wav", "x", "Train"])
        writer.writerow(["audio/c.wav", "x", "Valid"])
        writer.writerow(["audio/e.wav", "x", "Train"])
    manifest, report = build_wham_noise.build(Path("wham_noise_48k/high_res_wham"))
    seg = "wham_noise_48k/high_res_wham/high_res_wham_segment"
    assert pool_paths(manifest, "train", "sfxbg") == [f"{seg}/a/000.wav", f"{seg}/a/001.wav", f"{seg}/b/000.wav"]
    assert {(e["sample_rate"], e["num_samples"], e["dataset_name"]) for e in manifest["train"]["sfxbg"]} == {
        (48000, 384000, "wham_noise")}
    assert sf.info(str(root / seg / "a/001.wav")).channels == 2  # channels kept
    assert manifest["valid"] == manifest["test"] == {}
    assert report.groups["Train files of the metadata missing from audio/"] == ["e.wav"]
    assert report.counts["audio files not in the Train split"] == 2


def test_whamr(root):
    base = root / "whamr/wav16k/max"
    for folder, ids in {"tr": ["a.wav", "b.wav"], "cv": ["c.wav"], "tt": ["d.wav"]}.items():
        for i in ids:
            for sub in ("mix_both_anechoic", "s1_anechoic", "s2_anechoic", "noise", "mix_both_reverb"):
                noise(base / folder / sub / i, 16000, 0.1)
    (base / "tr/noise/b.wav").unlink()
    manifest, report = build_whamr.build(Path("whamr"))
    assert {k: list(v) for k, v in manifest.items()} == {"train": ["a.wav"], "valid": ["c.wav"], "test": ["d.wav"]}
    assert manifest["valid"]["c.wav"] == {
        "mix": "whamr/wav16k/max/cv/mix_both_anechoic/c.wav",
        "ref": {"speech_1": "whamr/wav16k/max/cv/s1_anechoic/c.wav",
                "speech_2": "whamr/wav16k/max/cv/s2_anechoic/c.wav",
                "sfxbg_1": "whamr/wav16k/max/cv/noise/c.wav"},
        "sample_rate": 16000, "num_samples": 1600, "dataset_name": "wham"}
    assert report.groups["mixtures with missing references (skipped)"] == ["whamr/wav16k/max/tr/noise/b.wav"]


def test_dnr(root):
    base = root / "dnr/dnr_v2"
    for folder, ids in {"tr": ["100", "101"], "cv": ["200"], "tt": ["300"]}.items():
        for i in ids:
            for name in ("mix", "speech", "music", "sfx"):
                noise(base / folder / i / f"{name}.wav", 44100, 0.1)
    (base / "tr/101/sfx.wav").unlink()
    manifest, report = build_dnr.build(Path("dnr/dnr_v2"))
    assert {k: list(v) for k, v in manifest.items()} == {"train": ["100"], "valid": ["200"], "test": ["300"]}
    assert manifest["test"]["300"] == {
        "mix": "dnr/dnr_v2/tt/300/mix.wav",
        "ref": {"speech_1": "dnr/dnr_v2/tt/300/speech.wav", "musicbg_1": "dnr/dnr_v2/tt/300/music.wav",
                "sfxbg_1": "dnr/dnr_v2/tt/300/sfx.wav"},
        "sample_rate": 44100, "num_samples": 4410, "dataset_name": "dnr"}
    assert report.num("folders with missing files (skipped)") == 1
    assert report.num("mixtures that are not 60 s long") == 3


def test_fuss(root):
    base = root / "fuss/ssdata"
    layout = {  # split folder -> id -> source files, "0" marks an all-zero (inactive) source
        "train": {"example00000": ["foreground1_sound.wav", "background0_sound.wav", "foreground0_sound.wav"],
                  "example00001": ["background0_sound.wav", "foreground0_sound.wav:0"],
                  "example00002": ["background0_sound.wav:0"]},
        "validation": {"example0000": ["background0_sound.wav", "foreground0_sound.wav", "foreground1_sound.wav",
                                       "foreground2_sound.wav"]},
        "eval": {"example0000": ["background0_sound.wav", "foreground0_sound.wav"]},
    }
    for folder, examples in layout.items():
        for ex, sources in examples.items():
            noise(base / folder / f"{ex}.wav", 16000, 0.1)
            for s in sources:
                name, _, zero = s.partition(":")
                noise(base / folder / f"{ex}_sources" / name, 16000, 0.1, scale=0.0 if zero else 0.1)
    noise(base / "train/example00003.wav", 16000, 0.1)  # no _sources folder
    out, report = build_fuss.build(Path("fuss/ssdata"))
    full = out["all"]
    assert {k: list(v) for k, v in full.items()} == {
        "train": ["example00000", "example00001"], "valid": ["example0000"], "test": ["example0000"]}
    src = "fuss/ssdata/train/example00000_sources"
    assert full["train"]["example00000"] == {
        "mix": "fuss/ssdata/train/example00000.wav",
        "ref": {"sfx_1": f"{src}/background0_sound.wav", "sfx_2": f"{src}/foreground0_sound.wav",
                "sfx_3": f"{src}/foreground1_sound.wav"},  # sorted file order
        "sample_rate": 16000, "num_samples": 1600, "dataset_name": "fuss"}
    assert list(full["train"]["example00001"]["ref"]) == ["sfx_1"]  # the all-zero source is dropped
    assert {n: {k: list(v) for k, v in out[n].items()} for n in (1, 2, 3, 4)} == {
        1: {"train": ["example00001"], "valid": [], "test": []},
        2: {"train": [], "valid": [], "test": ["example0000"]},
        3: {"train": ["example00000"], "valid": [], "test": []},
        4: {"train": [], "valid": ["example0000"], "test": []}}
    assert report.groups["examples without an active source (skipped)"] == ["example00002"]
    assert report.num("mixtures without a _sources folder (skipped)") == 1
    assert build_fuss.main(["--corpus_dir", "fuss/ssdata", "--output_dir", "json"]) == 0
    assert sorted(p.name for p in (root / "json").iterdir()) == [
        "fuss_16k.json", "fuss_1src_16k.json", "fuss_2src_16k.json", "fuss_3src_16k.json", "fuss_4src_16k.json"]
    assert all(validate_manifest(p).ok for p in (root / "json").iterdir())


def test_musdb(root):
    base = root / "musdb18/musdbhq"
    songs = {"train": ["Actions - One Minute Smile", "A - Song", "B - Song"], "test": ["C - Song"]}
    for folder, names in songs.items():
        for name in names:
            for stem in ("mixture", "drums", "bass", "vocals", "other"):
                noise(base / folder / name / f"{stem}.wav", 44100, 0.1, channels=2)
    (base / "train/B - Song/bass.wav").unlink()
    manifest, report = build_musdb.build(Path("musdb18/musdbhq"))
    assert {k: list(v) for k, v in manifest.items()} == {
        "train": ["A - Song"], "valid": ["Actions - One Minute Smile"], "test": ["C - Song"]}
    song = "musdb18/musdbhq/test/C - Song"
    assert manifest["test"]["C - Song"] == {
        "mix": f"{song}/mixture.wav",
        "ref": {"drums_1": f"{song}/drums.wav", "bass_1": f"{song}/bass.wav", "vocals_1": f"{song}/vocals.wav",
                "other_1": f"{song}/other.wav"},
        "sample_rate": 44100, "num_samples": 4410, "dataset_name": "musdb18hq"}
    assert report.num("validation songs missing from train/") == 13
    assert report.groups["song folders with missing files (skipped)"] == ["B - Song (bass.wav)"]


def test_moisesdb(root):
    base = root / "moisesdb/moisesdb/moisesdb_v0.1"
    stems = [("vocals", ["v1", "v2"]), ("guitar", ["g1"]), ("percussion", ["p1"]), ("bass", ["b1"]),
             ("other_keys", ["k1"])]
    for song in ("s1", "s2", "s3", "s4"):
        meta = {"song": song, "stems": []}
        for stem, tracks in stems:
            meta["stems"].append({"stemName": stem, "tracks": [{"id": t, "extension": "wav"} for t in tracks]})
            for t in tracks:
                noise(base / song / stem / f"{t}.wav", 44100, 0.1)
        (base / song / "data.json").write_text(json.dumps(meta))
    split_csv = root / "moisesdb/moisesdb_split.csv"
    split_csv.write_text("song_id,split\ns1,1\ns2,4\ns3,5\n")
    manifest, report = build_moisesdb.build(Path("moisesdb/moisesdb/moisesdb_v0.1"), split_csv)
    assert {k: list(v) for k, v in manifest.items()} == {"train": ["s1"], "valid": ["s2"], "test": ["s3"]}
    song = "moisesdb/moisesdb/moisesdb_v0.1/s1"
    assert manifest["train"]["s1"] == {
        "ref": {"bass_1": f"{song}/bass/b1.wav", "other_1": f"{song}/guitar/g1.wav",
                "other_2": f"{song}/percussion/p1.wav", "other_3": f"{song}/other_keys/k1.wav",
                "vocals_1": f"{song}/vocals/v1.wav", "vocals_2": f"{song}/vocals/v2.wav"},
        "sample_rate": 44100, "num_samples": 4410, "dataset_name": "moisesdb"}  # no "mix"
    assert report.groups["song folders not in the split file (ignored)"] == ["s4"]
    split_csv.write_text("song_id,split\ns1,1\ns9,2\n")
    with pytest.raises(DataprepError, match="1 song\\(s\\) of .* not found .* e.g. s9"):
        build_moisesdb.build(Path("moisesdb/moisesdb/moisesdb_v0.1"), split_csv)


def _ontology(path: Path) -> Path:
    nodes = [
        {"id": "/m/09l8g", "name": "Human voice", "child_ids": ["/m/09x0r"]},
        {"id": "/m/09x0r", "name": "Speech", "child_ids": ["/m/05zppz"]},
        {"id": "/m/05zppz", "name": "Male speech", "child_ids": []},
        {"id": "/m/09hlz4", "name": "Respiratory sounds", "child_ids": []},
        {"id": "/t/dd00012", "name": "Human group actions", "child_ids": []},
        {"id": "/m/04rlf", "name": "Music", "child_ids": ["/m/042v_gx"]},
        {"id": "/m/042v_gx", "name": "Acoustic guitar", "child_ids": []},
        {"id": "/m/0bt9lr", "name": "Dog", "child_ids": []},
        {"id": "/m/0k4j", "name": "Car", "child_ids": []},
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(nodes))
    return path


def test_fsd50k(root):
    base = root / "fsd50k"
    clips = {  # fname: (seconds, ground-truth mids, collection labels, split)
        "1": (1.0, "/m/0bt9lr", "Dog", "train"),  # single-label, short -> sfx
        "2": (9.0, "/m/0k4j", "Car", "train"),  # single-label, long -> sfxbg
        "3": (8.0, "/m/0bt9lr,/m/0k4j", "Dog,Car", "train"),  # multi-label, long -> sfxbg after single-label ones
        "4": (1.0, "/m/0bt9lr,/m/0k4j", "Dog,Car", "train"),  # multi-label, short -> dropped
        "5": (1.0, "/m/05zppz,/m/09x0r,/m/09l8g", "Male_speech", "train"),  # speech -> dropped
        "6": (1.0, "/m/04rlf", "Music", "train"),  # only the Music root -> dropped (the release keeps it)
        "7": (1.0, "/m/0bt9lr", "", "val"),  # empty collection label counts as single -> valid sfx
        "8": (1.0, "/m/0k4j", "Car", "train"),  # audio missing
    }
    for fname, (seconds, *_rest) in clips.items():
        if fname != "8":
            noise(base / f"FSD50K.dev_audio/{fname}.wav", 44100, seconds)
    (base / "FSD50K.ground_truth").mkdir()
    with open(base / "FSD50K.ground_truth/dev.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["fname", "labels", "mids", "split"])
        for fname, (_, mids, labels, split) in clips.items():
            writer.writerow([fname, labels or "Dog", mids, split])
    (base / "FSD50K.metadata/collection").mkdir(parents=True)
    with open(base / "FSD50K.metadata/collection/collection_dev.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["fname", "labels", "mids"])
        for fname, (_, mids, labels, _) in reversed(clips.items()):  # other order: joined on fname
            writer.writerow([fname, labels, mids])
    manifest, report = build_fsd50k.build(Path("fsd50k"), _ontology(root / "ontology/ontology.json"))
    assert manifest["test"] == {}
    audio = "fsd50k/FSD50K.dev_audio"
    assert pool_paths(manifest, "train", "sfx") == [f"{audio}/1.wav"]
    assert pool_paths(manifest, "train", "sfxbg") == [f"{audio}/2.wav", f"{audio}/3.wav"]
    assert pool_paths(manifest, "valid", "sfx") == [f"{audio}/7.wav"] and manifest["valid"]["sfxbg"] == []
    assert manifest["train"]["sfxbg"][1] == {
        "path": f"{audio}/3.wav", "sample_rate": 44100, "num_samples": 352800, "labels": "Dog,Car",
        "mids": "/m/0bt9lr,/m/0k4j", "dataset_name": "fsd50k"}
    assert report.counts["speech/music clips dropped"] == 2
    assert report.counts["short multi-label clips dropped"] == 1
    assert report.groups["clips missing from FSD50K.dev_audio"] == ["8.wav"]


def test_fma(root, monkeypatch):
    base = root / "fma"
    (base / "fma_metadata").mkdir(parents=True)
    tracks = {  # id: (subset, split, content)
        2: ("small", "training", "ok"), 5: ("medium", "training", "ok"), 140: ("medium", "validation", "ok"),
        1482: ("medium", "test", "ok"), 3: ("large", "training", "ok"), 10: ("medium", "training", "zeros"),
        20: ("medium", "training", "corrupt"), 30: ("medium", "training", "absent")}
    with open(base / "fma_metadata/tracks.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["", "album", "set", "set", "track"])
        writer.writerow(["", "title", "split", "subset", "title"])
        writer.writerow(["track_id", "", "", "", ""])
        for tid, (subset, split, _) in tracks.items():
            writer.writerow([tid, "An album, with a comma", split, subset, "t"])
    for tid, (_, _, content) in tracks.items():
        path = build_fma.track_path(base / "fma_medium", tid)
        if content in ("ok", "zeros"):
            noise(path, 44100, 0.2, scale=0.1 if content == "ok" else 0.0, fmt="MP3")
        elif content == "corrupt":
            path.write_bytes(os.urandom(2000))
    assert build_fma.track_path(Path("x"), 1482) == Path("x/001/001482.mp3")
    manifest, report = build_fma.build(Path("fma"))
    assert pool_paths(manifest, "train", "musicbg") == ["fma/fma_medium/000/000002.mp3",
                                                        "fma/fma_medium/000/000005.mp3"]
    assert pool_paths(manifest, "valid", "musicbg") == ["fma/fma_medium/000/000140.mp3"]
    assert pool_paths(manifest, "test", "musicbg") == ["fma/fma_medium/001/001482.mp3"]
    entry = manifest["train"]["musicbg"][0]
    assert (entry["sample_rate"], entry["num_samples"], entry["dataset_name"]) == (44100, 8820, "fma")
    assert report.groups["tracks dropped (all zeros)"] == ["000010.mp3"]
    assert report.groups["tracks dropped (unreadable)"] == ["000020.mp3"]
    assert report.groups["tracks dropped (missing)"] == ["000030.mp3"]

    # libmpg123 writes its errors from C to file descriptor 2: they are seen there and drop the track
    real_read = build_fma.read_audio

    def noisy_decoder(path, *args, **kwargs):
        if path.name == "000005.mp3":
            os.write(2, b"[src/libmpg123/layer3.c:INT123_do_layer3():1801] error: dequantization failed!\n")
        return real_read(path, *args, **kwargs)

    monkeypatch.setattr(build_fma, "read_audio", noisy_decoder)
    manifest, report = build_fma.build(Path("fma"))
    assert report.groups["tracks dropped (decoder errors)"] == ["000005.mp3"]
    assert build_fma.build(Path("fma"), keep_decoder_errors=True)[0]["train"]["musicbg"][1]["path"].endswith(
        "000005.mp3")
