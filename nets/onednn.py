"""The fused CPU inference path's primitives (docs/architecture.md §4): oneDNN's linear op and its weight layout.

``LINEAR`` is ``torch.ops.mkldnn._linear_pointwise`` (``F.linear`` plus an activation, or times / plus a second
tensor, in one kernel) or ``None`` where this torch lacks it. Which modules use it is a per-instance choice
(:mod:`nets.paths`); the ``TUSS_ONEDNN`` opt-out is read there, when a choice is made, not here. Modules read
``LINEAR`` at call time through this module (``onednn.LINEAR``), so a test may count its calls.
"""

from __future__ import annotations

import torch

__all__ = ["LINEAR", "in_major"]


def _onednn_linear():
    """oneDNN's fused linear op, or ``None`` when this torch lacks it."""
    try:
        return torch.ops.mkldnn._linear_pointwise if torch.backends.mkldnn.is_available() else None
    except (AttributeError, RuntimeError):
        return None


LINEAR = _onednn_linear()


def in_major(weight: torch.Tensor) -> torch.Tensor:
    """``weight (out, in)`` with the same values, stored input-major (a transposed view of an ``(in, out)`` copy):
    oneDNN runs the model's GEMM shapes 10-40 % faster from this layout than from ``nn.Linear``'s own.

    Made on every call, not cached: a cache could not see every change of a weight (``param.data`` edits bypass
    the version counter), and the copies cost about 20 ms per forward of the medium model (under 0.5 % at 6 s)."""
    return weight.t().contiguous().t()
