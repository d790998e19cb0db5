"""Offline demo corpus (docs/corpora.md §16): synthetic speech, sound effects from Debian packages and procedurally
composed music, with source pools and fixed validation/test mixtures for the five tasks (CASS, MSS, SS, USS, SE).

Run through ``bash dataprep/prepare_demo.sh [--small] [--seed N] [--out demo]`` (which checks the apt packages), or
step by step::

    python -m dataprep.build_demo --out demo --step all [--small] [--seed 0] [--json-dir datasets/json_files]

Steps (the first five write ``<out>/<step>/index.json`` last, and are skipped when that file exists):

- ``speech``: sentences from word lists read by flite and espeak-ng voices; speakers disjoint across splits;
  16 kHz mono.
- ``sfx``: clips of sound themes and game data, decoded with soundfile, silent/very short/very long ones skipped,
  duplicates removed, split by clip; 48 kHz mono.
- ``music``: songs composed at random (tempo, key, progression, grooves, programs), each stem (drums, bass, vocals,
  other) rendered alone with FluidSynth; ``musicbg`` is the sample-exact sum of the four stem files; 48 kHz mono.
- ``sfxbg``: 8 s backgrounds: coloured, slowly modulated noise plus a few sfx clips of the same split; 48 kHz.
- ``mixtures``: fixed validation/test mixtures per task; each ``mix`` file is the sample-exact sum of its refs.
- ``manifests``: ``<json-dir>/demo_pools.json`` (shape A: train/valid/test pools of the eight prompts) and
  ``demo_{cass,mss,ss,uss,se}.json`` (shape B);
- ``example``: a 6 s CASS example mixture (test speaker, sfx background and song) written to ``--example``.

Everything is 16-bit PCM WAV, loudness-normalised (RMS over active 20 ms frames), and depends only on ``--seed``
(and on the package versions): the same seed gives the same files, byte for byte.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from dataprep.demo_music import PPQ, STEMS, compose_song, midi_bytes, render_midi
from dataprep.demo_speech import make_sentences, speakers_for, synthesize
from datasets.manifest import ManifestError, mixture_entry, pool_entry, write_manifest
from utils.atomic import atomic_path, write_text
from utils.audio import resample

__all__ = ["SFX_SOURCES", "Plan", "plan_for", "build", "main", "active_rms", "normalize", "SPEECH_RATE", "RATE"]

RATE = 48000  # sfx, sfxbg, music and every 48 kHz mixture
SPEECH_RATE = 16000  # speech pool and the SS mixtures
STEPS = ("speech", "sfx", "music", "sfxbg", "mixtures", "manifests", "example")
SPLITS = ("train", "valid", "test")
TASKS = {  # task -> (dataset_name, sample rate, prompts of the references in order; "sfx*" = 2-4 sfx)
    "cass": ("demo_cass", RATE, ("speech", "sfxbg", "musicbg")),
    "mss": ("demo_mss", RATE, ("drums", "bass", "vocals", "other")),
    "ss": ("demo_ss", SPEECH_RATE, ("speech", "speech")),
    "uss": ("demo_uss", RATE, ("sfx*",)),
    "se": ("demo_se", RATE, ("speech", "sfxbg")),
}
DEFAULT_SOUNDFONT = Path("/usr/share/sounds/sf2/TimGM6mb.sf2")
FORMAT_VERSION = 1


@dataclass(frozen=True)
class SfxSource:
    """Sound effects of one Debian package: files under ``root`` matching ``patterns``, minus ``exclude`` (file
    stems that are speech or music rather than sound effects)."""

    package: str
    root: Path
    patterns: tuple[str, ...]
    exclude: tuple[str, ...] = ()
    small: bool = False


SFX_SOURCES: tuple[SfxSource, ...] = (
    SfxSource("sound-theme-freedesktop", Path("/usr/share/sounds/freedesktop/stereo"), ("*.oga", "*.ogg", "*.wav"),
              exclude=("audio-channel-*",), small=True),
    SfxSource("sound-icons", Path("/usr/share/sounds/sound-icons"), ("*.wav",)),
    SfxSource("lbreakout2-data", Path("/usr/share/games/lbreakout2"), ("sounds/*.wav", "gui_theme/*.wav"),
              exclude=("dammit", "damn", "excellent", "verygood", "wontgiveup")),
    SfxSource("mirrormagic-data", Path("/usr/share/games/mirrormagic/sounds"), ("*/*.wav",),
              exclude=("halloffame",)),
)


@dataclass(frozen=True)
class Plan:
    """Sizes of a build (``--small`` or full)."""

    utterances: dict[str, int]  # per speaker, by split
    songs: dict[str, int]
    bars: int
    beds: dict[str, int]
    bed_seconds: float
    mixtures: dict[str, int]  # per task, by split (train: none)
    mixture_seconds: float


def plan_for(small: bool) -> Plan:
    """The sizes of the ``--small`` (CI) or the full build."""
    if small:
        return Plan({"train": 3, "valid": 2, "test": 3}, {"train": 2, "valid": 1, "test": 1}, 4,
                    {"train": 2, "valid": 1, "test": 1}, 4.0, {"valid": 1, "test": 2}, 3.0)
    return Plan({"train": 40, "valid": 20, "test": 24}, {"train": 24, "valid": 4, "test": 8}, 8,
                {"train": 40, "valid": 8, "test": 16}, 8.0, {"valid": 6, "test": 30}, 4.0)


# ----------------------------------------------------------------------------------------------------------------
# audio helpers


def active_rms(x: np.ndarray, sample_rate: int, frame_seconds: float = 0.02, floor_db: float = -40.0) -> float:
    """RMS of ``x`` (1-D) over its 20 ms frames within ``floor_db`` of the loudest frame (0.0 for silence)."""
    n = max(1, round(frame_seconds * sample_rate))
    frames = np.pad(x, (0, -len(x) % n)).reshape(-1, n)
    power = np.mean(frames.astype(np.float64) ** 2, axis=1)
    if power.max() <= 0:
        return 0.0
    return float(np.sqrt(np.mean(power[power >= power.max() * 10 ** (floor_db / 10)])))


def normalize(x: np.ndarray, sample_rate: int, target_db: float, peak: float = 0.95) -> np.ndarray:
    """Scale ``x`` to an active RMS of ``target_db`` dBFS, then down so that its peak is at most ``peak``."""
    rms = active_rms(x, sample_rate)
    if rms <= 0:
        return x
    y = x * (10 ** (target_db / 20) / rms)
    top = np.max(np.abs(y))
    return y * (peak / top) if top > peak else y


def trim_silence(x: np.ndarray, sample_rate: int, threshold_db: float = -45.0, margin: float = 0.05) -> np.ndarray:
    """Cut leading and trailing samples quieter than ``threshold_db`` below the peak, keeping ``margin`` seconds."""
    top = np.max(np.abs(x)) if len(x) else 0.0
    if top <= 0:
        return x[:0]
    loud = np.flatnonzero(np.abs(x) >= top * 10 ** (threshold_db / 20))
    pad = round(margin * sample_rate)
    return x[max(0, loud[0] - pad): loud[-1] + 1 + pad]


def to_pcm16(x: np.ndarray) -> np.ndarray:
    """Float audio in [-1, 1) to int16 (``round(x * 32768)``, clipped), the inverse of soundfile's int16 reading."""
    return np.clip(np.round(np.asarray(x, dtype=np.float64) * 32768.0), -32768, 32767).astype(np.int16)


def write_pcm16(path: Path, samples: np.ndarray, sample_rate: int) -> tuple[int, int]:
    """Write int16 (or float, quantised) mono samples as a 16-bit WAV atomically; returns ``(rate, length)``."""
    data = samples if samples.dtype == np.int16 else to_pcm16(samples)
    with atomic_path(path, suffix=".wav") as tmp:
        sf.write(str(tmp), data, int(sample_rate), subtype="PCM_16", format="WAV")
    return int(sample_rate), len(data)


def read_mono(path: Path) -> tuple[np.ndarray, int]:
    """Decode any soundfile-readable file as float64 mono (channels averaged)."""
    data, sr = sf.read(str(path), dtype="float64", always_2d=True)
    return data.mean(axis=1), int(sr)


def resample_np(x: np.ndarray, orig: int, new: int) -> np.ndarray:
    """Resample 1-D float audio (torchaudio's windowed sinc through ``utils.audio.resample``)."""
    if orig == new:
        return x
    return resample(np.ascontiguousarray(x, dtype=np.float32), orig, new).double().numpy()


def _sum_pcm16(parts: Iterable[np.ndarray]) -> np.ndarray:
    """Sample-exact sum of int16 signals as int16 (so reading the sum equals the sum of the readings)."""
    total = np.sum([p.astype(np.int32) for p in parts], axis=0)
    if np.abs(total).max(initial=0) > 32767:
        raise RuntimeError("sum of sources clips at 16 bits (the gains should leave head-room)")
    return total.astype(np.int16)


def _json_write(path: Path, data: Any, indent: int | None = 1) -> None:
    write_text(path, json.dumps(data, indent=indent) + "\n")


def _json_read(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _rng(seed: int, *keys: int) -> np.random.Generator:
    """An independent generator per step and item, so each step (and item) depends on the seed alone."""
    return np.random.default_rng([seed, *keys])


def _thread_map(fn: Callable, items: list, jobs: int) -> list:
    if jobs <= 1 or len(items) <= 1:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(jobs) as pool:
        return list(pool.map(fn, items))


class DemoError(RuntimeError):
    """A demo build that cannot go on (missing tool or package, inconsistent folder); the message says what to do."""


# ----------------------------------------------------------------------------------------------------------------
# steps


@dataclass
class Context:
    out: Path
    seed: int
    small: bool
    plan: Plan
    jobs: int
    soundfont: Path

    def index(self, step: str) -> Path:
        return self.out / step / "index.json"

    def load(self, step: str) -> dict:
        path = self.index(step)
        if not path.is_file():
            raise DemoError(f"{path} not found: run the {step!r} step first (--step {step})")
        return _json_read(path)


def step_speech(ctx: Context) -> dict:
    """Synthesise every utterance (16 kHz, trimmed, -24 dBFS active RMS)."""
    speakers = speakers_for(ctx.small)
    for engine in {s.engine for s in speakers}:
        if shutil.which(engine) is None:
            raise DemoError(f"{engine} not found (apt-get install {engine})")
    counts = [ctx.plan.utterances[s.split] for s in speakers]
    sentences = make_sentences(_rng(ctx.seed, 1), sum(counts))
    jobs, k = [], 0
    for speaker, count in zip(speakers, counts, strict=True):
        for i in range(count):
            rel = Path("speech") / speaker.split / speaker.name / f"{speaker.name}-{i:03d}.wav"
            jobs.append((speaker, sentences[k], rel))
            k += 1
    raw_dir = ctx.out / "speech" / ".raw"

    def one(job: tuple) -> dict:
        speaker, text, rel = job
        raw = synthesize(speaker, text, raw_dir / f"{rel.stem}.wav")
        x, sr = read_mono(raw)
        x = normalize(trim_silence(resample_np(x, sr, SPEECH_RATE), SPEECH_RATE), SPEECH_RATE, -24.0)
        rate, n = write_pcm16(ctx.out / rel, x, SPEECH_RATE)
        raw.unlink()
        return {"path": rel.as_posix(), "split": speaker.split, "speaker": speaker.name, "sample_rate": rate,
                "num_samples": n, "text": text}

    utterances = _thread_map(one, jobs, ctx.jobs)
    shutil.rmtree(raw_dir, ignore_errors=True)
    return {"speakers": {s.name: {"engine": s.engine, "voice": s.voice, "split": s.split, "pitch": s.pitch,
                                  "rate": s.rate} for s in speakers},
            "utterances": utterances}


def _sfx_candidates(small: bool) -> list[tuple[SfxSource, Path]]:
    found = []
    for source in SFX_SOURCES:
        if small and not source.small:
            continue
        if not source.root.is_dir():
            raise DemoError(f"sound effects of {source.package} not found in {source.root} "
                            f"(apt-get install {source.package})")
        paths: dict[Path, Path] = {}
        for pattern in source.patterns:
            for p in source.root.glob(pattern):
                if p.is_file() and not any(Path(p.stem).match(e) for e in source.exclude):
                    paths.setdefault(p.resolve(), p)  # symlinked aliases count once
        found += [(source, p) for p in sorted(paths.values())]
    return found


def _split_by_rank(keys: list[str]) -> list[str]:
    """Split items by the rank of a hash of their name: every 10 items, 2 to test, 1 to valid, 7 to train (stable
    whatever the seed, and the same clip always lands in the same split)."""
    order = sorted(range(len(keys)), key=lambda i: hashlib.sha1(keys[i].encode()).hexdigest())
    split = [""] * len(keys)
    for rank, i in enumerate(order):
        split[i] = "test" if rank % 10 in (1, 6) else "valid" if rank % 10 == 4 else "train"
    return split


def step_sfx(ctx: Context) -> dict:
    """Decode, clean (trim, skip silent/short/long, de-duplicate), resample to 48 kHz and normalise the clips."""
    clips, skipped, seen = [], [], {}
    by_package: dict[str, list[tuple[Path, np.ndarray]]] = {}
    for source, path in _sfx_candidates(ctx.small):
        try:
            x, sr = read_mono(path)
        except (sf.LibsndfileError, RuntimeError) as err:
            skipped.append({"source": str(path), "why": f"unreadable ({err})"})
            continue
        x = trim_silence(x, sr)
        seconds = len(x) / sr
        if seconds < 0.05 or np.max(np.abs(x), initial=0) < 1e-3:
            skipped.append({"source": str(path), "why": "silent or shorter than 50 ms"})
            continue
        if seconds > 12.0:
            skipped.append({"source": str(path), "why": f"longer than 12 s ({seconds:.1f} s)"})
            continue
        digest = hashlib.sha1(to_pcm16(x / np.max(np.abs(x)) * 0.5).tobytes()).hexdigest()
        if digest in seen:
            skipped.append({"source": str(path), "why": f"duplicate of {seen[digest]}"})
            continue
        seen[digest] = str(path)
        by_package.setdefault(source.package, []).append((path, resample_np(x, sr, RATE)))
    for package, items in by_package.items():
        names = [f"{package}/{p.relative_to(next(s.root for s in SFX_SOURCES if s.package == package))}"
                 for p, _ in items]
        for name, split, (path, x) in zip(names, _split_by_rank(names), items, strict=True):
            stem = name.replace("/", "-").rsplit(".", 1)[0]
            rel = Path("sfx") / split / f"{stem}.wav"
            rate, n = write_pcm16(ctx.out / rel, normalize(x, RATE, -24.0), RATE)
            clips.append({"path": rel.as_posix(), "split": split, "package": package, "source": str(path),
                          "sample_rate": rate, "num_samples": n})
    if not clips:
        raise DemoError("no usable sound effects found")
    return {"clips": clips, "skipped": skipped}


def step_music(ctx: Context) -> dict:
    """Compose the songs, render each stem alone, mix them (random balance) and write stems + musicbg."""
    if shutil.which("fluidsynth") is None:
        raise DemoError("fluidsynth not found (apt-get install fluidsynth)")
    if not ctx.soundfont.is_file():
        raise DemoError(f"soundfont {ctx.soundfont} not found (apt-get install timgm6mb-soundfont, or set "
                        "--soundfont to a General MIDI .sf2)")
    songs = []
    for s_index, split in enumerate(SPLITS):
        for i in range(ctx.plan.songs[split]):
            rng = _rng(ctx.seed, 3, s_index, i)
            songs.append((split, f"song{i:03d}", compose_song(rng, ctx.plan.bars), rng))
    tmp = ctx.out / "music" / ".render"
    tmp.mkdir(parents=True, exist_ok=True)

    def render(job: tuple) -> np.ndarray:
        split, name, song, stem = job
        end = song.bars * 4 * PPQ
        mid = tmp / f"{split}-{name}-{stem}.mid"
        mid.write_bytes(midi_bytes(song.stem_parts(stem), song.tempo, end))
        wav = render_midi(mid, tmp / f"{split}-{name}-{stem}.wav", ctx.soundfont, RATE)
        x, _ = read_mono(wav)
        wav.unlink()
        mid.unlink()
        return x

    jobs = [(split, name, song, stem) for split, name, song, _ in songs for stem in STEMS]
    rendered = iter(_thread_map(render, jobs, ctx.jobs))
    entries = []
    for split, name, song, rng in songs:
        length = round((song.seconds + 1.5) * RATE)  # the bars plus a release tail, the same for every stem
        fade = np.ones(length)
        fade[-round(0.3 * RATE):] = np.linspace(1.0, 0.0, round(0.3 * RATE))
        stems = {}
        for stem in STEMS:
            x = next(rendered)[:length]
            x = np.pad(x, (0, length - len(x))) * fade
            stems[stem] = normalize(x, RATE, -24.0 + rng.uniform(-3, 3), peak=1.0)
        total = sum(stems.values())
        scale = 10 ** (-18 / 20) / max(active_rms(total, RATE), 1e-9)
        scale = min(scale, 0.89 / np.max(np.abs(total)))
        ints = {stem: to_pcm16(x * scale) for stem, x in stems.items()}
        ints["musicbg"] = _sum_pcm16(ints[s] for s in STEMS)
        folder = Path("music") / split / name
        files = {}
        for key, data in ints.items():
            write_pcm16(ctx.out / folder / f"{key}.wav", data, RATE)
            files[key] = (folder / f"{key}.wav").as_posix()
        (ctx.out / folder / "song.mid").write_bytes(midi_bytes(song.parts, song.tempo, song.bars * 4 * PPQ))
        entries.append({"id": name, "split": split, "files": files, "midi": (folder / "song.mid").as_posix(),
                        "sample_rate": RATE, "num_samples": length, **song.describe()})
    shutil.rmtree(tmp, ignore_errors=True)
    return {"songs": entries}


def _coloured_noise(rng: np.random.Generator, n: int) -> np.ndarray:
    """Noise with a 1/f^alpha spectrum (alpha in [0, 2]), a random low-pass and a slow amplitude modulation."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / RATE)
    shape = np.maximum(f, 20.0) ** (-rng.uniform(0.0, 2.0) / 2)
    shape /= 1 + (f / rng.uniform(1500, 16000)) ** 4
    x = np.fft.irfft(spec * shape, n)
    t = np.arange(n) / RATE
    return x * (1 + rng.uniform(0, 0.6) * np.sin(2 * np.pi * rng.uniform(0.05, 0.5) * t + rng.uniform(0, 6.3)))


def step_sfxbg(ctx: Context) -> dict:
    """Backgrounds: coloured noise plus 2-6 sfx clips of the same split at random offsets and levels."""
    clips = ctx.load("sfx")["clips"]
    n = round(ctx.plan.bed_seconds * RATE)
    beds = []
    for s_index, split in enumerate(SPLITS):
        pool = [c for c in clips if c["split"] == split]
        for i in range(ctx.plan.beds[split]):
            rng = _rng(ctx.seed, 4, s_index, i)
            bed = normalize(_coloured_noise(rng, n), RATE, -30.0 + rng.uniform(-4, 4), peak=1.0)
            events = [pool[j] for j in rng.choice(len(pool), min(len(pool), int(rng.integers(2, 7))), replace=False)]
            for clip in events:
                x, _ = read_mono(ctx.out / clip["path"])
                x = normalize(x[:n], RATE, -26.0 + rng.uniform(-6, 4), peak=1.0)
                start = int(rng.integers(0, n - len(x) + 1))
                bed[start:start + len(x)] += x
            rel = Path("sfxbg") / split / f"bg{i:03d}.wav"
            rate, length = write_pcm16(ctx.out / rel, normalize(bed, RATE, -24.0), RATE)
            beds.append({"path": rel.as_posix(), "split": split, "sample_rate": rate, "num_samples": length,
                         "events": [c["path"] for c in events]})
    return {"beds": beds}


class _Sources:
    """Loaded source material of one split, and the crops that the fixed mixtures are made of."""

    def __init__(self, ctx: Context, split: str):
        self.ctx = ctx
        speech = ctx.load("speech")["utterances"]
        self.speakers: dict[str, list[dict]] = {}
        for u in speech:
            if u["split"] == split:
                self.speakers.setdefault(u["speaker"], []).append(u)
        self.sfx = [c for c in ctx.load("sfx")["clips"] if c["split"] == split]
        self.beds = [b for b in ctx.load("sfxbg")["beds"] if b["split"] == split]
        self.songs = [s for s in ctx.load("music")["songs"] if s["split"] == split]
        self._cache: dict[str, tuple[np.ndarray, int]] = {}

    def read(self, rel: str, rate: int) -> np.ndarray:
        if rel not in self._cache:
            self._cache[rel] = read_mono(self.ctx.out / rel)
        x, sr = self._cache[rel]
        return resample_np(x, sr, rate)

    def speech(self, rng: np.random.Generator, speaker: str, n: int, rate: int) -> tuple[np.ndarray, list[str]]:
        """Continuous speech of one speaker: random utterances with 0.1-0.4 s pauses after 0-0.3 s of silence."""
        utts = self.speakers[speaker]
        out, used, pos = np.zeros(n), [], round(rng.uniform(0, 0.3) * rate)
        for j in rng.permutation(len(utts)).tolist() * 4:
            if pos >= n:
                break
            x = self.read(utts[j]["path"], rate)[: n - pos]
            out[pos:pos + len(x)] = x
            used.append(utts[j]["path"])
            pos += len(x) + round(rng.uniform(0.1, 0.4) * rate)
        return out, used

    def crop(self, rng: np.random.Generator, rel: str, n: int, rate: int) -> tuple[np.ndarray, int]:
        x = self.read(rel, rate)
        if len(x) <= n:
            return np.pad(x, (0, n - len(x))), 0
        start = int(rng.integers(0, len(x) - n + 1))
        return x[start:start + n], start

    def song_crop(self, rng: np.random.Generator, song: dict, keys: Iterable[str], n: int) -> dict[str, np.ndarray]:
        """The same window of several files of a song, redrawn (up to 10 times) until none is silent."""
        total = song["num_samples"]
        for _ in range(10):
            start = int(rng.integers(0, max(1, total - n + 1)))
            crops = {k: np.pad(self.read(song["files"][k], RATE)[start:start + n], (0, max(0, n - total)))
                     for k in keys}
            if all(active_rms(x, RATE) > 10 ** (-50 / 20) for x in crops.values()):
                return crops
        return crops


def _make_mixture(ctx: Context, src: _Sources, task: str, rng: np.random.Generator) -> tuple[dict, dict, int]:
    """The references of one mixture of ``task``: ``({ref key: float signal}, {ref key: origin}, rate)``."""
    _, rate, _ = TASKS[task]
    n = round(ctx.plan.mixture_seconds * rate)
    speakers = sorted(src.speakers)
    refs: dict[str, np.ndarray] = {}
    origin: dict[str, Any] = {}
    if task in ("cass", "se", "ss"):
        chosen = rng.choice(len(speakers), 2 if task == "ss" else 1, replace=False)
        for k, j in enumerate(chosen, 1):
            refs[f"speech_{k}"], origin[f"speech_{k}"] = src.speech(rng, speakers[j], n, rate)
    if task in ("cass", "se"):
        bed = src.beds[int(rng.integers(len(src.beds)))]
        refs["sfxbg_1"], start = src.crop(rng, bed["path"], n, rate)
        origin["sfxbg_1"] = [bed["path"], start]
    if task == "cass":
        song = src.songs[int(rng.integers(len(src.songs)))]
        refs["musicbg_1"] = src.song_crop(rng, song, ["musicbg"], n)["musicbg"]
        origin["musicbg_1"] = song["files"]["musicbg"]
    if task == "mss":
        song = src.songs[int(rng.integers(len(src.songs)))]
        for stem, x in src.song_crop(rng, song, STEMS, n).items():
            refs[f"{stem}_1"], origin[f"{stem}_1"] = x, song["files"][stem]
    if task == "uss":
        count = min(len(src.sfx), int(rng.integers(2, 5)))
        for k, j in enumerate(rng.choice(len(src.sfx), count, replace=False), 1):
            x = src.read(src.sfx[j]["path"], rate)[:n]
            start = int(rng.integers(0, n - len(x) + 1))
            refs[f"sfx_{k}"] = np.pad(x, (start, n - start - len(x)))
            origin[f"sfx_{k}"] = [src.sfx[j]["path"], start]
    return refs, origin, rate


def step_mixtures(ctx: Context) -> dict:
    """Fixed valid/test mixtures: sources at unit active RMS, gains uniform in [-2.5, 2.5] dB (so any two sources
    are within ±5 dB), the sum at -20 dBFS active RMS with 1 dB of peak head-room; mix = exact sum of the refs."""
    tasks: dict[str, dict[str, dict]] = {}
    for s_index, split in enumerate(SPLITS):
        if split not in ctx.plan.mixtures:
            continue
        src = _Sources(ctx, split)
        for t_index, task in enumerate(TASKS):
            dataset_name, _, _ = TASKS[task]
            for i in range(ctx.plan.mixtures[split]):
                rng = _rng(ctx.seed, 5, s_index, t_index, i)
                refs, origin, rate = _make_mixture(ctx, src, task, rng)
                gains = {k: float(rng.uniform(-2.5, 2.5)) for k in refs}
                scaled = {k: x * 10 ** (gains[k] / 20) / max(active_rms(x, rate), 1e-9) for k, x in refs.items()}
                total = sum(scaled.values())
                scale = min(10 ** (-20 / 20) / active_rms(total, rate), 0.89 / np.max(np.abs(total)))
                ints = {k: to_pcm16(x * scale) for k, x in scaled.items()}
                ints["mix"] = _sum_pcm16(ints[k] for k in refs)
                item_id = f"{task}-{split}-{i:03d}"
                folder = Path("mixtures") / task / split / item_id
                files = {}
                for key, data in ints.items():
                    write_pcm16(ctx.out / folder / f"{key}.wav", data, rate)
                    files[key] = (folder / f"{key}.wav").as_posix()
                tasks.setdefault(task, {}).setdefault(split, {})[item_id] = {
                    "mix": files["mix"], "ref": {k: files[k] for k in refs}, "sample_rate": rate,
                    "num_samples": len(ints["mix"]), "dataset_name": dataset_name, "origin": origin,
                    "gains_db": gains}
    return {"tasks": tasks}


POOL_DATASETS = {"speech": "demo_speech", "sfx": "demo_sfx", "sfxbg": "demo_sfxbg", "musicbg": "demo_music",
                 **{stem: "demo_music" for stem in STEMS}}


def manifests(ctx: Context, path_root: Path) -> dict[str, dict]:
    """The six manifests as ``{file name: data}``; paths are ``path_root / <path inside the corpus>``."""
    def p(rel: str) -> str:
        return (path_root / rel).as_posix()

    def entry(prompt: str, item: dict, rel: str | None = None) -> dict:
        return pool_entry(p(rel or item["path"]), item["sample_rate"], item["num_samples"], POOL_DATASETS[prompt])

    pools: dict[str, dict[str, list]] = {split: {prompt: [] for prompt in POOL_DATASETS} for split in SPLITS}
    for u in ctx.load("speech")["utterances"]:
        pools[u["split"]]["speech"].append(entry("speech", u))
    for c in ctx.load("sfx")["clips"]:
        pools[c["split"]]["sfx"].append(entry("sfx", c))
    for b in ctx.load("sfxbg")["beds"]:
        pools[b["split"]]["sfxbg"].append(entry("sfxbg", b))
    for song in ctx.load("music")["songs"]:
        for key in (*STEMS, "musicbg"):
            pools[song["split"]][key].append(entry(key, song, song["files"][key]))
    out = {"demo_pools.json": {split: {k: v for k, v in pools[split].items() if v} for split in SPLITS}}
    tasks = ctx.load("mixtures")["tasks"]
    for task in TASKS:
        data: dict[str, dict] = {split: {} for split in SPLITS}
        for split, items in tasks.get(task, {}).items():
            for item_id, e in items.items():
                data[split][item_id] = mixture_entry({k: p(v) for k, v in e["ref"].items()}, e["sample_rate"],
                                                     e["num_samples"], e["dataset_name"], mix=p(e["mix"]))
        out[f"demo_{task}.json"] = data
    return out


def write_example(ctx: Context, path: Path, seconds: float = 6.0) -> Path:
    """A short CASS example at 48 kHz from test material only: a test speaker, three test sfx clips at spread-out
    times and a test song (speech 0 dB, each sfx -4 dB, music -6 dB in active RMS), at -20 dBFS."""
    src = _Sources(ctx, "test")
    rng = _rng(ctx.seed, 6)
    n = round(seconds * RATE)
    speaker = "flite-slt" if "flite-slt" in src.speakers else sorted(src.speakers)[0]
    speech = src.speech(rng, speaker, n, RATE)[0]
    music = src.song_crop(rng, src.songs[0], ["musicbg"], n)["musicbg"]
    sfx = np.zeros(n)
    for k, j in enumerate(rng.choice(len(src.sfx), min(3, len(src.sfx)), replace=False)):
        x = src.read(src.sfx[j]["path"], RATE)[: n // 3]
        start = k * (n // 3) + int(rng.integers(0, n // 3 - len(x) + 1))
        sfx[start:start + len(x)] += x * 10 ** (-4 / 20) / max(active_rms(x, RATE), 1e-9)
    total = speech / max(active_rms(speech, RATE), 1e-9) + sfx + music * 10 ** (-6 / 20) / active_rms(music, RATE)
    write_pcm16(path, normalize(total, RATE, -20.0, peak=0.89), RATE)
    return path


# ----------------------------------------------------------------------------------------------------------------
# driver

_STEP_FUNCTIONS: dict[str, Callable[[Context], dict]] = {
    "speech": step_speech, "sfx": step_sfx, "music": step_music, "sfxbg": step_sfxbg, "mixtures": step_mixtures,
}


def _check_settings(ctx: Context) -> None:
    """Record the seed and size of the corpus folder; refuse to add steps of another seed or size to it."""
    settings = {"format": FORMAT_VERSION, "seed": ctx.seed, "small": ctx.small}
    path = ctx.out / "settings.json"
    if path.is_file():
        found = _json_read(path)
        if found != settings:
            raise DemoError(f"{ctx.out} holds a corpus built with seed {found.get('seed')}"
                            f"{' (--small)' if found.get('small') else ''}, not seed {ctx.seed}"
                            f"{' (--small)' if ctx.small else ''}: delete it or choose another --out")
    else:
        _json_write(path, settings, indent=None)  # one line, compared as text by prepare_demo.sh


def build(out: Path, seed: int = 0, small: bool = False, steps: Iterable[str] = STEPS[:-1], jobs: int = 2,
          json_dir: Path = Path("datasets/json_files"), soundfont: Path = DEFAULT_SOUNDFONT,
          example: Path | None = None, log: Callable[[str], None] = print) -> dict[str, Path]:
    """Run the given steps (skipping those whose ``index.json`` exists) and return the manifests written.

    Raises:
        DemoError: a missing tool, package or earlier step, or a folder of another seed/size.
    """
    ctx = Context(Path(out), int(seed), bool(small), plan_for(small), max(1, int(jobs)), Path(soundfont))
    ctx.out.mkdir(parents=True, exist_ok=True)
    _check_settings(ctx)
    ignore = ctx.out / ".gitignore"
    if not ignore.exists():  # a corpus inside a checkout is never committed by accident
        ignore.write_text("# generated by dataprep/build_demo.py\n*\n", encoding="utf-8")
    written: dict[str, Path] = {}
    for step in steps:
        if step not in STEPS:
            raise DemoError(f"unknown step {step!r} (expected one of {', '.join(STEPS)} or all)")
        if step == "manifests":
            for name, data in manifests(ctx, ctx.out).items():
                written[name] = write_manifest(Path(json_dir) / name, data)
                log(f"[demo] wrote {Path(json_dir) / name}")
            continue
        if step == "example":
            if example is None:
                raise DemoError("the example step needs --example PATH")
            log(f"[demo] wrote {write_example(ctx, Path(example))}")
            continue
        if ctx.index(step).is_file():
            log(f"[demo] skip: {step} ({ctx.index(step)} exists)")
            continue
        log(f"[demo] step: {step}")
        _json_write(ctx.index(step), _STEP_FUNCTIONS[step](ctx))
    return written


def main(argv: list[str] | None = None) -> int:
    """Command line (see the module docstring); errors print one line and return 1."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("demo"), help="corpus folder (default: demo)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--small", action="store_true", help="a few clips per class, for CI (seconds)")
    parser.add_argument("--step", nargs="+", default=["all"], choices=(*STEPS, "all"), help="steps to run")
    parser.add_argument("--jobs", type=int, default=2, help="parallel synthesis/rendering processes (default 2)")
    parser.add_argument("--json-dir", type=Path, default=Path("datasets/json_files"),
                        help="where the manifests go (default: datasets/json_files)")
    parser.add_argument("--soundfont", type=Path, default=DEFAULT_SOUNDFONT,
                        help=f"General MIDI soundfont (default: {DEFAULT_SOUNDFONT})")
    parser.add_argument("--example", type=Path, default=None,
                        help="where the example step writes a short CASS example mixture (all: only when given)")
    args = parser.parse_args(argv)
    steps = [s for s in STEPS if s != "example" or args.example] if "all" in args.step else args.step
    try:
        import torch

        torch.set_num_threads(1)  # parallelism comes from --jobs
        build(args.out, args.seed, args.small, steps, args.jobs, args.json_dir, args.soundfont, args.example)
    except (DemoError, ManifestError, RuntimeError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
