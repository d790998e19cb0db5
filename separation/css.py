"""Chunk-wise separation of long recordings (continuous source separation, docs/architecture.md §10).

Segments of ``segment_size`` samples start every ``shift_size`` samples; the last one is zero-padded; outputs are
overlap-added and divided by the number of segments covering each sample; the result is trimmed to the input length.
Segments are streamed through the model ``batch_size`` at a time: memory holds the input, the output accumulator and
one batch of segments, never all segment outputs.

Unlike the authors' release, outputs can be aligned between segments (``solve_perm``): within each group of outputs
that share a prompt (all outputs when there are no prompts), the order of a new segment's outputs is chosen to agree
best with what is already accumulated over their overlap.

Axis legend: b batch, s outputs, n samples, m segments in a batch, w segment length.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import torch

__all__ = ["css_forward", "segment_starts"]

ForwardFn = Callable[[torch.Tensor], torch.Tensor]


def segment_starts(length: int, segment_size: int, shift_size: int) -> list[int]:
    """Start sample of every segment covering ``length`` samples (the last one may run past the end)."""
    if segment_size <= 0 or shift_size <= 0:
        raise ValueError(f"segment_size and shift_size must be positive, got {segment_size} and {shift_size}")
    if shift_size > segment_size:
        raise ValueError(f"shift_size {shift_size} is larger than segment_size {segment_size} (samples would be lost)")
    count = math.ceil(max(length - segment_size, 0) / shift_size) + 1
    return [i * shift_size for i in range(count)]


def _groups(prompts: Sequence[str] | None, s: int) -> list[list[int]]:
    """Indices of outputs that may swap: same prompt; every output when there are no prompts."""
    if prompts is None:
        return [list(range(s))]
    if len(prompts) != s:
        raise ValueError(f"{len(prompts)} prompts given for {s} outputs")
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(prompts):
        groups.setdefault(p, []).append(i)
    return [g for g in groups.values() if len(g) > 1]


def _align(seg: torch.Tensor, ref: torch.Tensor, groups: list[list[int]]) -> torch.Tensor:
    """Reorder ``seg (s, w)`` within each group to maximise the summed normalised correlation of its first
    ``v`` samples with ``ref (s, v)``, the accumulated output over the overlap."""
    if not groups or ref.shape[-1] == 0:
        return seg
    head = seg[:, : ref.shape[-1]]
    seg_n = head / (head.norm(dim=-1, keepdim=True) + 1e-8)
    ref_n = ref / (ref.norm(dim=-1, keepdim=True) + 1e-8)
    corr = ref_n @ seg_n.T  # (s, s): corr[j, i] = agreement of segment output i with accumulated output j
    order = list(range(seg.shape[0]))
    for group in groups:
        best = max(itertools.permutations(group),
                   key=lambda perm: sum(corr[j, i].item() for j, i in zip(group, perm, strict=True)))
        for j, i in zip(group, best, strict=True):
            order[j] = i
    return seg[order]


def css_forward(forward_fn: ForwardFn, mix: torch.Tensor, segment_size: int, shift_size: int, batch_size: int = 1,
                solve_perm: bool = False, prompts: Sequence[str] | Sequence[Sequence[str]] | None = None,
                progress: Callable[[int], None] | None = None) -> torch.Tensor:
    """Separate a long ``(b, n)`` mixture segment by segment.

    Args:
        forward_fn: ``(m, w) -> (m, s, w)`` separation of a batch of segments (the prompts are its business).
        mix: ``(b, n)`` mixture.
        segment_size, shift_size: in samples; ``shift_size <= segment_size``.
        batch_size: segments per ``forward_fn`` call (of one recording; items of ``mix`` are processed in turn).
        solve_perm: align outputs that share a prompt between consecutive segments.
        prompts: the ``s`` prompt names (or one list per item) defining the groups for ``solve_perm``; ``None``
            lets every output swap with every other.
        progress: called with the number of segments finished after each ``forward_fn`` call.

    Returns:
        ``(b, s, n)`` separated signals. A mixture no longer than one segment is passed to ``forward_fn`` as it is,
        so the result then equals the plain forward pass.
    """
    if mix.ndim != 2:
        raise ValueError(f"mix must be (batch, samples), got shape {tuple(mix.shape)}")
    b, n = mix.shape
    if n <= segment_size:
        segment_starts(n, segment_size, shift_size)  # validates the sizes
        out = forward_fn(mix)
        if progress:
            progress(1)
        return out
    starts = segment_starts(n, segment_size, shift_size)
    padded = starts[-1] + segment_size
    out: torch.Tensor | None = None  # (b, s, n), allocated once the number of outputs is known
    for item in range(b):
        item_prompts = prompts[item] if prompts is not None and not isinstance(prompts[0], str) else prompts
        acc: torch.Tensor | None = None  # (s, padded) running sum of segment outputs
        cover = torch.zeros(padded, device=mix.device)  # segments accumulated so far at each sample
        groups: list[list[int]] = []
        for first in range(0, len(starts), batch_size):
            batch_starts = starts[first : first + batch_size]
            segs = torch.stack([_segment(mix[item], st, segment_size) for st in batch_starts])  # (m, w)
            est = forward_fn(segs).float()  # (m, s, w)
            if acc is None:
                acc = torch.zeros(est.shape[1], padded, device=est.device)
                groups = _groups(item_prompts, est.shape[1]) if solve_perm else []
            for st, seg in zip(batch_starts, est, strict=True):
                if groups and st > 0:  # agree with the average of earlier segments over the overlap
                    overlap = int((cover[st : st + segment_size] > 0).sum())
                    seg = _align(seg, acc[:, st : st + overlap] / cover[st : st + overlap], groups)
                acc[:, st : st + segment_size] += seg
                cover[st : st + segment_size] += 1
            if progress:
                progress(len(batch_starts))
        if out is None:
            out = torch.empty(b, acc.shape[0], n, device=acc.device)
        torch.div(acc[:, :n], cover[:n], out=out[item])
        del acc
    return out


def _segment(x: torch.Tensor, start: int, size: int) -> torch.Tensor:
    """``x[start : start + size]`` of a ``(n,)`` signal, zero-padded at the end (no padded copy of the input)."""
    seg = x[start : start + size]
    return torch.nn.functional.pad(seg, (0, size - seg.shape[-1])) if seg.shape[-1] < size else seg
