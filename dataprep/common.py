"""Helpers shared by the corpus builders: finding files, reporting what is missing or unexpected, cutting fixed
windows, parallel maps, and the command-line wrapper that writes the manifests.

Paths in the manifests are written as the builder found them: a corpus folder given relative to the repository root
(the default of every ``prepare_*.sh``) gives root-relative paths such as ``vctk/VCTK-Corpus/...``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from datasets.manifest import ManifestError, pool_entry, write_manifest
from utils.audio import AudioError, audio_info, read_audio, write_audio

T = TypeVar("T")
R = TypeVar("R")

SEGMENT_SECONDS = 8.0  # DEMAND / WHAM! windows and SAD segments: 8 s with a 4 s hop
WAV_SUBTYPE = "PCM_16"  # soundfile's default for WAV, as the release writes its segments


class DataprepError(RuntimeError):
    """A corpus that cannot be prepared (missing folder or file, inconsistent data); the message says what to do."""


class Report:
    """Collects what a builder found missing, unexpected or dropped, grouped by a short description.

    ``report.add("missing clean file", "p226_001.wav")`` then ``print(report.format())`` prints one line per
    description with the count and the first examples.
    """

    def __init__(self, corpus: str) -> None:
        self.corpus = corpus
        self.groups: dict[str, list[str]] = {}
        self.counts: dict[str, int] = {}

    def add(self, what: str, item: str | os.PathLike) -> None:
        """Record one item under ``what`` (e.g. ``"missing on disk"``)."""
        self.groups.setdefault(what, []).append(str(item))

    def count(self, what: str, n: int) -> None:
        """Record a figure (e.g. ``"speakers"``) printed with the summary."""
        self.counts[what] = self.counts.get(what, 0) + int(n)

    def num(self, what: str) -> int:
        """Number of items recorded under ``what``."""
        return len(self.groups.get(what, ()))

    def format(self, examples: int = 3) -> str:
        lines = [f"[{self.corpus}] " + ", ".join(f"{k}: {v}" for k, v in self.counts.items())] if self.counts else []
        for what, items in self.groups.items():
            shown = ", ".join(items[:examples]) + (", …" if len(items) > examples else "")
            lines.append(f"[{self.corpus}] {len(items)} {what}: {shown}")
        return "\n".join(lines)


def require_dir(path: Path, what: str) -> Path:
    """Return ``path`` if it is a directory, else raise :class:`DataprepError` naming it and ``what`` it holds."""
    if not path.is_dir():
        raise DataprepError(f"{what} not found: {path} is not a directory")
    return path


def require_file(path: Path, what: str) -> Path:
    """Return ``path`` if it is a file, else raise :class:`DataprepError` naming it."""
    if not path.is_file():
        raise DataprepError(f"{what} not found: {path}")
    return path


def subdirs(path: Path) -> list[Path]:
    """Sorted sub-folders of ``path`` (hidden ones excluded)."""
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def files(path: Path, pattern: str = "*") -> list[Path]:
    """Sorted files of ``path`` matching ``pattern`` (not recursive; hidden files excluded)."""
    return sorted(p for p in path.glob(pattern) if p.is_file() and not p.name.startswith("."))


def window_starts(num_samples: int, length: int, hop: int) -> np.ndarray:
    """Start samples of the full windows of ``length`` every ``hop`` samples (the tail that does not fill a window
    is dropped): ``floor((N - length) / hop) + 1`` windows, none when ``N < length``."""
    if num_samples < length:
        return np.zeros(0, dtype=np.int64)
    return np.arange((num_samples - length) // hop + 1, dtype=np.int64) * hop


def write_if_changed(path: Path, audio: np.ndarray, sample_rate: int) -> Path:
    """Write ``(C, N)`` audio as 16-bit WAV unless ``path`` already holds audio of that rate, length and channel
    count (a re-run after an interruption reuses the finished files; writes are atomic)."""
    if path.is_file():
        try:
            info = audio_info(path)
            if (info.sample_rate, info.num_samples, info.channels) == (sample_rate, audio.shape[-1], audio.shape[0]):
                return path
        except AudioError:
            pass
    return write_audio(path, audio, sample_rate, subtype=WAV_SUBTYPE)


def cut_windows(job: tuple[Path, Path, str]) -> list[tuple[Path, int, int]]:
    """Cut one file into 8 s windows with a 4 s hop (DEMAND, WHAM! noise; docs/corpora.md §2, §5).

    Args:
        job: ``(source file, output folder, file-name format with {i})``; window ``i`` goes to
            ``folder / format.format(i=i)``, channels kept, 16-bit WAV at the source rate.

    Returns:
        ``[(segment path, sample_rate, num_samples)]`` in window order (empty for a file shorter than 8 s).
    """
    src, out_dir, name_format = job
    audio, sr = read_audio(src)
    length, hop = round(SEGMENT_SECONDS * sr), round(SEGMENT_SECONDS * sr / 2)
    out = []
    for i, start in enumerate(window_starts(audio.shape[-1], length, hop)):
        path = write_if_changed(out_dir / name_format.format(i=i), audio[:, start:start + length], sr)
        out.append((path, sr, length))
    return out


def window_pool(jobs_list: Sequence[tuple[Path, Path, str]], jobs: int, report: Report, dataset_name: str,
                unit: str, prompt: str = "sfxbg") -> dict:
    """Cut every ``(source, folder, name format)`` job into windows (:func:`cut_windows`, in parallel) and return
    the pool manifest ``{"train": {prompt: entries}}`` (DEMAND, WHAM! noise); ``unit`` names the jobs in the report."""
    entries = []
    for job, windows in zip(jobs_list, parallel_map(cut_windows, jobs_list, jobs, report.corpus), strict=True):
        if not windows:
            report.add("recordings shorter than 8 s (no window)", str(job[0]))
        entries.extend(pool_entry(p, sr, n, dataset_name) for p, sr, n in windows)
    report.count(unit, len(jobs_list))
    report.count("windows", len(entries))
    manifest = empty_splits()
    manifest["train"] = {prompt: entries}
    return manifest


def parallel_map(fn: Callable[[T], R], items: Sequence[T], jobs: int = 1, desc: str | None = None) -> list[R]:
    """``[fn(x) for x in items]`` in order, over ``jobs`` processes when ``jobs > 1`` (``fn`` must be a top-level
    function); a progress bar is shown on a terminal."""
    from tqdm import tqdm

    if jobs <= 1 or len(items) <= 1:
        return [fn(x) for x in tqdm(items, desc=desc, disable=None, leave=False)]
    with ProcessPoolExecutor(jobs) as pool:
        chunk = max(1, len(items) // (jobs * 16))
        return list(tqdm(pool.map(fn, items, chunksize=chunk), total=len(items), desc=desc, disable=None,
                         leave=False))


def base_parser(description: str, output: str | None) -> argparse.ArgumentParser:
    """An argument parser with ``--output`` (default ``datasets/json_files/<output>``) when ``output`` is given."""
    parser = argparse.ArgumentParser(description=description)
    if output is not None:
        parser.add_argument("--output", type=Path, default=Path("datasets/json_files") / output,
                            help=f"manifest to write (default: datasets/json_files/{output})")
    return parser


def add_jobs_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")


def corpus_main(build: Callable[..., tuple[dict, Report]], description: str, output: str, corpus_default: str,
                corpus_help: str, jobs: bool = False, argv: Sequence[str] | None = None) -> int:
    """Command line of a builder that reads one corpus folder (``--corpus_dir``) and writes one manifest
    (``--output``); ``build(corpus_dir[, jobs])`` returns ``(manifest, report)``."""
    parser = base_parser(description, output)
    parser.add_argument("--corpus_dir", type=Path, default=Path(corpus_default),
                        help=f"{corpus_help} (default {corpus_default})")
    if jobs:
        add_jobs_arg(parser)

    def _build(args: argparse.Namespace):
        manifest, report = build(args.corpus_dir, args.jobs) if jobs else build(args.corpus_dir)
        return {args.output: manifest}, report

    return run_builder(_build, parser, argv)


def run_builder(build: Callable[[argparse.Namespace], tuple[dict[Path, dict], Report]],
                parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> int:
    """Parse arguments, run ``build(args) -> ({manifest path: data}, report)``, print the report and write every
    manifest atomically. Errors print one line and return 1."""
    args = parser.parse_args(argv)
    try:
        outputs, report = build(args)
        text = report.format()
        if text:
            print(text)
        for path, data in outputs.items():
            write_manifest(path, data)
            print(f"[{report.corpus}] wrote {path} ({summary(data)})")
    except (DataprepError, AudioError, ManifestError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


def summary(data: dict[str, Any]) -> str:
    """``"train: 10, valid: 0, test: 2"`` counting pool entries or mixtures per split."""
    def size(split: dict) -> int:
        return sum(len(v) for v in split.values()) if split and all(isinstance(v, list) for v in split.values()) \
            else len(split)
    return ", ".join(f"{name}: {size(split)}" for name, split in data.items())


def empty_splits(*names: str) -> dict[str, dict]:
    """``{"train": {}, "valid": {}, "test": {}}`` (or the given split names) in the published order."""
    return {name: {} for name in (names or ("train", "valid", "test"))}
