"""The fused CPU inference path's parts, timed against each other in one process (docs/architecture.md §4).

On a shared machine the time of one forward moves by 10 % or more from run to run, more than the parts of the fused
path are worth one by one; alternating the variants call by call in one process compares them on equal terms.
Each call also reports the seconds spent in matrix products (oneDNN's linear op, aten's mm/addmm/bmm/baddbmm, from
``torch.profiler``), which move less than the whole call.
Variants (medium TUSS, random weights, 6 s at 48 kHz, ``speech sfxbg musicbg``, 2 threads, fp32):

- ``fused``: the fused path as shipped (input-major weights, the decoder band by band);
- ``nn-layout weights``: the same GEMMs from the parameters' own ``(out, in)`` layout;
- ``batched decoder``: the decoder's batched, padded products instead of band by band;
- ``both``: the two above at once (the fused path before them; the strided overlap-add stays);
- ``plain``: no fused path at all (``TUSS_ONEDNN=0``).

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

from nets import build_model, onednn  # noqa: E402
from nets.band_split import BandSplit  # noqa: E402
from utils.runtime import configure_cpu_allocator  # noqa: E402

GEMM_OPS = ("mkldnn::_linear_pointwise", "aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")


def _as_is(weight: torch.Tensor) -> torch.Tensor:
    return weight


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
    if onednn.LINEAR is None:
        sys.exit("error: this torch has no oneDNN fused linear op (or TUSS_ONEDNN=0 is set): nothing to compare")
    torch.set_num_threads(args.threads)
    configure_cpu_allocator()
    torch.manual_seed(0)
    model = build_model(args.config).eval()
    mix = torch.randn(1, int(args.seconds * model.sample_rate))
    prompts = [["speech", "sfxbg", "musicbg"]]
    linear, in_major = onednn.LINEAR, onednn.in_major
    variants = {  # name: (oneDNN op, weight layout, band-by-band decoder)
        "fused": (linear, in_major, True),
        "nn-layout weights": (linear, _as_is, True),
        "batched decoder": (linear, in_major, False),
        "both": (linear, _as_is, False),
        "plain": (None, in_major, True),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    gemm: dict[str, list[float]] = {name: [] for name in variants}
    outputs: dict[str, torch.Tensor] = {}
    try:
        with torch.inference_mode():
            model(mix, prompts)  # warm-up
            for _ in range(args.rounds):
                for name, (op, layout, per_band) in variants.items():
                    onednn.LINEAR, BandSplit.per_band_inference = op, per_band
                    onednn.in_major = layout
                    with profile() as prof:
                        start = time.perf_counter()
                        outputs[name] = model(mix, prompts)
                        times[name].append(time.perf_counter() - start)
                    events = prof.key_averages()
                    gemm[name].append(sum(e.self_cpu_time_total for e in events if e.key in GEMM_OPS) / 1e6)
    finally:
        onednn.LINEAR, BandSplit.per_band_inference = linear, True
        onednn.in_major = in_major
    print(f"{args.config}, {args.seconds:g} s, {args.threads} threads, {args.rounds} rounds alternating the variants")
    ref = outputs["plain"]
    for name, ts in times.items():
        err = float((outputs[name] - ref).abs().max() / ref.abs().max())
        print(f"{name:18s} call {_spread(ts)} s; matrix products {_spread(gemm[name])} s; "
              f"vs plain {err:.1e} of the peak")


if __name__ == "__main__":
    main()
