"""A corpus from your own folders of recordings -> ``<NAME>_pools.json`` and ``<NAME>.json`` (docs/data.md).

Layout read (``--root DIR``)::

    DIR/<prompt>/**/<recording>          one source per file: wav, flac, ogg/oga/opus, mp3, aif/aiff; any sample
                                         rate and channel count; found recursively, in sorted order; hidden files
                                         and folders are ignored
    DIR/_mixtures/{valid,test}/<id>/     optional fixed mixtures: mix.wav and one stem per source beside it,
                                         <prompt>.wav, or <prompt>_<i>.wav (i = 1, 2, ...) for a repeated prompt

Folder names beginning with ``_`` are reserved (``_mixtures``, and ``_generated`` where this builder writes); any other
folder of ``DIR`` is a prompt, whose name must contain neither ``_`` nor a space.

Written into ``--json-dir``:

- ``NAME_pools.json``: ``{"train", "valid", "test"}`` source pools ``{prompt: [entries]}``. The split of a recording
  is decided by the SHA-256 of its bytes (mapped to [0, 1): below ``--test-fraction`` test, below the sum with
  ``--valid-fraction`` valid, else train), so adding recordings never moves another one. Entries point at the files
  as they are (dynamic mixing reads every format above, and a random channel of a multi-channel file); a file whose
  header does not give the number of frames that decode (an mp3 without a Xing/Info frame, for instance) is
  decoded once into a 16-bit WAV copy, ``DIR/_generated/decoded/<prompt>/<path>-<hash>.wav``, which the entry
  points at instead. Skipped, and counted in the summary: unreadable files, files with NaN/Inf samples, files
  shorter than ``--min-seconds``, silent files (peak below -60 dBFS) and duplicates (the same bytes as an earlier
  file in sorted order).
- ``NAME.json``: fixed ``{"valid", "test"}`` mixtures: those of ``DIR/_mixtures/<split>/`` as given; for a split
  without any, ``--mixtures`` mixtures drawn with ``--seed`` from that split's pool, written as
  ``DIR/_generated/<split>/<id>/mix.wav`` and ``<prompt>_1.wav``: 2 to min(4, prompts) distinct prompts, one
  recording each, a ``--mix-seconds`` crop (a random channel of a multi-channel file; a shorter file zero-padded at a
  random offset), resampled to the split's common rate (the rate of all its recordings when they share one, else
  48 kHz), each at unit RMS times a gain uniform in +-2.5 dB, all scaled together so that no sample exceeds 0.9; the
  mix is the sample-exact sum of its 16-bit references. A split whose pool has fewer than 2 prompts gets none.

Usage and input errors (missing root, no prompt folder, a folder name that cannot be a prompt, bad fractions, a
``_mixtures`` item without ``mix.wav`` or with an unknown prompt) exit with status 2 and one ``error:`` line before
anything is written. A re-run on the same files writes byte-identical manifests and rewrites no generated audio.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shlex
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from dataprep.build_demo import to_pcm16, write_pcm16
from dataprep.common import Report, add_jobs_arg, files, parallel_map, subdirs, summary, write_if_changed
from datasets.manifest import STANDARD_PROMPTS, known_prompts, mixture_entry, pool_entry, write_manifest
from utils.audio import audio_info, fix_length, read_audio, resample
from utils.cli import UsageError, run_main

__all__ = ["AUDIO_SUFFIXES", "RESERVED", "split_of", "inspect_file", "build", "main"]

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff")
RESERVED = ("_mixtures", "_generated")  # folders of DIR that are not prompts (any "_" folder is reserved)
SPLITS = ("train", "valid", "test")
MIXTURE_SPLITS = ("valid", "test")
SILENCE_DB = -60.0  # a recording whose peak is below this is silent; a crop whose RMS is below it is redrawn
DEFAULT_RATE = 48000  # rate of the generated mixtures of a split whose recordings do not all share one
GAIN_DB = 2.5  # gains of the generated mixtures' sources: uniform in [-2.5, 2.5] dB around unit RMS
PEAK = 0.9  # generated mixtures and references are scaled together so that no sample exceeds this
CROP_ATTEMPTS = 10  # crops drawn before the loudest one is taken
BLOCK = 65536  # frames decoded at a time when a recording is inspected
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
STEM_PATTERN = re.compile(r"^([^_]+)(?:_([1-9][0-9]*))?$")

SKIP_UNREADABLE = "unreadable or not audio (skipped)"
SKIP_NONFINITE = "with NaN or infinite samples (skipped)"
SKIP_SILENT = f"silent (peak below {SILENCE_DB:g} dBFS, skipped)"
SKIP_DUPLICATE = "duplicates (the same bytes as an earlier file, skipped)"


def _skip_short(min_seconds: float) -> str:
    return f"shorter than {min_seconds:g} s (skipped)"


# ----------------------------------------------------------------------------------------------------------------
# finding the recordings


@dataclass(frozen=True)
class Recording:
    """A file of a prompt folder: ``path`` as found (``DIR/<prompt>/...``), ``rel`` relative to ``DIR``."""

    prompt: str
    path: Path
    rel: str


@dataclass(frozen=True)
class Entry:
    """A recording of a pool (or its decoded copy): what its manifest entry says, and its channel count."""

    prompt: str
    path: Path
    sample_rate: int
    num_samples: int
    channels: int


def _walk(folder: Path) -> list[Path]:
    """The files below ``folder``, recursively, sorted by path; hidden files and folders are skipped (symlinked
    folders are followed, each real folder once)."""
    found, seen = [], set()
    for current, dirs, names in os.walk(folder, followlinks=True):
        real = os.path.realpath(current)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [Path(current) / n for n in names if not n.startswith(".")]
    return sorted(p for p in found if p.is_file())


def check_prompt_name(folder: Path) -> str:
    """The prompt of a folder of ``DIR``, or a :class:`UsageError` naming the folder when it cannot be one."""
    name = folder.name
    if "_" in name or any(c.isspace() for c in name) or name.startswith("-"):
        better = re.sub(r"[_\s]+", "", name).lstrip("-") or "piano"
        raise UsageError(f"folder {folder} cannot be a prompt: a prompt name has no '_', no space and no leading "
                         f"'-' (rename the folder, e.g. to {better!r}; folders beginning with '_' are reserved)")
    return name


def scan_prompts(root: Path, report: Report) -> tuple[list[str], list[Recording]]:
    """Prompt folders of ``root`` (sorted) and their audio files (sorted by path); other files are reported."""
    if not root.exists():
        raise UsageError(f"root folder not found: {root}")
    if not root.is_dir():
        raise UsageError(f"root {root} is not a folder")
    prompts: list[str] = []
    for folder in subdirs(root):
        if folder.name.startswith("_"):
            if folder.name not in RESERVED:
                report.add("reserved folders ignored (names beginning with '_')", folder.name)
            continue
        prompts.append(check_prompt_name(folder))
    if not prompts:
        raise UsageError(f"no prompt folder in {root}: put each source's recordings in a folder named after its "
                         f"prompt, e.g. {root / 'piano' / 'take1.wav'}")
    for stray in files(root):
        report.add("files outside the prompt folders (ignored)", stray.name)
    recordings = []
    for prompt in prompts:
        for path in _walk(root / prompt):
            rel = path.relative_to(root).as_posix()
            if path.suffix.lower() in AUDIO_SUFFIXES:
                recordings.append(Recording(prompt, path, rel))
            else:
                report.add(f"files ignored (not {'/'.join(s.lstrip('.') for s in AUDIO_SUFFIXES)})", rel)
    return prompts, recordings


def scan_given_mixtures(root: Path, prompts: Sequence[str], name: str, report: Report) -> dict[str, dict]:
    """The fixed mixtures of ``root/_mixtures/{valid,test}/<id>/`` as ``{split: {id: mixture entry}}`` (a split
    with no item is left out).

    Raises:
        UsageError: another folder than valid/test, an item without ``mix.wav`` or without a stem, a stem whose name
            is not ``<prompt>[_<i>]`` of a prompt folder, or whose rate or length differs from ``mix.wav``.
    """
    base = root / "_mixtures"
    if not base.is_dir():
        return {}
    for folder in subdirs(base):
        if folder.name not in MIXTURE_SPLITS:
            raise UsageError(f"{folder}: _mixtures holds only valid/ and test/ folders")
    for stray in files(base):
        report.add("files in _mixtures ignored", stray.relative_to(root).as_posix())
    given: dict[str, dict] = {}
    for split in MIXTURE_SPLITS:
        if not (base / split).is_dir():
            continue
        for stray in files(base / split):
            report.add("files in _mixtures ignored", stray.relative_to(root).as_posix())
        items = {item.name: given_mixture(item, prompts, name, root, report) for item in subdirs(base / split)}
        if items:
            given[split] = items
    return given


def given_mixture(item: Path, prompts: Sequence[str], name: str, root: Path, report: Report) -> dict:
    """The mixture entry of one ``_mixtures/<split>/<id>/`` folder (see :func:`scan_given_mixtures`)."""
    mix = item / "mix.wav"
    if not mix.is_file():
        raise UsageError(f"{item} has no mix.wav (a fixed mixture is <id>/mix.wav with one <prompt>.wav, or "
                         "<prompt>_<i>.wav for a repeated prompt, per source)")
    info = audio_info(mix)
    stems = []
    for path in files(item):
        if path.name == "mix.wav":
            continue
        if path.suffix.lower() not in AUDIO_SUFFIXES:
            report.add("files in _mixtures ignored", path.relative_to(root).as_posix())
            continue
        match = STEM_PATTERN.match(path.stem)
        if match is None:
            raise UsageError(f"{path}: a stem is named <prompt>.wav, or <prompt>_<i>.wav (i = 1, 2, ...) for a "
                             "repeated prompt")
        prompt = match.group(1)
        if prompt not in prompts:
            raise UsageError(f"{path}: {prompt!r} is not a prompt folder of {root} (prompts: {', '.join(prompts)})")
        stem = audio_info(path)
        if (stem.sample_rate, stem.num_samples) != (info.sample_rate, info.num_samples):
            raise UsageError(f"{path} has {stem.sample_rate} Hz and {stem.num_samples} samples but {mix} has "
                             f"{info.sample_rate} Hz and {info.num_samples}: the stems of a mixture must have the "
                             "rate and length of its mix.wav")
        stems.append((prompts.index(prompt), int(match.group(2) or 0), path.name, prompt, path))
    if not stems:
        raise UsageError(f"{item} has a mix.wav but no stem (<prompt>.wav or <prompt>_<i>.wav)")
    counts: Counter[str] = Counter()
    refs = {}
    for *_, prompt, path in sorted(stems):
        counts[prompt] += 1
        refs[f"{prompt}_{counts[prompt]}"] = path
    return mixture_entry(refs, info.sample_rate, info.num_samples, name, mix=mix)


# ----------------------------------------------------------------------------------------------------------------
# inspecting the recordings


@dataclass(frozen=True)
class Inspection:
    """What one file holds: the SHA-256 of its bytes, and either the problem that rules it out or its audio facts
    (``frames`` is what decodes, ``header_frames`` what the header says)."""

    digest: str
    problem: str = ""
    sample_rate: int = 0
    header_frames: int = 0
    frames: int = 0
    channels: int = 0
    peak: float = 0.0


def inspect_file(path: Path) -> Inspection:
    """Hash ``path`` and decode it block by block (peak, frames that decode, finiteness)."""
    try:
        with open(path, "rb") as fh:
            digest = hashlib.file_digest(fh, "sha256").hexdigest()
    except OSError:
        return Inspection("", SKIP_UNREADABLE)
    try:
        with sf.SoundFile(str(path)) as f:
            sample_rate, header_frames, channels = int(f.samplerate), int(f.frames), int(f.channels)
            frames, peak = 0, 0.0
            while True:
                block = f.read(BLOCK, dtype="float32", always_2d=True)
                if not len(block):
                    break
                if not np.isfinite(block).all():
                    return Inspection(digest, SKIP_NONFINITE)
                peak = max(peak, float(np.abs(block).max()))
                frames += len(block)
    except (RuntimeError, ValueError, TypeError, OSError):  # soundfile's errors are RuntimeErrors
        return Inspection(digest, SKIP_UNREADABLE)
    return Inspection(digest, "", sample_rate, header_frames, frames, channels, peak)


def split_of(digest: str, valid_fraction: float, test_fraction: float) -> str:
    """The split of a recording whose bytes have this SHA-256: the first 64 bits as a number in [0, 1), below
    ``test_fraction`` test, below ``test_fraction + valid_fraction`` valid, else train."""
    u = int(digest[:16], 16) / 2.0 ** 64
    return "test" if u < test_fraction else "valid" if u < test_fraction + valid_fraction else "train"


def decoded_copy_path(root: Path, recording: Recording, digest: str) -> Path:
    """Where the WAV copy of a recording whose header's frame count is not exact goes (named by its content, so a
    changed file gets a new copy)."""
    inner = Path(recording.rel).relative_to(recording.prompt)
    return root / "_generated" / "decoded" / recording.prompt / inner.parent / f"{inner.stem}-{digest[:10]}.wav"


def write_decoded_copy(job: tuple[Path, Path]) -> tuple[int, int, int]:
    """Decode ``job[0]`` and write it (channels kept, 16-bit) to ``job[1]`` unless done: ``(rate, frames,
    channels)``."""
    src, dst = job
    audio, sample_rate = read_audio(src)
    write_if_changed(dst, np.clip(audio, -1.0, 32767 / 32768), sample_rate)
    return sample_rate, audio.shape[-1], audio.shape[0]


# ----------------------------------------------------------------------------------------------------------------
# generated mixtures


def _plural(n: int, word: str, words: str | None = None) -> str:
    return f"{n} {word if n == 1 else words or word + 's'}"


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def crop(entry: Entry, seconds: float, rng: np.random.Generator) -> np.ndarray:
    """A ``seconds`` crop of one channel of ``entry`` at its own rate, as dynamic mixing draws them: a random start
    and channel, a shorter file zero-padded at a random offset; a crop quieter than -60 dBFS RMS is redrawn (the
    loudest of 10, or else the window around the file's peak)."""
    length = max(1, round(seconds * entry.sample_rate))
    best, best_rms = np.zeros(length, dtype=np.float32), 0.0
    for _ in range(CROP_ATTEMPTS):
        start = int(rng.integers(0, entry.num_samples - length + 1)) if entry.num_samples > length else 0
        audio, _ = read_audio(entry.path, start=start, num_samples=length)
        wave = audio[int(rng.integers(audio.shape[0]))] if audio.shape[0] > 1 else audio[0]
        if wave.shape[0] < length:
            offset = int(rng.integers(0, length - wave.shape[0] + 1))
            wave = np.pad(wave, (offset, length - wave.shape[0] - offset))
        level = _rms(wave)
        if level >= 10 ** (SILENCE_DB / 20):
            return wave
        if level > best_rms:
            best, best_rms = wave, level
    if best_rms > 0:
        return best
    audio, _ = read_audio(entry.path)  # every crop was silent: the window around the loudest sample
    channel, centre = np.unravel_index(int(np.argmax(np.abs(audio))), audio.shape)
    start = int(min(max(centre - length // 2, 0), max(audio.shape[-1] - length, 0)))
    wave = audio[channel, start:start + length]
    return np.pad(wave, (0, length - wave.shape[0]))


def draw_mixture(pool: dict[str, list[Entry]], rate: int, seconds: float,
                 rng: np.random.Generator) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """One generated mixture of a split's pool: ``({"<prompt>_1": int16 reference}, int16 mix)``; the mix is the
    exact sum of the references."""
    prompts = [p for p, entries in pool.items() if entries]
    count = int(rng.integers(2, min(4, len(prompts)) + 1))
    chosen = sorted(int(j) for j in rng.choice(len(prompts), size=count, replace=False))
    n = max(1, round(seconds * rate))
    refs: dict[str, np.ndarray] = {}
    for j in chosen:
        entries = pool[prompts[j]]
        entry = entries[int(rng.integers(len(entries)))]
        wave = crop(entry, seconds, rng)
        x = fix_length(resample(torch.from_numpy(wave), entry.sample_rate, rate), n).double().numpy()
        gain = 10 ** (float(rng.uniform(-GAIN_DB, GAIN_DB)) / 20)
        key = f"{prompts[j]}_1"
        refs[key] = x * (gain / max(_rms(x), 1e-12))
    total = np.sum(list(refs.values()), axis=0)
    peak = max(float(np.abs(total).max()), *(float(np.abs(x).max()) for x in refs.values()))
    scale = PEAK / peak if peak > PEAK else 1.0
    ints = {k: to_pcm16(x * scale) for k, x in refs.items()}
    mix = np.sum([v.astype(np.int32) for v in ints.values()], axis=0)  # |mix| <= 0.9 * 32768 + 2: no clipping
    return ints, mix.astype(np.int16)


def write_pcm16_if_changed(path: Path, data: np.ndarray, rate: int) -> bool:
    """Write mono int16 ``data`` as a 16-bit WAV unless ``path`` holds exactly these samples; True when written.

    (:func:`dataprep.common.write_if_changed` compares rate, length and channels only: a generated mixture whose
    draw changed, after recordings were added, keeps both.)
    """
    if path.is_file():
        try:
            with sf.SoundFile(str(path)) as f:
                if (f.samplerate, f.channels, f.frames, f.subtype) == (rate, 1, len(data), "PCM_16") and \
                        np.array_equal(f.read(dtype="int16"), data):
                    return False
        except (RuntimeError, ValueError, OSError):
            pass
    write_pcm16(path, data, rate)
    return True


# ----------------------------------------------------------------------------------------------------------------
# the build


@dataclass
class Settings:
    root: Path
    name: str
    json_dir: Path = Path("datasets/json_files")
    valid_fraction: float = 0.1
    test_fraction: float = 0.1
    seed: int = 0
    min_seconds: float = 0.5
    mixtures: int = 20
    mix_seconds: float = 4.0
    jobs: int = 1


def check_settings(s: Settings) -> None:
    """Raise :class:`UsageError` for a value the build cannot use."""
    if not NAME_PATTERN.match(s.name):
        raise UsageError(f"--name {s.name!r}: use letters, digits, '.', '_' or '-' (it names the manifests)")
    for flag, value in (("--valid-fraction", s.valid_fraction), ("--test-fraction", s.test_fraction)):
        if not 0.0 <= value < 1.0:
            raise UsageError(f"{flag} {value:g} must be in [0, 1)")
    if s.valid_fraction + s.test_fraction >= 1.0:
        raise UsageError(f"--valid-fraction {s.valid_fraction:g} and --test-fraction {s.test_fraction:g} sum to "
                         f"{s.valid_fraction + s.test_fraction:g}: they must leave some recordings to train")
    if s.min_seconds < 0:
        raise UsageError(f"--min-seconds {s.min_seconds:g} must be >= 0")
    if s.mixtures < 0:
        raise UsageError(f"--mixtures {s.mixtures} must be >= 0")
    if not s.mix_seconds > 0:
        raise UsageError(f"--mix-seconds {s.mix_seconds:g} must be > 0")
    if s.jobs < 1:
        raise UsageError(f"--jobs {s.jobs} must be >= 1")


def outputs(s: Settings) -> tuple[Path, Path]:
    """``(pools manifest, mixtures manifest)``."""
    return s.json_dir / f"{s.name}_pools.json", s.json_dir / f"{s.name}.json"


def refuse_foreign_manifest(path: Path, name: str) -> None:
    """Raise :class:`UsageError` when ``path`` exists and holds entries of another ``dataset_name`` (another
    corpus's manifest that ``--name`` would overwrite)."""
    if not path.is_file():
        return
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        names = {e.get("dataset_name") for split in data.values() for v in split.values()
                 for e in (v if isinstance(v, list) else [v])}
    except (ValueError, AttributeError, TypeError, OSError):
        names = {None}
    if names - {name}:
        raise UsageError(f"{path} exists and is not a manifest of --name {name} (it would be overwritten): choose "
                         "another --name or --json-dir, or delete the file")


def collect_pools(s: Settings, recordings: Sequence[Recording], report: Report
                  ) -> tuple[dict[str, dict[str, list[Recording]]], dict[Recording, Inspection], list[Recording]]:
    """Inspect every recording (in parallel) and sort it into its split, or into the report's skip counts.

    Returns ``(pools {split: {prompt: [recordings]}}, inspections, recordings needing a decoded copy)``."""
    found = parallel_map(inspect_file, [r.path for r in recordings], s.jobs, f"[{s.name}] inspect")
    inspections = dict(zip(recordings, found, strict=True))
    pools: dict[str, dict[str, list[Recording]]] = {split: {} for split in SPLITS}
    first: dict[str, str] = {}
    copies = []
    for rec in recordings:
        info = inspections[rec]
        if info.digest and info.digest in first:
            report.add(SKIP_DUPLICATE, f"{rec.rel} (= {first[info.digest]})")
            continue
        if info.digest:
            first[info.digest] = rec.rel
        if info.problem:
            report.add(info.problem, rec.rel)
        elif info.frames < s.min_seconds * info.sample_rate or info.frames == 0:
            report.add(_skip_short(s.min_seconds), f"{rec.rel} ({info.frames / max(info.sample_rate, 1):.2f} s)")
        elif info.peak < 10 ** (SILENCE_DB / 20):
            report.add(SKIP_SILENT, rec.rel)
        else:
            pools[split_of(info.digest, s.valid_fraction, s.test_fraction)].setdefault(rec.prompt, []).append(rec)
            if info.frames != info.header_frames:
                copies.append(rec)
    return pools, inspections, copies


def generate_mixtures(s: Settings, split: str, pool: dict[str, list[Entry]],
                      log: Callable[[str], None]) -> tuple[dict[str, dict], int]:
    """``--mixtures`` generated mixtures of one split (written under ``DIR/_generated/<split>/``): ``({id: mixture
    entry}, audio files written)``."""
    rates = {e.sample_rate for entries in pool.values() for e in entries}
    rate = rates.pop() if len(rates) == 1 else DEFAULT_RATE
    items, written = {}, 0
    for i in range(s.mixtures):
        rng = np.random.default_rng([s.seed, SPLITS.index(split), i])
        refs, mix = draw_mixture(pool, rate, s.mix_seconds, rng)
        item_id = f"{split}-{i:03d}"
        folder = s.root / "_generated" / split / item_id
        paths = {}
        for key, data in (("mix", mix), *refs.items()):
            paths[key] = folder / f"{key}.wav"
            written += write_pcm16_if_changed(paths[key], data, rate)
        items[item_id] = mixture_entry({k: paths[k] for k in refs}, rate, len(mix), s.name, mix=paths["mix"])
    log(f"[{s.name}] {split}: {_plural(len(items), 'mixture')} generated at {rate} Hz, {s.mix_seconds:g} s each, "
        f"in {s.root / '_generated' / split}")
    return items, written


def build(s: Settings, log: Callable[[str], None] = print) -> dict[Path, dict]:
    """Scan, inspect, write the generated audio and both manifests; returns ``{manifest path: data}``.

    Raises:
        UsageError: see the module docstring (raised before anything is written).
    """
    check_settings(s)
    report = Report(s.name)
    prompts, recordings = scan_prompts(s.root, report)
    given = scan_given_mixtures(s.root, prompts, s.name, report)
    pools_path, mixtures_path = outputs(s)
    for path in (pools_path, mixtures_path):
        refuse_foreign_manifest(path, s.name)
    pools, inspections, copies = collect_pools(s, recordings, report)
    if not any(pools[split] for split in SPLITS):
        skipped = [f"{report.num(what)} {what}" for what in report.groups if what.endswith("skipped)")]
        raise UsageError(f"no usable recording under {s.root}: {len(recordings)} audio file(s) found"
                         + (f", {'; '.join(skipped)}" if skipped else ""))

    # from here on, files are written
    copied = dict(zip(copies, parallel_map(write_decoded_copy, [
        (rec.path, decoded_copy_path(s.root, rec, inspections[rec].digest)) for rec in copies], s.jobs,
        f"[{s.name}] decode"), strict=True))
    for rec in copies:
        report.add("recordings decoded to a WAV copy (their header's frame count is not what decodes)", rec.rel)
    entries: dict[str, dict[str, list[Entry]]] = {split: {} for split in SPLITS}
    for split in SPLITS:
        for prompt in prompts:
            for rec in pools[split].get(prompt, []):
                info = inspections[rec]
                if rec in copied:
                    rate, frames, channels = copied[rec]
                    entry = Entry(prompt, decoded_copy_path(s.root, rec, info.digest), rate, frames, channels)
                else:
                    entry = Entry(prompt, rec.path, info.sample_rate, info.header_frames, info.channels)
                entries[split].setdefault(prompt, []).append(entry)
    report.count("prompts", len(prompts))
    report.count("audio files", len(recordings))
    report.count("used", sum(len(v) for split in entries.values() for v in split.values()))
    report.count("skipped", sum(len(items) for what, items in report.groups.items() if what.endswith("skipped)")))
    text = report.format()
    if text:
        log(text)
    log(pool_table(s.name, entries))

    mixtures: dict[str, dict] = {}
    written = generated = 0
    for split in MIXTURE_SPLITS:
        if split in given:
            mixtures[split] = given[split]
            log(f"[{s.name}] {split}: {_plural(len(given[split]), 'mixture')} as given in "
                f"{s.root / '_mixtures' / split}")
        elif sum(1 for v in entries[split].values() if v) < 2:
            mixtures[split] = {}
            log(f"[{s.name}] {split}: no mixtures (its pool has recordings of fewer than 2 prompts; add recordings, "
                f"raise --{split}-fraction, or give {s.root / '_mixtures' / split}/<id>/)")
        else:
            mixtures[split], n = generate_mixtures(s, split, entries[split], log)
            written += n
            generated += sum(1 + len(e["ref"]) for e in mixtures[split].values())
    if copies:
        log(f"[{s.name}] {_plural(len(copies), 'decoded WAV copy', 'decoded WAV copies')} up to date in "
            f"{s.root / '_generated' / 'decoded'}")
    if generated:
        log(f"[{s.name}] {written} of {generated} generated mixture files written"
            + (" (the others already held the same audio)" if written < generated else ""))

    pools_data = {split: {p: [pool_entry(e.path, e.sample_rate, e.num_samples, s.name) for e in v]
                          for p, v in entries[split].items()} for split in SPLITS}
    data = {pools_path: pools_data, mixtures_path: mixtures}
    accepted = known_prompts(prompts)
    for path, manifest in data.items():
        write_manifest(path, manifest, prompts=accepted)
        log(f"[{s.name}] wrote {path} ({summary(manifest)})")
    extra = [p for p in prompts if p not in STANDARD_PROMPTS]
    command = ["python", "-m", "datasets.manifest", "check", str(pools_path), str(mixtures_path),
               *(["--prompts", *extra] if extra else [])]  # --prompts last: it takes every name that follows
    log(f"[{s.name}] check them with: {shlex.join(command)}")
    return data


def pool_table(name: str, entries: dict[str, dict[str, list[Entry]]]) -> str:
    """Files and hours per split and prompt."""
    lines = [f"[{name}] {'split':<6} {'prompt':<12} {'files':>6} {'hours':>8}"]
    for split, per_prompt in entries.items():
        if not per_prompt:
            lines.append(f"[{name}] {split:<6} {'(none)':<12} {0:>6} {0:>8.3f}")
        for prompt, items in per_prompt.items():
            hours = sum(e.num_samples / e.sample_rate for e in items) / 3600
            lines.append(f"[{name}] {split:<6} {prompt:<12} {len(items):>6} {hours:>8.3f}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------------
# command line


def parse_args(argv: Sequence[str] | None) -> Settings:
    parser = argparse.ArgumentParser(
        prog="python -m dataprep.build_folders",
        description="Build source pools and fixed valid/test mixtures from folders of your own recordings: "
                    "DIR/<prompt>/**/*.{wav,flac,ogg,mp3,...}, one source per file, and optionally "
                    "DIR/_mixtures/{valid,test}/<id>/mix.wav with one <prompt>.wav (or <prompt>_<i>.wav) per "
                    "source. See docs/data.md.")
    parser.add_argument("--root", type=Path, required=True,
                        help="folder holding one sub-folder per prompt (a path relative to the current directory "
                             "gives relative paths in the manifests)")
    parser.add_argument("--name", required=True,
                        help="corpus name: writes NAME_pools.json and NAME.json, and is every entry's dataset_name")
    parser.add_argument("--json-dir", type=Path, default=Path("datasets/json_files"),
                        help="where the manifests go (default: datasets/json_files)")
    parser.add_argument("--valid-fraction", type=float, default=0.1,
                        help="share of the recordings in the valid pool, by a hash of each file's bytes (default 0.1)")
    parser.add_argument("--test-fraction", type=float, default=0.1,
                        help="share of the recordings in the test pool (default 0.1); both fractions in [0, 1), "
                             "summing to less than 1")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated mixtures (default 0)")
    parser.add_argument("--min-seconds", type=float, default=0.5,
                        help="recordings shorter than this are skipped (default 0.5)")
    parser.add_argument("--mixtures", type=int, default=20,
                        help="mixtures generated for valid and for test when DIR/_mixtures/<split>/ gives none "
                             "(default 20)")
    parser.add_argument("--mix-seconds", type=float, default=4.0,
                        help="length of the generated mixtures in seconds (default 4)")
    add_jobs_arg(parser)
    args = parser.parse_args(argv)
    return Settings(args.root, args.name, args.json_dir, args.valid_fraction, args.test_fraction, args.seed,
                    args.min_seconds, args.mixtures, args.mix_seconds, args.jobs)


def main(argv: Sequence[str] | None = None) -> int:
    """Exit status 0 when both manifests were written, 2 for a usage or input error (nothing written), 1 for a
    failure while writing."""
    settings = parse_args(argv)

    def run() -> int:
        build(settings)
        return 0

    return run_main(run)


if __name__ == "__main__":
    sys.exit(main())
