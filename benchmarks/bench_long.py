"""Long-recording separation: time and peak memory of ``separate.py``'s path for a 1-minute and a 10-minute file.

Default case: 48 kHz mono, CSS 6 s segments / 3 s shift, prompts ``speech sfxbg musicbg``, the tiny test
config (``configs/tests/tiny.tuss.yaml``, random weights) on the CPU with 2 threads. Each length runs in its own
subprocess, which reports its wall-clock times and its peak resident memory (``ru_maxrss``); the parent prints
real-time factors and checks the targets: peak RSS < 3 GB, and 10 minutes take at most 11 x the 1-minute time.

    python benchmarks/bench_long.py
    python benchmarks/bench_long.py --minutes 1 10 30 --config configs/unified/tuss.medium.2-4src.yaml
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SAMPLE_RATE = 48000


def make_checkpoint(config: str, root: Path) -> Path:
    """A randomly initialised model in the published layout (``root/hparams.yaml``, ``checkpoints/model.pth``)."""
    import torch

    from nets import build_model
    from utils.config import load_config, save_config

    torch.manual_seed(0)
    cfg = load_config(config)
    model = build_model(cfg)
    save_config(cfg, root / "hparams.yaml")
    ckpt = root / "checkpoints" / "model.pth"
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    torch.save({f"model.{k}": v for k, v in model.state_dict().items()}, ckpt)
    return ckpt


def make_audio(path: Path, minutes: float) -> Path:
    """Mono 48 kHz 16-bit test signal (tones and noise), written in one-minute blocks."""
    import numpy as np
    import soundfile as sf

    rng = np.random.default_rng(0)
    block = SAMPLE_RATE * 60
    total = round(minutes * block)
    with sf.SoundFile(str(path), "w", SAMPLE_RATE, 1, "PCM_16") as f:
        for start in range(0, total, block):
            n = min(block, total - start)
            t = (start + np.arange(n)) / SAMPLE_RATE
            f.write(0.2 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(n))
    return path


def child(args: argparse.Namespace) -> None:
    """Separate one file and print ``{"load_s", "separate_s", "peak_rss_mb"}`` as JSON."""
    import torch

    from separate import Separator
    from utils.runtime import configure_cpu_allocator

    torch.set_num_threads(args.threads)
    configure_cpu_allocator()
    start = time.perf_counter()
    sep = Separator(args.child[0], device="cpu")
    loaded = time.perf_counter()
    sep.separate_file(args.child[1], args.child[2], args.prompts, css_segment_size=args.segment,
                      css_shift_size=args.shift, css_batch_size=args.batch)
    done = time.perf_counter()
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux
    print(json.dumps({"load_s": loaded - start, "separate_s": done - loaded, "peak_rss_mb": peak_kb / 1024}))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/tests/tiny.tuss.yaml")
    parser.add_argument("--minutes", type=float, nargs="+", default=[1.0, 10.0])
    parser.add_argument("--segment", type=float, default=6.0, help="CSS segment (s)")
    parser.add_argument("--shift", type=float, default=3.0, help="CSS shift (s)")
    parser.add_argument("--batch", type=int, default=1, help="CSS segments per forward pass")
    parser.add_argument("--prompts", nargs="+", default=["speech", "sfxbg", "musicbg"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", nargs=3, metavar=("CKPT", "AUDIO", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args)
        return 0

    results = {}
    with tempfile.TemporaryDirectory(prefix="bench_long_") as tmp:
        tmp = Path(tmp)
        ckpt = make_checkpoint(args.config, tmp / "model")
        for minutes in args.minutes:
            audio = make_audio(tmp / f"{minutes:g}min.wav", minutes)
            cmd = [sys.executable, __file__, "--child", str(ckpt), str(audio), str(tmp / f"out{minutes:g}"),
                   "--segment", str(args.segment), "--shift", str(args.shift), "--batch", str(args.batch),
                   "--threads", str(args.threads), "--prompts", *args.prompts]
            proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
            if proc.returncode != 0:
                print(proc.stderr, file=sys.stderr)
                return 1
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            audio.unlink()
            res["rtf"] = res["separate_s"] / (minutes * 60)
            # input (float32) + one accumulator and one output buffer per prompt, at 48 kHz
            res["buffers_mb"] = minutes * 60 * SAMPLE_RATE * 4 * (1 + 2 * len(args.prompts)) / 2**20
            results[minutes] = res
            print(f"{minutes:6g} min: load {res['load_s']:.1f} s, separate+write {res['separate_s']:.1f} s "
                  f"(RTF {res['rtf']:.3f}), peak RSS {res['peak_rss_mb']:.0f} MB "
                  f"(audio buffers ~{res['buffers_mb']:.0f} MB, rest {res['peak_rss_mb'] - res['buffers_mb']:.0f} MB)",
                  flush=True)
    print(f"config {args.config}, CSS {args.segment:g} s / {args.shift:g} s, batch {args.batch}, "
          f"prompts {' '.join(args.prompts)}, {args.threads} threads")
    peak = max(r["peak_rss_mb"] for r in results.values())
    print(f"target peak RSS < 3 GB: {'met' if peak < 3 * 1024 else 'MISSED'} ({peak:.0f} MB)")
    if 1.0 in results and 10.0 in results:
        ratio = results[10.0]["separate_s"] / results[1.0]["separate_s"]
        print(f"target 10 min <= 11 x 1 min: {'met' if ratio <= 11 else 'MISSED'} (ratio {ratio:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
