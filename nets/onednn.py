"""The fused CPU inference path's primitives (docs/architecture.md §4): oneDNN's linear op and its weight layout.

``LINEAR`` is ``torch.ops.mkldnn._linear_pointwise`` (``F.linear`` plus an activation, or times / plus a second
tensor, in one kernel) or ``None`` where this torch lacks it or ``TUSS_ONEDNN=0`` opts out. Modules read it at call
time through this module (``onednn.LINEAR``, ``onednn.in_major``), so tests and benchmarks may swap them.
"""

from __future__ import annotations

import os

import torch
from torch import nn

__all__ = ["LINEAR", "fused_inference", "in_major"]


def _onednn_linear():
    """oneDNN's fused linear op, or ``None`` when this torch lacks it or ``TUSS_ONEDNN=0`` opts out."""
    if os.environ.get("TUSS_ONEDNN", "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    try:
        return torch.ops.mkldnn._linear_pointwise if torch.backends.mkldnn.is_available() else None
    except (AttributeError, RuntimeError):
        return None


LINEAR = _onednn_linear()


def fused_inference(x: torch.Tensor, module: nn.Module) -> bool:
    """Whether ``module`` runs its fused CPU inference path on ``x`` (docs/architecture.md §4): oneDNN is there, ``x``
    is a float32 CPU tensor, autograd and CPU autocast are off, and ``module`` is in eval mode (no dropout).

    The fused path computes the same function as the plain one (to float rounding, a few 1e-6 of the output's peak)
    with oneDNN's linear op, which runs these GEMM shapes faster than MKL's and applies the activations, the gate
    product and the attention residual inside the GEMMs (benchmarks/bench_forward.py ``--no-fused`` times the plain
    path). ``TUSS_ONEDNN=0`` in the environment turns it off.
    """
    return (LINEAR is not None and x.device.type == "cpu" and x.dtype == torch.float32
            and not torch.is_grad_enabled() and not module.training and not torch.is_autocast_enabled("cpu"))


def in_major(weight: torch.Tensor) -> torch.Tensor:
    """``weight (out, in)`` with the same values, stored input-major (a transposed view of an ``(in, out)`` copy):
    oneDNN runs the model's GEMM shapes 10-40 % faster from this layout than from ``nn.Linear``'s own.

    Made on every call, not cached: a cache could not see every change of a weight (``param.data`` edits bypass
    the version counter), and the copies cost about 20 ms per forward of the medium model (under 0.5 % at 6 s)."""
    return weight.t().contiguous().t()
