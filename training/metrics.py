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

``eval.py --metrics`` adds the metrics of :data:`EXTRA_METRICS`, computed by :func:`extra_scores` in the test stage
only and only for the outputs whose prompt they fit (:data:`METRIC_PROMPTS`): wide-band PESQ and ESTOI for
``speech``, BSS Eval v4 SDR (:func:`bss_sdr`) and the MDX utterance SDR (:func:`usdr`) for the music stems.

    >>> refs = torch.randn(2, 32000, generator=torch.Generator().manual_seed(0))  # 2 s at 16 kHz
    >>> extra = extra_scores(0.9 * refs, refs, 16000, ["speech", "bass"], ["sdr", "usdr"])  # error: 10% of each
    >>> extra[0], round(extra[1]["sdr"], 2), round(extra[1]["usdr"], 2)
    ({}, 20.0, 20.0)
"""

from __future__ import annotations

import importlib
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

import fast_bss_eval
import numpy as np
import torch

from training.losses import NegSISNR, PITLoss, prompt_groups
from training.metric_names import (  # names without torch: eval.py --help reads them
    DEFAULT_EVAL_METRICS,
    EVAL_METRICS,
    EXTRA_METRICS,
    FUSS_DATASETS,
    MEDIAN_METRICS,
    METRIC_PROMPTS,
    METRICS,
)
from utils.audio import resample

__all__ = ["snr", "si_snr", "score", "match", "aggregate_records", "METRICS", "EVAL_METRICS", "DEFAULT_EVAL_METRICS",
           "EXTRA_METRICS", "METRIC_PROMPTS", "MEDIAN_METRICS", "FUSS_DATASETS", "MetricError", "check_metrics",
           "metric_keys", "applies", "pesq_wb", "estoi", "bss_sdr", "usdr", "extra_scores"]

PESQ_RATE = 16000  # wide-band PESQ (ITU-T P.862.2) is defined at 16 kHz
MDX_DELTA = 1e-7  # the MDX challenge's utterance SDR: delta added to both energies
_PACKAGES = {"pesq": ("pesq", "pip install pesq"), "estoi": ("pystoi", "pip install pystoi")}


class MetricError(ValueError):
    """An unknown metric name, a metric whose package is missing, or a metric asked for a prompt it does not fit."""


def snr(est: torch.Tensor, ref: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Signal-to-noise ratio in dB, ``10 log10(|r|^2 / |r - e|^2)``: ``(..., n) -> (...)``."""
    est, ref = est.double(), ref.double()
    return (10 * torch.log10((ref.pow(2).sum(-1) + eps) / ((ref - est).pow(2).sum(-1) + eps))).float()


def si_snr(est: torch.Tensor, ref: torch.Tensor, clamp_db: float = 70.0) -> torch.Tensor:
    """Scale-invariant SNR in dB (fast_bss_eval's SI-SDR, no mean removal), clamped to ``±clamp_db``:
    ``(..., s, n) -> (..., s)``."""
    return -fast_bss_eval.si_sdr_loss(est.double(), ref.double(), zero_mean=False, clamp_db=clamp_db).float()


def score(est: torch.Tensor, refs: torch.Tensor, mix: torch.Tensor,
          absolute_single: bool = False) -> dict[str, torch.Tensor]:
    """``snr``, ``sisnr`` of matched estimates and their improvements over the mixture (``snri = SNR(est, ref) -
    SNR(mix, ref)``, ``sisnri`` likewise), in float32 outside autocast: ``est, refs (s, n)``, ``mix (n,)`` -> four
    ``(s,)``.

    ``absolute_single`` (the FUSS convention, for the datasets of :data:`FUSS_DATASETS`): an item with a single
    reference is its own mixture, so an improvement over the mixture means nothing there (the mixture scores the
    clamp, 70 dB SI-SNR); FUSS reports such items by the absolute SI-SNR of the estimate. Then ``sisnri`` is
    ``sisnr`` and ``snri`` is ``snr`` for that item.
    """
    with torch.autocast(device_type=est.device.type, enabled=False):
        est, refs = est.float(), refs.float()
        mixes = mix.float().expand_as(refs)  # the baseline: the mixture as every estimate
        snrs, sisnrs = snr(est, refs), si_snr(est, refs)
        if absolute_single and refs.shape[-2] == 1:  # FUSS: a one-source item is scored by absolute values
            return {"snr": snrs, "sisnr": sisnrs, "snri": snrs.clone(), "sisnri": sisnrs.clone()}
        return {"snr": snrs, "sisnr": sisnrs, "snri": snrs - snr(mixes, refs), "sisnri": sisnrs - si_snr(mixes, refs)}


def check_metrics(names: Iterable[str]) -> tuple[str, ...]:
    """Check ``eval.py --metrics`` names: known (:data:`EVAL_METRICS`) and their package importable. Returns the
    names in the given order without repeats.

        >>> check_metrics(["sisnr", "snr", "sisnr"])
        ('sisnr', 'snr')

    Raises:
        MetricError: a one-line message naming the allowed names, or the metric and the pip command.
    """
    names = tuple(dict.fromkeys(names))
    unknown = [n for n in names if n not in EVAL_METRICS]
    if unknown or not names:
        got = f"unknown metric {unknown[0]!r}" if unknown else "no metric given"
        raise MetricError(f"--metrics: {got}; choose from {', '.join(EVAL_METRICS)}")
    for name in names:
        if name in _PACKAGES:
            module, pip = _PACKAGES[name]
            try:
                importlib.import_module(module)
            except Exception as err:  # ImportError, or a broken build (a missing shared library: OSError)
                raise MetricError(f"--metrics {name} needs the {module} package, which cannot be imported "
                                  f"({type(err).__name__}); install it with: {pip}") from None
    return names


def metric_keys(names: Iterable[str]) -> tuple[str, ...]:
    """The record and result keys reported for ``--metrics`` names: ``loss``, then ``snr`` -> ``snr, snri``,
    ``sisnr`` -> ``sisnr, sisnri``, any other name itself.

        >>> metric_keys(["snr", "sisnr", "sdr"])
        ('loss', 'snr', 'snri', 'sisnr', 'sisnri', 'sdr')
    """
    keys = ["loss"]
    for name in names:
        keys += {"snr": ["snr", "snri"], "sisnr": ["sisnr", "sisnri"]}.get(name, [name])
    return tuple(dict.fromkeys(keys))


def applies(metric: str, prompt: str) -> bool:
    """Whether ``metric`` is computed for an output with ``prompt`` (:data:`METRIC_PROMPTS`)."""
    return metric not in METRIC_PROMPTS or prompt in METRIC_PROMPTS[metric]


def _refuse(metric: str, prompt: str | None) -> None:
    if prompt is not None and not applies(metric, prompt):
        raise MetricError(f"{metric} is computed only for {', '.join(METRIC_PROMPTS[metric])} outputs, not for "
                          f"{prompt!r}")


def _numpy(x: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def pesq_wb(est: torch.Tensor | np.ndarray, ref: torch.Tensor | np.ndarray, sample_rate: int,
            prompt: str | None = None) -> float:
    """Wide-band PESQ (ITU-T P.862.2, MOS-LQO) of ``est (n,)`` against ``ref (n,)``: both resampled from
    ``sample_rate`` to 16 kHz (float64, :func:`utils.audio.resample`), then ``pesq.pesq(16000, ref, est, "wb")``.
    NaN where the package gives no score (no utterance detected, too short). ``prompt``: refused unless ``speech``.
    """
    _refuse("pesq", prompt)
    import pesq  # lazily: the package may not build on every machine, and only this metric needs it

    r, e = (resample(torch.from_numpy(_numpy(x)), sample_rate, PESQ_RATE).numpy() for x in (ref, est))
    if not (np.abs(r).max(initial=0.0) > 0 or np.abs(e).max(initial=0.0) > 0):
        return math.nan  # two silent signals: no utterance (the package would divide 0 by 0 to find out)
    try:
        return float(pesq.pesq(PESQ_RATE, r, e, "wb"))
    except pesq.PesqError:
        return math.nan


def estoi(est: torch.Tensor | np.ndarray, ref: torch.Tensor | np.ndarray, sample_rate: int,
          prompt: str | None = None) -> float:
    """Extended STOI of ``est (n,)`` against ``ref (n,)``: ``pystoi.stoi(ref, est, sample_rate, extended=True)``
    at the signal's own rate (pystoi resamples to its 10 kHz itself). ``prompt``: refused unless ``speech``."""
    _refuse("estoi", prompt)
    import pystoi  # lazily, like pesq

    return float(pystoi.stoi(_numpy(ref), _numpy(est), int(sample_rate), extended=True))


def bss_sdr(est: torch.Tensor | np.ndarray, refs: torch.Tensor | np.ndarray, sample_rate: int,
            window: float = 1.0) -> np.ndarray:
    """BSS Eval v4 SDR as ``museval`` computes it (``museval.evaluate``: images mode, 1 s windows and hops, one
    set of 512-tap distortion filters for the whole signal), the median over frames per source: ``est, refs
    (s, n)`` -> ``(s,)`` float64.

    In the images mode the decomposition ``est = s_true + e_spat + e_interf + e_artif`` makes the SDR's error term
    ``e_spat + e_interf + e_artif = est - s_true`` whatever the distortion filters are (they only split the error
    into ISR, SIR and SAR), so the frame SDR is ``10 log10(|r_w|^2 / |r_w - e_w|^2)`` over the frame ``w``; this
    computes that directly (tests check it against ``museval.metrics.bss_eval``). As in museval: frames of
    ``int(window * sample_rate)`` samples, ``floor(n / window)`` of them (the whole signal when shorter than one),
    a trailing partial frame dropped; a frame in which any of the ``s`` references or estimates is all zeros is
    NaN for every source; an error-free frame is +inf; the median skips NaN frames (NaN when every frame is).
    """
    e, r = _numpy(est), _numpy(refs)
    win, n = int(window * sample_rate), r.shape[-1]
    starts = range(0, n - win + 1, win) if win < n else [0]
    frames = np.full((r.shape[0], len(starts)), np.nan)
    for k, a in enumerate(starts):
        rw, ew = r[:, a : a + win], e[:, a : a + win]
        if (rw == 0).all(-1).any() or (ew == 0).all(-1).any():  # museval: a silent source makes the frame NaN
            continue
        num, den = (rw**2).sum(-1), ((rw - ew) ** 2).sum(-1)
        with np.errstate(divide="ignore"):
            frames[:, k] = np.where(den == 0, np.inf, 10 * np.log10(num / np.where(den == 0, 1, den)))
    out = np.full(r.shape[0], np.nan)
    valid = ~np.isnan(frames).all(-1)
    out[valid] = np.nanmedian(frames[valid], axis=-1)
    return out


def usdr(est: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """The MDX challenge's utterance SDR (Demucs' ``new_sdr``): ``10 log10((|r|^2 + 1e-7) / (|r - e|^2 + 1e-7))``
    over the whole signal (all samples, and channels when given as a leading axis), in float64: ``(..., n) ->
    (...)``. It is :func:`snr` with the challenge's delta."""
    return snr(torch.as_tensor(est), torch.as_tensor(ref), eps=MDX_DELTA)


def extra_scores(est: torch.Tensor, refs: torch.Tensor, sample_rate: int, prompts: Sequence[str],
                 metrics: Iterable[str]) -> list[dict[str, float]]:
    """The requested :data:`EXTRA_METRICS` of matched estimates, per output: ``est, refs (s, n)`` at
    ``sample_rate``, ``prompts`` (``s`` names) -> ``s`` dicts ``{metric: value}`` holding the metrics that fit the
    output's prompt (:data:`METRIC_PROMPTS`; ``{}`` when none does). ``snr``/``sisnr`` in ``metrics`` are ignored
    (:func:`score` computes them). SDR is computed over the item's outputs that it fits, together (museval's silent
    frame rule looks at all of them)."""
    if len(prompts) != est.shape[0] or est.shape != refs.shape:
        raise ValueError(f"extra_scores: {len(prompts)} prompts for estimates {tuple(est.shape)} and references "
                         f"{tuple(refs.shape)}")
    out: list[dict[str, float]] = [{} for _ in prompts]
    for metric in dict.fromkeys(metrics):
        if metric not in EXTRA_METRICS:
            if metric in EVAL_METRICS:
                continue
            raise MetricError(f"unknown metric {metric!r}; choose from {', '.join(EVAL_METRICS)}")
        idx = [j for j, p in enumerate(prompts) if applies(metric, p)]
        if not idx:
            continue
        if metric == "pesq":
            values = [pesq_wb(est[j], refs[j], sample_rate) for j in idx]
        elif metric == "estoi":
            values = [estoi(est[j], refs[j], sample_rate) for j in idx]
        elif metric == "sdr":
            values = bss_sdr(est[idx], refs[idx], sample_rate).tolist()
        else:
            values = usdr(est[idx].double(), refs[idx].double()).tolist()
        for j, value in zip(idx, values, strict=True):
            out[j][metric] = float(value)
    return out


def match(est: torch.Tensor, refs: torch.Tensor, prompts: Sequence[str] | None) -> torch.Tensor:
    """Reorder ``est (s_out, n)`` to ``refs (s, n)`` by SI-SNR: only among equal ``prompts`` (TUSS), or over all
    outputs when ``prompts`` is None (a model without prompts, ``s_out >= s``). Returns ``(s, n)``."""
    groups = None if prompts is None else prompt_groups([prompts], est.device)
    return PITLoss(NegSISNR())(est[None], refs[None], groups).est[0, : refs.shape[0]]


def _mean(values: Iterable[float]) -> float:
    values = list(values)
    return sum(values) / len(values) if values else float("nan")


def _center(values: Iterable[float], median: bool) -> float | None:
    """Mean (or median) of the non-NaN ``values``; None when there is none (the key is then left out)."""
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return None
    return float(np.median(values)) if median else sum(values) / len(values)


def aggregate_records(records: Iterable[Mapping], stage: str) -> dict[str, float]:
    """Aggregate per-output records into the logged metrics.

    Args:
        records: one mapping per output of every item: ``{"dataset", "id", "prompt", "loss", "snr", "sisnr",
            "snri", "sisnri"}`` (``"id"`` identifies the item within its dataset; ``"manifest"``/``"channel"`` may be
            present; a metric missing from any record is left out of the result), plus the :data:`EXTRA_METRICS`
            computed for the output (present only on the outputs whose prompt they fit).
        stage: ``"val"`` or ``"test"``.

    Returns:
        ``{stage}/{metric}``: mean over datasets of the per-dataset means; ``{dataset}_{stage}/{metric}``: mean over
        the dataset's items of each item's mean over its outputs; ``{dataset}_{stage}/{prompt}/{metric}``: mean over
        the dataset's outputs with that prompt. ``metric`` is ``loss``, ``snr``, ``sisnr`` and the improvements over
        the mixture ``snri``, ``sisnri`` (dB).

        An extra metric is aggregated the same way over the outputs that have it (an item's mean over those outputs;
        the datasets, items and prompts without it are left out), NaN values (no PESQ score, no non-silent SDR
        frame) skipped; for :data:`MEDIAN_METRICS` (``sdr``) the per-dataset and per-prompt values are medians over
        items instead of means (``{stage}/sdr`` is still the mean over datasets).
    """
    records = list(records)
    metrics = [m for m in METRICS if records and all(m in r for r in records)]
    extra = [m for m in EXTRA_METRICS if any(m in r for r in records)]
    items: dict[str, dict[tuple, list[Mapping]]] = defaultdict(lambda: defaultdict(list))
    for rec in records:
        items[rec["dataset"]][(rec.get("manifest"), rec.get("channel"), rec["id"])].append(rec)
    out: dict[str, float] = {}
    per_dataset: dict[str, dict[str, float]] = {}
    for dataset in sorted(items):
        groups = items[dataset].values()
        per_dataset[dataset] = {m: _mean(_mean(r[m] for r in g) for g in groups) for m in metrics}
        for m in extra:  # each item's mean over its outputs that have the metric, then over the items
            item_values = (_center((r[m] for r in g if m in r), median=False) for g in groups)
            value = _center((v for v in item_values if v is not None), median=m in MEDIAN_METRICS)
            if value is not None:
                per_dataset[dataset][m] = value
        for m in metrics + extra:
            if m in per_dataset[dataset]:
                out[f"{dataset}_{stage}/{m}"] = per_dataset[dataset][m]
        by_prompt: dict[str, list[Mapping]] = defaultdict(list)
        for group in groups:
            for rec in group:
                by_prompt[rec["prompt"]].append(rec)
        for prompt in sorted(by_prompt):
            for m in metrics:
                out[f"{dataset}_{stage}/{prompt}/{m}"] = _mean(r[m] for r in by_prompt[prompt])
            for m in extra:
                value = _center((r[m] for r in by_prompt[prompt] if m in r), median=m in MEDIAN_METRICS)
                if value is not None:
                    out[f"{dataset}_{stage}/{prompt}/{m}"] = value
    for m in metrics:
        out[f"{stage}/{m}"] = _mean(d[m] for d in per_dataset.values())
    for m in extra:
        values = [d[m] for d in per_dataset.values() if m in d]
        if values:
            out[f"{stage}/{m}"] = _mean(values)
    return out
