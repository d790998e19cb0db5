"""LibriVox (DNS5 read speech) pipeline: the steps that run without downloaded models, and clear failures for the
ones that need them (WebRTC VAD, DNSMOS scores)."""

import gzip
import io
import json
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from dataprep import build_librivox as lv
from dataprep.common import DataprepError, Report
from datasets.manifest import validate_manifest


def wav_bytes(sr: int, n: int, seed: int = 0) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, 0.1 * np.random.default_rng(seed).standard_normal(n), sr, format="WAV")
    return buf.getvalue()


def make_tar(members: dict[str, bytes]) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    return buf


def lowpassed_noise(sr: int, n: int, cutoff: float, seed: int = 0) -> np.ndarray:
    spec = np.fft.rfft(np.random.default_rng(seed).standard_normal(n))
    spec[np.fft.rfftfreq(n, 1 / sr) > cutoff] = 0
    return (0.1 * np.fft.irfft(spec, n)).astype(np.float32)


def test_extract_tar_puts_at_most_n_audio_files_per_folder(tmp_path):
    members = {f"mnt/dnsv5/clean/read_speech/book_{i}.wav": wav_bytes(16000, 160, i) for i in range(7)}
    members["mnt/dnsv5/README.txt"] = b"hello"
    members["../evil.wav"] = b"x"
    report = Report("extract")
    assert lv.extract_tar(make_tar(members), tmp_path, files_per_dir=3, report=report) == 7
    base = tmp_path / "mnt/dnsv5/clean/read_speech"
    assert {p.name: sorted(f.name for f in p.iterdir()) for p in base.iterdir()} == {
        "000000": ["book_0.wav", "book_1.wav", "book_2.wav"], "000001": ["book_3.wav", "book_4.wav", "book_5.wav"],
        "000002": ["book_6.wav"]}
    assert (tmp_path / "mnt/dnsv5/README.txt").read_bytes() == b"hello"
    assert report.groups["unsafe member paths skipped"] == ["../evil.wav"]
    assert not (tmp_path.parent / "evil.wav").exists()
    # a re-run keeps the existing files and the same layout
    (base / "000001/book_4.wav").write_bytes(b"kept")
    lv.extract_tar(make_tar(members), tmp_path, files_per_dir=3)
    assert (base / "000001/book_4.wav").read_bytes() == b"kept"


def test_target_rate_and_uids():
    assert [lv.target_rate(b) for b in (3093.75, 4000, 4001, 11025, 12000, 16000, 22050, 23000, 24000)] == [
        8000, 8000, 16000, 22050, 24000, 32000, 44100, 48000, 48000]
    paths = [Path("a/x.wav"), Path("b/x.wav"), Path("c/y.wav"), Path("d/x.wav")]
    assert lv.unique_uids(paths) == ["x", "x(2)", "y", "x(3)"]


@pytest.mark.parametrize("cutoff", [3000.0, 7000.0, 15000.0])
def test_estimate_bandwidth_of_lowpassed_noise(cutoff):
    audio = lowpassed_noise(48000, 48000, cutoff)
    assert 0 <= lv.estimate_bandwidth(audio, 48000) - cutoff <= 48000 / 512  # within one 93.75 Hz step
    assert lv.estimate_bandwidth(lowpassed_noise(48000, 48000, 30000), 48000) == 24000.0


def test_bandwidth_resample_dnsmos_manifest(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    dns5 = Path("dns5")  # not the release's dns5_fullband: listed paths are mapped onto it
    speech = dns5 / "Track1_Headset/mnt/dnsv5/clean/read_speech"
    for hexdir, name, cutoff in (("000000", "narrow.wav", 3500.0), ("000000", "wide.wav", 20000.0),
                                 ("000001", "mid.wav", 7000.0)):
        (speech / hexdir).mkdir(parents=True, exist_ok=True)
        sf.write(speech / hexdir / name, lowpassed_noise(48000, 9600, cutoff), 48000)
    report = Report("bandwidth")
    lv.step_bandwidth(dns5 / "Track1_Headset", Path("bw.json.gz"), 1, report)
    with gzip.open("bw.json.gz", "rt") as f:
        estimated = json.load(f)
    assert list(estimated) == ["narrow", "wide", "mid"]
    assert [lv.target_rate(bw) for _, bw in estimated.values()] == [8000, 44100, 16000]

    # a release-style list: dns5_fullband/ prefix, and a hex folder that differs from this extraction
    listed = {"narrow": ["dns5_fullband/Track1_Headset/mnt/dnsv5/clean/read_speech/000000/narrow.wav", 3500.0],
              "wide": ["dns5_fullband/Track1_Headset/mnt/dnsv5/clean/read_speech/000000/wide.wav", 23500.0],
              "mid": ["dns5_fullband/Track1_Headset/mnt/dnsv5/clean/read_speech/000000/mid.wav", 7000.0],
              "gone": ["dns5_fullband/Track1_Headset/mnt/dnsv5/clean/read_speech/000000/gone.wav", 7000.0]}
    with gzip.open("listed.json.gz", "wt") as f:
        json.dump(listed, f)
    report = Report("resample")
    lv.step_resample(Path("listed.json.gz"), dns5, Path("resampled"), Path("resampled.scp"), 1, report)
    assert Path("resampled.scp").read_text().splitlines() == [
        "narrow 8000 resampled/0/narrow.wav",
        f"wide 48000 {speech}/000000/wide.wav",  # already at its target rate: kept where it is
        "mid 16000 resampled/0/mid.wav"]
    assert sf.info("resampled/0/narrow.wav").samplerate == 8000
    assert sf.info("resampled/0/narrow.wav").frames == 1600
    assert report.groups["listed files not found on disk (skipped)"] == [listed["gone"][0]]

    with pytest.raises(DataprepError, match="DNSMOS scores not found: .*sig_bak_ovr.onnx.*LIBRIVOX_NO_DNSMOS=1"):
        lv.step_dnsmos(Path("resampled.scp"), Path("dnsmos.json"), Path("dnsmos.scp"), 3.0, Report("dnsmos"))
    scores = {"mid": {"OVRL": 3.0, "SIG": 3.5, "BAK": 3.9, "P808_MOS": 3.7},
              "narrow": {"OVRL": 3.0, "SIG": 3.5, "BAK": 2.9, "P808_MOS": 3.7},
              "wide": {"OVRL": 3.0, "SIG": 3.5, "BAK": 3.0, "P808_MOS": 3.7},
              "other": {"OVRL": 3.0, "SIG": 3.5, "BAK": 4.0, "P808_MOS": 3.7}}
    with gzip.open("dnsmos.json.gz", "wt") as f:
        json.dump(scores, f)
    lv.step_dnsmos(Path("resampled.scp"), Path("dnsmos.json.gz"), Path("dnsmos.scp"), 3.0, Report("dnsmos"))
    assert [ln.split()[0] for ln in Path("dnsmos.scp").read_text().splitlines()] == ["mid", "wide"]  # score order

    assert lv.main(["manifest", "--input", "dnsmos.scp", "--output", "librivox.json"]) == 0
    manifest = json.loads(Path("librivox.json").read_text())
    assert list(manifest) == ["train"]  # no valid/test keys, as published
    assert manifest["train"]["speech"] == [
        {"path": "resampled/0/mid.wav", "sample_rate": 16000, "num_samples": 3200,
         "dataset_name": "librivox_urgent2024"},
        {"path": f"{speech}/000000/wide.wav", "sample_rate": 48000, "num_samples": 9600,
         "dataset_name": "librivox_urgent2024"}]
    assert validate_manifest("librivox.json").ok


def test_vad_needs_webrtcvad(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "webrtcvad", None)  # as if it were not installed
    with pytest.raises(DataprepError, match="pip install webrtcvad==2.0.10"):
        lv.speech_fraction(np.zeros(1600, dtype=np.float32), 16000)
    (tmp_path / "in.scp").write_text("a 16000 a.wav\n")
    assert lv.main(["vad", "--input", str(tmp_path / "in.scp"), "--output", str(tmp_path / "out.scp")]) == 1
    assert "pip install webrtcvad" in capsys.readouterr().err
    assert not (tmp_path / "out.scp").exists()


def test_vad_with_a_fake_detector(tmp_path, monkeypatch):
    """The frame logic (10 ms frames, last partial frame scored on the final 10 ms, int16 conversion, >= 0.2)."""
    calls = []

    class FakeVad:
        def __init__(self, mode):
            assert mode == 2

        def is_speech(self, frame, sr):
            pcm = np.frombuffer(frame, dtype="<i2")
            calls.append((len(pcm), sr))
            return bool(np.abs(pcm).max() > 1000)

    monkeypatch.setitem(sys.modules, "webrtcvad", type(sys)("webrtcvad"))
    sys.modules["webrtcvad"].Vad = FakeVad
    audio = np.zeros(16000 * 105 // 1000, dtype=np.float32)  # 105 ms: 10 full frames + a partial one
    audio[-80:] = 0.5  # only the last 5 ms are loud: the final frame [95, 105) ms is speech
    assert lv.speech_fraction(audio, 16000) == pytest.approx(1 / 11)
    assert calls[-1] == (160, 16000) and len(calls) == 11
    for name, loud in (("a.wav", 0.0), ("b.wav", 0.5)):
        sf.write(tmp_path / name, np.full(1600, loud, dtype=np.float32), 16000)
    (tmp_path / "in.scp").write_text(f"a 16000 {tmp_path / 'a.wav'}\nb 16000 {tmp_path / 'b.wav'}\n")
    lv.step_vad(tmp_path / "in.scp", tmp_path / "out.scp", 2, 0.2, 1, Report("vad"))
    assert (tmp_path / "out.scp").read_text() == f"b 16000 {tmp_path / 'b.wav'}\n"
