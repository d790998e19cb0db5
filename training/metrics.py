"""Scoring (docs/architecture.md §11): SNR and SI-SNR per output, their improvements over the mixture, matching
outputs to references, and the aggregation per dataset and prompt. The one home of the numbers eval.py, validation
and the demo benchmark report.

:func:`score` compares already-matched pairs; :func:`match` finds the pairing (only among outputs that share a
prompt, or over all outputs for a model without prompts). Axis legend: s sources, n samples; any leading axes are
kept.

    >>> import torch
    >>> refs = torch.randn(2, 8000)
    >>> est = refs + 0.1 * torch.randn(2, 8000)
    >>> scores = score(est, refs, refs.sum(0))
    >>> sorted(scores), bool((scores["snri"] > 15).all())
    (['sisnr', 'sisnri', 'snr', 'snri'], True)
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

import fast_bss_eval
import torch

from training.losses import NegSISNR, PITLoss, prompt_groups

__all__ = ["snr", "si_snr", "score", "match", "aggregate_records", "METRICS"]

METRICS = ("loss", "snr", "sisnr", "snri", "sisnri")


def snr(est: torch.Tensor, ref: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Signal-to-noise ratio in dB, ``10 log10(|r|^2 / |r - e|^2)``: ``(..., n) -> (...)``."""
    est, ref = est.double(), ref.double()
    return (10 * torch.log10((ref.pow(2).sum(-1) + eps) / ((ref - est).pow(2).sum(-1) + eps))).float()


def si_snr(est: torch.Tensor, ref: torch.Tensor, clamp_db: float = 70.0) -> torch.Tensor:
    """Scale-invariant SNR in dB (fast_bss_eval's SI-SDR, no mean removal), clamped to ``±clamp_db``:
    ``(..., s, n) -> (..., s)``."""
    return -fast_bss_eval.si_sdr_loss(est.double(), ref.double(), zero_mean=False, clamp_db=clamp_db).float()


def score(est: torch.Tensor, refs: torch.Tensor, mix: torch.Tensor) -> dict[str, torch.Tensor]:
    """``snr``, ``sisnr`` of matched estimates and their improvements over the mixture (``snri = SNR(est, ref) -
    SNR(mix, ref)``, ``sisnri`` likewise), in float32 outside autocast: ``est, refs (s, n)``, ``mix (n,)`` -> four
    ``(s,)``."""
    with torch.autocast(device_type=est.device.type, enabled=False):
        est, refs = est.float(), refs.float()
        mixes = mix.float().expand_as(refs)  # the baseline: the mixture as every estimate
        snrs, sisnrs = snr(est, refs), si_snr(est, refs)
        return {"snr": snrs, "sisnr": sisnrs, "snri": snrs - snr(mixes, refs), "sisnri": sisnrs - si_snr(mixes, refs)}


def match(est: torch.Tensor, refs: torch.Tensor, prompts: Sequence[str] | None) -> torch.Tensor:
    """Reorder ``est (s_out, n)`` to ``refs (s, n)`` by SI-SNR: only among equal ``prompts`` (TUSS), or over all
    outputs when ``prompts`` is None (a model without prompts, ``s_out >= s``). Returns ``(s, n)``."""
    groups = None if prompts is None else prompt_groups([prompts], est.device)
    return PITLoss(NegSISNR())(est[None], refs[None], groups).est[0, : refs.shape[0]]


def _mean(values: Iterable[float]) -> float:
    values = list(values)
    return sum(values) / len(values) if values else float("nan")


def aggregate_records(records: Iterable[Mapping], stage: str) -> dict[str, float]:
    """Aggregate per-output records into the logged metrics.

    Args:
        records: one mapping per output of every item: ``{"dataset", "id", "prompt", "loss", "snr", "sisnr",
            "snri", "sisnri"}`` (``"id"`` identifies the item within its dataset; ``"manifest"``/``"channel"`` may be
            present; a metric missing from any record is left out of the result).
        stage: ``"val"`` or ``"test"``.

    Returns:
        ``{stage}/{metric}``: mean over datasets of the per-dataset means; ``{dataset}_{stage}/{metric}``: mean over
        the dataset's items of each item's mean over its outputs; ``{dataset}_{stage}/{prompt}/{metric}``: mean over
        the dataset's outputs with that prompt. ``metric`` is ``loss``, ``snr``, ``sisnr`` and the improvements over
        the mixture ``snri``, ``sisnri`` (dB).
    """
    records = list(records)
    metrics = [m for m in METRICS if records and all(m in r for r in records)]
    items: dict[str, dict[tuple, list[Mapping]]] = defaultdict(lambda: defaultdict(list))
    for rec in records:
        items[rec["dataset"]][(rec.get("manifest"), rec.get("channel"), rec["id"])].append(rec)
    out: dict[str, float] = {}
    per_dataset: dict[str, dict[str, float]] = {}
    for dataset in sorted(items):
        groups = items[dataset].values()
        per_dataset[dataset] = {m: _mean(_mean(r[m] for r in g) for g in groups) for m in metrics}
        for m in metrics:
            out[f"{dataset}_{stage}/{m}"] = per_dataset[dataset][m]
        by_prompt: dict[str, list[Mapping]] = defaultdict(list)
        for group in groups:
            for rec in group:
                by_prompt[rec["prompt"]].append(rec)
        for prompt in sorted(by_prompt):
            for m in metrics:
                out[f"{dataset}_{stage}/{prompt}/{m}"] = _mean(r[m] for r in by_prompt[prompt])
    for m in metrics:
        out[f"{stage}/{m}"] = _mean(d[m] for d in per_dataset.values())
    return out
