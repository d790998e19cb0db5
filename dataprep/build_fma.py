"""FMA medium music pool -> ``fma_44.1k.json`` (docs/corpora.md §9).

Tracks of ``fma_metadata/tracks.csv`` whose ``(set, subset)`` is not ``large`` (medium, small included) go to the
split given by ``(set, split)`` (training/validation/test) with prompt ``musicbg``. Every mp3 is decoded in full; a
track is dropped when it cannot be read, decodes to all zeros, or when the decoder (libmpg123) reports
"dequantization failed" or "too large for available bit count" on the process's standard error.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import tempfile
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import numpy as np

from dataprep.common import (
    DataprepError,
    Report,
    add_jobs_arg,
    base_parser,
    parallel_map,
    require_dir,
    require_file,
    run_builder,
)
from datasets.manifest import pool_entry
from utils.audio import AudioError, read_audio

SPLIT_NAMES = {"training": "train", "validation": "valid", "test": "test"}
DECODER_ERRORS = ("dequantization failed", "too large for available bit count")
DATASET_NAME = "fma"


@contextlib.contextmanager
def capture_native_stderr() -> Iterator[list[str]]:
    """Capture what C libraries write to file descriptor 2 inside the block; the list holds the text on exit.

    The release swaps Python's ``sys.stderr``, which never sees libmpg123's messages (they are written from C), so
    its filter cannot fire; redirecting the descriptor itself does see them.
    """
    captured: list[str] = []
    with tempfile.TemporaryFile() as sink:
        saved = os.dup(2)
        try:
            os.dup2(sink.fileno(), 2)
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            captured.append(sink.read().decode("utf-8", "replace"))


def read_tracks(tracks_csv: Path) -> list[tuple[int, str]]:
    """``[(track id, split)]`` of the medium subset from FMA's ``tracks.csv`` (two header rows, then a
    ``track_id`` row)."""
    with open(require_file(tracks_csv, "FMA tracks.csv"), newline="", encoding="utf-8") as f:
        rows = csv.reader(f)
        try:
            top, sub = next(rows), next(rows)
        except StopIteration:
            raise DataprepError(f"{tracks_csv}: expected two header rows") from None
        columns = list(zip(top, sub, strict=False))
        try:
            subset_col, split_col = columns.index(("set", "subset")), columns.index(("set", "split"))
        except ValueError:
            raise DataprepError(f"{tracks_csv}: columns (set, subset) and (set, split) not found") from None
        out = []
        for row in rows:
            if not row or not row[0].strip().isdigit():  # the "track_id,,,…" row that names the index
                continue
            if row[subset_col] == "large":
                continue
            if row[split_col] not in SPLIT_NAMES:
                raise DataprepError(f"{tracks_csv}: track {row[0]} has split {row[split_col]!r}, expected one of "
                                    f"{', '.join(SPLIT_NAMES)}")
            out.append((int(row[0]), SPLIT_NAMES[row[split_col]]))
        return out


def track_path(audio_dir: Path, track_id: int) -> Path:
    """``<audio_dir>/<first 3 digits>/<6-digit id>.mp3``."""
    name = f"{track_id:06d}"
    return audio_dir / name[:3] / f"{name}.mp3"


def check_track(path: Path, keep_decoder_errors: bool = False) -> tuple[int, int, str]:
    """Decode one track: ``(sample_rate, num_samples, reason it is dropped or "")``."""
    if not path.is_file():
        return 0, 0, "missing"
    with capture_native_stderr() as messages:
        try:
            audio, sr = read_audio(path)
        except AudioError:
            audio, sr = None, 0
    if audio is None:
        return 0, 0, "unreadable"
    if not np.any(audio):
        return sr, audio.shape[-1], "all zeros"
    if not keep_decoder_errors and any(err in messages[0] for err in DECODER_ERRORS):
        return sr, audio.shape[-1], "decoder errors"
    return sr, audio.shape[-1], ""


def build(corpus_dir: Path, jobs: int = 1, keep_decoder_errors: bool = False) -> tuple[dict, Report]:
    """Manifest for ``corpus_dir`` (the ``fma`` folder with ``fma_metadata`` and ``fma_medium``)."""
    corpus_dir = Path(corpus_dir)
    audio_dir = require_dir(corpus_dir / "fma_medium", "FMA medium audio folder")
    tracks = read_tracks(corpus_dir / "fma_metadata" / "tracks.csv")
    if not tracks:
        raise DataprepError(f"no medium-subset track listed in {corpus_dir / 'fma_metadata' / 'tracks.csv'}")
    report = Report("fma")
    paths = [track_path(audio_dir, tid) for tid, _ in tracks]
    checks = parallel_map(partial(check_track, keep_decoder_errors=keep_decoder_errors), paths, jobs, "fma")
    manifest: dict[str, dict] = {split: {"musicbg": []} for split in ("train", "valid", "test")}
    for (_, split), path, (sr, n, reason) in zip(tracks, paths, checks, strict=True):
        if reason:
            report.add(f"tracks dropped ({reason})", path.name)
            continue
        manifest[split]["musicbg"].append(pool_entry(path, sr, n, DATASET_NAME))
    for split in manifest:
        report.count(split, len(manifest[split]["musicbg"]))
    if not manifest["train"]["musicbg"]:
        raise DataprepError(f"no readable training track found under {audio_dir}")
    return manifest, report


def main(argv: list[str] | None = None) -> int:
    parser = base_parser(__doc__.splitlines()[0], "fma_44.1k.json")
    parser.add_argument("--corpus_dir", type=Path, default=Path("fma"),
                        help="folder holding fma_metadata and fma_medium (default fma)")
    parser.add_argument("--keep_decoder_errors", action="store_true",
                        help="keep tracks whose decoding prints libmpg123 errors (what the release does in effect)")
    add_jobs_arg(parser)

    def _build(args: argparse.Namespace):
        manifest, report = build(args.corpus_dir, args.jobs, args.keep_decoder_errors)
        return {args.output: manifest}, report

    return run_builder(_build, parser, argv)


if __name__ == "__main__":
    raise SystemExit(main())
