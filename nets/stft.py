"""STFT encoder/decoder of the separation wrapper (docs/architecture.md §2)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["STFTEncoder", "STFTDecoder"]


def _window(window_type: str, length: int, normalize: str | None) -> torch.Tensor:
    if window_type == "sqrt_hann":
        window = torch.hann_window(length, periodic=True).sqrt()
    elif window_type == "hann":
        window = torch.hann_window(length, periodic=True)
    else:
        raise ValueError(f"unsupported window_type {window_type!r}; expected 'sqrt_hann' or 'hann'")
    if normalize == "window":
        window = window / window.sum()
    elif normalize not in (None, "default"):
        raise ValueError(f"unsupported STFT normalize {normalize!r}; expected null, 'default' or 'window'")
    return window


class _STFTBase(nn.Module):
    def __init__(self, fft_size: int = 2048, window_length: int = 2048, hop_length: int = 512,
                 window_type: str = "sqrt_hann", normalize: str | None = None):
        super().__init__()
        self.fft_size, self.window_length, self.hop_length = fft_size, window_length, hop_length
        self.normalized = normalize == "default"
        self.register_buffer("window", _window(window_type, window_length, normalize), persistent=False)


class STFTEncoder(_STFTBase):
    """``(b, n)`` waveform -> ``(b, t, f)`` complex STFT, ``f = fft_size // 2 + 1``.

    Pads ``fft_size // 2`` zeros on both sides, then zeros at the end so the frames tile the signal exactly;
    frames are not centred by ``torch.stft`` itself.
    """

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        pad = self.fft_size // 2
        padded_len = wave.shape[-1] + 2 * pad
        extra = (-(padded_len - self.window_length) % self.hop_length) % self.window_length
        wave = nn.functional.pad(wave.float(), (pad, pad + extra))
        spec = torch.stft(wave, self.fft_size, self.hop_length, self.window_length, window=self.window,
                          center=False, normalized=self.normalized, return_complex=True)
        return spec.transpose(-1, -2)


class STFTDecoder(_STFTBase):
    """``(..., t, f)`` complex STFT -> ``(..., (t - 1) * hop)`` waveform (centred inverse STFT)."""

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        lead = spec.shape[:-2]
        spec = spec.reshape(-1, *spec.shape[-2:]).transpose(-1, -2)  # (n, f, t)
        length = (spec.shape[-1] - 1) * self.hop_length
        wave = torch.istft(spec, self.fft_size, self.hop_length, self.window_length, window=self.window,
                           center=True, normalized=self.normalized, length=length)
        return wave.reshape(*lead, -1)
