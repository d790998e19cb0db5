"""The names of the metrics and the prompts they apply to (no torch: ``eval.py --help`` reads them); the metrics
themselves are in :mod:`training.metrics` (docs/architecture.md §11)."""

__all__ = ["METRICS", "EVAL_METRICS", "DEFAULT_EVAL_METRICS", "EXTRA_METRICS", "SPEECH_PROMPTS", "MUSIC_PROMPTS",
           "METRIC_PROMPTS", "MEDIAN_METRICS", "FUSS_DATASETS"]

METRICS = ("loss", "snr", "sisnr", "snri", "sisnri")

EVAL_METRICS = ("snr", "sisnr", "pesq", "estoi", "sdr", "usdr")
"""The names ``eval.py --metrics`` accepts (``snr`` and ``sisnr`` bring their improvements ``snri``, ``sisnri``)."""

DEFAULT_EVAL_METRICS = ("snr", "sisnr")
"""``eval.py``'s default: the paper's metrics, always computed (validation logs them too)."""

EXTRA_METRICS = ("pesq", "estoi", "sdr", "usdr")
"""Metrics computed only when asked for (:func:`extra_scores`, the test stage of ``eval.py --metrics``)."""

SPEECH_PROMPTS = ("speech",)
MUSIC_PROMPTS = ("drums", "bass", "vocals", "other", "musicbg")

METRIC_PROMPTS: dict[str, tuple[str, ...]] = {"pesq": SPEECH_PROMPTS, "estoi": SPEECH_PROMPTS,
                                              "sdr": MUSIC_PROMPTS, "usdr": MUSIC_PROMPTS}
"""The prompts each extra metric is computed for (the others: every prompt). PESQ and ESTOI are speech-quality and
intelligibility measures; SDR and uSDR the music-separation (MUSDB/MDX) metrics, for the four stems and ``musicbg``
(a mix of instruments)."""

MEDIAN_METRICS = ("sdr",)
"""Aggregated by the median over items (per dataset and per prompt) instead of the mean: the SiSEC/MUSDB convention
for BSS Eval SDR (median over frames per song, then median over songs)."""

FUSS_DATASETS = ("fuss",)
"""Dataset names (``dataset_name`` of the manifests) whose one-source items follow the FUSS convention (see
:func:`score`)."""
