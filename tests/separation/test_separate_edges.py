"""separate.py and the Separator API at the edges: minimum length, non-finite samples, truncated files,
option values, the output folder, the output set replaced as a whole, write errors naming their path, exit codes."""

import errno
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import separate
import separation.separator as separator_mod
import utils.atomic as atomic_mod
from separate import main
from separation.separator import (
    SeparationError,
    SeparationOptions,
    TruncatedAudioWarning,
    check_output_dir,
    write_outputs,
)
from tests.helpers import tone_noise, write_wav

ROOT = Path(__file__).resolve().parents[2]
PROMPTS = ["--prompts", "speech", "sfx"]


@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if separate.py gets as far as loading a model."""

    def boom(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(separate, "Separator", boom)


def _truncate(path, keep_bytes):
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[:keep_bytes])
    return path


def _cli(args, capsys, out, code):
    """Run separate.py; check the exit code and that stderr is one ``error:`` line (when failing); return it."""
    got = main([*args, "--audio_output_dir", str(out), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert got == code, err
    if code:
        assert len(err) == 1 and err[0].startswith("error: "), err
        return err[0]
    return err


def _snapshot(folder):
    """{relative path: bytes} of every file under ``folder``."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def _hidden(folder):
    return [p for p in Path(folder).rglob(".*")]


# --- 1. minimum length -------------------------------------------------------------------------------------------

def test_minimum_length_is_one_stft_window(sep, tmp_path, tiny_ckpt, capsys):
    assert sep.window_samples == 2048 and sep.sample_rate == 48000
    assert [sep.min_samples(sr) for sr in (48000, 44100, 16000, 8000)] == [2048, 1882, 683, 342]
    with pytest.raises(SeparationError, match=r"audio is too short to separate: 682 samples \(42\.6 ms at 16000 Hz\)"
                       r"; this model needs at least 683 samples at 16000 Hz \(one 2048-sample STFT window"):
        sep.separate(tone_noise(682, 16000)[0], 16000, ["speech"])
    with pytest.raises(SeparationError, match="1 samples .* at least 2048 samples"):
        sep.separate(np.array([0.5], np.float32), 48000, ["speech"])  # std of one sample was NaN
    out = sep.separate(tone_noise(683, 16000)[0], 16000, ["speech", "sfx"])
    assert [o.shape for o in out] == [(683,), (683,)] and all(np.isfinite(o).all() for o in out)

    one = write_wav(tmp_path / "one.wav", np.array([0.5], np.float32), 16000)
    out_dir = tmp_path / "out"
    msg = _cli(["--ckpt_path", str(tiny_ckpt), "--audio_path", str(one), *PROMPTS], capsys, out_dir, 2)
    assert msg == (f"error: {one} is too short to separate: 1 samples (0.1 ms at 16000 Hz); this model needs at "
                   "least 683 samples at 16000 Hz (one 2048-sample STFT window at 48000 Hz)")
    assert not out_dir.exists()
    # after a cut: 0.04 s of a 1 s file is 640 samples < 683
    wav = write_wav(tmp_path / "ok.wav", tone_noise(16000, 16000), 16000)
    msg = _cli(["--ckpt_path", str(tiny_ckpt), "--audio_path", str(wav), *PROMPTS, "--start_time", "0.5",
                "--end_time", "0.54"], capsys, out_dir, 2)
    assert f"{wav} (its --start_time/--end_time cut) is too short to separate: 640 samples" in msg
    assert not out_dir.exists()


def test_constant_and_tiny_inputs_give_finite_stems(sep):
    """Variance normalisation (nets/wrapper.py) divides by std + 1e-8: a constant input must not give NaN."""
    for wave, sr in [(np.full(2048, 0.5, np.float32), 48000), (np.full(683, -0.25, np.float32), 16000),
                     (np.full(4000, 1e-30, np.float32), 16000)]:
        out = sep.separate(wave, sr, ["speech", "sfx"])
        assert all(o.shape == wave.shape and np.isfinite(o).all() for o in out)


def test_shortest_file_is_written_finite(tmp_path, tiny_ckpt, capsys):
    wav = write_wav(tmp_path / "short.wav", tone_noise(342, 8000), 8000, "FLOAT")
    out = tmp_path / "out"
    _cli(["--ckpt_path", str(tiny_ckpt), "--audio_path", str(wav), *PROMPTS], capsys, out, 0)
    for name in ("mix", "speech0", "sfx1"):
        data, sr = sf.read(out / "wav" / f"{name}.wav")
        assert sr == 8000 and data.shape == (342,) and np.isfinite(data).all()
    assert sorted(p.name for p in (out / "spectrogram").iterdir()) == ["mix.png", "sfx1.png", "speech0.png"]


# --- 2. non-finite samples -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples_are_refused(tmp_path, tiny_ckpt, capsys, sep, bad):
    audio = tone_noise(8000, 16000, channels=2)
    audio[1, 1234] = bad
    wav = write_wav(tmp_path / "bad.wav", audio, 16000, "FLOAT")
    out = tmp_path / "out"
    msg = _cli(["--ckpt_path", str(tiny_ckpt), "--audio_path", str(wav), *PROMPTS, "--all_channels"], capsys, out, 2)
    assert msg == (f"error: {wav} contains NaN or infinite values (1 sample(s), the first at sample 1234); expected "
                   "finite audio")
    assert not out.exists()
    # the other channel alone is fine
    _cli(["--ckpt_path", str(tiny_ckpt), "--audio_path", str(wav), *PROMPTS, "--ref_channel", "0"], capsys, out, 0)
    assert sf.info(str(out / "wav" / "speech0.wav")).frames == 8000
    with pytest.raises(SeparationError, match="contains NaN or infinite values"):
        sep.separate(audio, 16000, ["speech"])
    with pytest.raises(SeparationError, match=f"{wav} contains NaN or infinite values"):
        sep.separate_file(wav, tmp_path / "api", ["speech"], all_channels=True)
    assert not (tmp_path / "api").exists()


# --- 3. truncated files --------------------------------------------------------------------------------------------

def test_truncated_wav_warns_or_is_refused_with_strict(tmp_path, tiny_ckpt, capsys):
    wav = _truncate(write_wav(tmp_path / "cut.wav", tone_noise(16000, 16000), 16000), 44 + 2 * 11000)  # 11000 of 16000
    out = tmp_path / "out"
    err = _cli(["--ckpt_path", str(tiny_ckpt), "--audio_path", str(wav), *PROMPTS], capsys, out, 0)
    assert err == [f"warning: {wav} is truncated: its header declares 16000 frames but only 11000 can be read; "
                   "separating the 11000 samples read of the 11000 requested"]
    assert sf.info(str(out / "wav" / "speech0.wav")).frames == 11000

    strict_out = tmp_path / "strict"
    msg = _cli(["--ckpt_path", str(tiny_ckpt), "--audio_path", str(wav), *PROMPTS, "--strict"], capsys,
               strict_out, 2)
    assert msg == (f"error: {wav} is truncated: its header declares 16000 frames but only 11000 can be read "
                   "(--strict refuses truncated files)")
    assert not strict_out.exists()


def test_truncated_flac(tmp_path, tiny_ckpt, capsys, monkeypatch, sep):
    flac = tmp_path / "cut.flac"
    write_wav(flac, tone_noise(16000, 16000), 16000)
    _truncate(flac, flac.stat().st_size // 2)
    readable = len(sf.SoundFile(str(flac)).read(2000))  # the start decodes
    assert readable == 2000
    out = tmp_path / "out"
    # a cut inside the readable part: nothing is missing from what was asked, no warning
    assert _cli(["--ckpt_path", str(tiny_ckpt), "--audio_path", str(flac), *PROMPTS, "--end_time", "0.1"], capsys,
                out, 0) == []
    # the whole file: what decodes is separated, with a warning naming both counts
    err = _cli(["--ckpt_path", str(tiny_ckpt), "--audio_path", str(flac), *PROMPTS], capsys, out, 0)
    assert len(err) == 1 and err[0].startswith(f"warning: {flac} is truncated: its header declares 16000 frames "
                                               "but only ")
    got = int(err[0].split("but only ")[1].split()[0])
    assert 2000 <= got < 16000 and sf.info(str(out / "wav" / "mix.wav")).frames == got
    with pytest.warns(TruncatedAudioWarning, match="declares 16000 frames"):
        sep.separate_file(flac, tmp_path / "api", ["speech"], spectrograms=False)
    # --strict: refused before any model is loaded (the file is decoded once to count its frames)
    monkeypatch.setattr(separate, "Separator", lambda *a, **k: pytest.fail("model loaded"))
    strict_out = tmp_path / "strict"
    msg = _cli(["--ckpt_path", str(tiny_ckpt), "--audio_path", str(flac), *PROMPTS, "--strict", "--end_time", "0.1"],
               capsys, strict_out, 2)
    assert msg == f"error: {flac} is truncated: its header declares 16000 frames but only {got} can be read " \
                  "(--strict refuses truncated files)"
    assert not strict_out.exists()


# --- 4. option values ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("args", "message"), [
    (["--css_segment_size", "0"], "--css_segment_size must be a finite number of seconds > 0, got 0"),
    (["--css_segment_size", "-2"], "--css_segment_size must be a finite number of seconds > 0, got -2"),
    (["--css_segment_size", "nan"], "--css_segment_size must be a finite number of seconds > 0, got nan"),
    (["--css_segment_size", "inf"], "--css_segment_size must be a finite number of seconds > 0, got inf"),
    (["--css_segment_size", "4", "--css_shift_size", "0"],
     "--css_shift_size must be a finite number of seconds > 0, got 0"),
    (["--css_segment_size", "4", "--css_shift_size", "nan"],
     "--css_shift_size must be a finite number of seconds > 0, got nan"),
    (["--css_segment_size", "4", "--css_shift_size", "5"], "--css_shift_size 5 must not exceed --css_segment_size 4"),
    (["--css_shift_size", "2"], "--css_shift_size 2 needs --css_segment_size"),
    (["--css_batch_size", "0"], "--css_batch_size must be at least 1, got 0"),
    (["--start_time", "nan"], "--start_time must be a finite number of seconds >= 0, got nan"),
    (["--start_time", "-0.5"], "--start_time must be a finite number of seconds >= 0, got -0.5"),
    (["--start_time", "inf"], "--start_time must be a finite number of seconds >= 0, got inf"),
    (["--end_time", "0"], "--end_time must be a finite number of seconds > 0, got 0"),
    (["--end_time", "nan"], "--end_time must be a finite number of seconds > 0, got nan"),
    (["--end_time=-inf"], "--end_time must be a finite number of seconds > 0, got -inf"),
    (["--start_time", "0.5", "--end_time", "0.2"], "--start_time (0.5 s) must be before --end_time (0.2 s)"),
    (["--ref_channel", "-1"], "--ref_channel must be >= 0, got -1"),
    (["--format", "flac", "--bit_depth", "32"], "--format flac with --bit_depth 32 is not supported"),
    (["--device", "gpu"], "--device gpu: "),
    (["--prompts", "speech", "--task", "se"], "give either --prompts or --task, not both"),
])
def test_bad_option_values_before_any_model(tmp_path, capsys, no_model, args, message):
    wav = write_wav(tmp_path / "ok.wav", tone_noise(16000, 16000), 16000)
    out = tmp_path / "out"
    msg = _cli(["--ckpt_path", str(tmp_path / "not-even-there.pth"), "--audio_path", str(wav), *args], capsys,
               out, 2)
    assert msg.startswith(f"error: {message}")
    assert not out.exists()


def test_css_segment_below_one_window_is_refused(tmp_path, tiny_ckpt, capsys, sep):
    wav = write_wav(tmp_path / "ok.wav", tone_noise(16000, 16000), 16000)
    out = tmp_path / "out"
    msg = _cli(["--ckpt_path", str(tiny_ckpt), "--audio_path", str(wav), *PROMPTS, "--css_segment_size", "0.01"],
               capsys, out, 2)
    assert msg == ("error: --css_segment_size 0.01 s is shorter than this model's STFT window (2048 samples = "
                   "0.04267 s at 48000 Hz)")
    assert not out.exists()
    with pytest.raises(SeparationError, match="--css_segment_size must be a finite number of seconds > 0, got 0"):
        sep.separate(tone_noise(8000, 16000)[0], 16000, ["speech"], css_segment_size=0)  # 0 is not "no CSS"
    with pytest.raises(SeparationError, match="--css_shift_size 1 needs --css_segment_size"):
        sep.separate(tone_noise(8000, 16000)[0], 16000, ["speech"], css_shift_size=1)


# --- 5. the output folder, checked before any work -----------------------------------------------------------------

@pytest.mark.parametrize("clash", ["out", "out/wav", "out/spectrogram"])
def test_a_file_where_an_output_folder_goes(tmp_path, capsys, no_model, clash):
    wav = write_wav(tmp_path / "ok.wav", tone_noise(16000, 16000), 16000)
    out = tmp_path / "out"
    if clash != "out":
        out.mkdir()
    (tmp_path / clash).write_text("mine")
    before = _snapshot(tmp_path)
    msg = _cli(["--ckpt_path", str(tmp_path / "x.pth"), "--audio_path", str(wav)], capsys, out, 2)
    assert msg == (f"error: {tmp_path / clash} exists and is not a folder; the outputs need a folder there (move it "
                   "away or choose another output folder)")
    assert _snapshot(tmp_path) == before


def test_output_folder_below_a_file(tmp_path, capsys, no_model):
    wav = write_wav(tmp_path / "ok.wav", tone_noise(16000, 16000), 16000)
    (tmp_path / "afile").write_text("x")
    msg = _cli(["--ckpt_path", str(tmp_path / "x.pth"), "--audio_path", str(wav)], capsys,
               tmp_path / "afile" / "out", 2)
    assert msg == f"error: cannot create output folder {tmp_path / 'afile' / 'out'}: {tmp_path / 'afile'} is not a " \
                  "folder"


def test_output_folder_not_writable(tmp_path, capsys, no_model, monkeypatch):
    """Tests run as root (chmod does not stop root): the folder probe is made to fail as a read-only folder would."""
    wav = write_wav(tmp_path / "ok.wav", tone_noise(16000, 16000), 16000)
    out = tmp_path / "ro" / "out"
    out.parent.mkdir()
    real = atomic_mod.tempfile.mkdtemp

    def mkdtemp(*args, dir=None, **kwargs):
        if Path(dir) == out.parent:
            raise PermissionError(errno.EACCES, "Permission denied", str(dir))
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(atomic_mod.tempfile, "mkdtemp", mkdtemp)
    msg = _cli(["--ckpt_path", str(tmp_path / "x.pth"), "--audio_path", str(wav)], capsys, out, 1)
    assert msg == f"error: cannot create {out}: Permission denied"
    assert list(out.parent.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_folder_unprivileged(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o555)
    try:
        with pytest.raises(OSError, match=f"cannot write {out}: Permission denied"):
            check_output_dir(out)
    finally:
        out.chmod(0o755)


# --- 6. one input's output set replaces the previous one as a whole -----------------------------------------------

def _old_set(tmp_path, tiny_ckpt, capsys):
    wav = write_wav(tmp_path / "in.wav", tone_noise(8000, 16000), 16000)
    out = tmp_path / "out"
    _cli(["--ckpt_path", str(tiny_ckpt), "--audio_path", str(wav), *PROMPTS, "--residual"], capsys, out, 0)
    (out / "notes.txt").write_text("the user's")
    return wav, out, _snapshot(out)


def _fail_on_call(monkeypatch, name, n, exc):
    real = getattr(separator_mod, name)
    calls = []

    def wrapper(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == n:
            raise exc
        return real(*args, **kwargs)

    monkeypatch.setattr(separator_mod, name, wrapper)
    return calls


@pytest.mark.parametrize("writer", ["write_audio", "save_spectrogram"])
def test_failure_half_way_keeps_the_old_set(tmp_path, tiny_ckpt, capsys, monkeypatch, writer):
    wav, out, before = _old_set(tmp_path, tiny_ckpt, capsys)
    assert sorted(before) == ["notes.txt", *(f"spectrogram/{n}.png" for n in ("mix", "residual", "sfx1", "speech0")),
                              *(f"wav/{n}.wav" for n in ("mix", "residual", "sfx1", "speech0"))]
    calls = _fail_on_call(monkeypatch, writer, 3, OSError(errno.ENOSPC, "No space left on device"))
    new_input = write_wav(tmp_path / "in.wav", tone_noise(8000, 16000, seed=5), 16000)  # different audio, same name
    msg = _cli(["--ckpt_path", str(tiny_ckpt), "--audio_path", str(new_input), *PROMPTS, "--start_time", "0.1"],
               capsys, out, 1)
    sub, ext = ("wav", "wav") if writer == "write_audio" else ("spectrogram", "png")
    third = Path(calls[2]).name
    assert msg == f"error: cannot write {out / sub / third}: No space left on device"
    assert third.endswith(f".{ext}")
    assert _snapshot(out) == before  # the complete old set, byte for byte
    assert _hidden(out) == []  # no staging folder left


def test_failed_swap_rename_restores_the_old_set(tmp_path, tiny_ckpt, capsys, monkeypatch):
    wav, out, before = _old_set(tmp_path, tiny_ckpt, capsys)
    real = os.replace

    def replace(src, dst):
        if Path(dst) == out / "spectrogram" and Path(src).parent.name.startswith(".separating-"):
            raise OSError(errno.EIO, "Input/output error")  # the new spectrogram/: wav/ must be swapped back
        return real(src, dst)

    monkeypatch.setattr(atomic_mod.os, "replace", replace)
    msg = _cli(["--ckpt_path", str(tiny_ckpt), "--audio_path", str(wav), *PROMPTS], capsys, out, 1)
    assert msg == f"error: cannot write {out / 'spectrogram'}: Input/output error"
    monkeypatch.setattr(atomic_mod.os, "replace", real)
    assert _snapshot(out) == before
    assert _hidden(out) == []


def test_failed_swap_whose_undo_fails_keeps_the_old_set_aside(tmp_path, tiny_ckpt, capsys, monkeypatch):
    wav, out, before = _old_set(tmp_path, tiny_ckpt, capsys)
    real = os.replace

    def replace(src, dst):
        if Path(dst) == out / "spectrogram":  # the new one and the undo of the old one both fail
            raise OSError(errno.EIO, "Input/output error")
        return real(src, dst)

    monkeypatch.setattr(atomic_mod.os, "replace", replace)
    msg = _cli(["--ckpt_path", str(tiny_ckpt), "--audio_path", str(wav), *PROMPTS], capsys, out, 1)
    assert msg.startswith(f"error: cannot write {out / 'spectrogram'}: Input/output error; the previous outputs "
                          "could not be put back: they are in ")
    kept = Path(msg.split("they are in ")[1])
    assert kept.parent.parent == out and kept.parent.name.startswith(".separating-")
    assert (kept / "spectrogram" / "mix.png").read_bytes() == before["spectrogram/mix.png"]  # not lost
    assert _snapshot(out / "wav") == {k[4:]: v for k, v in before.items() if k.startswith("wav/")}


def test_rerun_without_spectrograms_replaces_the_whole_set(tmp_path, tiny_ckpt, capsys):
    wav, out, before = _old_set(tmp_path, tiny_ckpt, capsys)
    _cli(["--ckpt_path", str(tiny_ckpt), "--audio_path", str(wav), "--prompts", "speech", "--no_spectrograms"],
         capsys, out, 0)
    assert sorted(_snapshot(out)) == ["notes.txt", "wav/mix.wav", "wav/speech0.wav"]  # no old png, no old residual
    assert (out / "notes.txt").read_text() == "the user's"
    assert _hidden(out) == []


def test_write_outputs_api_keeps_other_entries(tmp_path):
    out = tmp_path / "o"
    (out / "mine").mkdir(parents=True)
    (out / "mine" / "keep.txt").write_text("k")
    mix = tone_noise(800, 8000)[0]
    written = write_outputs(out, mix, [mix / 2], ["speech0"], 8000, SeparationOptions(spectrograms=False))
    assert written == [out / "wav" / "mix.wav", out / "wav" / "speech0.wav"]
    assert sorted(_snapshot(out)) == ["mine/keep.txt", "wav/mix.wav", "wav/speech0.wav"]


# --- 7. disk full and permission errors name the path (exit 1) -----------------------------------------------------

def test_disk_full_names_the_path(tmp_path, tiny_ckpt, capsys, monkeypatch):
    wav = write_wav(tmp_path / "in.wav", tone_noise(8000, 16000), 16000)
    out = tmp_path / "new" / "out"
    _fail_on_call(monkeypatch, "write_audio", 1, OSError(errno.ENOSPC, "No space left on device"))
    msg = _cli(["--ckpt_path", str(tiny_ckpt), "--audio_path", str(wav), *PROMPTS], capsys, out, 1)
    assert msg == f"error: cannot write {out / 'wav' / 'mix.wav'}: No space left on device"
    assert not (tmp_path / "new").exists()  # the folders made for the outputs are removed again


def test_permission_error_in_the_swap_names_the_path(tmp_path, tiny_ckpt, capsys, monkeypatch):
    wav, out, before = _old_set(tmp_path, tiny_ckpt, capsys)
    real = os.replace

    def replace(src, dst):
        if Path(src) == out / "wav":
            raise PermissionError(errno.EACCES, "Permission denied")
        return real(src, dst)

    monkeypatch.setattr(atomic_mod.os, "replace", replace)
    msg = _cli(["--ckpt_path", str(tiny_ckpt), "--audio_path", str(wav), *PROMPTS], capsys, out, 1)
    assert msg == f"error: cannot replace {out / 'wav'}: Permission denied"
    monkeypatch.setattr(atomic_mod.os, "replace", real)
    assert _snapshot(out) == before and _hidden(out) == []


def test_real_write_failure_through_libsndfile_names_the_path(tmp_path, tiny_ckpt):
    """A file size limit (RLIMIT_FSIZE, SIGXFSZ ignored) makes the kernel refuse the write, as a full disk does:
    libsndfile's failure must reach the user as the path and the system's reason, exit 1."""
    resource = pytest.importorskip("resource")
    import signal

    wav = write_wav(tmp_path / "in.wav", tone_noise(48000, 16000), 16000)  # 96 kB per 16-bit stem
    out = tmp_path / "out"

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    result = subprocess.run([sys.executable, "separate.py", "--ckpt_path", str(tiny_ckpt), "--audio_path", str(wav),
                             "--prompts", "speech", "--device", "cpu", "--quiet", "--audio_output_dir", str(out)],
                            cwd=ROOT, capture_output=True, text=True, timeout=300, preexec_fn=limit,
                            env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines()[-1] == f"error: cannot write {out / 'wav' / 'mix.wav'}: File too large"
    assert "Traceback" not in result.stderr
    assert not out.exists()
