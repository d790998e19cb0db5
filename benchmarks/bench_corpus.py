"""Corpus separation throughput: hours of audio separated per hour of wall time by ``separate.py`` over a folder of
short and long files, one process against two (``torchrun --nproc_per_node 2``, one thread each).

Default case: the bundled demo model (``tuss.demo``, 48 kHz), prompts ``speech sfxbg musicbg``, a generated folder
of 24 files (20 of 3-12 s, 4 of 60 s: 6.5 minutes of 48 kHz mono noise and tones, in nested folders), CSS 6 s / 3 s
for every file, no spectrograms; each configuration is a fresh ``separate.py`` run into an empty output folder
(wall time includes start-up and model loading, as a user's run does). With ``--device cuda`` (a GPU machine) the
GPU figure is measured the same way, one process per GPU.

    python benchmarks/bench_corpus.py
    python benchmarks/bench_corpus.py --ckpt_path pretrained_models/tuss.medium.2-4src --device cuda --configs 1x1
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RATE = 48000
#: name -> (processes, threads per process)
CONFIGS = {"1x1": (1, 1), "1x2": (1, 2), "2x1": (2, 1)}


def make_folder(root: Path, short: int = 20, long: int = 4, seed: int = 0) -> float:
    """Write the benchmark's inputs under ``root``; returns their total duration in seconds."""
    rng = np.random.default_rng(seed)
    total = 0.0
    for i in range(short + long):
        seconds = 60.0 if i >= short else float(rng.uniform(3, 12))
        n = int(seconds * RATE)
        t = np.arange(n) / RATE
        wave = 0.05 * rng.standard_normal(n) + 0.2 * np.sin(2 * np.pi * rng.uniform(100, 1000) * t)
        path = root / f"set{i % 3}" / f"clip{i // 3:02d}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, wave.astype(np.float32), RATE, subtype="PCM_16")
        total += n / RATE
    return total


def run(config: str, folder: Path, out: Path, ckpt: str, device: str | None) -> float:
    """Wall seconds of one ``separate.py`` run over ``folder``."""
    procs, threads = CONFIGS[config]
    args = ["separate.py", "--ckpt_path", ckpt, "--audio_path", str(folder), "--task", "cass",
            "--css_segment_size", "6", "--css_shift_size", "3", "--no_spectrograms", "--audio_output_dir", str(out),
            "--quiet", *(["--device", device] if device else [])]
    cmd = ([sys.executable, *args] if procs == 1 else
           [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs), *args])
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    started = time.monotonic()
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.monotonic() - started
    if result.returncode != 0:
        raise SystemExit(f"{config} failed ({result.returncode}): {result.stderr[-2000:]}")
    lines = [json.loads(x) for x in (out / "separation_log.jsonl").read_text().splitlines()]
    assert len(lines) == len(list(folder.rglob("*.wav"))) and {x["status"] for x in lines} == {"done"}
    return wall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt_path", default="tuss.demo")
    parser.add_argument("--device", default=None)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--short", type=int, default=20)
    parser.add_argument("--long", type=int, default=4)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-corpus-") as tmp:
        folder = Path(tmp) / "in"
        audio = make_folder(folder, args.short, args.long)
        print(f"{args.short + args.long} files, {audio / 60:.1f} min of audio; model {args.ckpt_path}, device "
              f"{args.device or 'cpu'}, {os.cpu_count()} cores")
        print(f"{'processes x threads':>20} {'wall s':>8} {'h audio / h wall':>17}")
        for config in args.configs:
            wall = run(config, folder, Path(tmp) / f"out-{config}", args.ckpt_path, args.device)
            print(f"{config:>20} {wall:8.1f} {audio / wall:17.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
