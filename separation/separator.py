"""The separation API behind ``separate.py``: a loaded model plus everything around it.

>>> import numpy as np
>>> from separate import Separator
>>> sep = Separator("tuss.demo", device="cpu")  # the bundled demo model (pretrained_models/tuss.demo)
>>> wave = 0.1 * np.random.default_rng(0).standard_normal((2, 44100)).astype(np.float32)  # 1 s of stereo noise
>>> speech, sfxbg, musicbg = sep.separate(wave, 44100, ["speech", "sfxbg", "musicbg"])
>>> speech.shape, speech.dtype
((2, 44100), dtype('float32'))

``wave`` is ``(samples,)`` or ``(channels, samples)`` at any rate; each channel is separated independently (the models
are monaural), the result has the input's rate, channels and length. Long inputs are processed chunk-wise
(:func:`separation.pipeline.separate_mixture`) when a segment size is given.

A request's options are checked once (:class:`separation.options.SeparationOptions`: their values by
:meth:`~separation.options.SeparationOptions.create`, against the model by :meth:`Separator.bind`); a file is checked
once (:func:`prepare_file`: header, cut, channel, output folder; :meth:`Separator.check_length`) and separated
(:meth:`Separator.run_file`) without checking any of it again. :meth:`Separator.separate` and
:meth:`Separator.separate_file` do all of it from keyword arguments.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from nets import load_model
from separation.options import BACKENDS, SUBTYPES, TASK_PRESETS, SeparationError, SeparationOptions
from separation.pipeline import separate_mixture
from utils.atomic import StagedFolder, atomic_path, probe_writable, write_error, write_text
from utils.audio import AudioError, audio_info, find_truncation, read_audio_checked, write_audio
from utils.runtime import pick_device

__all__ = ["Separator", "FileJob", "prepare_file", "BACKENDS", "check_backend", "SeparationError", "SeparationOptions",
           "TruncatedAudioWarning", "TASK_PRESETS", "SUBTYPES", "OUTPUT_SUBDIRS", "output_names", "check_input",
           "check_wave", "check_output_dir", "write_outputs", "save_spectrogram", "separate_file"]

#: spectrogram PNGs use at most about this many STFT frames (long inputs get a larger hop)
MAX_SPECTROGRAM_FRAMES = 4000

#: the folders of one input's output set under its output folder; they are replaced as a whole
OUTPUT_SUBDIRS = ("wav", "spectrogram")
#: prefix of the hidden staging folder in an output folder (a new output set, before it is swapped in)
OUTPUT_STAGING = ".separating-"
#: in an output folder: what its output set was separated from, and how (written in the set's swap)
MARKER_NAME = ".separated.json"


class TruncatedAudioWarning(UserWarning):
    """An input file holds fewer frames than its header declares; what could be read is separated."""


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
                              f"python -m nets.onnx {ckpt_path} MODEL.onnx)")


def output_names(prompts: Sequence[str] | None, count: int) -> list[str]:
    """File stems of the outputs: ``{prompt}{i}`` with ``i`` the output's index (``speech0``, ``sfx1``, ``sfx2``);
    ``output{i}`` for a model without prompts."""
    if prompts is None:
        return [f"output{i}" for i in range(count)]
    return [f"{p}{i}" for i, p in enumerate(prompts)]


@dataclass(frozen=True)
class FileJob:
    """One input file, checked for a request (:func:`prepare_file`) and ready to separate
    (:meth:`Separator.run_file`).

    Attributes:
        path, output_dir: the input and the folder its output set goes to.
        start, num_samples, sample_rate, channels: the cut in samples, the file's rate and channel count.
        cut: whether the request cut the file (``--start_time``/``--end_time``).
    """

    path: Path
    output_dir: Path
    start: int
    num_samples: int
    sample_rate: int
    channels: int
    cut: bool = False

    @property
    def name(self) -> str:
        """How errors name the input: the path, and the cut when one was asked for."""
        return f"{self.path} (its --start_time/--end_time cut)" if self.cut else str(self.path)


def prepare_file(audio_path: str | os.PathLike, output_dir: str | os.PathLike,
                 options: SeparationOptions) -> FileJob:
    """Check a file for a request before any model is loaded: its header against the cut and channel
    (:func:`check_input`; with ``options.strict``, that it is not truncated) and its output folder
    (:func:`check_output_dir`). Nothing is decoded but what ``strict`` needs; nothing is written. Its length is the
    model's business: :meth:`Separator.check_length`.

    Raises:
        SeparationError: an unusable file, cut or output folder; utils.atomic.WriteError: an output folder that
            cannot be written.
    """
    path, out_dir = Path(audio_path), Path(output_dir)
    start, count, rate, channels = check_input(path, options)
    check_output_dir(out_dir)
    return FileJob(path, out_dir, start, count, rate, channels, options.cut)


@dataclass
class Separator:
    """A loaded separation model.

    Args:
        ckpt_path: ``.pth``, Lightning ``.ckpt``, experiment directory (averaged), or the name of a model folder
            under the repository's ``pretrained_models/`` (``"tuss.demo"``), as :func:`nets.load_model`; with
            ``backend="onnxruntime"`` a ``.onnx`` graph written by :func:`nets.export_onnx`.
        device: ``cpu``, ``cuda``, ``mps``… (default: a GPU when present). ONNX Runtime runs on CUDA for a ``cuda``
            device when its CUDAExecutionProvider is installed, otherwise on the CPU.
        backend: ``pytorch`` (default) or ``onnxruntime``: the model is then an :class:`nets.onnx.OnnxModel`
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
            from nets.onnx import OnnxModel  # onnxruntime only when asked for

            self.model = OnnxModel(self.ckpt_path, self.device)
        else:
            self.model = load_model(self.ckpt_path, self.device)

    @property
    def prompt_names(self) -> tuple[str, ...] | None:
        return self.model.prompt_names

    @property
    def sample_rate(self) -> int:
        return self.model.sample_rate

    @property
    def window_samples(self) -> int:
        """The model's STFT window (frame) in samples at :attr:`sample_rate`: its shortest separable input."""
        return self.model.window_samples

    def num_outputs(self, prompts: Sequence[str] | None) -> int:
        return self.model.num_outputs if self.prompt_names is None else len(prompts)

    def options(self, prompts: Sequence[str] | None = None, **kwargs) -> SeparationOptions:
        """A request's options, checked and bound to this model: :meth:`SeparationOptions.create` (keyword
        arguments: ``css_segment_size``, ``css_shift_size``, ``css_batch_size``, ``css_solve_perm``, ``start_time``,
        ``end_time``, ``ref_channel``, ``all_channels``, ``fmt``, ``bit_depth``, ``residual``, ``spectrograms``,
        ``strict``), then :meth:`bind`."""
        return self.bind(SeparationOptions.create(prompts=prompts, **kwargs))

    def bind(self, options: SeparationOptions) -> SeparationOptions:
        """``options`` checked against this model: :meth:`SeparationOptions.bind` (prompts, chunk sizes)."""
        return options.bind(self.model)

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

    def _request(self, prompts: Sequence[str] | None, options: SeparationOptions | None,
                 kwargs: dict) -> SeparationOptions:
        """The bound options of a call: ``options`` (bound here if they are not yet) or built from the rest."""
        if options is None:
            return self.options(prompts, **kwargs)
        if prompts is not None or kwargs:
            raise TypeError("give either options= or the prompts and keyword options, not both")
        return options if options.model_rate is not None else self.bind(options)

    def separate(self, wave: np.ndarray | torch.Tensor, sample_rate: int, prompts: Sequence[str] | None = None, *,
                 options: SeparationOptions | None = None, progress: Callable[[int], None] | None = None,
                 name: str | os.PathLike = "audio", **kwargs) -> list[np.ndarray]:
        """Separate ``wave`` into one signal per prompt.

        Args:
            wave: ``(samples,)`` or ``(channels, samples)`` float audio at ``sample_rate``: finite, not all zeros,
                and at least :meth:`min_samples` long (one STFT window of the model).
            prompts: prompt names (ignored, may be ``None``, for a model without prompts).
            options: options already checked by :meth:`options`; otherwise they are built from ``prompts`` and the
                keyword arguments (``css_segment_size``, ``css_shift_size`` in seconds: chunk-wise processing, the
                shift half the segment by default; ``css_batch_size``: segments per forward pass;
                ``css_solve_perm``: align same-prompt outputs between segments).
            progress: called with the number of passes done; name: how errors name the input.

        Returns:
            One float32 array per output, each of the input's shape (channels kept, exact length).

        Raises:
            SeparationError: bad prompts, options or audio (the message names ``name``).
        """
        options = self._request(prompts, options, kwargs)
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
        self.check_length(x.shape[-1], sample_rate, name)
        outs = self._separate(x, sample_rate, options, progress, name)
        return [o[0] for o in outs] if mono else outs

    def _separate(self, x: torch.Tensor, sample_rate: int, options: SeparationOptions,
                  progress: Callable[[int], None] | None, name: str | os.PathLike) -> list[np.ndarray]:
        """Checked ``(channels, samples)`` audio -> one ``(channels, samples)`` float32 array per output."""
        prompts = None if options.prompts is None else list(options.prompts)

        def forward_fn(segs: torch.Tensor) -> torch.Tensor:
            return self.model(segs, None if prompts is None else [prompts] * segs.shape[0])

        with torch.inference_mode():  # channels form the batch
            est = separate_mixture(forward_fn, x.to(self.device), sample_rate, options, progress=progress).cpu()
        if not torch.isfinite(est).all():  # cannot happen for checked input; never write NaN stems silently
            raise RuntimeError(f"the model produced non-finite output for {name}")
        return [est[:, i].numpy() for i in range(est.shape[1])]

    def run_file(self, job: FileJob, options: SeparationOptions, progress: bool = False,
                 warn: Callable[[str], None] | None = None, marker: Mapping[str, Any] | None = None) -> list[Path]:
        """Separate a prepared file (:func:`prepare_file`, :meth:`check_length`) with bound ``options`` (the ones it
        was prepared with) and write its output set (:func:`write_outputs`); returns the files written.

        A file found truncated now (fewer frames than its header declares) is refused with ``options.strict``;
        otherwise what can be read is separated and ``warn`` is called with a message naming the file and both
        counts (default: a :class:`TruncatedAudioWarning`).

        Raises:
            SeparationError: the file cannot be read (or turned out truncated, too short or non-finite).
            utils.atomic.WriteError: the outputs could not be written (message names the path; nothing replaced).
        """
        opts = options
        try:
            wave, sr, truncation = read_audio_checked(job.path, job.start, job.num_samples, channel=opts.ref_channel)
        except AudioError as err:
            raise SeparationError(str(err)) from None
        if truncation is not None:
            if opts.strict:
                raise SeparationError(f"{truncation} (--strict refuses truncated files)")
            msg = f"{truncation}; separating the {wave.shape[-1]} samples read of the {job.num_samples} requested"
            if warn is None:
                warnings.warn(msg, TruncatedAudioWarning, stacklevel=2)
            else:
                warn(msg)
            self.check_length(wave.shape[-1], sr, job.name)
        check_wave(wave, job.path)
        names = output_names(opts.prompts, self.num_outputs(opts.prompts))
        total = opts.num_passes(wave.shape[-1], sr, wave.shape[0])
        with tqdm(total=total, desc=job.path.name, unit="chunk", disable=not progress or total < 2) as bar:
            stems = self._separate(torch.as_tensor(wave), sr, opts, bar.update, job.path)
        return write_outputs(job.output_dir, wave, stems, names, sr, opts, marker)

    def separate_file(self, audio_path: str | os.PathLike, output_dir: str | os.PathLike,
                      prompts: Sequence[str] | None = None, *, options: SeparationOptions | None = None,
                      progress: bool = False, warn: Callable[[str], None] | None = None, **kwargs) -> list[Path]:
        """Separate (a cut of) an audio file and write the results under ``output_dir``.

        Writes ``wav/mix.<fmt>``, ``wav/<prompt><i>.<fmt>`` (``output<i>`` for a model without prompts), optionally
        ``wav/residual.<fmt>`` (mixture minus the sum of the outputs), and ``spectrogram/<name>.png``, all at the
        file's sample rate and exactly the length of ``[start_time, end_time)``. The new ``wav/`` and
        ``spectrogram/`` replace the previous ones as a whole (see :func:`write_outputs`); nothing is written when
        any step fails, and the file and the output folder are checked before the model runs.

        Args:
            options: options already checked by :meth:`options`; otherwise built from ``prompts`` and the keyword
                arguments: ``start_time``, ``end_time`` (seconds); ``ref_channel`` (separate only this channel, mono
                stems; ``None``, the default: every channel, each on its own); ``all_channels`` (every channel
                whatever ``ref_channel`` says: the authors' flag, kept); ``css_segment_size``, ``css_shift_size``,
                ``css_batch_size``, ``css_solve_perm``; ``fmt``, ``bit_depth`` (``wav``: 16, 24, 32 = float;
                ``flac``: 16, 24); ``residual``; ``spectrograms``; ``strict`` (refuse a truncated file instead of
                separating what can be read).
            progress: show a tqdm progress bar over chunks x channels (when the input is chunked).
            warn: called with the message about a truncated file when not ``strict`` (default: a
                :class:`TruncatedAudioWarning`).

        Returns:
            The files written.

        Raises:
            SeparationError: bad options, prompts, file, cut or output folder (nothing written).
            utils.atomic.WriteError: the outputs could not be written (message names the path; nothing replaced).
        """
        options = self._request(prompts, options, kwargs)
        job = prepare_file(audio_path, output_dir, options)
        self.check_length(job.num_samples, job.sample_rate, job.name)
        return self.run_file(job, options, progress=progress, warn=warn)


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


def check_input(path: str | os.PathLike, options: SeparationOptions) -> tuple[int, int, int, int]:
    """Check an input file's header against the cut and channel of ``options``.

    Cuts are exact to the sample: ``round(t * sample_rate)``. Returns ``(start, num_samples, sample_rate,
    channels)`` of the cut. Nothing is decoded, except with ``options.strict`` for formats whose length the header
    alone does not prove (see :func:`utils.audio.find_truncation`: WAV and AIFF are checked from the header, other
    formats decoded once).

    Raises:
        SeparationError: missing or unreadable file, no samples, ``ref_channel`` out of range, a cut that is empty
            or runs past the end; with ``strict``, a truncated file.
    """
    try:
        info = audio_info(path)
    except AudioError as err:
        raise SeparationError(str(err)) from None
    if info.num_samples == 0:
        raise SeparationError(f"{path} holds no audio samples")
    ref_channel, start_time, end_time = options.ref_channel, options.start_time, options.end_time
    if ref_channel is not None and not 0 <= ref_channel < info.channels:
        raise SeparationError(f"--ref_channel {ref_channel} is out of range: {path} has {info.channels} channel(s) "
                              f"(0..{info.channels - 1})")
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
    if options.strict:
        try:
            truncation = find_truncation(path, decode=True)
        except AudioError as err:
            raise SeparationError(str(err)) from None
        if truncation is not None:
            raise SeparationError(f"{truncation} (--strict refuses truncated files)")
    return start, end - start, info.sample_rate, info.channels


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


def check_output_dir(out_dir: str | os.PathLike, subdirs: Sequence[str] = OUTPUT_SUBDIRS) -> None:
    """Check, before any work, that the outputs can go to ``out_dir``: nothing that is not a folder where
    ``out_dir`` or one of its ``subdirs`` (``wav/``, ``spectrogram/``) must be, and ``out_dir`` writable -- or, when
    it does not exist yet, creatable (:func:`utils.atomic.probe_writable`). Nothing is created: the folder is made
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
    probe_writable(out_dir)


def write_outputs(out_dir: str | os.PathLike, mix: np.ndarray, outputs: Sequence[np.ndarray], names: Sequence[str],
                  sample_rate: int, options: SeparationOptions | None = None,
                  marker: Mapping[str, Any] | None = None) -> list[Path]:
    """Write ``wav/mix.<fmt>``, ``wav/<name>.<fmt>`` (and ``residual``) and ``spectrogram/<name>.png`` under
    ``out_dir`` (format, residual and spectrograms as ``options`` say), replacing the previous ``wav/`` and
    ``spectrogram/`` as a whole.

    The complete new set is written into a hidden temporary folder inside ``out_dir`` (``.separating-*``: same
    filesystem); then, for ``wav/`` and then ``spectrogram/``, the old folder is renamed aside and the new one renamed
    in, and the old set is removed (:class:`utils.atomic.StagedFolder`). The renames are journaled: a run killed
    between the first and the last leaves the journal, and the next write into ``out_dir`` first completes them
    (:meth:`utils.atomic.StagedFolder.recover`), so after a kill at any instant ``out_dir`` comes to hold the complete
    old set or the complete new one, and no leftover. Without spectrograms the old ``spectrogram/`` is removed with
    the rest of the old set, so no old picture stays beside new audio. A failure (full disk while writing, a refused
    rename) leaves the old set as it was and no temporary folder. Other entries of ``out_dir`` are not touched. The
    folder itself is checked by :func:`prepare_file`, not here.

    ``marker`` (JSON-serialisable: what was separated, how) is written as ``out_dir/.separated.json`` in the same
    swap, so it describes exactly the set in place (:mod:`separation.corpus` skips a file whose marker matches);
    without one, an older marker is removed with the old set.

    Raises:
        utils.atomic.WriteError: an operating-system error, the message naming the output path and the reason
            (``cannot write out/wav/mix.wav: No space left on device``).
    """
    options = SeparationOptions() if options is None else options
    signals = [("mix", mix), *zip(names, outputs, strict=True)]
    if options.residual:
        signals.append(("residual", mix - np.sum(outputs, axis=0)))
    out_dir = Path(out_dir)
    written = []
    StagedFolder.recover(out_dir, OUTPUT_STAGING)  # a swap a killed run left half-done is completed first
    with StagedFolder(out_dir, OUTPUT_STAGING) as staged:
        for name, sig in signals:
            files = [("wav", f"{name}.{options.fmt}"), *([("spectrogram", f"{name}.png")] * options.spectrograms)]
            for sub, file_name in files:
                path = staged.path / sub / file_name
                try:
                    if sub == "wav":
                        write_audio(path, sig, sample_rate, subtype=options.subtype)
                    else:
                        save_spectrogram(path, sig, sample_rate, name)
                except OSError as err:  # name the output the user will look for, not the staged file
                    raise write_error(err, out_dir / sub / file_name, staged=path) from None
                written.append(out_dir / sub / file_name)
        if marker is not None:
            try:
                write_text(staged.path / MARKER_NAME, json.dumps(dict(marker), indent=1, sort_keys=True) + "\n")
            except OSError as err:
                raise write_error(err, out_dir / MARKER_NAME) from None
        staged.swap([*((out_dir / sub, staged.path / sub) for sub in OUTPUT_SUBDIRS),
                     (out_dir / MARKER_NAME, staged.path / MARKER_NAME if marker is not None else None)])
    return written


def separate_file(ckpt_path: str | os.PathLike, audio_path: str | os.PathLike, output_dir: str | os.PathLike,
                  prompts: Sequence[str] | None, device: str | None = None, backend: str = "pytorch",
                  **kwargs) -> list[Path]:
    """Load a model and separate one file: ``Separator(ckpt_path, device, backend).separate_file(audio_path,
    output_dir, prompts, **kwargs)`` (see :meth:`Separator.separate_file` for the keyword arguments). Returns the
    files written."""
    return Separator(ckpt_path, device, backend).separate_file(audio_path, output_dir, prompts, **kwargs)
