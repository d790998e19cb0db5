"""The one inference path (docs/architecture.md §13): a mixture at any rate -> stems at that rate and length.

    resample to the model's rate -> the model, in one pass or chunk-wise (CSS, docs/architecture.md §10)
    -> resample back -> trim to the input length

:func:`separate_mixture` is what ``separate.py`` (:class:`separation.separator.Separator`), ``eval.py`` and
validation (:class:`training.module.SeparationModule`) and the demo benchmark run. :func:`css_sizes` is the one
place where chunk sizes are checked and defaulted: the shift defaults to half the segment for separation
(``separate.py``, as the authors' command line) and to the segment itself for the paper's evaluation protocol
(``css_conf`` in a config, ``eval.py``).

Example, with a stand-in "model" that returns two scaled copies of its input::

    >>> import torch
    >>> fn = lambda x: torch.stack([x, 0.5 * x], dim=1)             # (b, n) -> (b, s=2, n)
    >>> mix = torch.sin(torch.arange(16000) * 2 * torch.pi * 440 / 16000)[None]  # 1 s of 440 Hz at 16 kHz
    >>> sizes = css_sizes(0.4, None, 48000)                         # 0.4 s segments every 0.2 s at 48 kHz
    >>> sizes
    (19200, 9600)
    >>> est = separate_mixture(fn, mix, 16000, 48000, css=sizes)
    >>> est.shape, bool(torch.allclose(est[0, 1, 200:-200], 0.5 * mix[0, 200:-200], atol=1e-3))
    (torch.Size([1, 2, 16000]), True)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from separation.css import css_forward
from utils.audio import fix_length, resample

__all__ = ["SeparationError", "css_sizes", "separate_mixture", "ForwardFn"]

#: ``(m, w) -> (m, s, w)``: the model on a batch of mixtures (or segments) at its own rate
ForwardFn = Callable[[torch.Tensor], torch.Tensor]


class SeparationError(ValueError):
    """Input or settings that cannot be separated; the message names the input or option and what was expected."""


def css_sizes(segment: float | None, shift: float | None, model_rate: int, min_segment: int = 1,
              default_shift: str = "half") -> tuple[int, int] | None:
    """Chunk sizes in samples at ``model_rate`` from seconds, checked; ``None`` (one pass) without a segment.

    Args:
        segment, shift: seconds (finite, > 0, ``shift <= segment``); ``shift`` ``None`` means the default.
        min_segment: the shortest segment in samples (the model's STFT window).
        default_shift: ``"half"`` (half the segment: separate.py) or ``"segment"`` (no overlap: the paper's
            evaluation protocol, ``css_conf``).

    Raises:
        SeparationError: a shift without a segment, a non-finite or non-positive size, ``shift > segment``, a
            segment shorter than ``min_segment`` or a shift below one sample (the option is named).
    """
    if segment is None:
        if shift is not None:
            raise SeparationError(f"--css_shift_size {shift:g} needs --css_segment_size")
        return None
    for flag, value in (("--css_segment_size", segment), ("--css_shift_size", shift)):
        if value is not None and not (isinstance(value, (int, float)) and not isinstance(value, bool)
                                      and math.isfinite(value) and value > 0):
            raise SeparationError(f"{flag} must be a finite number of seconds > 0, got {value}")
    if shift is None:
        shift = segment / 2 if default_shift == "half" else segment
    if shift > segment:
        raise SeparationError(f"--css_shift_size {shift:g} must not exceed --css_segment_size {segment:g}")
    seg, hop = round(segment * model_rate), round(shift * model_rate)
    if seg < min_segment:
        raise SeparationError(f"--css_segment_size {segment:g} s is shorter than this model's STFT window "
                              f"({min_segment} samples = {min_segment / model_rate:.4g} s at {model_rate} Hz)")
    if hop < 1:
        raise SeparationError(f"--css_shift_size {shift:g} s is less than one sample at {model_rate} Hz")
    return seg, hop


def separate_mixture(forward_fn: ForwardFn, mix: torch.Tensor, sample_rate: int, model_rate: int,
                     css: tuple[int, int] | None = None, batch_size: int = 1, solve_perm: bool = False,
                     prompts: Sequence[str] | None = None,
                     progress: Callable[[int], None] | None = None) -> torch.Tensor:
    """Separate ``mix (b, n)`` at ``sample_rate`` into ``(b, s, n)`` float32 at ``sample_rate``.

    Args:
        forward_fn: the model on ``(m, w)`` mixtures at ``model_rate`` (the prompts are its business).
        css: ``(segment, shift)`` in samples at ``model_rate`` (:func:`css_sizes`), or ``None`` for one pass.
        batch_size, solve_perm, prompts: CSS segments per call; align same-prompt outputs between segments
            (``prompts`` define the groups; see :func:`separation.css.css_forward`).
        progress: called with the number of passes done.

    Resampling runs in float32 outside any autocast region; the model may run in bf16 under the caller's autocast.
    """
    n = mix.shape[-1]
    with torch.autocast(device_type=mix.device.type, enabled=False):
        x = resample(mix.float(), sample_rate, model_rate)
    if css is None:
        est = forward_fn(x)
        if progress:
            progress(1)
    else:
        est = css_forward(forward_fn, x, css[0], css[1], batch_size=batch_size, solve_perm=solve_perm,
                          prompts=prompts, progress=progress)
    del x
    with torch.autocast(device_type=est.device.type, enabled=False):
        return fix_length(resample(est.float(), model_rate, sample_rate), n)
