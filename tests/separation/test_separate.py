"""separate.py and the Separator API on generated files, with a tiny random TUSS in the published layout."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

import separate
from separate import Separator, main
from tests.helpers import load_fixture, tone_noise, write_published_layout, write_wav
from utils.audio import audio_info

ROOT = Path(__file__).resolve().parents[2]


def test_mono_16k_wav(tmp_path, tiny_ckpt):
    wav = write_wav(tmp_path / "in.wav", tone_noise(3 * 16000, 16000), 16000)
    out = tmp_path / "out"
    assert main(["--ckpt_path", str(tiny_ckpt), "--audio_path", str(wav), "--prompts", "speech", "sfx", "sfx",
                 "--audio_output_dir", str(out), "--quiet"]) == 0
    names = ["mix", "speech0", "sfx1", "sfx2"]
    assert sorted(p.name for p in (out / "wav").iterdir()) == sorted(f"{n}.wav" for n in names)
    assert sorted(p.name for p in (out / "spectrogram").iterdir()) == sorted(f"{n}.png" for n in names)
    for n in names:
        info = audio_info(out / "wav" / f"{n}.wav")
        assert (info.sample_rate, info.num_samples, info.channels) == (16000, 48000, 1)
    assert (out / "spectrogram" / "mix.png").read_bytes()[:4] == b"\x89PNG"
    assert not [p for p in out.rglob(".*")]  # no temporary files left


def test_stereo_44k_flac_all_channels_cut_exact(tmp_path, tiny_ckpt):
    audio = tone_noise(3 * 44100, 44100, channels=2)
    flac = write_wav(tmp_path / "in.flac", audio, 44100, "PCM_24")
    out = tmp_path / "out"
    assert main(["--ckpt_path", str(tiny_ckpt), "--audio_path", str(flac), "--task", "mss", "--all_channels",
                 "--start_time", "0.5", "--end_time", "1.25", "--format", "flac", "--bit_depth", "24",
                 "--residual", "--no_spectrograms", "--audio_output_dir", str(out), "--quiet"]) == 0
    expected = round(1.25 * 44100) - round(0.5 * 44100)
    stems = {}
    for n in ["mix", "drums0", "bass1", "vocals2", "other3", "residual"]:
        data, sr = sf.read(str(out / "wav" / f"{n}.flac"), always_2d=True)
        assert (sr, data.shape) == (44100, (expected, 2))
        stems[n] = data
    np.testing.assert_allclose(stems["mix"].T, audio[:, 22050:55125], atol=1e-6)  # the cut, to the sample
    total = sum(stems[n] for n in ["drums0", "bass1", "vocals2", "other3", "residual"])
    np.testing.assert_allclose(total, stems["mix"], atol=1e-4)  # residual = mix - sum of the stems


def test_stereo_input_gives_stereo_stems_by_default_like_the_api(tmp_path, tiny_ckpt, capsys):
    """No flag: a stereo 44.1 kHz file gives 2-channel stems, equal to the Python Separator's (which separates
    each channel), and the command line says what it did."""
    audio = tone_noise(44100, 44100, channels=2)
    wav = write_wav(tmp_path / "song.wav", audio, 44100, "FLOAT")
    out = tmp_path / "out"
    assert main(["--ckpt_path", str(tiny_ckpt), "--audio_path", str(wav), "--prompts", "speech", "sfx",
                 "--no_spectrograms", "--bit_depth", "32", "--audio_output_dir", str(out)]) == 0
    assert "each of its 2 channels separated (2-channel stems; --ref_channel N for one)" in capsys.readouterr().out
    expected = Separator(tiny_ckpt, device="cpu").separate(audio, 44100, ["speech", "sfx"])
    for name, want in zip(["speech0", "sfx1"], expected, strict=True):
        data, sr = sf.read(str(out / "wav" / f"{name}.wav"), always_2d=True)
        assert sr == 44100 and data.shape == (44100, 2)
        np.testing.assert_allclose(data.T, want, atol=1e-6)
    assert main(["--ckpt_path", str(tiny_ckpt), "--audio_path", str(wav), "--prompts", "speech", "--ref_channel",
                 "0", "--all_channels", "--audio_output_dir", str(out)]) == 2  # contradictory flags


def test_reference_channel(tmp_path, tiny_ckpt):
    audio = tone_noise(16000, 16000, channels=2)
    wav = write_wav(tmp_path / "st.wav", audio, 16000, "FLOAT")
    out = tmp_path / "out"
    assert main(["--ckpt_path", str(tiny_ckpt), "--audio_path", str(wav), "--prompts", "speech", "--ref_channel",
                 "1", "--no_spectrograms", "--bit_depth", "32", "--audio_output_dir", str(out), "--quiet"]) == 0
    mix, _ = sf.read(str(out / "wav" / "mix.wav"))
    np.testing.assert_array_equal(mix, audio[1])


def test_long_input_with_css(tmp_path, tiny_ckpt):
    wav = write_wav(tmp_path / "long.wav", tone_noise(70 * 8000, 8000), 8000)
    out = tmp_path / "out"
    assert main(["--ckpt_path", str(tiny_ckpt), "--audio_path", str(wav), "--prompts", "speech", "sfxbg",
                 "--css_segment_size", "10", "--css_shift_size", "5", "--css_batch_size", "4", "--no_spectrograms",
                 "--audio_output_dir", str(out), "--quiet"]) == 0
    for n in ["speech0", "sfxbg1"]:
        info = audio_info(out / "wav" / f"{n}.wav")
        assert (info.sample_rate, info.num_samples) == (8000, 70 * 8000)


def test_folder_and_several_inputs(tmp_path, tiny_ckpt):
    folder = tmp_path / "in"
    folder.mkdir()
    for name, sr in [("a.wav", 16000), ("b.flac", 22050)]:
        write_wav(folder / name, tone_noise(sr // 2, sr), sr)
    (folder / "notes.txt").write_text("ignored")
    out = tmp_path / "out"
    assert main(["--ckpt_path", str(tiny_ckpt), "--audio_path", str(folder), "--prompts", "sfx", "--no_spectrograms",
                 "--audio_output_dir", str(out), "--quiet"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a", "b", "separation_log.jsonl"]
    assert audio_info(out / "b" / "wav" / "sfx0.wav").sample_rate == 22050


def _run_error(args, capsys, out):
    code = main([*args, "--audio_output_dir", str(out), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2  # usage, config or input error (utils.cli.USAGE)
    assert len(err) == 1 and err[0].startswith("error: ")
    assert not out.exists() or not any(out.rglob("*"))  # nothing written
    return err[0]


def test_bad_inputs(tmp_path, tiny_ckpt, capsys):
    out = tmp_path / "out"
    ck = ["--ckpt_path", str(tiny_ckpt)]
    wav = write_wav(tmp_path / "ok.wav", tone_noise(16000, 16000, channels=2), 16000)
    msg = _run_error([*ck, "--audio_path", str(wav), "--prompts", "speech", "piano"], capsys, out)
    assert "unknown prompt(s) piano; this model knows: speech, sfx, sfxbg" in msg
    assert "audio file not found" in _run_error([*ck, "--audio_path", str(tmp_path / "nope.wav")], capsys, out)
    text = tmp_path / "text.wav"
    text.write_text("hello")
    assert "is not a readable audio file" in _run_error([*ck, "--audio_path", str(text)], capsys, out)
    empty = write_wav(tmp_path / "empty.wav", np.zeros((1, 0), np.float32), 16000)
    assert "holds no audio samples" in _run_error([*ck, "--audio_path", str(empty)], capsys, out)
    zeros = write_wav(tmp_path / "zeros.wav", np.zeros((1, 1600), np.float32), 16000)
    assert "all zeros" in _run_error([*ck, "--audio_path", str(zeros)], capsys, out)
    assert "must be before --end_time" in _run_error(
        [*ck, "--audio_path", str(wav), "--start_time", "0.5", "--end_time", "0.5"], capsys, out)
    assert "--start_time 2.0 s is outside" in _run_error(
        [*ck, "--audio_path", str(wav), "--start_time", "2"], capsys, out)
    assert "--end_time 1.5 s is beyond the end" in _run_error(
        [*ck, "--audio_path", str(wav), "--end_time", "1.5"], capsys, out)
    assert "--ref_channel 2 is out of range" in _run_error(
        [*ck, "--audio_path", str(wav), "--ref_channel", "2"], capsys, out)
    assert "--format flac with --bit_depth 32 is not supported" in _run_error(
        [*ck, "--audio_path", str(wav), "--format", "flac", "--bit_depth", "32"], capsys, out)


def test_a_bad_input_among_several_is_logged_and_skipped_and_the_run_exits_1(tmp_path, tiny_ckpt, capsys):
    good = write_wav(tmp_path / "good.wav", tone_noise(16000, 16000), 16000)
    short = write_wav(tmp_path / "short.wav", tone_noise(8000, 16000), 16000)  # 0.5 s: the cut runs past its end
    out = tmp_path / "out"
    code = main(["--ckpt_path", str(tiny_ckpt), "--audio_path", str(good), str(short), "--prompts", "speech",
                 "--end_time", "0.75", "--audio_output_dir", str(out), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and err[-1].startswith("error: 1 of 2 file(s) could not be separated; their lines in ")
    log = [json.loads(x) for x in (out / "separation_log.jsonl").read_text().splitlines()]
    assert sorted((x["input"], x["status"]) for x in log) == [(str(good), "done"), (str(short), "error")]
    assert f"--end_time 0.75 s is beyond the end of {short}" in next(x["error"] for x in log if x["status"] == "error")
    assert sorted(p.name for p in out.iterdir()) == ["good", "separation_log.jsonl"]  # nothing for the bad one


def test_bad_checkpoints(tmp_path, tiny_ckpt, capsys):
    out = tmp_path / "out"
    wav = write_wav(tmp_path / "ok.wav", tone_noise(16000, 16000), 16000)
    lone = tmp_path / "lone" / "checkpoints" / "model.pth"
    lone.parent.mkdir(parents=True)
    lone.write_bytes(tiny_ckpt.read_bytes())
    assert "no hparams.yaml for checkpoint" in _run_error(["--ckpt_path", str(lone), "--audio_path", str(wav)],
                                                          capsys, out)
    fx = load_fixture("tuss")
    sd = dict(fx["state_dict"])
    sd.pop("model.separator.prompts.vocals")
    bad = write_published_layout(tmp_path / "bad", fx["hparams"], sd)
    msg = _run_error(["--ckpt_path", str(bad), "--audio_path", str(wav)], capsys, out)
    assert "does not fit its config" in msg and "separator.prompts.vocals" in msg


def test_bundled_default(tmp_path, monkeypatch, capsys):
    """No --ckpt_path and no --audio_path: the bundled example through the bundled model (or a clear error while
    the bundled model is not in this checkout)."""
    monkeypatch.chdir(tmp_path)
    code = main(["--no_spectrograms", "--quiet"])
    if separate.BUNDLED_MODEL.is_file():
        assert code == 0
        names = sorted(p.name for p in (tmp_path / "audio_outputs" / "wav").iterdir())
        assert names == ["mix.wav", "musicbg2.wav", "sfxbg1.wav", "speech0.wav"]
    else:
        assert code == 2
        assert "bundled demo model is missing" in capsys.readouterr().err


def test_command_line_subprocess(tmp_path, tiny_ckpt):
    wav = write_wav(tmp_path / "x.wav", tone_noise(8000, 8000), 8000)
    result = subprocess.run([sys.executable, "separate.py", "--ckpt_path", str(tiny_ckpt), "--audio_path", str(wav),
                             "--prompts", "speech", "--device", "cpu", "--audio_output_dir", str(tmp_path / "o")],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "1 output(s) (speech0), mono ->" in result.stdout
    assert (tmp_path / "o" / "wav" / "speech0.wav").is_file()
    bad = subprocess.run([sys.executable, "separate.py", "--ckpt_path", str(tiny_ckpt), "--audio_path", str(wav),
                          "--prompts", "guitar"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and bad.stderr.startswith("error: unknown prompt(s) guitar")
    assert "Traceback" not in bad.stderr
