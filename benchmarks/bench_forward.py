"""Forward-pass speed of TUSS: seconds per call and real-time factor.

Default case (issue A): medium TUSS, random weights, 6 s of 48 kHz audio, prompts ``speech sfxbg musicbg``,
2 CPU threads, fp32. On a GPU it also times bf16 autocast and a batch of 8.

    python benchmarks/bench_forward.py                       # CPU, 2 threads
    python benchmarks/bench_forward.py --device cuda --batch 1 8
    python benchmarks/bench_forward.py --no-allocator-tuning # glibc's default malloc settings
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from nets import build_model  # noqa: E402
from utils.runtime import configure_cpu_allocator, pick_device  # noqa: E402


def time_call(fn, repeats: int, device: torch.device) -> list[float]:
    """Wall-clock seconds of ``repeats`` calls of ``fn`` after one warm-up call."""
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return times


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/unified/tuss.medium.2-4src.yaml")
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--prompts", nargs="+", default=["speech", "sfxbg", "musicbg"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, nargs="+", default=[1])
    parser.add_argument("--bf16", action="store_true", help="also time bf16 autocast (default on CUDA)")
    parser.add_argument("--no-allocator-tuning", action="store_true", help="keep glibc's default malloc settings")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    tuned = False if args.no_allocator_tuning else configure_cpu_allocator()
    device = pick_device(args.device)
    torch.manual_seed(0)
    model = build_model(args.config).eval().to(device)
    n = int(args.seconds * model.sample_rate)
    print(f"config {args.config}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters; "
          f"{args.seconds:g} s at {model.sample_rate} Hz; prompts {' '.join(args.prompts)}; device {device}; "
          f"threads {torch.get_num_threads()}; allocator tuning {'on' if tuned else 'off'}; torch {torch.__version__}")
    precisions = ["fp32"] + (["bf16"] if args.bf16 or device.type == "cuda" else [])
    for batch in args.batch:
        mix = torch.randn(batch, n, device=device)
        prompts = [list(args.prompts)] * batch
        for precision in precisions:
            def call(mix=mix, prompts=prompts, bf16=precision == "bf16"):
                with torch.inference_mode(), torch.autocast(device.type, torch.bfloat16, enabled=bf16):
                    return model(mix, prompts)

            times = time_call(call, args.repeats, device)
            best = min(times)
            print(f"batch {batch} {precision}: best {best:.3f} s per call (all: {', '.join(f'{t:.3f}' for t in times)})"
                  f"; real-time factor {best / (args.seconds * batch):.3f} (audio seconds processed per second: "
                  f"{args.seconds * batch / best:.1f})")


if __name__ == "__main__":
    main()
