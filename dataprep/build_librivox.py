"""LibriVox read speech of DNS Challenge 5 (URGENT 2024 recipe) -> ``librivox_urgent2024.json`` (docs/corpora.md §7).

The pipeline, one sub-command per step (``prepare_librivox_urgent2024.sh`` runs them in order; each writes a file
in ``dataprep/datafiles/`` that the next reads):

============  =============================================================  ===================================
step          what it does                                                   needs
============  =============================================================  ===================================
extract       tar stream (stdin) -> files, at most 5000 audio files per       nothing
              6-hex-digit subfolder
bandwidth     estimated bandwidth per file -> ``{uid: [path, Hz]}`` .json.gz  nothing (only when the release's
                                                                              ``dns5_clean_read_speech.json.gz``
                                                                              is not available)
resample      each file to the smallest standard rate >= 2 x bandwidth       ``soxr`` if installed (as the
              -> ``uid rate path`` scp                                        release), else torchaudio
vad           keep files with >= 20 % speech frames (WebRTC VAD, mode 2)      ``pip install webrtcvad==2.0.10``
dnsmos        keep files with DNSMOS BAK >= 3.0                               DNSMOS scores (a JSON file computed
                                                                              with DNSMOS ``sig_bak_ovr.onnx``;
                                                                              not shipped, see ``dnsmos --help``)
manifest      scp -> ``{"train": {"speech": [...]}}``                         nothing
============  =============================================================  ===================================
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import re
import sys
import tarfile
from collections.abc import Iterable
from functools import partial
from pathlib import Path, PurePosixPath

import numpy as np

from dataprep.common import (
    DataprepError,
    Report,
    add_jobs_arg,
    parallel_map,
    require_file,
    run_builder,
    write_if_changed,
)
from datasets.manifest import pool_entry
from utils.atomic import atomic_path, write_text
from utils.audio import AudioError, audio_info, read_audio

AUDIO_SUFFIXES = (".wav", ".flac")
FILES_PER_DIR = 5000
TARGET_RATES = (8000, 16000, 22050, 24000, 32000, 44100, 48000)
VAD_RATES = {22050: 16000, 24000: 16000, 44100: 48000}  # webrtcvad accepts 8, 16, 32 and 48 kHz only
DATASET_NAME = "librivox_urgent2024"
_HEX6 = re.compile(r"^[0-9a-f]{6}$")


# ----------------------------------------------------------------------------------------------------------------
# extract


def extract_tar(stream, dest: Path, files_per_dir: int = FILES_PER_DIR, report: Report | None = None) -> int:
    """Extract a (possibly compressed) tar stream into ``dest``, putting each audio file into a subfolder named by
    a global counter in 6 lowercase hex digits (``count // files_per_dir``) inserted just above the file.

    Existing files are kept (a re-run resumes), unreadable members and unsafe paths (absolute, ``..``) are skipped
    and reported. Returns the number of audio files seen.
    """
    report = report or Report("librivox extract")
    count = 0
    with tarfile.open(fileobj=stream, mode="r|*") as tar:
        for member in tar:
            if not member.isfile():
                continue
            rel = PurePosixPath(member.name)
            if rel.is_absolute() or ".." in rel.parts:
                report.add("unsafe member paths skipped", member.name)
                continue
            if rel.suffix.lower() in AUDIO_SUFFIXES:
                out = dest / rel.parent / f"{count // files_per_dir:06x}" / rel.name
                count += 1
            else:
                out = dest / rel
            if out.exists():
                continue
            try:
                data = tar.extractfile(member)
                with atomic_path(out) as tmp, open(tmp, "wb") as f:
                    while block := data.read(1 << 20):
                        f.write(block)
            except (tarfile.TarError, OSError) as err:
                report.add("members that could not be read (skipped)", f"{member.name} ({err})")
    return count


# ----------------------------------------------------------------------------------------------------------------
# bandwidth


def estimate_bandwidth(audio: np.ndarray, sample_rate: int, n_fft: int = 4096, hop: int = 2048,
                       threshold_db: float = -50.0) -> float:
    """Effective bandwidth in Hz of a ``(N,)`` signal: the highest frequency bin whose mean power (Hann-windowed
    STFT, ``n_fft``/``hop``) is above the spectrum's peak + ``threshold_db``.

    This is this project's own estimator, used only when the release's bandwidth file is not available; the
    release's file was made by URGENT's estimator (its 93.75 Hz steps suggest ``n_fft`` 512 at 48 kHz), whose
    exact rule may differ. The long FFT keeps the window's leakage past a sharp cut-off to a few 12 Hz bins.
    """
    audio = np.asarray(audio, dtype=np.float64)
    if audio.shape[-1] < n_fft:
        audio = np.pad(audio, (0, n_fft - audio.shape[-1]))
    frames = np.lib.stride_tricks.sliding_window_view(audio, n_fft)[::hop] * np.hanning(n_fft)
    power = np.mean(np.abs(np.fft.rfft(frames, axis=-1)) ** 2, axis=0)
    level = 10.0 * np.log10(power + 1e-20)
    above = np.flatnonzero(level > level.max() + threshold_db)
    return float(above[-1] * sample_rate / n_fft) if len(above) else 0.0


def _bandwidth_of(path: Path) -> float | None:
    try:
        audio, sr = read_audio(path, channel=0)
    except AudioError:
        return None
    return estimate_bandwidth(audio[0], sr)


def unique_uids(paths: Iterable[Path]) -> list[str]:
    """A uid per file: its stem, with ``(2)``, ``(3)``… appended to later files of the same stem (the release's
    file tells its 119197 duplicated base names apart this way)."""
    seen: dict[str, int] = {}
    out = []
    for p in paths:
        seen[p.stem] = seen.get(p.stem, 0) + 1
        out.append(p.stem if seen[p.stem] == 1 else f"{p.stem}({seen[p.stem]})")
    return out


def audio_files(root: Path) -> list[Path]:
    """Sorted audio files under ``root`` (recursive)."""
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())


def _dump_json_gz(path: Path, data: dict) -> None:
    with atomic_path(path) as tmp, gzip.open(tmp, "wt", encoding="utf-8") as f:
        json.dump(data, f)


def _write_lines(path: Path, lines: Iterable[str]) -> int:
    text = [line + "\n" for line in lines]
    write_text(path, "".join(text))
    return len(text)


def step_bandwidth(audio_dir: Path, output: Path, jobs: int, report: Report) -> None:
    """Estimate the bandwidth of every audio file under ``audio_dir`` into ``{uid: [path, Hz]}`` (.json.gz)."""
    paths = audio_files(audio_dir)
    if not paths:
        raise DataprepError(f"no audio file found under {audio_dir}")
    result = {}
    for uid, path, bw in zip(unique_uids(paths), paths, parallel_map(_bandwidth_of, paths, jobs, "bandwidth"),
                             strict=True):
        if bw is None:
            report.add("unreadable files (skipped)", path)
        else:
            result[uid] = [path.as_posix(), bw]
    _dump_json_gz(output, result)
    report.count("files", len(result))


# ----------------------------------------------------------------------------------------------------------------
# resample


def target_rate(bandwidth: float) -> int:
    """Smallest standard rate that is at least twice the bandwidth (48 kHz when none is)."""
    return next((r for r in TARGET_RATES if r >= 2 * bandwidth), TARGET_RATES[-1])


def _normalised_key(path: Path, base: Path) -> str:
    """Path below ``base`` without the 6-hex-digit subfolders (they depend on the tar member order)."""
    rel = path.relative_to(base) if path.is_relative_to(base) else path
    return "/".join(part for part in rel.parts if not _HEX6.match(part))


class SourceLocator:
    """Finds a file of the bandwidth list on disk: at its listed path (the release's ``dns5_fullband/`` prefix
    replaced by the actual folder), else by its path without hex subfolders, else by its unique base name."""

    def __init__(self, dns5_dir: Path) -> None:
        self.dns5_dir = Path(dns5_dir)
        self._by_key: dict[str, Path] | None = None
        self._by_name: dict[str, list[Path]] = {}

    def _index(self) -> None:
        self._by_key = {}
        for p in audio_files(self.dns5_dir / "Track1_Headset"):
            self._by_key[_normalised_key(p, self.dns5_dir)] = p
            self._by_name.setdefault(p.name, []).append(p)

    def find(self, listed: str) -> Path | None:
        parts = PurePosixPath(listed).parts
        candidate = self.dns5_dir.joinpath(*parts[1:]) if parts and parts[0] == "dns5_fullband" else Path(listed)
        if candidate.is_file():
            return candidate
        if self._by_key is None:
            self._index()
        found = self._by_key.get(_normalised_key(candidate, self.dns5_dir))
        if found is None and len(self._by_name.get(candidate.name, [])) == 1:
            found = self._by_name[candidate.name][0]
        return found


def _resample_one(job: tuple[str, Path, int, Path]) -> tuple[str, int, str] | None:
    """Resample one file (``(uid, source, rate, output)``); returns ``(uid, rate, path)`` or None if unreadable."""
    uid, src, rate, out = job
    try:
        info = audio_info(src)
        if info.sample_rate == rate:  # already at its target rate: listed as it is
            return uid, rate, src.as_posix()
        if out.is_file() and audio_info(out).sample_rate == rate:
            return uid, rate, out.as_posix()
        audio, sr = read_audio(src)
    except AudioError:
        return None
    try:
        import soxr  # the release's resampler (default quality)

        resampled = soxr.resample(audio.T, sr, rate).T
    except ImportError:
        from utils.audio import resample

        resampled = resample(audio, sr, rate).numpy()
    write_if_changed(out, np.clip(resampled, -1.0, 1.0), rate)
    return uid, rate, out.as_posix()


def step_resample(bandwidth_file: Path, dns5_dir: Path, out_dir: Path, output: Path, jobs: int,
                  report: Report) -> None:
    """Resample every listed file to its estimated rate; writes ``uid rate path`` lines to ``output``."""
    with gzip.open(require_file(bandwidth_file, "bandwidth estimates"), "rt", encoding="utf-8") as f:
        listed: dict[str, list] = json.load(f)
    width = max(1, math.ceil(math.log(max(len(listed), 1) / FILES_PER_DIR, 16))) if len(listed) > FILES_PER_DIR \
        else 1
    locator = SourceLocator(dns5_dir)
    jobs_list = []
    for index, (uid, (path, bandwidth)) in enumerate(listed.items()):
        src = locator.find(path)
        if src is None:
            report.add("listed files not found on disk (skipped)", path)
            continue
        out = Path(out_dir) / f"{index // FILES_PER_DIR:0{width}x}" / f"{uid}.wav"
        jobs_list.append((uid, src, target_rate(float(bandwidth)), out))
    if not jobs_list:
        raise DataprepError(f"none of the files of {bandwidth_file} was found under {dns5_dir}")
    lines = []
    for job, result in zip(jobs_list, parallel_map(_resample_one, jobs_list, jobs, "resample"), strict=True):
        if result is None:  # the release crashes on these
            report.add("unreadable files (skipped)", job[1])
        else:
            lines.append(f"{result[0]} {result[1]} {result[2]}")
    report.count("files", _write_lines(output, lines))


# ----------------------------------------------------------------------------------------------------------------
# VAD


def read_scp(path: Path) -> list[tuple[str, str]]:
    """``[(uid, path)]`` of an scp file (``uid … path`` per line: first and last fields)."""
    out = []
    for number, line in enumerate(require_file(path, "scp list").read_text(encoding="utf-8").splitlines(), 1):
        fields = line.split()
        if fields:
            if len(fields) < 2:
                raise DataprepError(f"{path}:{number}: expected 'uid ... path', got {line!r}")
            out.append((fields[0], fields[-1]))
    return out


def speech_fraction(audio: np.ndarray, sample_rate: int, mode: int = 2, frame_ms: int = 10) -> float:
    """Fraction of ``frame_ms`` frames of a ``(N,)`` signal that WebRTC VAD marks as speech (no smoothing).

    22.05/24 kHz are resampled to 16 kHz and 44.1 kHz to 48 kHz first (the release uses librosa, here
    torchaudio); the last partial frame is scored on the final ``frame_ms``.

    Raises:
        DataprepError: ``webrtcvad`` is not installed.
    """
    try:
        import webrtcvad
    except ImportError:
        raise DataprepError("the VAD step needs the webrtcvad package: pip install webrtcvad==2.0.10 "
                            "(it builds a small C extension; a compiler is needed)") from None
    if sample_rate in VAD_RATES:
        from utils.audio import resample

        audio, sample_rate = resample(np.asarray(audio, dtype=np.float32), sample_rate,
                                      VAD_RATES[sample_rate]).numpy(), VAD_RATES[sample_rate]
    # The release multiplies by 32768 and casts, which wraps +1.0 around; clipped here.
    pcm = np.clip(np.round(np.asarray(audio) * 32768.0), -32768, 32767).astype("<i2")
    step = sample_rate * frame_ms // 1000
    if len(pcm) < step:
        return 0.0
    starts = list(range(0, len(pcm) - step + 1, step))
    if starts[-1] + step < len(pcm):
        starts.append(len(pcm) - step)
    vad = webrtcvad.Vad(mode)
    return float(np.mean([vad.is_speech(pcm[s: s + step].tobytes(), sample_rate) for s in starts]))


def _vad_one(path: str, mode: int) -> float | None:
    try:
        audio, sr = read_audio(path, channel=0)
    except AudioError:
        return None
    return speech_fraction(audio[0], sr, mode)


def step_vad(input_scp: Path, output: Path, mode: int, threshold: float, jobs: int, report: Report) -> None:
    """Keep the lines of ``input_scp`` whose speech fraction is at least ``threshold``."""
    speech_fraction(np.zeros(160, dtype=np.float32), 16000, mode)  # fail at once if webrtcvad is missing
    lines = require_file(input_scp, "resampled scp").read_text(encoding="utf-8").splitlines()
    entries = read_scp(input_scp)
    fractions = parallel_map(partial(_vad_one, mode=mode), [p for _, p in entries], jobs, "vad")
    kept = []
    for line, (_, path), fraction in zip([ln for ln in lines if ln.split()], entries, fractions, strict=True):
        if fraction is None:
            report.add("unreadable files (dropped)", path)
        elif fraction >= threshold:
            kept.append(line)
    report.count("kept", len(kept))
    report.count("dropped", len(entries) - len(kept))
    _write_lines(output, kept)


# ----------------------------------------------------------------------------------------------------------------
# DNSMOS


def load_scores(path: Path) -> dict[str, dict[str, float]]:
    """DNSMOS scores ``{uid: {"OVRL", "SIG", "BAK", "P808_MOS"}}`` from a .json or .json.gz file.

    Raises:
        DataprepError: the file is absent (with what to do about it).
    """
    path = Path(path)
    if not path.is_file():
        raise DataprepError(
            f"DNSMOS scores not found: {path}. The release's dns5_clean_read_speech_resampled_dnsmos.json.gz is "
            "not published; compute the scores of the resampled files with Microsoft's DNSMOS (sig_bak_ovr.onnx "
            "and model_v8.onnx, about 35 GPU-hours for the whole set) and save them there as "
            "{uid: {\"OVRL\": x, \"SIG\": x, \"BAK\": x, \"P808_MOS\": x}}, or set LIBRIVOX_NO_DNSMOS=1 to build "
            "the manifest from the VAD-filtered list without the BAK >= 3.0 filter")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return json.load(f)


def step_dnsmos(input_scp: Path, scores_file: Path, output: Path, min_bak: float, report: Report) -> None:
    """Keep the uids of ``input_scp`` whose BAK is at least ``min_bak``, in the order of the scores file."""
    scores = load_scores(scores_file)
    lines = {ln.split()[0]: ln for ln in require_file(input_scp, "VAD scp").read_text(encoding="utf-8").splitlines()
             if ln.split()}
    kept = [lines[uid] for uid, s in scores.items() if uid in lines and float(s["BAK"]) >= min_bak]
    report.count("kept", len(kept))
    report.count("without a score (dropped)", sum(uid not in scores for uid in lines))
    _write_lines(output, kept)


# ----------------------------------------------------------------------------------------------------------------
# manifest


def build_manifest(scp: Path, report: Report) -> dict:
    """``{"train": {"speech": [...]}}`` (no valid/test keys, as published) from an scp list."""
    entries = []
    for _, path in read_scp(scp):
        try:
            info = audio_info(path)
        except AudioError:
            report.add("listed files missing or unreadable (skipped)", path)
            continue
        entries.append(pool_entry(path, info.sample_rate, info.num_samples, DATASET_NAME))
    if not entries:
        raise DataprepError(f"no usable file listed in {scp}")
    report.count("utterances", len(entries))
    return {"train": {"speech": entries}}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = parser.add_subparsers(dest="step", required=True)
    p = sub.add_parser("extract", help="extract a tar stream from stdin")
    p.add_argument("--dest", type=Path, required=True)
    p.add_argument("--files_per_dir", type=int, default=FILES_PER_DIR)
    p = sub.add_parser("bandwidth", help="estimate bandwidths (when the release's file is not available)")
    p.add_argument("--audio_dir", type=Path, required=True)
    p.add_argument("--output", type=Path, required=True)
    add_jobs_arg(p)
    p = sub.add_parser("resample", help="resample to the estimated bandwidth")
    p.add_argument("--bandwidth", type=Path, required=True, help="{uid: [path, Hz]} .json.gz")
    p.add_argument("--dns5_dir", type=Path, default=Path("dns5_fullband"))
    p.add_argument("--out_dir", type=Path, required=True)
    p.add_argument("--output", type=Path, required=True, help="scp to write")
    add_jobs_arg(p)
    p = sub.add_parser("vad", help="WebRTC VAD filter (needs webrtcvad)")
    p.add_argument("--input", type=Path, required=True)
    p.add_argument("--output", type=Path, required=True)
    # the release ignores its --vad_mode flag (mode 2 hard-coded); it is honoured here, with the same default
    p.add_argument("--vad_mode", type=int, default=2, choices=range(4), help="aggressiveness (default 2)")
    p.add_argument("--threshold", type=float, default=0.2, help="minimum speech fraction (default 0.2)")
    add_jobs_arg(p)
    p = sub.add_parser("dnsmos", help="DNSMOS BAK filter (needs precomputed scores)")
    p.add_argument("--input", type=Path, required=True)
    p.add_argument("--scores", type=Path, required=True)
    p.add_argument("--output", type=Path, required=True)
    p.add_argument("--min_bak", type=float, default=3.0)
    p = sub.add_parser("manifest", help="write the manifest")
    p.add_argument("--input", type=Path, required=True)
    p.add_argument("--output", type=Path, default=Path("datasets/json_files/librivox_urgent2024.json"))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()

    def _run(args: argparse.Namespace):
        report = Report(f"librivox {args.step}")
        if args.step == "extract":
            report.count("audio files", extract_tar(sys.stdin.buffer, args.dest, args.files_per_dir, report))
        elif args.step == "bandwidth":
            step_bandwidth(args.audio_dir, args.output, args.jobs, report)
        elif args.step == "resample":
            step_resample(args.bandwidth, args.dns5_dir, args.out_dir, args.output, args.jobs, report)
        elif args.step == "vad":
            step_vad(args.input, args.output, args.vad_mode, args.threshold, args.jobs, report)
        elif args.step == "dnsmos":
            step_dnsmos(args.input, args.scores, args.output, args.min_bak, report)
        else:
            return {args.output: build_manifest(args.input, report)}, report
        return {}, report

    return run_builder(_run, parser, argv)


if __name__ == "__main__":
    raise SystemExit(main())
