"""FUSS fixed mixtures -> ``fuss_16k.json`` and ``fuss_{1,2,3,4}src_16k.json`` (docs/corpora.md §11).

Every ``ssdata/{train,validation,eval}/<id>.wav`` with a ``<id>_sources/`` folder is one mixture. Sources that are
exactly all zeros are dropped; the rest, background included, become ``sfx_1`` … ``sfx_n`` in **sorted file-name
order** (the release uses the file system's directory order, which is not reproducible). Examples with no active
source are skipped; ``fuss_<n>src_16k.json`` holds the examples with exactly ``n`` active sources.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from dataprep.common import (
    DataprepError,
    Report,
    add_jobs_arg,
    base_parser,
    files,
    parallel_map,
    require_dir,
    run_builder,
)
from datasets.manifest import mixture_entry
from utils.audio import audio_info, read_audio

SPLITS = (("train", "train"), ("valid", "validation"), ("test", "eval"))
EXPECTED_COUNTS = {"train": 20000, "valid": 1000, "test": 1000}  # only compared against, never assumed
MAX_SOURCES = 4
DATASET_NAME = "fuss"


def active_sources(mix: Path) -> tuple[int, int, list[Path], list[str]]:
    """``(sample_rate, num_samples, active source files in sorted order, problems)`` for one example."""
    info = audio_info(mix)
    active, problems = [], []
    for src in files(mix.parent / f"{mix.stem}_sources", "*.wav"):
        audio, sr = read_audio(src)
        if sr != info.sample_rate:  # the release asserts this
            problems.append(f"{src}: {sr} Hz, mixture {info.sample_rate} Hz")
        elif np.any(audio):
            active.append(src)
    return info.sample_rate, info.num_samples, active, problems


def build(corpus_dir: Path, jobs: int = 1) -> tuple[dict[str, dict], Report]:
    """Manifests for ``corpus_dir`` (the ``ssdata`` folder): ``{"all": …, 1: …, 2: …, 3: …, 4: …}``."""
    corpus_dir = require_dir(Path(corpus_dir), "FUSS ssdata folder")
    report = Report("fuss")
    out: dict = {key: {"train": {}, "valid": {}, "test": {}} for key in ("all", *range(1, MAX_SOURCES + 1))}
    for split, folder in SPLITS:
        split_dir = require_dir(corpus_dir / folder, f"FUSS {folder} folder")
        mixes = []
        for mix in files(split_dir, "*.wav"):
            if (split_dir / f"{mix.stem}_sources").is_dir():
                mixes.append(mix)
            else:
                report.add("mixtures without a _sources folder (skipped)", mix)
        for folder_path in split_dir.glob("*_sources"):
            if not (split_dir / (folder_path.name[: -len("_sources")] + ".wav")).is_file():
                report.add("_sources folders without a mixture (ignored)", folder_path)
        if len(mixes) != EXPECTED_COUNTS[split]:
            report.add(f"splits whose example count differs from the published {EXPECTED_COUNTS[split]}",
                       f"{folder}: {len(mixes)}")
        for mix, (sr, n, active, problems) in zip(mixes, parallel_map(active_sources, mixes, jobs, folder),
                                                  strict=True):
            for problem in problems:
                report.add("sources whose rate differs from the mixture (dropped)", problem)
            if not active:
                report.add("examples without an active source (skipped)", mix.stem)
                continue
            entry = mixture_entry({f"sfx_{k}": p for k, p in enumerate(active, 1)}, sr, n, DATASET_NAME, mix=mix)
            out["all"][split][mix.stem] = entry
            if len(active) > MAX_SOURCES:
                report.add(f"examples with more than {MAX_SOURCES} active sources (only in fuss_16k.json)", mix.stem)
            else:
                out[len(active)][split][mix.stem] = entry
        report.count(split, len(out["all"][split]))
    if not any(out["all"].values()):
        raise DataprepError(f"no FUSS example with an active source found under {corpus_dir}")
    return out, report


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__.splitlines()[0], None)
    parser.add_argument("--corpus_dir", type=Path, default=Path("fuss/ssdata"),
                        help="FUSS ssdata folder holding train, validation, eval (default fuss/ssdata)")
    parser.add_argument("--output_dir", type=Path, default=Path("datasets/json_files"),
                        help="folder of the five manifests (default datasets/json_files)")
    add_jobs_arg(parser)

    def _build(args: argparse.Namespace):
        out, report = build(args.corpus_dir, args.jobs)
        names = {"all": "fuss_16k.json", **{n: f"fuss_{n}src_16k.json" for n in range(1, MAX_SOURCES + 1)}}
        return {args.output_dir / names[key]: manifest for key, manifest in out.items()}, report

    return run_builder(_build, parser, argv)


if __name__ == "__main__":
    raise SystemExit(main())
