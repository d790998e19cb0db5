"""Audio I/O helpers: partial reads, channels, atomic writes, resampling."""

import numpy as np
import pytest
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
