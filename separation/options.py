"""The options of a separation request, checked once where the request enters (docs/architecture.md §13).

A request enters from ``separate.py``'s arguments, from :class:`separation.separator.Separator`'s keyword arguments,
or from ``eval.py`` and a config's ``css_conf`` (:mod:`training.evaluate`, :class:`training.module.SeparationModule`).
Each entry builds one frozen :class:`SeparationOptions`, in two steps that check different things, each once:

- :meth:`SeparationOptions.create` checks every value that needs no model (finite, positive, in order, a supported
  format), so a typo is refused before a model is loaded;
- :meth:`SeparationOptions.bind` checks them against the loaded model (the prompts it knows, a segment at least one
  STFT window) and holds the chunk sizes in samples at the model's rate.

The layers below (:mod:`separation.separator`, :mod:`separation.pipeline`, :mod:`separation.css`) receive bound
options and check none of it again; what they still check is the data itself (a file's header and length, a
waveform's values).

Example, with a stand-in for a model of 48 kHz with a 1024-sample STFT window and two prompts::

    >>> class Model:
    ...     prompt_names, sample_rate, window_samples = ("speech", "sfx"), 48000, 1024
    ...     def check_prompts(self, prompts, batch_size):
    ...         pass
    >>> request = SeparationOptions.create(prompts=["speech", "sfx"], css_segment_size=0.4)
    >>> opts = request.bind(Model())
    >>> opts.prompts, opts.css                 # 0.4 s segments every 0.2 s (the shift defaults to half the segment)
    (('speech', 'sfx'), (19200, 9600))
    >>> SeparationOptions.create(start_time=2, end_time=1)
    Traceback (most recent call last):
    ...
    separation.options.SeparationError: --start_time (2 s) must be before --end_time (1 s)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

__all__ = ["SeparationError", "SeparationOptions", "TASK_PRESETS", "SUBTYPES", "BACKENDS", "Model"]


class SeparationError(ValueError):
    """Input or settings that cannot be separated; the message names the input or option and what was expected."""


#: ``--task`` presets: the prompt lists of the paper's five tasks.
TASK_PRESETS: dict[str, list[str]] = {
    "se": ["speech", "sfxbg"],  # speech enhancement
    "ss": ["speech", "speech"],  # speech separation
    "uss": ["sfx", "sfx", "sfx"],  # universal sound separation
    "mss": ["drums", "bass", "vocals", "other"],  # music source separation
    "cass": ["speech", "sfxbg", "musicbg"],  # cinematic audio source separation
}

#: the model runtimes a :class:`separation.separator.Separator` can use (``backend=``, ``separate.py --backend``)
BACKENDS = ("pytorch", "onnxruntime")

#: (format, bit depth) -> soundfile subtype
SUBTYPES = {("wav", 16): "PCM_16", ("wav", 24): "PCM_24", ("wav", 32): "FLOAT",
            ("flac", 16): "PCM_16", ("flac", 24): "PCM_24"}

#: a config's ``css_conf.segment_size`` when it sets none (seconds)
DEFAULT_CSS_SEGMENT = 6.0


class Model(Protocol):
    """What the options need of a model: a :class:`nets.SeparationModel` or a :class:`nets.onnx.OnnxModel`."""

    prompt_names: tuple[str, ...] | None
    sample_rate: int
    window_samples: int

    def check_prompts(self, prompts: Sequence[Sequence[str]], batch_size: int) -> None: ...


def _seconds(flag: str, value: Any, low: str) -> float | None:
    """``value`` as seconds: ``None``, or a finite number ``>= 0`` (``low=">= 0"``) or ``> 0``."""
    if value is None:
        return None
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not (ok and (value >= 0 if low == ">= 0" else value > 0)):
        shown = f"{value:g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else repr(value)
        raise SeparationError(f"{flag} must be a finite number of seconds {low}, got {shown}")
    return float(value)


@dataclass(frozen=True)
class SeparationOptions:
    """One separation request's options (build with :meth:`create`, then :meth:`bind` to the model).

    Attributes:
        prompts: the prompt names (checked against the model once bound); ``None`` for a model without prompts, or
            when each item brings its own (``prompts_from_data``: evaluation, the test mixtures' prompts, checked by
            the model per batch).
        css_segment_size, css_shift_size, default_shift: chunk-wise processing as asked for, in seconds (the shift
            ``None``: half the segment for ``default_shift="half"``, the segment for ``"segment"``).
        css: ``(segment, shift)`` in samples at the model's rate once bound, or ``None``: the whole input in one pass.
        css_batch_size: segments per forward pass; css_solve_perm: align same-prompt outputs between segments.
        start_time, end_time: the cut of a file in seconds (``None``: its start, its end).
        ref_channel: the one channel of a file to separate (mono stems); ``None``: every channel, each on its own.
        fmt, bit_depth, subtype: output format, bit depth and their soundfile subtype.
        residual: also write the mixture minus the sum of the stems; spectrograms: write the spectrogram PNGs.
        strict: refuse a truncated file instead of separating what can be read.
        model_rate: the bound model's sample rate, the rate of ``css`` (``None`` before :meth:`bind`).
    """

    prompts: tuple[str, ...] | None = None
    prompts_from_data: bool = False
    css_segment_size: float | None = None
    css_shift_size: float | None = None
    default_shift: str = "half"
    css: tuple[int, int] | None = None
    css_batch_size: int = 1
    css_solve_perm: bool = False
    start_time: float | None = None
    end_time: float | None = None
    ref_channel: int | None = None
    fmt: str = "wav"
    bit_depth: int = 16
    residual: bool = False
    spectrograms: bool = True
    strict: bool = False
    model_rate: int | None = None

    @property
    def subtype(self) -> str:
        return SUBTYPES[self.fmt, self.bit_depth]

    @property
    def cut(self) -> bool:
        """Whether a part of each file is separated (``start_time`` or ``end_time`` given)."""
        return self.start_time is not None or self.end_time is not None

    @classmethod
    def create(cls, *, prompts: Sequence[str] | None = None, prompts_from_data: bool = False,
               css_segment_size: float | None = None, css_shift_size: float | None = None,
               default_shift: str = "half", css_batch_size: int = 1, css_solve_perm: bool = False,
               start_time: float | None = None, end_time: float | None = None, ref_channel: int | None = None,
               all_channels: bool = False, fmt: str = "wav", bit_depth: int = 16, residual: bool = False,
               spectrograms: bool = True, strict: bool = False) -> SeparationOptions:
        """Check every value that needs no model and return the (unbound) options.

        Args:
            prompts: the sources to extract, in order (ignored for a model without prompts).
            prompts_from_data: each item brings its own prompts (evaluation); ``prompts`` is then ignored.
            css_segment_size, css_shift_size: chunk-wise processing in seconds; ``None``: one pass.
            default_shift: the shift when none is given: ``"half"`` (half the segment) or ``"segment"``.
            all_channels: every channel whatever ``ref_channel`` says (the authors' flag, kept).
            The others: see the attributes of :class:`SeparationOptions`.

        Raises:
            SeparationError: a value that cannot work, naming the option.
        """
        if default_shift not in ("half", "segment"):
            raise ValueError(f"default_shift must be 'half' or 'segment', got {default_shift!r}")
        segment = _seconds("--css_segment_size", css_segment_size, "> 0")
        shift = _seconds("--css_shift_size", css_shift_size, "> 0")
        if segment is None and shift is not None:
            raise SeparationError(f"--css_shift_size {shift:g} needs --css_segment_size")
        if segment is not None and shift is not None and shift > segment:
            raise SeparationError(f"--css_shift_size {shift:g} must not exceed --css_segment_size {segment:g}")
        if isinstance(css_batch_size, bool) or not isinstance(css_batch_size, int) or css_batch_size < 1:
            raise SeparationError(f"--css_batch_size must be at least 1, got {css_batch_size}")
        start = _seconds("--start_time", start_time, ">= 0")
        end = _seconds("--end_time", end_time, "> 0")
        if start is not None and end is not None and end <= start:
            raise SeparationError(f"--start_time ({start:g} s) must be before --end_time ({end:g} s)")
        if all_channels:
            ref_channel = None
        if ref_channel is not None and (isinstance(ref_channel, bool) or not isinstance(ref_channel, int)
                                        or ref_channel < 0):
            raise SeparationError(f"--ref_channel must be >= 0, got {ref_channel}")
        if (fmt, bit_depth) not in SUBTYPES:
            raise SeparationError(f"--format {fmt} with --bit_depth {bit_depth} is not supported; choose from "
                                  + ", ".join(f"{f}/{b}" for f, b in SUBTYPES))
        return cls(prompts=None if prompts_from_data or prompts is None else tuple(prompts),
                   prompts_from_data=bool(prompts_from_data), css_segment_size=segment, css_shift_size=shift,
                   default_shift=default_shift, css_batch_size=css_batch_size, css_solve_perm=bool(css_solve_perm),
                   start_time=start, end_time=end, ref_channel=ref_channel, fmt=fmt, bit_depth=bit_depth,
                   residual=bool(residual), spectrograms=bool(spectrograms), strict=bool(strict))

    def bind(self, model: Model) -> SeparationOptions:
        """These options checked against ``model``: its prompts (``prompts`` must be known to it; ``None`` for a
        model without prompts), and the chunk sizes in samples at its rate (the segment at least one STFT window,
        the shift at least one sample). The one place chunk sizes are turned into samples and defaulted.

        Raises:
            SeparationError: no prompts given, or a segment or shift too short for the model (naming the option);
                nets.PromptError: an unknown prompt.
        """
        prompts = None
        if model.prompt_names is not None and not self.prompts_from_data:
            if not self.prompts:
                raise SeparationError(f"no prompts given; this model knows: {', '.join(model.prompt_names)}")
            model.check_prompts([list(self.prompts)], 1)  # nets.PromptError names the unknown ones
            prompts = self.prompts
        rate, window = int(model.sample_rate), int(model.window_samples)
        css = None
        if self.css_segment_size is not None:
            segment, shift = self.css_segment_size, self.css_shift_size
            if shift is None:
                shift = segment / 2 if self.default_shift == "half" else segment
            seg, hop = round(segment * rate), round(shift * rate)
            if seg < window:
                raise SeparationError(f"--css_segment_size {segment:g} s is shorter than this model's STFT window "
                                      f"({window} samples = {window / rate:.4g} s at {rate} Hz)")
            if hop < 1:
                raise SeparationError(f"--css_shift_size {shift:g} s is less than one sample at {rate} Hz")
            css = (seg, hop)
        return replace(self, prompts=prompts, css=css, model_rate=rate)

    @classmethod
    def from_css_conf(cls, model: Model, css_conf: Mapping | None) -> SeparationOptions:
        """The chunk-wise settings of a config's ``css_conf`` (``segment_size`` default 6 s, ``shift_size`` default
        the segment: the paper's evaluation protocol; ``solve_perm``), bound to ``model``, for items that bring
        their own prompts."""
        conf = css_conf or {}
        return cls.create(prompts_from_data=True, css_segment_size=float(conf.get("segment_size", DEFAULT_CSS_SEGMENT)),
                          css_shift_size=conf.get("shift_size"), default_shift="segment",
                          css_solve_perm=bool(conf.get("solve_perm", False))).bind(model)

    @classmethod
    def one_pass(cls, model_rate: int) -> SeparationOptions:
        """Options that separate the whole input at once, for a model of ``model_rate`` (validation of datasets
        outside ``css_datasets``)."""
        return cls(prompts_from_data=True, model_rate=int(model_rate))

    def num_passes(self, num_samples: int, sample_rate: int, channels: int) -> int:
        """How many progress steps :func:`separation.pipeline.separate_mixture` reports for ``channels`` channels of
        ``num_samples`` at ``sample_rate``: 1 for one pass (every channel at once), else segments x channels."""
        if self.css is None:
            return 1
        from separation.css import segment_starts

        n = round(num_samples * self.model_rate / sample_rate)
        seg, shift = self.css
        return 1 if n <= seg else channels * len(segment_starts(n, seg, shift))
