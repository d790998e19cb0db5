"""Source activity detection (docs/corpora.md §14, after BSRNN, Luo & Yu, Section IV-A) and the ``*_sad.json`` builder.

For one reference file: peak-normalise; cut 8 s segments with a 4 s hop (tail dropped); split each into 16 chunks
of 0.5 s; chunk power = sum of squares over channels and samples / chunk length, 0 replaced by ``min_power``;
threshold = 15th percentile of all chunk powers of the file, at least ``min_thres``; keep a segment when at least
8 of its 16 chunks are strictly above the threshold. Kept segments are written peak-normalised, channels kept.

Command line (run by ``prepare_musdb.sh`` / ``prepare_moisesdb.sh``)::

    python -m dataprep.sad --input musdb18hq_44.1k.json --output musdb18hq_44.1k_sad.json \\
        --out_dir musdbhq_sad/data --min_power 1e-5 --min_thres 1e-3
"""

from __future__ import annotations

import argparse
from functools import partial
from pathlib import Path

import numpy as np

from dataprep.common import (
    SEGMENT_SECONDS,
    Report,
    add_jobs_arg,
    base_parser,
    parallel_map,
    run_builder,
    write_if_changed,
)
from datasets.manifest import load_manifest, pool_entry, ref_prompt
from utils.audio import read_audio

NUM_CHUNKS = 16
PERCENTILE = 15.0


def detect_active_segments(
    audio: np.ndarray,
    sample_rate: int,
    min_power: float,
    min_thres: float,
    segment_seconds: float = SEGMENT_SECONDS,
    num_chunks: int = NUM_CHUNKS,
) -> tuple[np.ndarray, int]:
    """Start samples of the active segments of one file.

    Args:
        audio: ``(C, N)`` float signal (not yet normalised; the decision is scale-invariant apart from the floors,
            which apply to the peak-normalised signal as in the release).
        sample_rate: its rate.
        min_power: replaces a chunk power of exactly 0.
        min_thres: lower bound of the threshold.

    Returns:
        ``(starts, length)``: int64 start samples of the kept segments (ascending) and the segment length
        ``num_chunks * (segment_seconds * sample_rate // num_chunks)`` (8 s when the rate divides evenly).
        An all-zero file or one shorter than a segment keeps nothing (the release gives NaN or crashes there).
    """
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 2:
        raise ValueError(f"audio must be (channels, samples), got shape {audio.shape}")
    chunk = int(round(segment_seconds * sample_rate)) // num_chunks
    length, hop_chunks = chunk * num_chunks, num_chunks // 2
    peak = float(np.abs(audio).max(initial=0.0))
    num_grid = audio.shape[-1] // chunk
    if peak == 0.0 or num_grid < num_chunks:
        return np.zeros(0, dtype=np.int64), length
    # Segments start every num_chunks/2 chunks, so every segment chunk is a chunk of one regular grid: compute the
    # grid powers once, then view them as (segments, num_chunks) windows.
    grid = (audio[:, : num_grid * chunk] / peak).reshape(audio.shape[0], num_grid, chunk)
    power = np.square(grid, dtype=np.float64).sum(axis=(0, 2)) / chunk
    power[power == 0.0] = min_power
    per_segment = np.lib.stride_tricks.sliding_window_view(power, num_chunks)[::hop_chunks]  # (segments, chunks)
    threshold = max(float(np.percentile(per_segment, PERCENTILE)), min_thres)
    keep = (per_segment > threshold).sum(axis=1) >= num_chunks // 2
    return np.flatnonzero(keep).astype(np.int64) * hop_chunks * chunk, length


def sad_file(path: str, out_dir: Path, min_power: float, min_thres: float) -> list[tuple[str, int, int]]:
    """Write the active segments of one reference to ``out_dir/<parent folder>/<file stem>_<j>.wav`` (``j`` counts
    kept segments from 0). Returns ``[(segment path, sample_rate, num_samples)]``."""
    audio, sr = read_audio(path)
    starts, length = detect_active_segments(audio, sr, min_power, min_thres)
    if len(starts) == 0:
        return []
    audio = audio / np.abs(audio).max()  # written segments stay peak-normalised, as in the release
    src = Path(path)
    out = []
    for j, start in enumerate(starts):
        seg = write_if_changed(out_dir / src.parent.name / f"{src.stem}_{j}.wav", audio[:, start: start + length], sr)
        out.append((seg.as_posix(), sr, length))
    return out


def sad_manifest(manifest: dict, out_dir: Path, min_power: float, min_thres: float, jobs: int = 1,
                 report: Report | None = None) -> dict:
    """Copy of ``manifest`` whose ``train`` (fixed mixtures) becomes a pool of active segments.

    Pool prompts follow the reference keys (``vocals_2`` -> ``vocals``) in first-seen order; ``dataset_name`` is
    the song's. ``valid`` and ``test`` are copied unchanged. Segment paths are written as ``out_dir`` is given
    (relative to the repository root by default; the release writes absolute paths here).
    """
    jobs_list, owners = [], []
    for item_id, entry in manifest.get("train", {}).items():
        for key, path in entry["ref"].items():
            jobs_list.append(path)
            owners.append((item_id, ref_prompt(key), entry["dataset_name"]))
    work = partial(sad_file, out_dir=Path(out_dir), min_power=min_power, min_thres=min_thres)
    pool: dict[str, list] = {}
    for path, (item_id, prompt, dataset_name), segments in zip(
            jobs_list, owners, parallel_map(work, jobs_list, jobs, "sad"), strict=True):
        bucket = pool.setdefault(prompt, [])
        bucket.extend(pool_entry(p, sr, n, dataset_name) for p, sr, n in segments)
        if report is not None:
            report.count("references", 1)
            report.count("active segments", len(segments))
            if not segments:
                report.add("references with no active segment", f"{item_id}: {path}")
    return {**manifest, "train": pool}


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__.splitlines()[0], None)
    parser.add_argument("--input", type=Path, required=True, help="fixed-mixture manifest (musdb18hq, moisesdb)")
    parser.add_argument("--output", type=Path, required=True, help="*_sad.json manifest to write")
    parser.add_argument("--out_dir", type=Path, required=True, help="folder of the written segments")
    parser.add_argument("--min_power", type=float, required=True, help="power floor (MUSDB 1e-5, MoisesDB 1e-7)")
    parser.add_argument("--min_thres", type=float, required=True, help="threshold floor (MUSDB 1e-3, MoisesDB 1e-5)")
    add_jobs_arg(parser)

    def _build(args: argparse.Namespace):
        report = Report(f"sad {args.input.name}")
        manifest = load_manifest(args.input).data
        return {args.output: sad_manifest(manifest, args.out_dir, args.min_power, args.min_thres, args.jobs,
                                          report)}, report

    return run_builder(_build, parser, argv)


if __name__ == "__main__":
    raise SystemExit(main())
