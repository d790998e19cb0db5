"""The one inference path (docs/architecture.md §13): a mixture at any rate -> stems at that rate and length.

    resample to the model's rate -> the model, in one pass or chunk-wise (CSS, docs/architecture.md §10)
    -> resample back -> trim to the input length

:func:`separate_mixture` is what ``separate.py`` (:class:`separation.separator.Separator`), ``eval.py`` and
validation (:class:`training.module.SeparationModule`) and the demo benchmark run. It takes its options checked
(:class:`separation.options.SeparationOptions`, where chunk sizes are checked and defaulted) and checks none again.

Example, with a stand-in "model" that returns two scaled copies of its input::

    >>> import torch
    >>> from separation.options import SeparationOptions
    >>> fn = lambda x: torch.stack([x, 0.5 * x], dim=1)             # (b, n) -> (b, s=2, n)
    >>> mix = torch.sin(torch.arange(16000) * 2 * torch.pi * 440 / 16000)[None]  # 1 s of 440 Hz at 16 kHz
    >>> opts = SeparationOptions(css=(19200, 9600), model_rate=48000)  # 0.4 s segments every 0.2 s at 48 kHz
    >>> est = separate_mixture(fn, mix, 16000, opts)
    >>> est.shape, bool(torch.allclose(est[0, 1, 200:-200], 0.5 * mix[0, 200:-200], atol=1e-3))
    (torch.Size([1, 2, 16000]), True)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from separation.css import css_forward
from separation.options import SeparationOptions
from utils.audio import fix_length, resample

__all__ = ["separate_mixture", "ForwardFn"]

#: ``(m, w) -> (m, s, w)``: the model on a batch of mixtures (or segments) at its own rate
ForwardFn = Callable[[torch.Tensor], torch.Tensor]


def separate_mixture(forward_fn: ForwardFn, mix: torch.Tensor, sample_rate: int, options: SeparationOptions,
                     prompts: Sequence[str] | None = None,
                     progress: Callable[[int], None] | None = None) -> torch.Tensor:
    """Separate ``mix (b, n)`` at ``sample_rate`` into ``(b, s, n)`` float32 at ``sample_rate``.

    Args:
        forward_fn: the model on ``(m, w)`` mixtures at ``options.model_rate`` (the prompts are its business).
        options: checked options; their ``css`` (samples at the model's rate, or ``None`` for one pass),
            ``css_batch_size`` and ``css_solve_perm`` are used here.
        prompts: the prompts that define the groups of ``css_solve_perm`` (default ``options.prompts``; see
            :func:`separation.css.css_forward`).
        progress: called with the number of passes done (:meth:`SeparationOptions.num_passes` in all).

    Resampling runs in float32 outside any autocast region; the model may run in bf16 under the caller's autocast.
    """
    n, model_rate = mix.shape[-1], options.model_rate
    with torch.autocast(device_type=mix.device.type, enabled=False):
        x = resample(mix.float(), sample_rate, model_rate)
    if options.css is None:
        est = forward_fn(x)
        if progress:
            progress(1)
    else:
        est = css_forward(forward_fn, x, *options.css, batch_size=options.css_batch_size,
                          solve_perm=options.css_solve_perm,
                          prompts=options.prompts if prompts is None else prompts, progress=progress)
    del x
    with torch.autocast(device_type=est.device.type, enabled=False):
        return fix_length(resample(est.float(), model_rate, sample_rate), n)
