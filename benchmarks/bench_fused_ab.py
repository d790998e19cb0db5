"""The fused CPU inference path's parts, timed against each other in one process (docs/architecture.md §4).

What it measures: seconds per forward, and seconds in matrix products, of each variant of the fused path below,
each one selected on the model by its path options (``model.set_paths(nets.paths.PathOptions(...))``), and each
variant's largest difference from the plain path as a fraction of the output's peak.

On a shared machine the time of one forward moves by 10 % or more from run to run, more than the parts of the fused
path are worth one by one; alternating the variants call by call in one process compares them on equal terms.
Each call also reports the seconds spent in matrix products (oneDNN's linear op, aten's mm/addmm/bmm/baddbmm, from
``torch.profiler``), which move less than the whole call.
Variants (medium TUSS, random weights, 6 s at 48 kHz, ``speech sfxbg musicbg``, 2 threads, fp32):

- ``fused``: the fused path as shipped (input-major weights, the decoder band by band): ``PathOptions(fused=True)``;
- ``nn-layout weights``: the same GEMMs from the parameters' own ``(out, in)`` layout (``input_major=False``);
- ``batched decoder``: the decoder's batched, padded products instead of band by band (``per_band_decoder=False``);
- ``both``: the two above at once (the fused path before them; the strided overlap-add stays);
- ``plain``: no fused path at all (``fused=False``, what ``TUSS_ONEDNN=0`` gives).

    python benchmarks/bench_fused_ab.py --rounds 4
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch.profiler import profile  # noqa: E402

from nets import build_model  # noqa: E402
from nets.paths import PathOptions, fused_mode  # noqa: E402
from utils.runtime import configure_cpu_allocator  # noqa: E402

GEMM_OPS = ("mkldnn::_linear_pointwise", "aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")
#: name: the variant's path options (nets.paths)
VARIANTS = {
    "fused": PathOptions(fused=True),
    "nn-layout weights": PathOptions(fused=True, input_major=False),
    "batched decoder": PathOptions(fused=True, per_band_decoder=False),
    "both": PathOptions(fused=True, input_major=False, per_band_decoder=False),
    "plain": PathOptions(fused=False),
}


def _spread(values: list[float]) -> str:
    v = sorted(values)
    return f"min {v[0]:.3f} median {v[len(v) // 2]:.3f} max {v[-1]:.3f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/unified/tuss.medium.2-4src.yaml")
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args(argv)
    try:
        available = fused_mode(True)  # False where TUSS_ONEDNN=0 is set
    except RuntimeError:
        available = False
    if not available:
        sys.exit("error: this torch has no oneDNN fused linear op (or TUSS_ONEDNN=0 is set): nothing to compare")
    torch.set_num_threads(args.threads)
    configure_cpu_allocator()
    torch.manual_seed(0)
    model = build_model(args.config).eval()
    mix = torch.randn(1, int(args.seconds * model.sample_rate))
    prompts = [["speech", "sfxbg", "musicbg"]]
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    gemm: dict[str, list[float]] = {name: [] for name in VARIANTS}
    outputs: dict[str, torch.Tensor] = {}
    with torch.inference_mode():
        model(mix, prompts)  # warm-up
        for _ in range(args.rounds):
            for name, options in VARIANTS.items():
                model.set_paths(options)
                with profile() as prof:
                    start = time.perf_counter()
                    outputs[name] = model(mix, prompts)
                    times[name].append(time.perf_counter() - start)
                events = prof.key_averages()
                gemm[name].append(sum(e.self_cpu_time_total for e in events if e.key in GEMM_OPS) / 1e6)
    print(f"{args.config}, {args.seconds:g} s, {args.threads} threads, {args.rounds} rounds alternating the variants")
    ref = outputs["plain"]
    for name, ts in times.items():
        err = float((outputs[name] - ref).abs().max() / ref.abs().max())
        print(f"{name:18s} call {_spread(ts)} s; matrix products {_spread(gemm[name])} s; "
              f"vs plain {err:.1e} of the peak")


if __name__ == "__main__":
    main()
