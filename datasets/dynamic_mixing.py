"""Dynamic mixing: training mixtures drawn on the fly from source pools (docs/architecture.md §9).

For a :class:`~datasets.sampler.MixtureKey` ``(epoch, rank, index, num_src)``:

1. prompts: a chain of ``num_src`` prompts (:class:`~datasets.sampler.PromptSampler`);
2. sources: each prompt takes one recording from its pool; a ``*bg`` prompt is instead, with probability
   ``dynamic_mixing_prob``, a fresh sum of k sources (k from its own ``num_srcs_and_weights``): ``musicbg`` of
   distinct stems among drums/bass/vocals/other, ``sfxbg`` of several ``sfx`` (see :data:`BG_COMPONENTS`);
3. each recording: a random ``chunk_size`` crop (shorter files are zero-padded at a random offset), a random
   channel of a multichannel file; a silent crop or an unreadable file is logged and redrawn (at most
   ``max_attempts`` times, then an error naming the pool); with probability ``same_song_prob`` the mixture's
   sources are instead the stems of one song, cropped at the same time (:func:`song_key`: files whose paths differ
   only in the prompt's name, ``DIR/<prompt>/x.wav`` or ``song/<prompt>.wav``), when a song has all its prompts;
4. all sources are resampled to the lowest rate among the mixture's recordings (``downsample_to_minimum_fs``),
   normalised to unit RMS, scaled by a gain drawn uniformly in dB from the prompt's ``gain`` range (a dynamic
   ``*bg`` sum: each part with its own prompt's gain — the ``*bg`` prompt's range for parts without a config —
   then the sum again), resampled to ``sample_rate`` (48 kHz)
   and summed into the mixture.

Items are ``{"mix": (n,), "refs": (s, n), "prompts": [s names], "sample_rate", "dataset": "train", "id": str}``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from datasets.manifest import ManifestError, known_prompts, load_manifest
from datasets.sampler import MixtureKey, PromptSampler, item_rng, parse_weights
from utils.audio import fix_length, read_audio, resample

__all__ = ["BG_COMPONENTS", "SourcePool", "load_source_pools", "find_missing", "song_key", "DynamicMixingDataset",
           "SourceDrawError"]

log = logging.getLogger(__name__)

#: prompts that may be built on the fly from other pools: name -> (component prompts, components must be distinct)
BG_COMPONENTS: dict[str, tuple[tuple[str, ...], bool]] = {
    "musicbg": (("drums", "bass", "vocals", "other"), True),
    "sfxbg": (("sfx",), False),
}


class SourceDrawError(ValueError):
    """No readable, finite, non-silent source could be drawn from a pool (the message names the pool and its
    manifests): a data problem, reported like other input errors."""


@dataclass
class SourcePool:
    """The recordings of one prompt, merged over manifests (compact arrays: pools can hold 10^5 files)."""

    prompt: str
    paths: list[str] = field(default_factory=list)
    sample_rates: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    num_samples: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    manifests: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)


def find_missing(paths: Sequence[str], jobs: int = 16) -> list[bool]:
    """``True`` for each path that is not an existing file (checked in parallel threads: pools are large)."""
    with ThreadPoolExecutor(max(1, jobs)) as pool:
        return [not ok for ok in pool.map(os.path.isfile, paths, chunksize=256)]


def _report_missing(manifest: Path, what: str, missing: Sequence[str], total: int) -> None:
    if missing:
        first = ", ".join(missing[:3])
        log.warning("%s (%s): %d of %d audio files are missing and are skipped (first: %s)", manifest, what,
                    len(missing), total, first)


def load_source_pools(json_paths: Sequence[str | os.PathLike], split: str = "train",
                      prompts: Sequence[str] | None = None) -> dict[str, SourcePool]:
    """Merge the ``split`` source pools of several manifests by prompt.

    Entries whose file does not exist are reported (count and first paths, once per manifest) and skipped.

    Args:
        json_paths: manifests whose ``split`` is a source pool (shape A).
        prompts: prompt names accepted in the manifests (default: the 8 standard ones).

    Raises:
        ManifestError: a missing or invalid manifest, or one whose ``split`` holds fixed mixtures.
    """
    accepted = known_prompts(prompts or ())
    merged: dict[str, dict[str, list]] = {}
    for json_path in json_paths:
        manifest = load_manifest(json_path, prompts=accepted)
        shape = manifest.shapes.get(split, "empty")
        if shape == "mixtures":
            raise ManifestError(f"{json_path}: split {split!r} holds fixed mixtures, but dynamic mixing needs a "
                                "source pool {prompt: [entries]} (use the *_sad.json manifests for MUSDB/MoisesDB)")
        if shape == "empty":
            log.warning("%s: split %r is empty or absent; it adds no training sources", json_path, split)
            continue
        for prompt, entries in manifest.split(split).items():
            paths = [e["path"] for e in entries]
            missing = find_missing(paths)
            _report_missing(manifest.path, f"{split}/{prompt}", [p for p, m in zip(paths, missing, strict=True)
                                                                  if m], len(paths))
            bucket = merged.setdefault(prompt, {"paths": [], "sr": [], "n": [], "manifests": []})
            kept = [e for e, m in zip(entries, missing, strict=True) if not m]
            bucket["paths"] += [e["path"] for e in kept]
            bucket["sr"] += [e["sample_rate"] for e in kept]
            bucket["n"] += [e["num_samples"] for e in kept]
            if kept:
                bucket["manifests"].append(str(manifest.path))
    return {prompt: SourcePool(prompt, b["paths"], np.asarray(b["sr"], dtype=np.int64),
                               np.asarray(b["n"], dtype=np.int64), b["manifests"])
            for prompt, b in merged.items() if b["paths"]}



def song_key(path: str, prompt: str) -> tuple[str, ...] | None:
    """The song a pool file is a stem of: its path without the components named ``prompt`` (a file name counts by
    its stem), or ``None`` when no component is. ``DIR/piano/song1.wav`` and ``DIR/other/song1.wav`` are one song,
    as are ``musdb/song1/piano.wav`` and ``musdb/song1/other.wav``."""
    parts = Path(path).parts
    if not parts:
        return None
    names = [*parts[:-1], Path(parts[-1]).stem]
    kept = tuple(part for part, name in zip(parts, names, strict=True) if name != prompt)
    return kept if len(kept) < len(parts) else None


def _unit_rms(wave: torch.Tensor) -> torch.Tensor:
    """Scale each row of ``(s, n)`` to unit RMS (rows are checked non-silent before)."""
    return wave / wave.pow(2).mean(-1, keepdim=True).sqrt().clamp_min(1e-8)


class DynamicMixingDataset(Dataset):
    """Training mixtures drawn from source pools; indexed by :class:`~datasets.sampler.MixtureKey`.

    Args:
        pools: ``{prompt: SourcePool}`` (:func:`load_source_pools`).
        prompts_conf: config ``prompts`` (chain tables, ``gain``, ``dynamic_mixing_prob``, ``num_srcs_and_weights``).
        chunk_size: seconds per training example.
        sample_rate: output rate (48 kHz).
        downsample_to_minimum_fs: first resample every source to the lowest rate among the mixture's recordings, so
            that every source has the same bandwidth.
        seed: base seed of the run.
        max_attempts: draws per source before giving up (unreadable or silent recordings).
        silence_threshold_db: a crop whose RMS is below this (dBFS) counts as silent.
        same_song_prob: probability that a mixture's sources are the stems of one song cropped at the same time
            (:func:`song_key`), as in a real recording, instead of independent draws; used when the prompts are
            distinct and some song has a stem of each (otherwise, or when no crop of it has every stem sounding in
            ``max_attempts`` tries, the sources are drawn independently).

    Raises:
        ValueError: a prompt the chain can draw that no pool (or on-the-fly sum) can provide, or a ``*bg`` prompt
            with ``dynamic_mixing_prob > 0`` whose component pools are empty.
    """

    def __init__(self, pools: Mapping[str, SourcePool], prompts_conf: Mapping[str, Mapping], chunk_size: float,
                 sample_rate: int = 48000, downsample_to_minimum_fs: bool = True, seed: int = 0,
                 max_attempts: int = 10, silence_threshold_db: float = -60.0, same_song_prob: float = 0.0):
        self.pools = dict(pools)
        self.prompts_conf = {name: dict(conf) for name, conf in prompts_conf.items()}
        self.chunk_size, self.sample_rate = float(chunk_size), int(sample_rate)
        self.downsample_to_minimum_fs = bool(downsample_to_minimum_fs)
        self.seed, self.max_attempts = int(seed), int(max_attempts)
        self.silence_rms = 10 ** (silence_threshold_db / 20)
        if not 0.0 <= float(same_song_prob) <= 1.0:
            raise ValueError(f"same_song_prob must be in [0, 1], got {same_song_prob}")
        self.same_song_prob = float(same_song_prob)
        self._songs: dict[tuple[str, ...], dict[str, int]] = {}  # song -> {prompt: pool index}, first file wins
        if self.same_song_prob > 0:
            for prompt, pool in sorted(self.pools.items()):
                for idx, path in enumerate(pool.paths):
                    key = song_key(path, prompt)
                    if key is not None:
                        self._songs.setdefault(key, {}).setdefault(prompt, idx)
        self._songs_with: dict[frozenset[str], list[tuple[str, ...]]] = {}
        self.bg_weights = {}
        for name, (parts, _) in BG_COMPONENTS.items():
            conf = self.prompts_conf.get(name, {})
            if float(conf.get("dynamic_mixing_prob", 0.0) or 0.0) <= 0:
                continue
            if not any(p in self.pools for p in parts):
                raise ValueError(f"prompts.{name}.dynamic_mixing_prob is {conf['dynamic_mixing_prob']} but no training "
                                 f"manifest provides {'/'.join(parts)} sources to build it; set it to 0")
            self.bg_weights[name] = parse_weights(conf.get("num_srcs_and_weights", {1: 1.0}),
                                                  f"prompts.{name}.num_srcs_and_weights")
        available = set(self.pools) | set(self.bg_weights)
        self.sampler = PromptSampler(self.prompts_conf, available=available)
        unprovided = {n for n, c in self.prompts_conf.items()
                      if n not in available and (c.get("init_prob", 0) or any(
                          (o.get("next") or {}).get(n, 0) for o in self.prompts_conf.values()))}
        if unprovided:
            raise ValueError(f"prompt(s) {', '.join(sorted(unprovided))} can be drawn (init_prob/next > 0) but no "
                             f"training manifest provides them (pools: {', '.join(sorted(self.pools)) or 'none'})")
        self._bad_paths: set[str] = set()

    @classmethod
    def from_config(cls, config: Mapping, seed: int | None = None) -> DynamicMixingDataset:
        """Build from an experiment config (``dataset_conf.train``, ``prompts``, ``seed``)."""
        train = config["dataset_conf"]["train"]
        pools = load_source_pools(train["json_paths"],
                                  prompts=known_prompts((config.get("model_conf") or {}).get("prompts") or (),
                                                        config["prompts"]))
        return cls(pools, config["prompts"], train["chunk_size"], train.get("sample_rate", 48000),
                   train.get("downsample_to_minimum_fs", True), config.get("seed", 0) if seed is None else seed,
                   silence_threshold_db=train.get("silence_threshold_db", -60.0),
                   same_song_prob=train.get("same_song_prob", 0.0))

    # ------------------------------------------------------------------------------------------------------------
    def _crop(self, pool: SourcePool, idx: int, rng: np.random.Generator, at: float | None = None) -> np.ndarray:
        """A ``chunk_size`` crop (at the file's own rate) of entry ``idx``: ``(n,)`` float32; from ``at`` seconds
        when given (a song's stems: a shorter file is then zero-padded at its end), else from a random start."""
        sr, total = int(pool.sample_rates[idx]), int(pool.num_samples[idx])
        length = max(1, round(self.chunk_size * sr))
        if at is not None:
            start = min(round(at * sr), max(total - 1, 0))
        else:
            start = int(rng.integers(0, total - length + 1)) if total > length else 0
        audio, file_sr = read_audio(pool.paths[idx], start=start, num_samples=length)
        if file_sr != sr:
            raise ValueError(f"{pool.paths[idx]} has sample rate {file_sr} but its manifest says {sr}")
        wave = audio[int(rng.integers(audio.shape[0]))] if audio.shape[0] > 1 else audio[0]
        if wave.shape[0] < length:  # short file: zero-pad at a random offset (a song's stem: after it, in time)
            offset = 0 if at is not None else int(rng.integers(0, length - wave.shape[0] + 1))
            wave = np.pad(wave, (offset, length - wave.shape[0] - offset))
        return wave

    def draw_recording(self, prompt: str, rng: np.random.Generator) -> tuple[np.ndarray, int, str]:
        """One finite, non-silent crop of a random recording of ``prompt``'s pool:
        ``((n,) float32, sample_rate, path)``.

        Unreadable files and crops with NaN/Inf samples are logged with their path (once per file and worker) and
        another recording is drawn. Each draw depends only on ``rng`` (not on what this worker has seen before), so
        a resumed run draws the same mixtures as an uninterrupted one.

        Raises:
            SourceDrawError: ``max_attempts`` draws were unreadable, non-finite or silent.
        """
        pool = self.pools[prompt]
        last = ""
        for _ in range(self.max_attempts):
            idx = int(rng.integers(len(pool)))
            wave, why = self._checked_crop(pool, idx, rng)
            if wave is not None:
                return wave, int(pool.sample_rates[idx]), pool.paths[idx]
            last = f"{pool.paths[idx]} ({why})"
        raise SourceDrawError(f"could not draw a readable, finite, non-silent '{prompt}' source in "
                              f"{self.max_attempts} attempts from the pool of {', '.join(pool.manifests)} "
                              f"(last: {last})")

    def _draw_song(self, prompts: Sequence[str], rng: np.random.Generator) -> list | None:
        """The sources of ``prompts`` as the stems of one song cropped at the same time (``_draw_source``'s form), or
        ``None``: a repeated prompt, no song with a stem of each, or ``max_attempts`` crops each with a silent,
        unreadable or non-finite stem."""
        wanted = frozenset(prompts)
        if len(wanted) < 2 or len(wanted) != len(prompts):
            return None
        if wanted not in self._songs_with:
            self._songs_with[wanted] = [k for k, stems in self._songs.items() if wanted <= stems.keys()]
        songs = self._songs_with[wanted]
        if not songs:
            return None
        for _ in range(self.max_attempts):
            stems = self._songs[songs[int(rng.integers(len(songs)))]]
            seconds = min(int(self.pools[p].num_samples[stems[p]]) / int(self.pools[p].sample_rates[stems[p]])
                          for p in prompts)
            at = float(rng.uniform(0.0, max(seconds - self.chunk_size, 0.0)))
            sources = []
            for p in prompts:
                pool, idx = self.pools[p], stems[p]
                wave, _ = self._checked_crop(pool, idx, rng, at=at)
                if wave is None:
                    break
                sources.append([(wave, int(pool.sample_rates[idx]), pool.paths[idx], p)])
            else:
                return sources
        return None

    def _checked_crop(self, pool: SourcePool, idx: int, rng: np.random.Generator,
                      at: float | None = None) -> tuple[np.ndarray | None, str]:
        """:meth:`_crop`, or ``None`` and why not: ``unreadable`` or ``non-finite samples`` (logged with the path,
        once per file and worker) or ``silent crop``."""
        path = pool.paths[idx]
        try:
            wave = self._crop(pool, idx, rng, at=at)
        except (OSError, RuntimeError, ValueError) as err:  # AudioError is a ValueError
            self._warn_once(path, f"cannot read training source {path} ({err}); drawing another "
                                  f"'{pool.prompt}' source")
            return None, "unreadable"
        if not np.isfinite(wave).all():
            self._warn_once(path, f"training source {path} has NaN or infinite samples; drawing another "
                                  f"'{pool.prompt}' source")
            return None, "non-finite samples"
        if np.sqrt(np.mean(np.square(wave, dtype=np.float64))) < self.silence_rms:
            return None, "silent crop"
        return wave, ""

    def _warn_once(self, path: str, message: str) -> None:
        if path not in self._bad_paths:
            self._bad_paths.add(path)
            log.warning("%s", message)

    def _draw_source(self, prompt: str, rng: np.random.Generator) -> list[tuple[np.ndarray, int, str, str]]:
        """Recordings making up one source: one, or several parts of an on-the-fly ``*bg`` sum.

        Returns ``[(wave, sample_rate, path, gain prompt)]`` where the gain prompt is the part's own prompt for a
        sum.
        """
        conf = self.prompts_conf[prompt]
        if prompt in self.bg_weights and (prompt not in self.pools
                                          or rng.random() < float(conf["dynamic_mixing_prob"])):
            parts, distinct = BG_COMPONENTS[prompt]
            parts = [p for p in parts if p in self.pools]
            values, probs = self.bg_weights[prompt]
            k = int(rng.choice(values, p=probs))
            if distinct:
                chosen = list(rng.choice(parts, size=min(k, len(parts)), replace=False))
            else:
                chosen = list(rng.choice(parts, size=k, replace=True))
            return [(*self.draw_recording(str(p), rng), str(p)) for p in chosen]
        return [(*self.draw_recording(prompt, rng), prompt)]

    def _gain(self, prompt: str, rng: np.random.Generator, fallback: str | None = None) -> float:
        """Linear gain drawn uniformly in dB from ``prompts.<prompt>.gain`` (``fallback``'s range when the prompt is
        only a part of an on-the-fly sum and has no config of its own)."""
        conf = self.prompts_conf.get(prompt) or self.prompts_conf[fallback]
        lo, hi = conf.get("gain", (0.0, 0.0))
        return 10 ** (rng.uniform(float(lo), float(hi)) / 20)

    def make_mixture(self, prompts: Sequence[str], rng: np.random.Generator,
                     paths: list[list[str]] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Sources of the given prompts and their mixture at ``sample_rate``: ``(mix (n,), refs (s, n))``.

        ``paths``, when given, receives the files of each source (several for an on-the-fly sum)."""
        sources = None
        if self.same_song_prob > 0 and rng.random() < self.same_song_prob:
            sources = self._draw_song(prompts, rng)
        if sources is None:
            sources = [self._draw_source(p, rng) for p in prompts]
        if paths is not None:
            paths.extend([path for _, _, path, _ in parts] for parts in sources)
        rates = [sr for parts in sources for _, sr, _, _ in parts]
        work_sr = min(rates) if self.downsample_to_minimum_fs else self.sample_rate
        work_len = round(self.chunk_size * work_sr)
        refs = []
        for prompt, parts in zip(prompts, sources, strict=True):
            waves = torch.stack([fix_length(resample(torch.from_numpy(w), sr, work_sr), work_len)
                                 for w, sr, _, _ in parts])  # (parts, n)
            if len(parts) > 1:  # on-the-fly *bg: each part at its own prompt's gain, then the sum as one source
                gains = torch.tensor([self._gain(g, rng, prompt) for _, _, _, g in parts], dtype=waves.dtype)
                waves = (_unit_rms(waves) * gains[:, None]).sum(0, keepdim=True)
            refs.append(_unit_rms(waves)[0] * self._gain(prompt, rng))
        out_len = round(self.chunk_size * self.sample_rate)
        out = fix_length(resample(torch.stack(refs), work_sr, self.sample_rate), out_len)  # (s, n)
        return out.sum(0), out

    def __getitem__(self, key: MixtureKey) -> dict:
        rng = item_rng(self.seed, key)
        prompts = self.sampler.sample(key.num_src, rng)
        paths: list[list[str]] = []
        mix, refs = self.make_mixture(prompts, rng, paths)
        return {"mix": mix, "refs": refs, "prompts": prompts, "sample_rate": self.sample_rate, "dataset": "train",
                "id": f"e{key.epoch}-r{key.rank}-i{key.index}", "sources": paths}

    def describe(self) -> str:
        """One line per pool: prompt, number of recordings, hours."""
        lines = []
        for prompt, pool in sorted(self.pools.items()):
            hours = float((pool.num_samples / np.maximum(pool.sample_rates, 1)).sum()) / 3600
            lines.append(f"{prompt}: {len(pool)} recordings, {hours:.1f} h ({', '.join(pool.manifests)})")
        return "\n".join(lines)

