"""Which path the networks compute by (docs/architecture.md §4), chosen per module instance.

Three paths compute the same function (to float rounding):

- the **fused CPU inference path**: oneDNN's linear op (:mod:`nets.onednn`) with the activations, the gate product
  and the attention residual inside the GEMMs, and the band-wise decoder band by band (§3);
- the **plain path**: ``nn.Linear``/``torch.mm`` products; without autograd it writes into fresh tensors in place
  (the FFN's gate, the residual sums, one strided sum for the FFN's overlap-add);
- the **export path**: the plain path's autograd-safe, out-of-place operations whatever the grad mode: the ONNX
  exporter's copy of a network (:mod:`nets.onnx.export`) runs it, so the traced graph does not depend on the grad
  mode it is traced in.

Each module that has a choice (attention, FFN, Locoformer path, band split, and :class:`nets.SeparationModel` to
remember the model's) holds a :class:`PathOptions` in its ``paths`` attribute; :func:`set_paths` sets one on every
module of a network, :func:`set_fused` the fused choice alone (``SeparationModel.set_fused``,
``nets.load_model(..., fused=...)``). Nothing is read at import: ``TUSS_ONEDNN=0`` in the environment is read by
:func:`fused_mode`, when a choice is made.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

import torch
from torch import nn

from . import onednn

__all__ = ["PathOptions", "PLAIN", "EXPORT", "fused_mode", "set_paths", "set_fused", "use_fused", "in_place",
           "fused_weight"]


@dataclass(frozen=True)
class PathOptions:
    """How a module computes (docs/architecture.md §4).

    Attributes:
        fused: ``None`` (automatic): the fused path on a float32 CPU tensor with autograd and CPU autocast off and the
            module in eval mode, where oneDNN's op exists; ``True``: the fused path on every call, and a call where it
            cannot run (autograd or autocast on, train mode, not a float32 CPU tensor) raises ``RuntimeError``;
            ``False``: never (the plain path).
        input_major: the fused path hands oneDNN input-major weights (:func:`nets.onednn.in_major`); ``False``: the
            parameters' own ``(out, in)`` layout (slower; for benchmarks/bench_fused_ab.py).
        per_band_decoder: the fused path runs the band-wise decoder band by band; ``False``: the batched, padded
            products of the plain path (slower; for benchmarks/bench_fused_ab.py).
        export: the export path: no fused path and no in-place inference writes, whatever the grad mode.
    """

    fused: bool | None = None
    input_major: bool = True
    per_band_decoder: bool = True
    export: bool = False


#: the plain path
PLAIN = PathOptions(fused=False)
#: the export path (the ONNX exporter's copy of a network)
EXPORT = PathOptions(fused=False, export=True)

_OFF = ("0", "false", "no", "off")


def fused_mode(mode: bool | None) -> bool | None:
    """The fused choice ``mode`` as it applies now: ``False`` when ``TUSS_ONEDNN`` in the environment is ``0``
    (``false``, ``no``, ``off``: the opt-out overrides any ``mode``, read at this call), or when ``mode`` is ``None``
    and this torch has no oneDNN fused linear op; otherwise ``mode``.

    Raises:
        RuntimeError: ``mode`` is ``True`` and this torch has no oneDNN fused linear op.
    """
    if mode is not None and not isinstance(mode, bool):
        raise TypeError(f"fused must be None (automatic), True or False, got {mode!r}")
    if os.environ.get("TUSS_ONEDNN", "1").strip().lower() in _OFF or mode is False:
        return False
    if onednn.LINEAR is None:
        if mode:
            raise RuntimeError("fused=True: this torch has no oneDNN fused linear op (torch.ops.mkldnn."
                               "_linear_pointwise); use fused=None (automatic) or False")
        return False
    return mode


def set_paths(module: nn.Module, options: PathOptions) -> None:
    """Set ``options`` on every module of ``module`` (itself included) that holds a :class:`PathOptions`."""
    if not isinstance(options, PathOptions):
        raise TypeError(f"options must be a PathOptions, got {options!r}")
    for m in module.modules():
        if isinstance(getattr(m, "paths", None), PathOptions):
            m.paths = options


def set_fused(module: nn.Module, mode: bool | None = None) -> PathOptions:
    """Set the fused choice :func:`fused_mode` ``(mode)`` on every module of ``module``, keeping ``module``'s other
    options (its ``paths``, or the defaults); returns the options set."""
    current = getattr(module, "paths", None)
    options = dataclasses.replace(current if isinstance(current, PathOptions) else PathOptions(),
                                  fused=fused_mode(mode))
    set_paths(module, options)
    return options


def use_fused(x: torch.Tensor, module: nn.Module) -> bool:
    """Whether ``module`` runs its fused CPU inference path on ``x`` (its ``paths.fused``; see :class:`PathOptions`).

    Raises:
        RuntimeError: ``paths.fused`` is ``True`` and the call is one the fused path cannot run.
    """
    mode = module.paths.fused
    if mode is False:
        return False
    runs = (onednn.LINEAR is not None and x.device.type == "cpu" and x.dtype == torch.float32
            and not torch.is_grad_enabled() and not module.training and not torch.is_autocast_enabled("cpu"))
    if runs or mode is None:
        return runs
    problems = [what for what, bad in (
        ("no oneDNN fused linear op in this torch", onednn.LINEAR is None),
        (f"a {x.dtype} tensor on {x.device.type} (it takes float32 on the CPU)",
         x.device.type != "cpu" or x.dtype != torch.float32),
        ("autograd on (oneDNN's op has no gradient)", torch.is_grad_enabled()),
        ("train mode (no dropout on the fused path)", module.training),
        ("CPU autocast on", torch.is_autocast_enabled("cpu"))) if bad]
    raise RuntimeError(f"fused=True: the fused CPU inference path cannot run this call: {'; '.join(problems)}; "
                       "use fused=None (automatic) or call under torch.inference_mode() in eval mode")


def in_place(module: nn.Module) -> bool:
    """Whether ``module`` may write into fresh tensors in place: without autograd, and not on the export path."""
    return not module.paths.export and not torch.is_grad_enabled()


def fused_weight(module: nn.Module, weight: torch.Tensor) -> torch.Tensor:
    """``weight`` as ``module``'s fused path hands it to oneDNN: input-major (:func:`nets.onednn.in_major`) unless
    its ``paths.input_major`` is off."""
    return onednn.in_major(weight) if module.paths.input_major else weight
