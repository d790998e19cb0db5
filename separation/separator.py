"""The separation API behind ``separate.py``: a loaded model plus everything around it.

>>> import numpy as np
>>> from separate import Separator
>>> sep = Separator("pretrained_models/tuss.demo/checkpoints/model.pth", device="cpu")  # the bundled demo model
>>> wave = 0.1 * np.random.default_rng(0).standard_normal((2, 44100)).astype(np.float32)  # 1 s of stereo noise
>>> speech, sfxbg, musicbg = sep.separate(wave, 44100, ["speech", "sfxbg", "musicbg"])
>>> speech.shape, speech.dtype
((2, 44100), dtype('float32'))

``wave`` is ``(samples,)`` or ``(channels, samples)`` at any rate; each channel is separated independently (the models
are monaural), the result has the input's rate, channels and length. Long inputs are processed chunk-wise
(:func:`separation.pipeline.separate_mixture`) when a segment size is given.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from nets import load_model
from nets.onnx_export import OnnxModel
from separation.css import segment_starts
from separation.pipeline import SeparationError, css_sizes, separate_mixture
from utils.atomic import WriteError, atomic_path
from utils.audio import AudioError, audio_info, find_truncation, read_audio_checked, write_audio
from utils.runtime import pick_device

__all__ = ["Separator", "BACKENDS", "check_backend", "SeparationError", "TruncatedAudioWarning", "TASK_PRESETS",
           "SUBTYPES", "OUTPUT_SUBDIRS", "output_names", "check_input", "read_input", "check_wave", "check_output_dir",
           "write_outputs", "save_spectrogram", "separate_file"]

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


#: the folders of one input's output set under its output folder; they are replaced as a whole
OUTPUT_SUBDIRS = ("wav", "spectrogram")


class TruncatedAudioWarning(UserWarning):
    """An input file holds fewer frames than its header declares; what could be read is separated."""


def _format_error(fmt: str, bit_depth: int) -> str:
    return (f"--format {fmt} with --bit_depth {bit_depth} is not supported; choose from "
            + ", ".join(f"{f}/{b}" for f, b in SUBTYPES))


#: the model runtimes a :class:`Separator` can use (``backend=``, ``separate.py --backend``)
BACKENDS = ("pytorch", "onnxruntime")


def check_backend(ckpt_path: str | os.PathLike, backend: str) -> None:
    """Raise :class:`SeparationError` for an unknown ``backend`` or a model path it cannot take: an ``.onnx`` file
    needs ``onnxruntime``, which takes nothing else."""
    if backend not in BACKENDS:
        raise SeparationError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    is_onnx = Path(ckpt_path).suffix.lower() == ".onnx"
    if is_onnx and backend == "pytorch":
        raise SeparationError(f"{ckpt_path} is an ONNX model: run it with --backend onnxruntime "
                              "(Separator(..., backend='onnxruntime'))")
    if not is_onnx and backend == "onnxruntime":
        raise SeparationError(f"--backend onnxruntime takes an .onnx model, got {ckpt_path} (export one with "
                              f"python -m nets.onnx_export {ckpt_path} MODEL.onnx)")


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
        ckpt_path: ``.pth``, Lightning ``.ckpt`` or experiment directory (averaged), as :func:`nets.load_model`; with
            ``backend="onnxruntime"`` a ``.onnx`` graph written by :func:`nets.export_onnx`.
        device: ``cpu``, ``cuda``, ``mps``… (default: a GPU when present). ONNX Runtime runs on CUDA for a ``cuda``
            device when its CUDAExecutionProvider is installed, otherwise on the CPU.
        backend: ``pytorch`` (default) or ``onnxruntime``: the model is then an :class:`nets.onnx_export.OnnxModel`
            (prompts, sample rate and STFT window from the graph's metadata), plugged into the same inference path
            (:func:`separation.pipeline.separate_mixture`), so every option works as with PyTorch.
    """

    ckpt_path: str | os.PathLike
    device: str | torch.device | None = None
    backend: str = "pytorch"

    def __post_init__(self) -> None:
        check_backend(self.ckpt_path, self.backend)
        self.device = pick_device(None if self.device is None else str(self.device))
        if self.backend == "onnxruntime":
            self.model = OnnxModel(self.ckpt_path, self.device)
        else:
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
        self.model.check_prompts([list(prompts)], 1)  # nets.PromptError names the unknown ones
        return list(prompts)

    def num_outputs(self, prompts: Sequence[str] | None) -> int:
        return self.model.num_outputs if self.prompt_names is None else len(prompts)

    @property
    def window_samples(self) -> int:
        """The model's STFT window (frame) in samples at :attr:`sample_rate`: its shortest separable input."""
        return self.model.window_samples

    def min_samples(self, sample_rate: int) -> int:
        """Shortest input at ``sample_rate`` the model separates: one STFT window at the model's rate, i.e.
        ``ceil(window * sample_rate / model rate)`` samples (resampled, it spans at least one window)."""
        return -(-self.window_samples * int(sample_rate) // self.sample_rate)

    def check_length(self, num_samples: int, sample_rate: int, name: str | os.PathLike = "audio") -> None:
        """Raise :class:`SeparationError` (naming ``name``) for an input shorter than :meth:`min_samples`."""
        need = self.min_samples(sample_rate)
        if num_samples < need:
            raise SeparationError(
                f"{name} is too short to separate: {num_samples} samples ({num_samples / sample_rate * 1000:.1f} ms "
                f"at {sample_rate} Hz); this model needs at least {need} samples at {sample_rate} Hz (one "
                f"{self.window_samples}-sample STFT window at {self.sample_rate} Hz)")

    def num_segments(self, num_samples: int, sample_rate: int, css_segment_size: float | None,
                     css_shift_size: float | None) -> int:
        """Segments one channel is cut into (1 without CSS)."""
        if css_segment_size is None:
            self._css_sizes(css_segment_size, css_shift_size)  # a shift without a segment is refused
            return 1
        n = round(num_samples * self.sample_rate / sample_rate)
        seg, shift = self._css_sizes(css_segment_size, css_shift_size)
        return 1 if n <= seg else len(segment_starts(n, seg, shift))

    def _css_sizes(self, segment: float | None, shift: float | None) -> tuple[int, int] | None:
        """Segment and shift in samples at the model rate (``None`` without CSS), checked (shift defaults to half
        the segment; the segment at least one STFT window): :func:`separation.pipeline.css_sizes`."""
        return css_sizes(segment, shift, self.sample_rate, min_segment=self.window_samples)

    def check_options(self, css_segment_size: float | None = None, css_shift_size: float | None = None,
                      css_batch_size: int = 1) -> None:
        """Raise :class:`SeparationError` for CSS options this model cannot use (see :meth:`separate`)."""
        if isinstance(css_batch_size, bool) or not isinstance(css_batch_size, int) or css_batch_size < 1:
            raise SeparationError(f"--css_batch_size must be at least 1, got {css_batch_size}")
        self._css_sizes(css_segment_size, css_shift_size)

    @torch.inference_mode()
    def separate(self, wave: np.ndarray | torch.Tensor, sample_rate: int, prompts: Sequence[str] | None,
                 css_segment_size: float | None = None, css_shift_size: float | None = None,
                 css_batch_size: int = 1, css_solve_perm: bool = False,
                 progress: Callable[[int], None] | None = None, name: str | os.PathLike = "audio") -> list[np.ndarray]:
        """Separate ``wave`` into one signal per prompt.

        Args:
            wave: ``(samples,)`` or ``(channels, samples)`` float audio at ``sample_rate``: finite, not all zeros,
                and at least :meth:`min_samples` long (one STFT window of the model).
            prompts: prompt names (ignored, may be ``None``, for a model without prompts).
            css_segment_size, css_shift_size: chunk-wise processing in seconds (shift defaults to half the
                segment; the segment at least one STFT window); ``None``: the whole input in one pass.
            css_batch_size: segments per forward pass; css_solve_perm: align same-prompt outputs between segments.
            progress: called with the number of segments done.
            name: how errors name the input.

        Returns:
            One float32 array per output, each of the input's shape (channels kept, exact length).

        Raises:
            SeparationError: bad prompts, options or audio (the message names ``name``).
        """
        prompts = self.check_prompts(prompts)
        self.check_options(css_segment_size, css_shift_size, css_batch_size)
        try:
            rate_ok = not isinstance(sample_rate, bool) and sample_rate > 0 and int(sample_rate) == sample_rate
        except (TypeError, ValueError, OverflowError):
            rate_ok = False
        if not rate_ok:
            raise SeparationError(f"sample rate of {name} must be a positive integer, got {sample_rate!r}")
        sample_rate = int(sample_rate)
        x = torch.as_tensor(np.asarray(wave, dtype=np.float32))
        mono = x.ndim == 1
        x = x[None] if mono else x
        if x.ndim != 2:
            raise SeparationError(f"{name} must be (samples,) or (channels, samples), got {tuple(np.shape(wave))}")
        check_wave(x, name)
        n = x.shape[-1]
        self.check_length(n, sample_rate, name)

        def forward_fn(segs: torch.Tensor) -> torch.Tensor:
            return self.model(segs, None if prompts is None else [prompts] * segs.shape[0])

        est = separate_mixture(forward_fn, x.to(self.device), sample_rate, self.sample_rate,  # channels: the batch
                               self._css_sizes(css_segment_size, css_shift_size), batch_size=css_batch_size,
                               solve_perm=css_solve_perm, prompts=prompts, progress=progress).cpu()
        if not torch.isfinite(est).all():  # cannot happen for checked input; never write NaN stems silently
            raise RuntimeError(f"the model produced non-finite output for {name}")
        outs = [est[:, i].numpy() for i in range(est.shape[1])]
        return [o[0] for o in outs] if mono else outs

    def separate_file(self, audio_path: str | os.PathLike, output_dir: str | os.PathLike,
                      prompts: Sequence[str] | None, *, start_time: float | None = None,
                      end_time: float | None = None, ref_channel: int | None = None, all_channels: bool = False,
                      css_segment_size: float | None = None, css_shift_size: float | None = None,
                      css_batch_size: int = 1, css_solve_perm: bool = False, fmt: str = "wav", bit_depth: int = 16,
                      residual: bool = False, spectrograms: bool = True, progress: bool = False,
                      strict: bool = False, warn: Callable[[str], None] | None = None) -> list[Path]:
        """Separate (a cut of) an audio file and write the results under ``output_dir``.

        Writes ``wav/mix.<fmt>``, ``wav/<prompt><i>.<fmt>`` (``output<i>`` for a model without prompts), optionally
        ``wav/residual.<fmt>`` (mixture minus the sum of the outputs), and ``spectrogram/<name>.png``, all at the
        file's sample rate and exactly the length of ``[start_time, end_time)``. The new ``wav/`` and
        ``spectrogram/`` replace the previous ones as a whole (see :func:`write_outputs`); nothing is written when
        any step fails, and the output folder is checked (:func:`check_output_dir`) before the model runs.

        Args:
            ref_channel: separate only this channel (mono stems); ``None`` (the default): every channel, each on its
                own (multi-channel stems, like :meth:`separate`). all_channels: every channel whatever
                ``ref_channel`` says (the authors' flag, kept).
            fmt, bit_depth: ``wav`` (16, 24, 32 = float) or ``flac`` (16, 24).
            progress: show a tqdm progress bar over segments x channels.
            strict: refuse a truncated file (fewer frames than its header declares) instead of separating what
                can be read; warn: called with the message about such a file when not ``strict`` (default: a
                :class:`TruncatedAudioWarning`).

        Returns:
            The files written.

        Raises:
            SeparationError: bad options, prompts, file, cut or output folder (nothing written).
            utils.atomic.WriteError: the outputs could not be written (message names the path; nothing replaced).
        """
        prompts = self.check_prompts(prompts)
        if (fmt, bit_depth) not in SUBTYPES:
            raise SeparationError(_format_error(fmt, bit_depth))
        self.check_options(css_segment_size, css_shift_size, css_batch_size)
        check_output_dir(output_dir)
        wave, sr = read_input(audio_path, start_time, end_time, None if all_channels else ref_channel,
                              strict=strict, warn=warn)
        cut = start_time is not None or end_time is not None
        self.check_length(wave.shape[-1], sr, f"{audio_path} (its --start_time/--end_time cut)" if cut else audio_path)
        names = output_names(prompts, self.num_outputs(prompts))
        total = wave.shape[0] * self.num_segments(wave.shape[-1], sr, css_segment_size, css_shift_size)
        with tqdm(total=total, desc=Path(audio_path).name, unit="segment", disable=not progress or total < 2) as bar:
            stems = self.separate(wave, sr, prompts, css_segment_size, css_shift_size, css_batch_size,
                                  css_solve_perm, progress=bar.update, name=audio_path)
        return write_outputs(output_dir, wave, stems, names, sr, fmt, bit_depth, residual, spectrograms)


def check_wave(x: np.ndarray | torch.Tensor, name: str | os.PathLike) -> None:
    """Raise :class:`SeparationError` (naming ``name``) for audio with no samples, NaN/inf values or only zeros."""
    x = torch.as_tensor(x)
    if x.shape[-1] == 0:
        raise SeparationError(f"{name} holds no audio samples")
    finite = torch.isfinite(x)
    if not finite.all():
        bad = int((~finite).sum())
        first = int(torch.nonzero((~finite).reshape(-1, x.shape[-1]).any(0))[0])
        raise SeparationError(f"{name} contains NaN or infinite values ({bad} sample(s), the first at sample "
                              f"{first}); expected finite audio")
    if not x.abs().max() > 0:
        raise SeparationError(f"{name} is all zeros: nothing to separate")


def _cut(path: str | os.PathLike, start_time: float | None, end_time: float | None,
         ref_channel: int | None) -> tuple[int, int, int]:
    try:
        info = audio_info(path)
    except AudioError as err:
        raise SeparationError(str(err)) from None
    if info.num_samples == 0:
        raise SeparationError(f"{path} holds no audio samples")
    if ref_channel is not None and not 0 <= ref_channel < info.channels:
        raise SeparationError(f"--ref_channel {ref_channel} is out of range: {path} has {info.channels} channel(s) "
                              f"(0..{info.channels - 1})")
    for flag, value, low in (("--start_time", start_time, ">= 0"), ("--end_time", end_time, "> 0")):
        if value is not None and not (math.isfinite(value) and (value >= 0 if low == ">= 0" else value > 0)):
            raise SeparationError(f"{flag} must be a finite number of seconds {low}, got {value}")
    duration = info.num_samples / info.sample_rate
    start = 0 if start_time is None else round(start_time * info.sample_rate)
    end = info.num_samples if end_time is None else round(end_time * info.sample_rate)
    if start_time is not None and start >= info.num_samples:
        raise SeparationError(f"--start_time {start_time} s is outside {path} ({duration:.3f} s long)")
    if end_time is not None and end > info.num_samples:
        raise SeparationError(f"--end_time {end_time} s is beyond the end of {path} ({duration:.3f} s long)")
    if end <= start:
        raise SeparationError(f"--start_time ({start / info.sample_rate:g} s) must be before --end_time "
                              f"({end / info.sample_rate:g} s)")
    return start, end - start, info.sample_rate


def check_input(path: str | os.PathLike, start_time: float | None = None, end_time: float | None = None,
                ref_channel: int | None = 0, strict: bool = False) -> tuple[int, int]:
    """Check an input file's header against the requested cut and channel.

    Cuts are exact to the sample: ``round(t * sample_rate)``. Returns ``(start, num_samples)`` of the cut. Nothing
    is decoded, except with ``strict`` for formats whose length the header alone does not prove (see
    :func:`utils.audio.find_truncation`: WAV and AIFF are checked from the header, other formats decoded once).

    Raises:
        SeparationError: missing or unreadable file, no samples, ``ref_channel`` out of range, a non-finite or
            negative time, a cut that is empty or runs past the end; with ``strict``, a truncated file.
    """
    start, count, _ = _cut(path, start_time, end_time, ref_channel)
    if strict:
        try:
            truncation = find_truncation(path, decode=True)
        except AudioError as err:
            raise SeparationError(str(err)) from None
        if truncation is not None:
            raise SeparationError(f"{truncation} (--strict refuses truncated files)")
    return start, count


def read_input(path: str | os.PathLike, start_time: float | None = None, end_time: float | None = None,
               ref_channel: int | None = 0, strict: bool = False,
               warn: Callable[[str], None] | None = None) -> tuple[np.ndarray, int]:
    """Read ``[start_time, end_time)`` (seconds) of an audio file, one channel (``ref_channel``) or all (``None``),
    checked as :func:`check_input` and :func:`check_wave` do. Returns ``((channels, samples), sample_rate)``.

    A truncated file (fewer frames than its header declares) is refused with ``strict``; otherwise what can be read
    of the cut is returned and ``warn`` is called with a message naming the file and both counts (default: a
    :class:`TruncatedAudioWarning`)."""
    start, count = check_input(path, start_time, end_time, ref_channel, strict=strict)
    try:
        audio, sr, truncation = read_audio_checked(path, start, count, channel=ref_channel)
    except AudioError as err:
        raise SeparationError(str(err)) from None
    if truncation is not None:
        if strict:
            raise SeparationError(f"{truncation} (--strict refuses truncated files)")
        msg = f"{truncation}; separating the {audio.shape[-1]} samples read of the {count} requested"
        if warn is None:
            warnings.warn(msg, TruncatedAudioWarning, stacklevel=3)
        else:
            warn(msg)
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


def _reason(err: OSError, staged: Path | None = None) -> str:
    """The operating system's reason of an error, without a path (``No space left on device``)."""
    if err.errno:
        return os.strerror(err.errno)
    text = err.strerror or str(err)
    prefix = f"cannot write {staged}: "
    if staged is not None and text.startswith(prefix):  # a WriteError of the staged file without errno
        text = text[len(prefix):]
    return text or type(err).__name__


def _write_error(err: OSError, path: str | os.PathLike, verb: str = "write", staged: Path | None = None) -> WriteError:
    """A :class:`WriteError` naming ``path`` and the reason of ``err``."""
    return WriteError(err.errno, f"cannot {verb} {path}: {_reason(err, staged)}")


def _existing_ancestor(path: Path) -> Path:
    path = Path(os.path.abspath(path))
    while not os.path.lexists(path) and path.parent != path:
        path = path.parent
    return path


def check_output_dir(out_dir: str | os.PathLike, subdirs: Sequence[str] = OUTPUT_SUBDIRS) -> None:
    """Check, before any work, that the outputs can go to ``out_dir``: nothing that is not a folder where
    ``out_dir`` or one of its ``subdirs`` (``wav/``, ``spectrogram/``) must be, and ``out_dir`` writable -- or, when
    it does not exist yet, creatable (its nearest existing parent writable). Nothing is created: the folder is made
    when the outputs are written.

    Raises:
        SeparationError: a file (or a broken link) where a folder must be, the message naming it.
        utils.atomic.WriteError: the folder cannot be written or created (permission, read-only disk), naming it.
    """
    out_dir = Path(out_dir)
    for path in (out_dir, *(out_dir / sub for sub in subdirs)):
        if os.path.lexists(path) and not path.is_dir():
            raise SeparationError(f"{path} exists and is not a folder; the outputs need a folder there (move it "
                                  "away or choose another output folder)")
    base = _existing_ancestor(out_dir)
    if not base.is_dir():
        raise SeparationError(f"cannot create output folder {out_dir}: {base} is not a folder")
    try:  # the one reliable test (access() ignores read-only mounts and ACLs): make and remove a folder there
        probe = tempfile.mkdtemp(dir=base, prefix=".write-test-")
        os.rmdir(probe)
    except OSError as err:
        raise _write_error(err, out_dir, "write" if base == Path(os.path.abspath(out_dir)) else "create") from None


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _swap_in(out_dir: Path, staging: Path, subdirs: Sequence[str]) -> None:
    """Replace ``out_dir/<sub>`` by ``staging/<sub>`` for every ``sub`` with renames only: each old folder is moved
    into ``staging/old/`` and the new one renamed in (a sub absent from ``staging`` just loses its old folder). On a
    failure every rename done is undone, so ``out_dir`` holds the old set again."""
    old = staging / "old"
    old.mkdir()
    done: list[tuple[Path, Path]] = []  # (src, dst) of each rename, to undo in reverse
    try:
        for sub in subdirs:
            target, new = out_dir / sub, staging / sub
            if os.path.lexists(target):
                try:
                    os.replace(target, old / sub)
                except OSError as err:
                    raise _write_error(err, target, "replace") from None
                done.append((target, old / sub))
            if new.is_dir():
                try:
                    os.replace(new, target)
                except OSError as err:
                    raise _write_error(err, target) from None
                done.append((new, target))
    except BaseException as err:
        lost = False
        for src, dst in reversed(done):
            try:
                os.replace(dst, src)
            except OSError:
                lost = True
        if lost:  # keep the old set where it is rather than remove it with the staging folder
            raise _StagingKept(getattr(err, "errno", None), f"{err.strerror if isinstance(err, OSError) else err}; "
                               f"the previous outputs could not be put back: they are in {old}") from None
        raise
    _fsync_dir(out_dir)


class _StagingKept(WriteError):
    """A failed swap whose undo failed too: the staging folder (holding the old set) must not be removed."""


def write_outputs(out_dir: str | os.PathLike, mix: np.ndarray, outputs: Sequence[np.ndarray], names: Sequence[str],
                  sample_rate: int, fmt: str = "wav", bit_depth: int = 16, residual: bool = False,
                  spectrograms: bool = True) -> list[Path]:
    """Write ``wav/mix.<fmt>``, ``wav/<name>.<fmt>`` (and ``residual``) and ``spectrogram/<name>.png`` under
    ``out_dir``, replacing the previous ``wav/`` and ``spectrogram/`` as a whole.

    The complete new set is written into a hidden temporary folder inside ``out_dir`` (``.separating-*``: same
    filesystem); then, for ``wav/`` and then ``spectrogram/``, the old folder is renamed aside and the new one renamed
    in, and the old set is removed. ``out_dir`` therefore always holds a complete set: the old one until the first
    rename, the new one after the last (between the two folders' renames, for an instant, the new ``wav/`` beside the
    old ``spectrogram/``). Without ``spectrograms`` the old ``spectrogram/`` is removed with the rest of the old set,
    so no old picture stays beside new audio. A failure (full disk while writing, a refused rename) leaves the old
    set as it was and no temporary folder. Other entries of ``out_dir`` are not touched.

    Raises:
        SeparationError: bad format or a file where a folder must be.
        utils.atomic.WriteError: an operating-system error, the message naming the output path and the reason
            (``cannot write out/wav/mix.wav: No space left on device``).
    """
    if (fmt, bit_depth) not in SUBTYPES:
        raise SeparationError(_format_error(fmt, bit_depth))
    subtype = SUBTYPES[fmt, bit_depth]
    signals = [("mix", mix), *zip(names, outputs, strict=True)]
    if residual:
        signals.append(("residual", mix - np.sum(outputs, axis=0)))
    out_dir = Path(out_dir)
    check_output_dir(out_dir)
    created = [d for d in (out_dir, *out_dir.parents) if not os.path.lexists(d)]  # removed again after a failure
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=out_dir, prefix=".separating-"))
    except OSError as err:
        _remove_empty(created)
        raise _write_error(err, out_dir) from None
    written = []
    try:
        for name, sig in signals:
            for sub, file_name in [("wav", f"{name}.{fmt}"), *([("spectrogram", f"{name}.png")] * spectrograms)]:
                staged = staging / sub / file_name
                try:
                    if sub == "wav":
                        write_audio(staged, sig, sample_rate, subtype=subtype)
                    else:
                        save_spectrogram(staged, sig, sample_rate, name)
                except OSError as err:  # name the output the user will look for, not the staged file
                    raise _write_error(err, out_dir / sub / file_name, staged=staged) from None
                written.append(out_dir / sub / file_name)
        _swap_in(out_dir, staging, OUTPUT_SUBDIRS)
    except BaseException as err:
        if not isinstance(err, _StagingKept):
            shutil.rmtree(staging, ignore_errors=True)
            _remove_empty(created)
        raise
    shutil.rmtree(staging, ignore_errors=True)  # the old set
    return written


def _remove_empty(folders: Sequence[Path]) -> None:
    """Remove the folders a failed write created (deepest first), as long as they are empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def separate_file(ckpt_path: str | os.PathLike, audio_path: str | os.PathLike, output_dir: str | os.PathLike,
                  prompts: Sequence[str] | None, device: str | None = None, backend: str = "pytorch",
                  **kwargs) -> list[Path]:
    """Load a model and separate one file: ``Separator(ckpt_path, device, backend).separate_file(audio_path,
    output_dir, prompts, **kwargs)`` (see :meth:`Separator.separate_file` for the keyword arguments). Returns the
    files written."""
    return Separator(ckpt_path, device, backend).separate_file(audio_path, output_dir, prompts, **kwargs)
