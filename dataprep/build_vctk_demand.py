"""Voicebank-DEMAND fixed mixtures -> ``vctk_demand_48k.json`` (docs/corpora.md §3).

``valid``: the noisy 28-speaker training files of p226 and p287; ``test``: every noisy test file. The corpus ships no
noise, so noise = noisy - clean is written to ``noise_trainset_28spk_wav/`` and ``noise_testset_wav/``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dataprep.common import (
    DataprepError,
    Report,
    corpus_main,
    files,
    parallel_map,
    require_dir,
    write_if_changed,
)
from datasets.manifest import mixture_entry
from utils.audio import read_audio

VALID_SPEAKERS = ("p226", "p287")
DATASET_NAME = "vctk_demand"
# (split, clean folder, noisy folder, noise folder written here)
SUBSETS = (
    ("valid", "clean_trainset_28spk_wav", "noisy_trainset_28spk_wav", "noise_trainset_28spk_wav"),
    ("test", "clean_testset_wav", "noisy_testset_wav", "noise_testset_wav"),
)


def write_noise(job: tuple[Path, Path, Path]) -> tuple[int, int, str]:
    """Write ``noisy - clean`` for one utterance; returns ``(sample_rate, num_samples, problem or "")``."""
    noisy_path, clean_path, noise_path = job
    noisy, sr = read_audio(noisy_path)
    clean, clean_sr = read_audio(clean_path)
    if clean_sr != sr or clean.shape != noisy.shape:
        return sr, noisy.shape[-1], (f"{noisy_path.name}: clean {clean_sr} Hz {clean.shape} vs noisy {sr} Hz "
                                     f"{noisy.shape}")
    noise = noisy - clean  # exact: both are 16-bit PCM, so the difference is representable unless it exceeds +-1
    clipped = bool(np.abs(noise).max(initial=0.0) > 1.0)
    write_if_changed(noise_path, np.clip(noise, -1.0, 1.0), sr)
    return sr, noisy.shape[-1], f"{noisy_path.name}: noise clipped to +-1" if clipped else ""


def build(corpus_dir: Path, jobs: int = 1) -> tuple[dict, Report]:
    """Manifest for ``corpus_dir`` (the ``vctk_demand`` folder holding the four unzipped subsets)."""
    corpus_dir = Path(corpus_dir)
    report = Report("vctk_demand")
    manifest: dict[str, dict] = {"train": {}, "valid": {}, "test": {}}
    for split, clean_name, noisy_name, noise_name in SUBSETS:
        clean_dir = require_dir(corpus_dir / clean_name, "Voicebank-DEMAND clean folder")
        noisy_dir = require_dir(corpus_dir / noisy_name, "Voicebank-DEMAND noisy folder")
        noisy = files(noisy_dir, "*.wav")
        if split == "valid":
            noisy = [f for f in noisy if f.name[:4] in VALID_SPEAKERS]
        jobs_list = []
        for f in noisy:
            if not (clean_dir / f.name).is_file():
                report.add(f"noisy files without a clean file in {clean_name} (skipped)", f.name)
                continue
            jobs_list.append((f, clean_dir / f.name, corpus_dir / noise_name / f.name))
        if not jobs_list:
            raise DataprepError(f"no {split} utterance found in {noisy_dir}")
        for (noisy_path, clean_path, noise_path), (sr, n, problem) in zip(
                jobs_list, parallel_map(write_noise, jobs_list, jobs, split), strict=True):
            if problem.endswith("clipped to +-1"):
                report.add("noise files clipped", problem)
            elif problem:
                report.add("clean/noisy pairs that differ in rate or length (skipped)", problem)
                continue
            refs = {"speech_1": clean_path, "sfxbg_1": noise_path}
            manifest[split][noisy_path.name] = mixture_entry(refs, sr, n, DATASET_NAME, mix=noisy_path)
        report.count(split, len(manifest[split]))
    return manifest, report


def main(argv: list[str] | None = None) -> int:
    return corpus_main(build, __doc__.splitlines()[0], "vctk_demand_48k.json", "vctk_demand",
                       "folder holding the unzipped subsets", jobs=True, argv=argv)


if __name__ == "__main__":
    raise SystemExit(main())
