"""A tiny synthetic corpus (tones and noise) with manifests of both shapes, for tests, benchmarks and smoke runs.

    python -m datasets.synthetic /tmp/tiny_corpus     # writes audio and pools.json, fixed.json, fixed_css.json

Sources are short files at 16, 44.1 and 48 kHz (some stereo, some shorter than a training chunk): ``speech`` and the
stems are harmonic tones, ``sfx`` short noise bursts, ``sfxbg`` and ``musicbg`` longer noise/tone beds.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from datasets.manifest import mixture_entry, pool_entry, write_manifest
from utils.audio import write_audio

__all__ = ["POOL_SPEC", "synth_source", "write_synthetic_corpus", "synthetic_overrides"]

#: prompt -> (sample rate, seconds, channels) of its synthetic recordings
POOL_SPEC: dict[str, tuple[int, float, int]] = {
    "speech": (16000, 1.5, 1),
    "sfx": (44100, 0.3, 1),
    "sfxbg": (48000, 2.0, 1),
    "drums": (44100, 1.5, 2),
    "bass": (44100, 1.5, 2),
    "vocals": (44100, 1.5, 1),
    "other": (44100, 1.5, 1),
    "musicbg": (44100, 2.0, 1),
}


def synth_source(prompt: str, sample_rate: int, seconds: float, channels: int, rng: np.random.Generator) -> np.ndarray:
    """``(channels, n)`` float32 test signal for ``prompt`` (tones for voiced/pitched prompts, noise otherwise)."""
    n = max(1, round(seconds * sample_rate))
    t = np.arange(n) / sample_rate
    if prompt in ("sfx", "sfxbg", "drums"):
        wave = rng.standard_normal(n) * (0.1 if prompt != "sfx" else 0.3)
        if prompt == "drums":  # noise bursts every 0.25 s
            wave *= (np.mod(t, 0.25) < 0.05)
    else:
        f0 = rng.uniform(80, 400)
        wave = sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 2 * np.pi)) / k for k in range(1, 5)) * 0.1
        wave = wave + 0.003 * rng.standard_normal(n)
    out = np.stack([wave * (1.0 - 0.2 * c) for c in range(channels)])
    return out.astype(np.float32)


def write_synthetic_corpus(root: str | Path, files_per_prompt: int = 3, num_mixtures: int = 3,
                           mixture_seconds: float = 0.75, seed: int = 0,
                           duration_scale: float = 1.0) -> dict[str, Path]:
    """Write audio under ``root`` and three manifests (absolute paths).

    ``duration_scale`` multiplies the source durations of :data:`POOL_SPEC` (e.g. 5 for files longer than a 6 s
    training chunk).

    Returns:
        ``{"pools": pools.json (shape A train pools of the 8 prompts), "fixed": fixed.json (shape B valid/test:
        speech_1+sfxbg_1 at 16 kHz, dataset ``vctk_demand``), "fixed_css": fixed_css.json (speech_1, sfxbg_1,
        musicbg_1 at 44.1 kHz, dataset ``dnr``, stereo references)}``.
    """
    root = Path(root).resolve()
    rng = np.random.default_rng(seed)
    pools: dict[str, list] = {}
    for prompt, (sr, seconds, channels) in POOL_SPEC.items():
        for i in range(files_per_prompt):
            path = root / "pools" / prompt / f"{prompt}_{i}.wav"
            audio = synth_source(prompt, sr, seconds * duration_scale * (1 + 0.25 * i), channels, rng)
            write_audio(path, audio, sr, subtype="FLOAT")
            pools.setdefault(prompt, []).append(pool_entry(path, sr, audio.shape[-1], f"synthetic_{prompt}"))
    manifests = {"pools": write_manifest(root / "pools.json", {"train": pools, "valid": {}, "test": {}})}

    def fixed(name: str, sr: int, prompts: list[str], dataset: str, channels: int) -> Path:
        splits = {}
        for split in ("valid", "test"):
            entries = {}
            for m in range(num_mixtures):
                n_sec = mixture_seconds * (1 + 0.5 * m)  # different lengths: sorting is visible
                refs = {}
                for prompt in prompts:
                    key = f"{prompt}_{sum(r.split('_')[0] == prompt for r in refs) + 1}"
                    path = root / name / split / f"mix{m}" / f"{key}.wav"
                    write_audio(path, synth_source(prompt, sr, n_sec, channels, rng), sr, subtype="FLOAT")
                    refs[key] = path
                entries[f"{name}_{split}_{m}"] = mixture_entry(refs, sr, round(n_sec * sr), dataset)
            splits[split] = entries
        return write_manifest(root / f"{name}.json", {"train": {}, **splits})

    manifests["fixed"] = fixed("fixed", 16000, ["speech", "sfxbg"], "vctk_demand", 1)
    manifests["fixed_css"] = fixed("fixed_css", 44100, ["speech", "sfxbg", "musicbg"], "dnr", 2)
    return manifests


def synthetic_overrides(manifests: dict[str, Path], num_valid: int = 2) -> dict[str, str]:
    """Dotted config overrides (``train.py --key value``) that point a config's data at a synthetic corpus:
    training pools, ``num_valid`` validation mixtures of ``fixed`` and one of ``fixed_css``, all test mixtures
    (``fixed_css`` on channel 1)."""
    pools, fixed, css = manifests["pools"], manifests["fixed"], manifests["fixed_css"]
    return {"dataset_conf.train.json_paths": f"[{pools}]",
            "dataset_conf.valid.json_path_and_num_data": f"[[{fixed}, {num_valid}], [{css}, 1]]",
            "dataset_conf.test.json_path_and_num_data": f"[[{fixed}, null], [{css}, null, 1]]"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m datasets.synthetic", description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="output directory")
    parser.add_argument("--files-per-prompt", type=int, default=3)
    args = parser.parse_args(argv)
    for name, path in write_synthetic_corpus(args.root, args.files_per_prompt).items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
