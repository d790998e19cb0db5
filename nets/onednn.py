"""The fused CPU inference path's primitives (docs/architecture.md §4): oneDNN's linear op and cached weights.

``LINEAR`` is ``torch.ops.mkldnn._linear_pointwise`` (``F.linear`` plus an activation, or times / plus a second
tensor, in one kernel) or ``None`` where this torch lacks it or ``TUSS_ONEDNN=0`` opts out. Modules read it at call
time through this module (``onednn.LINEAR``), so tests and benchmarks may swap it.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable

import torch
from torch import nn

__all__ = ["LINEAR", "fused_inference", "inference_weight", "in_major"]


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


_WEIGHTS: weakref.WeakKeyDictionary[nn.Module, dict] = weakref.WeakKeyDictionary()  # module -> {key: (stamp, w)}


def inference_weight(module: nn.Module, key: str, source: torch.Tensor,
                     make: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``make(source)``, kept for ``module``'s fused path until ``source`` changes (its storage, version counter,
    device or dtype: ``load_state_dict``, in-place edits and optimiser steps bump the version), so it is built once
    per weight. The copies live beside the module, not in it (a deep copy or a pickle of the model leaves them out),
    and go with it; they hold one more copy of the weights that the fused path uses (45 MB for the medium model)."""
    cache = _WEIGHTS.setdefault(module, {})
    stamp = (source.data_ptr(), source._version, source.device, source.dtype)
    entry = cache.get(key)
    if entry is None or entry[0] != stamp:
        with torch.no_grad():
            entry = cache[key] = (stamp, make(source.detach()))
    return entry[1]


def in_major(weight: torch.Tensor) -> torch.Tensor:
    """``weight (out, in)`` with the same values, stored input-major (a transposed view of an ``(in, out)`` copy):
    oneDNN runs the model's GEMM shapes 10-40 % faster from this layout than from ``nn.Linear``'s own."""
    return weight.t().contiguous().t()
