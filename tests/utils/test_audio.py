"""Audio I/O helpers: partial reads, channels, atomic writes, resampling."""

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from utils.audio import AudioError, audio_info, read_audio, resample, write_audio


def test_write_read_partial_and_channels(tmp_path):
    rng = np.random.default_rng(0)
    data = (rng.standard_normal((2, 4410)) * 0.1).astype(np.float32)
    path = write_audio(tmp_path / "a" / "x.flac", data, 44100, subtype="PCM_24")
    info = audio_info(path)
    assert (info.sample_rate, info.num_samples, info.channels) == (44100, 4410, 2)
    part, sr = read_audio(path, start=100, num_samples=50, channel=1)
    assert sr == 44100 and part.shape == (1, 50)
    np.testing.assert_allclose(part[0], data[1, 100:150], atol=2e-6)
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["x.flac"]  # no temporary left behind
    with pytest.raises(AudioError, match="has 2 channel\\(s\\); channel 2 does not exist"):
        read_audio(path, channel=2)


def test_errors_name_the_file(tmp_path):
    with pytest.raises(AudioError, match="audio file not found: .*nope.wav"):
        read_audio(tmp_path / "nope.wav")
    bad = tmp_path / "bad.wav"
    bad.write_text("not audio")
    with pytest.raises(AudioError, match="bad.wav is not a readable audio file"):
        audio_info(bad)


def test_failed_write_keeps_existing_file(tmp_path):
    path = write_audio(tmp_path / "keep.wav", np.zeros(100, np.float32), 16000)
    before = path.read_bytes()
    with pytest.raises(ValueError):
        write_audio(path, np.zeros((1, 2, 3), np.float32), 16000)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.wav"]


def test_resample_tone():
    t = torch.arange(16000) / 16000
    tone = torch.sin(2 * torch.pi * 440 * t)
    up = resample(tone, 16000, 48000)
    assert up.shape == (48000,)
    ref = torch.sin(2 * torch.pi * 440 * torch.arange(48000) / 48000)
    assert (up[1000:-1000] - ref[1000:-1000]).abs().max() < 1e-2
    assert resample(tone, 16000, 16000) is tone


def test_written_files_get_normal_permissions(tmp_path):
    import os
    import stat

    path = write_audio(tmp_path / "p.wav", np.zeros(10, np.float32), 8000)
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


def test_cached_resampler_equals_torchaudio():
    import torchaudio.functional as taf

    x = torch.randn(2, 44100)
    for orig, new in [(44100, 48000), (16000, 48000), (48000, 22050)]:
        torch.testing.assert_close(resample(x, orig, new), taf.resample(x, orig, new), rtol=0, atol=0)
    assert resample(np.zeros(100, np.int16), 16000, 8000).dtype == torch.float32


def test_resampler_cached_in_inference_mode_works_with_autograd():
    with torch.inference_mode():
        resample(torch.randn(1, 1000), 12000, 24000)
    x = torch.randn(1, 1000, requires_grad=True)
    resample(x, 12000, 24000).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


# --- truncated files (header declares more frames than the file holds) and write errors ---------------------------

def _cut_file(path, keep):
    data = path.read_bytes()
    path.write_bytes(data[:keep])
    return path


def _noise(n, channels=1, seed=0):
    return (np.random.default_rng(seed).standard_normal((channels, n)) * 0.1).astype(np.float32)


def test_truncated_wav_and_aiff_found_from_the_header(tmp_path):
    from utils.audio import declared_frames, find_truncation, read_audio_checked

    audio = _noise(16000, channels=2)
    wav = write_audio(tmp_path / "x.wav", audio, 16000, subtype="PCM_16")
    aiff = write_audio(tmp_path / "x.aiff", audio, 16000, subtype="PCM_16")
    for path in (wav, aiff):
        assert declared_frames(path) == 16000 and find_truncation(path) is None
        data, sr, trunc = read_audio_checked(path, 100, 50, channel=1)
        assert (sr, data.shape, trunc) == (16000, (1, 50), None)
    _cut_file(wav, 44 + 4 * 11000)  # 11000 frames of 4 bytes after the 44-byte header
    size = aiff.stat().st_size
    _cut_file(aiff, size - 4 * 5000)  # 5000 frames fewer
    for path, readable in ((wav, 11000), (aiff, 11000)):
        assert audio_info(path).num_samples == readable  # libsndfile hides the truncation ...
        assert declared_frames(path) == 16000  # ... the header does not
        trunc = find_truncation(path)
        assert (trunc.path, trunc.declared, trunc.readable) == (path, 16000, readable)
        assert str(trunc) == f"{path} is truncated: its header declares 16000 frames but only {readable} can be read"
        data, _, trunc = read_audio_checked(path, 10000, 1000)
        assert data.shape == (2, 1000) and trunc.readable == readable  # found even for a cut that is all there
        old, _ = read_audio(path)  # read_audio is unchanged: what is there, silently
        assert old.shape == (2, readable)
        np.testing.assert_allclose(old, audio[:, :readable], atol=1e-4)


def test_truncated_flac_found_when_read_or_decoded(tmp_path):
    from utils.audio import declared_frames, find_truncation, read_audio_checked

    audio = _noise(16000)
    flac = write_audio(tmp_path / "x.flac", audio, 16000, subtype="PCM_16")
    _cut_file(flac, flac.stat().st_size // 2)
    assert declared_frames(flac) == audio_info(flac).num_samples == 16000  # STREAMINFO
    assert find_truncation(flac) is None  # the header alone cannot tell
    trunc = find_truncation(flac, decode=True)
    assert trunc.declared == 16000 and 2000 <= trunc.readable < 16000
    data, _, none = read_audio_checked(flac, 0, 2000)  # inside the readable part: nothing is missing
    assert data.shape == (1, 2000) and none is None
    data, _, found = read_audio_checked(flac)  # the whole file: a decoder error after `readable` frames
    assert found.readable == trunc.readable and data.shape == (1, trunc.readable)
    np.testing.assert_allclose(data[0], audio[0, : trunc.readable], atol=1e-4)
    data, _, found = read_audio_checked(flac, 15000, 1000)  # nothing decodes at the start: counted
    assert data.shape == (1, 0) and found.readable == trunc.readable
    with pytest.raises(AudioError, match="is not a readable audio file"):  # read_audio is unchanged
        read_audio(flac)


def test_write_audio_os_errors_name_the_path(tmp_path):
    """A file size limit makes the kernel refuse the write (as a full disk does): the path and the
    system's reason come back as a WriteError, not soundfile's bare "System error."."""
    import errno
    import subprocess
    import sys
    from pathlib import Path

    pytest.importorskip("resource")
    script = (
        "import resource, signal, numpy as np\n"
        "from utils.audio import write_audio\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (20000, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))\n"
        f"target = {str(tmp_path / 'big.wav')!r}\n"
        "try:\n"
        "    write_audio(target, np.zeros(48000, np.float32), 16000)\n"
        "except OSError as err:\n"
        "    print(type(err).__name__, err.errno, err.strerror)\n"
    )
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines == [f"WriteError {errno.EFBIG} cannot write {tmp_path / 'big.wav'}: File too large"]
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no temporary left


def _huge_header_flac(path):
    """A 1 s FLAC whose STREAMINFO claims 2^35 frames (128 GiB of float32 samples)."""
    sf.write(path, (np.random.default_rng(0).standard_normal(48000) * 0.1).astype(np.float32), 48000, format="FLAC",
             subtype="PCM_16")
    data = bytearray(path.read_bytes())
    off = 4 + 4 + 10  # "fLaC", the block header, min/max block and frame sizes; then rate, channels, bits, frames
    value = int.from_bytes(data[off:off + 8], "big")
    data[off:off + 8] = ((value & ~((1 << 36) - 1)) | (1 << 35)).to_bytes(8, "big")
    path.write_bytes(bytes(data))
    assert sf.info(str(path)).frames == 1 << 35


def test_a_header_claiming_2_to_the_35_frames_allocates_nothing_of_the_kind(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "huge.flac"
    _huge_header_flac(path)
    code = ("import resource; resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30)); "
            "from utils.audio import AudioError, read_audio, read_audio_checked\n"
            f"audio, sr, truncation = read_audio_checked({str(path)!r})\n"
            "print('checked', audio.shape[0] <= 48000, truncation.declared)\n"
            f"try:\n    audio, sr = read_audio({str(path)!r})\n    print('read', audio.shape[0] <= 48000)\n"
            "except AudioError as err:\n    print('refused', 'is not a readable audio file' in str(err))\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[2], capture_output=True,
                            text=True, timeout=120, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr[-2000:]  # not a MemoryError of 128 GiB
    lines = result.stdout.split("\n")
    assert lines[0] == f"checked True {1 << 35}" and lines[1] in ("read True", "refused True")
