"""Training losses (docs/architecture.md §11) and the permutation-invariant wrapper around them.

A loss is an *elementwise* function ``fn(est, ref, mix) -> (...)`` over the last (time) axis, broadcasting over the
leading axes; ``mix`` holds, for each reference, the sum of the references of its permutation group (only
``snr_with_zero_refs`` uses it). :class:`PITLoss` builds the pairwise cost matrix from it, solves the permutation
(within groups of outputs that share a prompt for TUSS, over all outputs with ``pit_loss: true``), and evaluates the
loss again on the matched pairs so that gradients flow through the chosen assignment only (as asteroid's
``PITLossWrapper`` separates pairwise losses from the permutation search).

Axis legend: b batch, s sources/outputs, n samples.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["SNRWithZeroRefs", "NegSNR", "NegSISNR", "LOSSES", "build_loss", "prompt_groups", "PITResult", "PITLoss"]

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class SNRWithZeroRefs(nn.Module):
    """SNR loss that also trains outputs whose reference is silent (docs/architecture.md §11).

    For each output with estimate ``e``, reference ``r`` and group mixture ``m`` (sum of the references of the
    output's permutation group)::

        active = |r|^2 > eps
        reg    = |r|^2 if active else |m|^2
        loss   = 10 log10(|e - r|^2 + 10^(-snr_max/10) reg + eps) - [active] 10 log10(reg + eps)
        loss  *= 1 if active else zero_ref_loss_weight

    ``|x|^2`` is the energy over the time axis. The soft threshold caps an active output's SNR at ``snr_max`` dB;
    a silent reference's term pushes its output towards silence relative to the mixture.
    """

    def __init__(self, snr_max: float = 30.0, zero_ref_loss_weight: float = 0.1, eps: float = 1e-7):
        super().__init__()
        self.tau_scale = 10 ** (-float(snr_max) / 10)
        self.zero_ref_loss_weight, self.eps = float(zero_ref_loss_weight), float(eps)

    def forward(self, est: torch.Tensor, ref: torch.Tensor, mix: torch.Tensor) -> torch.Tensor:
        """``(..., n)`` estimates, references and group mixtures -> ``(...)`` loss per output (dB)."""
        ref_energy = ref.pow(2).sum(-1)
        err_energy = (est - ref).pow(2).sum(-1)
        active = ref_energy > self.eps
        reg = torch.where(active, ref_energy, mix.pow(2).sum(-1))
        loss = 10 * torch.log10(err_energy + self.tau_scale * reg + self.eps)
        loss = loss - active * 10 * torch.log10(reg + self.eps)
        return torch.where(active, loss, self.zero_ref_loss_weight * loss)


class NegSNR(nn.Module):
    """Negative SNR in dB: ``-10 log10(|r|^2 / |e - r|^2)`` (``eps`` keeps both sides finite)."""

    def __init__(self, eps: float = 1e-8):
        super().__init__()
        self.eps = float(eps)

    def forward(self, est: torch.Tensor, ref: torch.Tensor, mix: torch.Tensor | None = None) -> torch.Tensor:
        return -10 * torch.log10((ref.pow(2).sum(-1) + self.eps) / ((est - ref).pow(2).sum(-1) + self.eps))


class NegSISNR(nn.Module):
    """Negative scale-invariant SNR in dB (no mean removal), ``-10 log10(|a r|^2 / |e - a r|^2)``,
    ``a = <e, r> / |r|^2``."""

    def __init__(self, eps: float = 1e-8):
        super().__init__()
        self.eps = float(eps)

    def forward(self, est: torch.Tensor, ref: torch.Tensor, mix: torch.Tensor | None = None) -> torch.Tensor:
        scale = (est * ref).sum(-1, keepdim=True) / (ref.pow(2).sum(-1, keepdim=True) + self.eps)
        target = scale * ref
        return -10 * torch.log10((target.pow(2).sum(-1) + self.eps) / ((est - target).pow(2).sum(-1) + self.eps))


#: ``loss_func_name`` -> loss class (its keyword arguments are ``loss_func_conf``)
LOSSES: dict[str, type[nn.Module]] = {"snr_with_zero_refs": SNRWithZeroRefs, "snr": NegSNR, "si_snr": NegSISNR}


def build_loss(name: str, conf: Mapping | None = None) -> nn.Module:
    """The elementwise loss ``name`` (a key of :data:`LOSSES`) built with ``conf``.

    Raises:
        ValueError: unknown name or arguments that do not fit it.
    """
    if name not in LOSSES:
        raise ValueError(f"loss_func_name must be one of {sorted(LOSSES)}, got {name!r}")
    try:
        return LOSSES[name](**dict(conf or {}))
    except TypeError as err:
        raise ValueError(f"loss_func_conf does not fit loss {name!r}: {err}") from None


def prompt_groups(prompts: Sequence[Sequence[str]], device: torch.device | str = "cpu") -> torch.Tensor:
    """``(b, s)`` int64 group label of every output: outputs with the same prompt (in the same item) share it."""
    names = {p: i for i, p in enumerate(dict.fromkeys(p for item in prompts for p in item))}
    return torch.tensor([[names[p] for p in item] for item in prompts], dtype=torch.int64, device=device)


@dataclass
class PITResult:
    """``loss``: scalar (mean over items of the mean over outputs); ``per_source``: ``(b, s)`` loss of each output
    after matching; ``est``: ``(b, s, n)`` estimates reordered to match the references; ``perm``: ``(b, s)``, output
    ``perm[b, j]`` is matched to reference ``j``."""

    loss: torch.Tensor
    per_source: torch.Tensor
    est: torch.Tensor
    perm: torch.Tensor


_MAX_ENUMERATED = 8  # up to 8! = 40320 permutations are scored at once; larger problems use the Hungarian method


class PITLoss(nn.Module):
    """Permutation-invariant wrapper of an elementwise loss.

    Args:
        loss_fn: elementwise loss ``fn(est, ref, mix) -> (...)``.

    ``forward(est, ref, groups=None)``: ``est (b, s_out, n)``, ``ref (b, s_ref, n)`` with ``s_ref <= s_out``
    (missing references are zero signals, as for the conventional model's spare outputs); ``groups (b, s_out)``
    labels outputs that may swap (outputs with different labels never do; ``None``: all may swap). Returns a
    :class:`PITResult`.
    """

    def __init__(self, loss_fn: LossFn):
        super().__init__()
        self.loss_fn = loss_fn
        self._perms: dict[int, torch.Tensor] = {}

    def _permutations(self, s: int, device: torch.device) -> torch.Tensor:
        if s not in self._perms:
            self._perms[s] = torch.tensor(list(itertools.permutations(range(s))), dtype=torch.int64)
        return self._perms[s].to(device)

    def forward(self, est: torch.Tensor, ref: torch.Tensor, groups: torch.Tensor | None = None) -> PITResult:
        b, s, n = est.shape
        if ref.ndim != 3 or ref.shape[0] != b or ref.shape[-1] != n or ref.shape[1] > s:
            raise ValueError(f"references must be (b, s_ref <= {s}, {n}) to match estimates {tuple(est.shape)}, "
                             f"got {tuple(ref.shape)}")
        if ref.shape[1] < s:  # spare outputs are matched to silent references
            ref = torch.cat([ref, ref.new_zeros(b, s - ref.shape[1], n)], dim=1)
        if groups is None:
            groups = torch.zeros(b, s, dtype=torch.int64, device=est.device)
        same = groups[:, :, None] == groups[:, None, :]  # (b, s, s)
        mix = torch.einsum("bjk,bkn->bjn", same.to(ref.dtype), ref)  # group mixture of each reference
        with torch.no_grad():
            # cost[b, i, j]: output i against reference j; one output row at a time keeps memory at (b, s, n)
            cost = torch.stack([self.loss_fn(est[:, i : i + 1], ref, mix) for i in range(s)], dim=1).float()
            cost = cost.masked_fill(~same, math.inf)
            perm = self._solve(cost, same)
        est_perm = torch.gather(est, 1, perm[:, :, None].expand(b, s, n))
        per_source = self.loss_fn(est_perm, ref, mix)  # (b, s)
        return PITResult(per_source.mean(-1).mean(), per_source, est_perm, perm)

    def _solve(self, cost: torch.Tensor, same: torch.Tensor) -> torch.Tensor:
        """``(b, s)`` assignment minimising the summed cost (only within groups)."""
        b, s, _ = cost.shape
        if s == 1:
            return torch.zeros(b, 1, dtype=torch.int64, device=cost.device)
        if s <= _MAX_ENUMERATED:
            perms = self._permutations(s, cost.device)  # (p, s): output perms[p, j] goes to reference j
            cols = torch.arange(s, device=cost.device)
            totals = cost[:, perms, cols].sum(-1)  # (b, p); inf where a permutation crosses groups
            return perms[totals.argmin(-1)]
        try:
            from scipy.optimize import linear_sum_assignment  # only for more than 8 outputs
        except ImportError:
            raise ValueError(f"solving a permutation of {s} outputs needs scipy (pip install scipy)") from None

        big = torch.where(same, cost, torch.full_like(cost, 1e12)).cpu().double().numpy()
        out = []
        for item in big:
            rows, cols = linear_sum_assignment(item)
            assign = [0] * s
            for r, c in zip(rows, cols, strict=True):
                assign[c] = int(r)
            out.append(assign)
        return torch.tensor(out, dtype=torch.int64, device=cost.device)
