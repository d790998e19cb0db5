"""Audio I/O with soundfile (wav, flac, ogg, mp3 through libsndfile), atomic writes, and resampling.

Arrays are ``(channels, samples)`` float32 throughout the project; soundfile's ``(samples, channels)`` layout stays
inside this module.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from utils.atomic import atomic_path

__all__ = ["AudioError", "AudioInfo", "audio_info", "read_audio", "write_audio", "resample", "fix_length"]


class AudioError(ValueError):
    """An audio file that cannot be used (missing, unreadable, empty); the message names the file."""


@dataclass(frozen=True)
class AudioInfo:
    sample_rate: int
    num_samples: int
    channels: int


def audio_info(path: str | os.PathLike) -> AudioInfo:
    """Sample rate, length in samples and channel count from the file header (no decoding)."""
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"audio file not found: {path}")
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as err:
        raise AudioError(f"{path} is not a readable audio file ({err})") from None
    return AudioInfo(int(info.samplerate), int(info.frames), int(info.channels))


def read_audio(
    path: str | os.PathLike, start: int = 0, num_samples: int | None = None, channel: int | None = None
) -> tuple[np.ndarray, int]:
    """Read (part of) an audio file.

    Args:
        path: audio file.
        start: first sample to read (a partial read: only that region is decoded where the format allows).
        num_samples: samples to read from ``start`` (``None``: to the end).
        channel: keep only this channel (``None``: all channels).

    Returns:
        ``(audio, sample_rate)`` with ``audio`` float32 of shape ``(channels, samples)`` (``(1, samples)`` when
        ``channel`` is given).

    Raises:
        AudioError: missing or unreadable file, or ``channel`` out of range.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"audio file not found: {path}")
    frames = -1 if num_samples is None else int(num_samples)
    try:
        data, sr = sf.read(str(path), start=int(start), frames=frames, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as err:
        raise AudioError(f"{path} is not a readable audio file ({err})") from None
    data = data.T
    if channel is not None:
        if not -data.shape[0] <= channel < data.shape[0]:
            raise AudioError(f"{path} has {data.shape[0]} channel(s); channel {channel} does not exist")
        data = data[channel : channel + 1] if channel >= 0 else data[[channel]]
    return np.ascontiguousarray(data), int(sr)


def write_audio(
    path: str | os.PathLike, audio: np.ndarray | torch.Tensor, sample_rate: int, subtype: str | None = None
) -> Path:
    """Write ``(channels, samples)`` or ``(samples,)`` audio atomically; the format follows the file suffix.

    Args:
        subtype: soundfile subtype (``"PCM_16"``, ``"PCM_24"``, ``"FLOAT"``…); ``None`` is soundfile's default.
    """
    if isinstance(audio, torch.Tensor):
        audio = audio.detach().cpu().float().numpy()
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 1:
        audio = audio[None]
    if audio.ndim != 2:
        raise ValueError(f"audio for {path} must be (channels, samples) or (samples,), got shape {audio.shape}")
    final = Path(path)
    with atomic_path(final, suffix=final.suffix) as tmp:
        sf.write(str(tmp), audio.T, int(sample_rate), subtype=subtype, format=final.suffix.lstrip(".").upper())
    return final


def fix_length(x: torch.Tensor, n: int) -> torch.Tensor:
    """Trim or zero-pad the last axis to ``n`` samples (resampling round trips can be off by a sample)."""
    if x.shape[-1] >= n:
        return x[..., :n]
    return torch.nn.functional.pad(x, (0, n - x.shape[-1]))


def resample(wave: torch.Tensor | np.ndarray, orig_sr: int, new_sr: int) -> torch.Tensor:
    """Resample along the last axis with torchaudio's windowed-sinc resampler (its defaults).

    The kernel of each (rate pair, dtype, device) is built once and cached (``torchaudio.functional.resample``
    rebuilds it on every call, which dominated the data loader's time). Returns a tensor; the input is returned
    unchanged (as a tensor) when the rates are equal.
    """
    if not isinstance(wave, torch.Tensor):
        wave = torch.from_numpy(np.asarray(wave))
    if int(orig_sr) == int(new_sr):
        return wave
    if not wave.is_floating_point():
        wave = wave.float()
    return _resampler(int(orig_sr), int(new_sr), wave.dtype, str(wave.device))(wave)


@functools.lru_cache(maxsize=32)
def _resampler(orig_sr: int, new_sr: int, dtype: torch.dtype, device: str) -> torch.nn.Module:
    import torchaudio.transforms as tat  # imported lazily: only resampling needs torchaudio

    with torch.inference_mode(False), torch.no_grad():  # a normal tensor: usable with and without autograd later
        return tat.Resample(orig_sr, new_sr, dtype=dtype).to(device)
