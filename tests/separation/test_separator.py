"""The Separator API: resampling and channels around the model, CSS through the API, file separation, the
conventional model, prompt checks."""

import numpy as np
import pytest
import soundfile as sf
import torch

from nets import PromptError
from separate import Separator, separate_file
from separation.css import css_forward
from separation.separator import SeparationError, SeparationOptions, check_input, output_names
from tests.helpers import load_fixture, tone_noise, write_published_layout


def test_output_names():
    assert output_names(["speech", "sfx", "sfx"], 3) == ["speech0", "sfx1", "sfx2"]
    assert output_names(None, 2) == ["output0", "output1"]


def test_one_segment_css_equals_plain_and_channels_are_independent(sep):
    wave = tone_noise(24000, 24000)[0]
    plain = sep.separate(wave, 24000, ["speech", "musicbg"])
    assert len(plain) == 2 and plain[0].shape == wave.shape and plain[0].dtype == np.float32
    css = sep.separate(wave, 24000, ["speech", "musicbg"], css_segment_size=2.0, css_shift_size=2.0)
    for a, b in zip(plain, css, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
    stereo = tone_noise(24000, 24000, channels=2)
    both = sep.separate(stereo, 24000, ["speech"])
    assert both[0].shape == (2, 24000)
    np.testing.assert_allclose(both[0][1], sep.separate(stereo[1], 24000, ["speech"])[0], atol=1e-5)


def test_css_through_the_api_is_css_forward_on_the_model(sep):
    """At 48 kHz the API adds nothing to the chunked processing: same numbers as css_forward on the network."""
    wave = tone_noise(60000, 48000)
    prompts = ["speech", "sfx", "sfx"]
    out = sep.separate(wave, 48000, prompts, css_segment_size=0.5, css_shift_size=0.25, css_batch_size=2,
                       css_solve_perm=True)
    with torch.inference_mode():
        ref = css_forward(lambda x: sep.model(x, [prompts] * x.shape[0]), torch.from_numpy(wave), 24000, 12000,
                          solve_perm=True, prompts=prompts)
    for i in range(3):
        np.testing.assert_allclose(out[i], ref[:, i].numpy(), atol=1e-5)


def test_resampled_input_keeps_rate_and_length(sep):
    assert sep.window_samples == 2048 and sep.min_samples(8000) == 342  # ceil(2048 * 8000 / 48000)
    for n, sr in [(16001, 16000), (4410, 44100), (342, 8000), (2048, 48000), (683, 16000)]:
        out = sep.separate(tone_noise(n, sr), sr, ["speech"])
        assert out[0].shape == (1, n)
        assert np.isfinite(out[0]).all()


def test_separate_file_writes_the_stems_of_the_cut(tmp_path, tiny_ckpt):
    audio = tone_noise(22050, 22050, channels=2)
    sf.write(tmp_path / "in.ogg", audio.T, 22050)
    written = separate_file(tiny_ckpt, tmp_path / "in.ogg", tmp_path / "out", ["speech", "sfxbg"], device="cpu",
                            start_time=0.1, end_time=0.6, all_channels=True, residual=True, spectrograms=False)
    assert sorted(p.name for p in written) == ["mix.wav", "residual.wav", "sfxbg1.wav", "speech0.wav"]
    mix, sr = sf.read(tmp_path / "out" / "wav" / "mix.wav", always_2d=True)
    assert (sr, mix.shape) == (22050, (round(0.6 * 22050) - round(0.1 * 22050), 2))
    decoded, _ = sf.read(tmp_path / "in.ogg", always_2d=True, dtype="float32")
    np.testing.assert_allclose(mix, decoded[2205:13230], atol=1e-4)  # 16-bit output of the decoded cut


def test_conventional_model_needs_no_prompts(tmp_path):
    fx = load_fixture("conventional")
    ckpt = write_published_layout(tmp_path / "conv", fx["hparams"], fx["state_dict"])
    sep = Separator(ckpt, device="cpu")
    assert sep.prompt_names is None
    outs = sep.separate(tone_noise(8000, 16000)[0], 16000, None)
    assert len(outs) == sep.model.num_outputs and outs[0].shape == (8000,)
    written = sep.separate_file(_write_wav(tmp_path / "x.wav"), tmp_path / "o", None, spectrograms=False)
    assert sorted(p.name for p in written) == ["mix.wav"] + [f"output{i}.wav" for i in range(len(outs))]


def _write_wav(path, n=8000, sr=16000):
    sf.write(path, tone_noise(n, sr)[0], sr)
    return path


def test_prompt_and_input_checks(sep, tmp_path):
    with pytest.raises(PromptError, match="unknown prompt\\(s\\) guitar; this model knows: speech, sfx"):
        sep.separate(tone_noise(100, 16000)[0], 16000, ["speech", "guitar"])
    with pytest.raises(SeparationError, match="no prompts given"):
        sep.separate(tone_noise(100, 16000)[0], 16000, [])
    with pytest.raises(SeparationError, match="audio is all zeros"):
        sep.separate(np.zeros(100, np.float32), 16000, ["speech"])
    with pytest.raises(SeparationError, match="audio contains NaN"):
        sep.separate(np.full(100, np.nan, np.float32), 16000, ["speech"])
    with pytest.raises(SeparationError, match="--css_batch_size must be at least 1, got 0"):
        sep.separate(tone_noise(100, 16000)[0], 16000, ["speech"], css_segment_size=1, css_batch_size=0)
    with pytest.raises(SeparationError, match="--css_shift_size 2 must not exceed --css_segment_size 1"):
        sep.separate(tone_noise(100, 16000)[0], 16000, ["speech"], css_segment_size=1, css_shift_size=2)
    wav = _write_wav(tmp_path / "x.wav")  # 0.5 s at 16 kHz
    assert check_input(wav, SeparationOptions(start_time=0.1, end_time=0.2)) == (1600, 1600, 16000, 1)
    with pytest.raises(SeparationError, match="--ref_channel 1 is out of range"):
        check_input(wav, SeparationOptions(ref_channel=1))


def test_model_unchanged_by_separation(sep):
    before = {k: v.clone() for k, v in sep.model.state_dict().items()}
    sep.separate(tone_noise(4000, 16000)[0], 16000, ["speech"], css_segment_size=0.05)
    assert all(torch.equal(before[k], v) for k, v in sep.model.state_dict().items())


def test_spectrogram_png_for_short_and_long_inputs(tmp_path):
    from separation.separator import MAX_SPECTROGRAM_FRAMES, save_spectrogram

    assert MAX_SPECTROGRAM_FRAMES <= 10000  # bounded image memory whatever the length
    for n, channels in [(1, 1), (31, 2), (8000 * 120, 1)]:
        path = save_spectrogram(tmp_path / f"s{n}.png", tone_noise(n, 8000, channels), 8000, "t")
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".*"))
