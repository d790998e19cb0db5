"""Property: the model's STFT encoder and decoder invert each other, and the wrapper with a unit-mask separator
gives back the mixture (its variance normalisation undone)."""

import pytest
import torch
from torch import nn

from nets import SeparationModel, build_model
from tests.helpers import load_fixture

#: lengths in samples: shorter than a hop, exact hop/FFT multiples, and lengths that are not a multiple of the hop
LENGTHS = [1, 37, 511, 512, 513, 2047, 2048, 2049, 5000, 48000 + 17]


@pytest.fixture(scope="module")
def model():
    """The tiny reference TUSS as published (2048-point sqrt-Hann STFT, hop 512), untrained."""
    torch.manual_seed(0)
    return build_model(load_fixture("tuss")["hparams"]).eval()


def test_the_model_uses_the_published_stft(model):
    for codec in (model.encoder, model.decoder):
        assert (codec.fft_size, codec.window_length, codec.hop_length) == (2048, 2048, 512)
        assert torch.allclose(codec.window, torch.hann_window(2048, periodic=True).sqrt())


@pytest.mark.parametrize("n", LENGTHS)
def test_encoder_then_decoder_with_a_unit_mask_returns_the_input(model, n):
    gen = torch.Generator().manual_seed(n)
    wave = torch.randn(3, n, generator=gen) * torch.tensor([[1.0], [0.01], [30.0]])  # three scales
    with torch.no_grad():
        spec = model.encoder(wave)  # (b, t, f)
        assert spec.dtype == torch.complex64 and spec.shape[-1] == 1025
        mask = torch.ones_like(spec)  # complex 1 + 0j
        out = model.decoder(spec * mask)
    assert out.dtype == torch.float32 and out.shape[0] == 3
    assert out.shape[-1] >= n  # the wrapper keeps the first n samples: the decoder must cover them all
    kept = out[..., :n]
    peak = wave.abs().amax(-1, keepdim=True)
    err = ((kept - wave).abs() / peak).max()
    assert err < 1e-5, f"relative reconstruction error {err:.2e} at length {n}"


@pytest.mark.parametrize("n", [1, 511, 2049, 48000 + 17])
def test_decoder_accepts_extra_leading_axes_like_the_separator_output(model, n):
    gen = torch.Generator().manual_seed(1000 + n)
    wave = torch.randn(2, n, generator=gen)
    with torch.no_grad():
        spec = model.encoder(wave)
        est = torch.stack([spec, -2 * spec, 0 * spec], dim=1)  # (b, s, t, f): masks 1, -2 and 0
        out = model.decoder(est)[..., :n]
    assert out.shape == (2, 3, n)
    expected = torch.stack([wave, -2 * wave, 0 * wave], dim=1)
    assert ((out - expected).abs().amax(-1) / wave.abs().amax(-1, keepdim=True)).max() < 1e-5


class UnitMask(nn.Module):
    """A separator returning the input spectrogram unchanged for every prompt; records what it was given."""

    def __init__(self):
        super().__init__()
        self.seen = None

    def forward(self, spec, prompts):
        self.seen = spec
        s = len(prompts[0])
        return spec.unsqueeze(1).expand(-1, s, -1, -1)


@pytest.mark.parametrize("n", [2048, 4097, 24000 + 5])  # at least one STFT window
def test_the_wrapper_with_a_unit_mask_separator_returns_the_mixture(model, n):
    stub = UnitMask()
    # a wrapper of its own around the stub and the shared model's codecs: the module-scoped model is not changed
    model = SeparationModel(stub, model.encoder, model.decoder, variance_normalization=model.variance_normalization,
                            sample_rate=model.sample_rate, config=model.config)
    assert model.variance_normalization
    gen = torch.Generator().manual_seed(n)
    mix = torch.randn(2, n, generator=gen) * torch.tensor([[0.02], [7.0]]) + 0.3  # std far from 1, non-zero mean
    original = mix.clone()
    prompts = [["speech", "sfx", "musicbg"], ["sfxbg", "speech", "speech"]]
    with torch.no_grad():
        est = model(mix, prompts)
    assert torch.equal(mix, original)  # the caller's tensor is untouched
    assert est.shape == (2, 3, n)
    peak = mix.abs().amax(-1)[:, None]
    assert ((est - mix[:, None]).abs().amax(-1) / peak).max() < 1e-5
    # the separator saw the spectrogram of the variance-normalised mixture
    seen = model.decoder(stub.seen)[..., :n]
    normalised = mix / (mix.std(-1, keepdim=True) + 1e-8)
    assert ((seen - normalised).abs().amax(-1) / normalised.abs().amax(-1)).max() < 1e-5
