"""The separation API behind ``separate.py``: a loaded model plus everything around it.

>>> from separate import Separator                                               # doctest: +SKIP
>>> sep = Separator("pretrained_models/tuss.demo/checkpoints/model.pth")        # doctest: +SKIP
>>> speech, sfxbg, musicbg = sep.separate(wave, 44100, ["speech", "sfxbg", "musicbg"])  # doctest: +SKIP

``wave`` is ``(samples,)`` or ``(channels, samples)`` at any rate; each channel is separated independently (the models
are monaural), the result has the input's rate, channels and length. Long inputs are processed chunk-wise
(:func:`utils.css.css_forward`) when a segment size is given.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from nets import load_model
from utils.atomic import atomic_path
from utils.audio import AudioError, audio_info, fix_length, read_audio, resample, write_audio
from utils.css import css_forward, segment_starts
from utils.runtime import pick_device

__all__ = ["Separator", "SeparationError", "TASK_PRESETS", "SUBTYPES", "output_names", "check_input", "read_input",
           "check_wave", "write_outputs", "save_spectrogram", "separate_file"]

#: ``--task`` presets: the prompt lists of the paper's five tasks.
TASK_PRESETS: dict[str, list[str]] = {
    "se": ["speech", "sfxbg"],  # speech enhancement
    "ss": ["speech", "speech"],  # speech separation
    "uss": ["sfx", "sfx", "sfx"],  # universal sound separation
    "mss": ["drums", "bass", "vocals", "other"],  # music source separation
    "cass": ["speech", "sfxbg", "musicbg"],  # cinematic audio source separation
}

#: spectrogram PNGs use at most about this many STFT frames (long inputs get a larger hop)
MAX_SPECTROGRAM_FRAMES = 4000

#: (format, bit depth) -> soundfile subtype
SUBTYPES = {("wav", 16): "PCM_16", ("wav", 24): "PCM_24", ("wav", 32): "FLOAT",
            ("flac", 16): "PCM_16", ("flac", 24): "PCM_24"}


class SeparationError(ValueError):
    """Input that cannot be separated; the message names the input and what was expected."""


def _format_error(fmt: str, bit_depth: int) -> str:
    return (f"--format {fmt} with --bit_depth {bit_depth} is not supported; choose from "
            + ", ".join(f"{f}/{b}" for f, b in SUBTYPES))


def output_names(prompts: Sequence[str] | None, count: int) -> list[str]:
    """File stems of the outputs: ``{prompt}{i}`` with ``i`` the output's index (``speech0``, ``sfx1``, ``sfx2``);
    ``output{i}`` for a model without prompts."""
    if prompts is None:
        return [f"output{i}" for i in range(count)]
    return [f"{p}{i}" for i, p in enumerate(prompts)]


@dataclass
class Separator:
    """A loaded separation model.

    Args:
        ckpt_path: ``.pth``, Lightning ``.ckpt`` or experiment directory (averaged), as :func:`nets.load_model`.
        device: ``cpu``, ``cuda``, ``mps``… (default: a GPU when present).
    """

    ckpt_path: str | os.PathLike
    device: str | torch.device | None = None

    def __post_init__(self) -> None:
        self.device = pick_device(None if self.device is None else str(self.device))
        self.model = load_model(self.ckpt_path, self.device)

    @property
    def prompt_names(self) -> tuple[str, ...] | None:
        return self.model.prompt_names

    @property
    def sample_rate(self) -> int:
        return self.model.sample_rate

    def check_prompts(self, prompts: Sequence[str] | None) -> list[str] | None:
        """Validated prompt list (``None`` for a model without prompts)."""
        if self.prompt_names is None:
            return None
        if not prompts:
            raise SeparationError(f"no prompts given; this model knows: {', '.join(self.prompt_names)}")
        unknown = sorted(set(prompts) - set(self.prompt_names))
        if unknown:
            raise SeparationError(f"unknown prompt(s) {', '.join(unknown)}; this model knows: "
                                  f"{', '.join(self.prompt_names)}")
        return list(prompts)

    def num_outputs(self, prompts: Sequence[str] | None) -> int:
        return self.model.num_outputs if self.prompt_names is None else len(prompts)

    def num_segments(self, num_samples: int, sample_rate: int, css_segment_size: float | None,
                     css_shift_size: float | None) -> int:
        """Segments one channel is cut into (1 without CSS)."""
        if not css_segment_size:
            return 1
        n = round(num_samples * self.sample_rate / sample_rate)
        seg, shift = self._css_sizes(css_segment_size, css_shift_size)
        return 1 if n <= seg else len(segment_starts(n, seg, shift))

    def _css_sizes(self, segment: float, shift: float | None) -> tuple[int, int]:
        shift = segment / 2 if shift is None else shift
        if segment <= 0 or shift <= 0 or shift > segment:
            raise SeparationError(f"CSS sizes must satisfy 0 < shift <= segment; got segment {segment} s, "
                                  f"shift {shift} s")
        return round(segment * self.sample_rate), round(shift * self.sample_rate)

    @torch.inference_mode()
    def separate(self, wave: np.ndarray | torch.Tensor, sample_rate: int, prompts: Sequence[str] | None,
                 css_segment_size: float | None = None, css_shift_size: float | None = None,
                 css_batch_size: int = 1, css_solve_perm: bool = False,
                 progress: Callable[[int], None] | None = None) -> list[np.ndarray]:
        """Separate ``wave`` into one signal per prompt.

        Args:
            wave: ``(samples,)`` or ``(channels, samples)`` float audio at ``sample_rate``.
            prompts: prompt names (ignored, may be ``None``, for a model without prompts).
            css_segment_size, css_shift_size: chunk-wise processing in seconds (shift defaults to half the
                segment); ``None``: the whole input in one pass.
            css_batch_size: segments per forward pass; css_solve_perm: align same-prompt outputs between segments.
            progress: called with the number of segments done.

        Returns:
            One float32 array per output, each of the input's shape (channels kept, exact length).
        """
        prompts = self.check_prompts(prompts)
        if css_batch_size < 1:
            raise SeparationError(f"--css_batch_size must be at least 1, got {css_batch_size}")
        x = torch.as_tensor(np.asarray(wave, dtype=np.float32))
        mono = x.ndim == 1
        x = x[None] if mono else x
        if x.ndim != 2:
            raise SeparationError(f"audio must be (samples,) or (channels, samples), got {tuple(np.shape(wave))}")
        check_wave(x, "audio")
        n = x.shape[-1]
        x48 = resample(x, sample_rate, self.sample_rate).to(self.device)  # channels as the batch
        batch_prompts = None if prompts is None else [prompts] * x48.shape[0]
        if css_segment_size:
            seg, shift = self._css_sizes(css_segment_size, css_shift_size)

            def forward_fn(segs: torch.Tensor) -> torch.Tensor:
                return self.model(segs, None if prompts is None else [prompts] * segs.shape[0])

            est = css_forward(forward_fn, x48, seg, shift, batch_size=css_batch_size,
                              solve_perm=css_solve_perm, prompts=prompts, progress=progress)
        else:
            est = self.model(x48, batch_prompts)
            if progress:
                progress(1)
        del x48
        est = resample(est.float().cpu(), self.sample_rate, sample_rate)  # (c, s, n')
        est = fix_length(est, n)
        outs = [est[:, i].numpy() for i in range(est.shape[1])]
        return [o[0] for o in outs] if mono else outs

    def separate_file(self, audio_path: str | os.PathLike, output_dir: str | os.PathLike,
                      prompts: Sequence[str] | None, *, start_time: float | None = None,
                      end_time: float | None = None, ref_channel: int = 0, all_channels: bool = False,
                      css_segment_size: float | None = None, css_shift_size: float | None = None,
                      css_batch_size: int = 1, css_solve_perm: bool = False, fmt: str = "wav", bit_depth: int = 16,
                      residual: bool = False, spectrograms: bool = True, progress: bool = False) -> list[Path]:
        """Separate (a cut of) an audio file and write the results under ``output_dir``.

        Writes ``wav/mix.<fmt>``, ``wav/<prompt><i>.<fmt>`` (``output<i>`` for a model without prompts), optionally
        ``wav/residual.<fmt>`` (mixture minus the sum of the outputs), and ``spectrogram/<name>.png``, all at the
        file's sample rate and exactly the length of ``[start_time, end_time)``. Nothing is written when any step
        fails.

        Args:
            ref_channel: the channel to separate; all_channels: separate every channel (multi-channel stems).
            fmt, bit_depth: ``wav`` (16, 24, 32 = float) or ``flac`` (16, 24).
            progress: show a tqdm progress bar over segments x channels.

        Returns:
            The files written.
        """
        prompts = self.check_prompts(prompts)
        if (fmt, bit_depth) not in SUBTYPES:
            raise SeparationError(_format_error(fmt, bit_depth))
        wave, sr = read_input(audio_path, start_time, end_time, None if all_channels else ref_channel)
        names = output_names(prompts, self.num_outputs(prompts))
        total = wave.shape[0] * self.num_segments(wave.shape[-1], sr, css_segment_size, css_shift_size)
        from tqdm import tqdm

        with tqdm(total=total, desc=Path(audio_path).name, unit="segment", disable=not progress or total < 2) as bar:
            stems = self.separate(wave, sr, prompts, css_segment_size, css_shift_size, css_batch_size,
                                  css_solve_perm, progress=bar.update)
        return write_outputs(output_dir, wave, stems, names, sr, fmt, bit_depth, residual, spectrograms)


def check_wave(x: np.ndarray | torch.Tensor, name: str | os.PathLike) -> None:
    """Raise :class:`SeparationError` (naming ``name``) for audio with no samples, NaN/inf values or only zeros."""
    x = torch.as_tensor(x)
    if x.shape[-1] == 0:
        raise SeparationError(f"{name} holds no audio samples")
    if not torch.isfinite(x).all():
        raise SeparationError(f"{name} contains NaN or infinite values")
    if not x.abs().max() > 0:
        raise SeparationError(f"{name} is all zeros: nothing to separate")



def check_input(path: str | os.PathLike, start_time: float | None = None, end_time: float | None = None,
                ref_channel: int | None = 0) -> tuple[int, int]:
    """Check an input file's header against the requested cut and channel (no decoding).

    Cuts are exact to the sample: ``round(t * sample_rate)``. Returns ``(start, num_samples)`` of the cut.

    Raises:
        SeparationError: missing or unreadable file, no samples, ``ref_channel`` out of range, or a cut that is empty
            or runs past the end.
    """
    try:
        info = audio_info(path)
    except AudioError as err:
        raise SeparationError(str(err)) from None
    if info.num_samples == 0:
        raise SeparationError(f"{path} holds no audio samples")
    if ref_channel is not None and not 0 <= ref_channel < info.channels:
        raise SeparationError(f"--ref_channel {ref_channel} is out of range: {path} has {info.channels} channel(s) "
                              f"(0..{info.channels - 1})")
    duration = info.num_samples / info.sample_rate
    start = 0 if start_time is None else round(start_time * info.sample_rate)
    end = info.num_samples if end_time is None else round(end_time * info.sample_rate)
    if start_time is not None and (start_time < 0 or start >= info.num_samples):
        raise SeparationError(f"--start_time {start_time} s is outside {path} ({duration:.3f} s long)")
    if end_time is not None and end > info.num_samples:
        raise SeparationError(f"--end_time {end_time} s is beyond the end of {path} ({duration:.3f} s long)")
    if end <= start:
        raise SeparationError(f"--start_time ({start / info.sample_rate:g} s) must be before --end_time "
                              f"({end / info.sample_rate:g} s)")
    return start, end - start


def read_input(path: str | os.PathLike, start_time: float | None = None, end_time: float | None = None,
               ref_channel: int | None = 0) -> tuple[np.ndarray, int]:
    """Read ``[start_time, end_time)`` (seconds) of an audio file, one channel (``ref_channel``) or all (``None``),
    checked as :func:`check_input` and :func:`check_wave` do. Returns ``((channels, samples), sample_rate)``."""
    start, count = check_input(path, start_time, end_time, ref_channel)
    try:
        audio, sr = read_audio(path, start, count, channel=ref_channel)
    except AudioError as err:
        raise SeparationError(str(err)) from None
    check_wave(audio, path)
    return audio, sr


def save_spectrogram(path: str | os.PathLike, audio: np.ndarray, sample_rate: int, title: str) -> Path:
    """Log-magnitude spectrogram of ``audio`` (``(samples,)`` or ``(channels, samples)``; channels averaged) as a
    PNG, written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = torch.as_tensor(np.atleast_2d(audio)).float()
    if x.shape[-1] < 32:  # too short for an STFT: zero-pad (the picture is blank anyway)
        x = torch.nn.functional.pad(x, (0, 32 - x.shape[-1]))
    n_fft = min(2048 if sample_rate > 24000 else 1024, 2 ** int(np.log2(x.shape[-1])))
    # at most ~MAX_SPECTROGRAM_FRAMES columns (the image is 1000 px wide): memory stays flat for long recordings
    hop = max(n_fft // 4, -(-x.shape[-1] // MAX_SPECTROGRAM_FRAMES))
    spec = torch.stft(x, n_fft, hop, window=torch.hann_window(n_fft), return_complex=True).abs().mean(0)
    db = 20 * torch.log10(spec + 1e-8)
    top = float(db.max())
    fig, ax = plt.subplots(figsize=(10, 4), dpi=100)
    duration = x.shape[-1] / sample_rate
    img = ax.imshow(db.numpy(), origin="lower", aspect="auto", cmap="magma", vmin=top - 80, vmax=top,
                    extent=(0.0, duration, 0.0, sample_rate / 2 / 1000))
    ax.set(xlabel="time (s)", ylabel="frequency (kHz)", title=title)
    fig.colorbar(img, ax=ax, label="dB")
    fig.tight_layout()
    try:
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
    return Path(path)


def write_outputs(out_dir: str | os.PathLike, mix: np.ndarray, outputs: Sequence[np.ndarray], names: Sequence[str],
                  sample_rate: int, fmt: str = "wav", bit_depth: int = 16, residual: bool = False,
                  spectrograms: bool = True) -> list[Path]:
    """Write ``wav/mix.<fmt>``, ``wav/<name>.<fmt>`` (and ``residual``) and ``spectrogram/<name>.png`` under
    ``out_dir``. Everything is written into a temporary folder first and moved into place only when complete, so a
    failure leaves no partial set of outputs."""
    if (fmt, bit_depth) not in SUBTYPES:
        raise SeparationError(_format_error(fmt, bit_depth))
    subtype = SUBTYPES[fmt, bit_depth]
    signals = [("mix", mix), *zip(names, outputs, strict=True)]
    if residual:
        signals.append(("residual", mix - np.sum(outputs, axis=0)))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out_dir, prefix=".separating-"))
    written = []
    try:
        for name, sig in signals:
            write_audio(staging / "wav" / f"{name}.{fmt}", sig, sample_rate, subtype=subtype)
            if spectrograms:
                save_spectrogram(staging / "spectrogram" / f"{name}.png", sig, sample_rate, name)
        for f in sorted(staging.rglob("*")):
            if f.is_file():
                target = out_dir / f.relative_to(staging)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(f, target)
                written.append(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return written


def separate_file(ckpt_path: str | os.PathLike, audio_path: str | os.PathLike, output_dir: str | os.PathLike,
                  prompts: Sequence[str] | None, device: str | None = None, **kwargs) -> list[Path]:
    """Load a model and separate one file: ``Separator(ckpt_path, device).separate_file(audio_path, output_dir,
    prompts, **kwargs)`` (see :meth:`Separator.separate_file` for the keyword arguments). Returns the files written."""
    return Separator(ckpt_path, device).separate_file(audio_path, output_dir, prompts, **kwargs)
