"""Source activity detection (docs/corpora.md §14) and the *_sad.json builder."""

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from dataprep.sad import detect_active_segments, main, sad_file, sad_manifest
from datasets.manifest import mixture_entry, validate_manifest, write_manifest

SR = 1600  # a low rate keeps the 8 s segments small; the algorithm only sees samples


def bursts(seconds: float, active: list[tuple[float, float]], channels: int = 1, seed: int = 0,
           level: float = 0.2) -> np.ndarray:
    """``(C, N)`` noise in the ``active`` (start, end) second ranges, exact zeros elsewhere."""
    rng = np.random.default_rng(seed)
    x = np.zeros((channels, int(seconds * SR)), dtype=np.float32)
    for start, end in active:
        a, b = int(start * SR), int(end * SR)
        x[:, a:b] = level * rng.standard_normal((channels, b - a))
    return x


def reference_sad(audio, sr, min_power, min_thres):
    """The algorithm of docs/corpora.md §14 written with plain loops (the vectorised version must agree)."""
    x = audio / np.abs(audio).max()
    length = 8 * sr
    hop = length // 2
    n = (x.shape[1] - length) // hop + 1
    powers = np.zeros((n, 16))
    for i in range(n):
        seg = x[:, i * hop: i * hop + length]
        for k in range(16):
            chunk = seg[:, k * length // 16: (k + 1) * length // 16]
            p = float(np.sum(chunk.astype(np.float64) ** 2)) / chunk.shape[1]
            powers[i, k] = p if p != 0 else min_power
    threshold = max(np.percentile(powers, 15), min_thres)
    return [i * hop for i in range(n) if np.sum(powers[i] > threshold) >= 8]


@pytest.mark.parametrize("active, expected_seconds", [
    # segments start every 4 s: [0,8) [4,12) … [32,40); a segment needs >= 8 of its 16 half-second chunks active
    ([(0, 8), (27.5, 40)], [0, 4, 24, 28, 32]),  # [4,12) has exactly 8 active chunks: kept; [20,28) has 1
    ([(0, 7.5), (27.5, 40)], [0, 24, 28, 32]),  # [4,12) has 7: dropped
    ([(10, 18)], [8, 12]),  # [8,16) 12 chunks, [12,20) 12 chunks, [4,12) and [16,24) 4 each
])
def test_sad_keeps_exactly_the_active_segments(active, expected_seconds):
    audio = bursts(40, active, channels=2)
    starts, length = detect_active_segments(audio, SR, min_power=1e-5, min_thres=1e-3)
    assert length == 8 * SR
    assert starts.tolist() == [s * SR for s in expected_seconds]
    assert starts.tolist() == reference_sad(audio, SR, 1e-5, 1e-3)


def test_sad_threshold_floor_and_degenerate_inputs():
    audio = bursts(24, [(0, 8)])
    audio[:, 8 * SR:] = 0.003 * np.random.default_rng(1).standard_normal(16 * SR)  # quiet, not silent
    # relative to the peak, the quiet part's power is about 1e-5: below the 1e-3 floor, so inactive
    starts, _ = detect_active_segments(audio, SR, min_power=1e-5, min_thres=1e-3)
    assert starts.tolist() == [0, 4 * SR]
    # with a lower floor the 15th percentile (a quiet level) decides and some quiet segments pass
    starts, _ = detect_active_segments(audio, SR, min_power=1e-7, min_thres=1e-9)
    assert len(starts) > 2 and starts.tolist() == reference_sad(audio, SR, 1e-7, 1e-9)
    assert detect_active_segments(np.zeros((1, 20 * SR)), SR, 1e-5, 1e-3)[0].tolist() == []  # all zero: nothing
    assert detect_active_segments(bursts(7.9, [(0, 7.9)]), SR, 1e-5, 1e-3)[0].tolist() == []  # < 8 s: nothing
    with pytest.raises(ValueError, match="must be \\(channels, samples\\)"):
        detect_active_segments(np.zeros(100), SR, 1e-5, 1e-3)


def test_sad_matches_reference_on_random_signals():
    rng = np.random.default_rng(3)
    for trial in range(4):
        seconds = float(rng.uniform(8, 50))
        cuts = np.sort(rng.uniform(0, seconds, 6))
        active = [(cuts[i], cuts[i + 1]) for i in range(0, 6, 2)]
        audio = bursts(seconds, active, channels=1 + trial % 2, seed=trial, level=float(rng.uniform(0.01, 1)))
        assert detect_active_segments(audio, SR, 1e-7, 1e-5)[0].tolist() == reference_sad(audio, SR, 1e-7, 1e-5)


def test_sad_file_writes_normalised_segments(tmp_path):
    audio = bursts(20, [(0, 20)], channels=2) * 0.5
    src = tmp_path / "songs/Some - Song/vocals.wav"
    src.parent.mkdir(parents=True)
    sf.write(src, audio.T, SR, subtype="FLOAT")
    out = sad_file(str(src), tmp_path / "sad", 1e-5, 1e-3)
    assert [(Path(p).relative_to(tmp_path).as_posix(), sr, n) for p, sr, n in out] == [
        (f"sad/Some - Song/vocals_{j}.wav", SR, 8 * SR) for j in range(4)]
    seg, sr = sf.read(tmp_path / "sad/Some - Song/vocals_2.wav", dtype="float32", always_2d=True)
    expected = (audio / np.abs(audio).max())[:, 8 * SR: 16 * SR].T
    assert sr == SR and seg.shape == (8 * SR, 2)
    np.testing.assert_allclose(seg, expected, atol=1 / 32767)  # peak-normalised, 16-bit


def test_sad_manifest(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    stems = {"drums": [(0, 24)], "bass": [], "vocals": [(12, 24)], "other": [(0, 24)]}
    manifest = {"train": {}, "valid": {}, "test": {}}
    for song, split in (("A - One", "train"), ("B - Two", "valid")):
        refs = {}
        for k, (stem, active) in enumerate(stems.items()):
            path = Path("musdb/train") / song / f"{stem}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, bursts(24, active, seed=k).T if active else np.zeros(24 * SR), SR)
            refs[f"{stem}_1"] = path
        manifest[split][song] = mixture_entry(refs, SR, 24 * SR, "musdb18hq")
    write_manifest("musdb.json", manifest)
    assert main(["--input", "musdb.json", "--output", "musdb_sad.json", "--out_dir", "sad/data",
                 "--min_power", "1e-5", "--min_thres", "1e-3"]) == 0
    sad = json.loads(Path("musdb_sad.json").read_text())
    assert list(sad["train"]) == ["drums", "bass", "vocals", "other"]
    assert [e["path"] for e in sad["train"]["drums"]] == [f"sad/data/A - One/drums_{j}.wav" for j in range(5)]
    assert sad["train"]["bass"] == []
    # vocals active from 12 s: segments [8,16) (8 chunks), [12,20), [16,24) kept, numbered from 0
    assert [e["path"] for e in sad["train"]["vocals"]] == [f"sad/data/A - One/vocals_{j}.wav" for j in range(3)]
    assert sad["train"]["other"][0] == {"path": "sad/data/A - One/other_0.wav", "sample_rate": SR,
                                        "num_samples": 8 * SR, "dataset_name": "musdb18hq"}
    assert sad["valid"] == manifest["valid"] == json.loads(Path("musdb.json").read_text())["valid"]
    assert validate_manifest("musdb_sad.json").ok
    again = sad_manifest(manifest, Path("sad/data"), 1e-5, 1e-3)  # re-run: same result, files reused
    assert json.loads(json.dumps(again)) == sad
