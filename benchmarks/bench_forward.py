"""Forward-pass speed of TUSS: seconds per call and real-time factor.

What it measures: the wall-clock seconds of one forward (best of ``--repeats`` after a warm-up), its real-time
factor, and its ratio to the compute floor below. Default case: medium TUSS, random weights, 6 s of 48 kHz audio,
prompts ``speech sfxbg musicbg``, 2 CPU threads, fp32, the fused CPU inference path chosen automatically
(``--no-fused``: the plain path, ``model.set_fused(False)``). On a GPU it also times bf16 autocast and a batch of 8.

    python benchmarks/bench_forward.py                       # CPU, 2 threads
    python benchmarks/bench_forward.py --device cuda --batch 1 8
    python benchmarks/bench_forward.py --no-allocator-tuning # glibc's default malloc settings
    python benchmarks/bench_forward.py --api                 # also the README's Python path, in a fresh process
    python benchmarks/bench_forward.py --no-fused            # without oneDNN's fused linear ops (fused=False)
    python benchmarks/bench_forward.py --backend onnxruntime # also the exported ONNX graph through ONNX Runtime

Every time is also given as a ratio to the compute floor measured in the same run: the forward's FLOPs
(torch.utils.flop_counter) divided by this machine's sgemm rate (a large fp32 matrix product, same threads), for
each library measured: oneDNN's (the fastest here, so the true floor) and torch.matmul's (MKL's, the floor as first
measured).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from nets import build_model  # noqa: E402
from utils.atomic import save_torch  # noqa: E402
from utils.config import load_config, save_config  # noqa: E402
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


API_CODE = """
import sys, time, torch
sys.path.insert(0, {root!r})
torch.set_num_threads({threads})
from nets import load_model
model = load_model({ckpt!r}, fused={fused!r})
mix = torch.randn(1, {n})
times = []
for _ in range({repeats} + 1):
    start = time.perf_counter()
    with torch.inference_mode():
        model(mix, [{prompts!r}])
    times.append(time.perf_counter() - start)
print(" ".join(f"{{t:.4f}}" for t in times[1:]))
"""


def forward_flops(model: torch.nn.Module, mix: torch.Tensor, prompts: list[list[str]]) -> float:
    """Floating-point operations of one forward (matmuls, convolutions, attention: torch.utils.flop_counter),
    counted on the plain path (``model.set_fused(False)`` for the count, the model's own path options afterwards):
    the counter does not know oneDNN's fused linear op (nets.paths.use_fused), which does the same products."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    options = model.paths
    try:
        with torch.inference_mode(), counter:
            model.set_fused(False)(mix, prompts)
    finally:
        model.set_paths(options)
    return float(counter.get_total_flops())


def sgemm_rates(device: torch.device, size: int = 2048, repeats: int = 10) -> dict[str, float]:
    """FLOP/s of a large fp32 matrix product on ``device`` with the current threads (best of ``repeats``), by library:
    ``torch.matmul`` (MKL on the CPU, cuBLAS on a GPU) and, on the CPU, oneDNN's linear op, which the fused inference
    path uses and which runs a large product about 25 % faster than MKL on the AMD EPYC measured here (measured
    whether or not this run uses it: the floor is the machine's)."""
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    rates = {"torch.matmul": 2 * size**3 / min(time_call(lambda: a @ b, repeats, device))}
    if device.type == "cpu" and torch.backends.mkldnn.is_available():
        from nets.onednn import in_major

        linear, bt = torch.ops.mkldnn._linear_pointwise, in_major(b)  # the fused path's op and weight layout
        with torch.inference_mode():
            times = time_call(lambda: linear(a, bt, None, "none", [], ""), repeats, device)
        rates["oneDNN"] = 2 * size**3 / min(times)
    return rates


def floor_ratios(seconds: float, floors: dict[str, float]) -> str:
    """``seconds`` as multiples of each floor, the lowest floor (the fastest library's) first."""
    return ", ".join(f"{seconds / floor:.2f} x the floor at {name}'s rate" for name, floor in floors.items())


def save_published(model: torch.nn.Module, config: str, folder: Path) -> Path:
    """``model``'s weights in the published layout under ``folder`` (``hparams.yaml`` + ``checkpoints/model.pth``,
    keys prefixed ``model.``); returns the checkpoint, which ``nets.load_model`` takes."""
    save_config(load_config(config), folder / "hparams.yaml")
    return save_torch({f"model.{k}": v for k, v in model.state_dict().items()}, folder / "checkpoints" / "model.pth")


def time_api(model: torch.nn.Module, config: str, n: int, prompts: list[str], threads: int,
             repeats: int, fused: bool | None = None) -> list[float]:
    """Seconds per call of the README's Python path (``nets.load_model(..., fused=fused)`` then ``model(mix,
    prompts)`` under ``torch.inference_mode()``), in a fresh process (nothing set up by this one), on ``model``'s
    weights."""
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = save_published(model, config, Path(tmp))
        code = API_CODE.format(root=str(Path(__file__).resolve().parents[1]), threads=threads, ckpt=str(ckpt), n=n,
                               repeats=repeats, prompts=list(prompts), fused=fused)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return [float(t) for t in out.stdout.split()]


def time_onnxruntime(model: torch.nn.Module, config: str, mixes: dict[int, torch.Tensor], seconds: float,
                     prompts: list[str], threads: int, repeats: int, device: torch.device,
                     floors: dict[str, float], fused: bool | None = None) -> None:
    """Export ``model`` (its weights in the published layout, loaded back with ``nets.load_model(..., fused=fused)``,
    the reference's path) to a temporary
    ``.onnx``, time ``session.run`` on the same inputs as the PyTorch timing (best of ``repeats`` after a warm-up),
    and check that ONNX Runtime gives the PyTorch output to 1e-4 of its peak (the timed prompts; 1, 3 and 6
    prompts and a batch of 2 items with different prompts on 2 s)."""
    import tempfile

    import onnxruntime

    from nets import export_onnx, load_model
    from nets.onnx import OnnxModel

    with tempfile.TemporaryDirectory() as tmp:
        published = load_model(save_published(model, config, Path(tmp)), fused=fused)
        start = time.perf_counter()
        path = export_onnx(published, Path(tmp) / "model.onnx")
        exported = time.perf_counter() - start
        start = time.perf_counter()
        runner = OnnxModel(path, device, threads=threads)
        session = time.perf_counter() - start
        print(f"ONNX Runtime {onnxruntime.__version__} ({', '.join(runner.providers)}, {threads} intra-op threads): "
              f"export {exported:.0f} s ({path.stat().st_size / 1e6:.0f} MB), session created in {session:.1f} s")
        names = list(published.prompt_names)
        short = mixes[min(mixes)][:1, : int(2 * published.sample_rate)].cpu()  # <= 2 s: the checks, not the timing
        secs = f"{short.shape[-1] / published.sample_rate:g} s"
        cases = [("batch 1, the timed prompts", mixes[min(mixes)][:1].cpu(), [list(prompts)]),
                 (f"batch 1, 1 prompt ({secs})", short, [names[:1]]),
                 (f"batch 1, 3 prompts ({secs})", short, [names[:3]]),
                 (f"batch 1, 6 prompts ({secs})", short, [names[:6]]),
                 (f"batch 2, different prompts ({secs})", torch.cat([short, short.flip(-1)]),
                  [[names[0], names[2], names[7 % len(names)]], [names[1], names[3], names[3]]])]
        for what, mix, case_prompts in cases:
            with torch.inference_mode():
                ref = published(mix, case_prompts)
            err = float((runner(mix, case_prompts) - ref).abs().max() / ref.abs().max())
            print(f"ONNX Runtime vs PyTorch ({what}): max error {err:.2e} of the output's peak "
                  f"({'within' if err <= 1e-4 else 'ABOVE'} the 1e-4 tolerance)")
        for batch, batch_mix in mixes.items():
            feeds = runner.inputs(batch_mix.cpu(), [list(prompts)] * batch)
            times = time_call(lambda feeds=feeds: runner.session.run(None, feeds), repeats, torch.device("cpu"))
            best = min(times)
            print(f"batch {batch} onnxruntime fp32: best {best:.3f} s per call (all: "
                  f"{', '.join(f'{t:.3f}' for t in times)}); real-time factor {best / (seconds * batch):.3f}; "
                  f"{floor_ratios(best / batch, floors)}")


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
    parser.add_argument("--no-fused", action="store_true", help="the plain inference path, without oneDNN's fused "
                        "linear ops (fused=False, as TUSS_ONEDNN=0)")
    parser.add_argument("--api", action="store_true", help="also time the README's Python API path in a fresh "
                        "process (nets.load_model, then model(mix, prompts) under torch.inference_mode())")
    parser.add_argument("--backend", choices=["pytorch", "onnxruntime"], default="pytorch", help="onnxruntime: also "
                        "export the model to ONNX and time ONNX Runtime's session.run on the same inputs, after a "
                        "check that it gives the PyTorch output")
    args = parser.parse_args(argv)

    fused = False if args.no_fused else None  # this model, the --api one and the ONNX reference
    torch.set_num_threads(args.threads)
    tuned = False if args.no_allocator_tuning else configure_cpu_allocator()
    device = pick_device(args.device)
    torch.manual_seed(0)
    model = build_model(args.config).eval().to(device).set_fused(fused)
    n = int(args.seconds * model.sample_rate)
    print(f"config {args.config}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters; "
          f"{args.seconds:g} s at {model.sample_rate} Hz; prompts {' '.join(args.prompts)}; device {device}; "
          f"threads {torch.get_num_threads()}; allocator tuning {'on' if tuned else 'off'}; fused oneDNN inference "
          f"{'off' if model.paths.fused is False else 'on'}; torch {torch.__version__}")
    flops = forward_flops(model, torch.randn(1, n, device=device), [list(args.prompts)])
    rates = sgemm_rates(device)
    floors = {name: flops / rate for name, rate in sorted(rates.items(), key=lambda item: -item[1])}
    print(f"floor: {flops / 1e9:.0f} GFLOP per call (batch 1) / sgemm " + ", ".join(
        f"{rates[name] / 1e9:.0f} GFLOP/s ({name}) = {floor:.2f} s" for name, floor in floors.items()))
    precisions = ["fp32"] + (["bf16"] if args.bf16 or device.type == "cuda" else [])
    mixes = {}
    for batch in args.batch:
        mix = mixes[batch] = torch.randn(batch, n, device=device)
        prompts = [list(args.prompts)] * batch
        for precision in precisions:
            def call(mix=mix, prompts=prompts, bf16=precision == "bf16"):
                with torch.inference_mode(), torch.autocast(device.type, torch.bfloat16, enabled=bf16):
                    return model(mix, prompts)

            times = time_call(call, args.repeats, device)
            best = min(times)
            print(f"batch {batch} {precision}: best {best:.3f} s per call (all: {', '.join(f'{t:.3f}' for t in times)})"
                  f"; real-time factor {best / (args.seconds * batch):.3f} (audio seconds processed per second: "
                  f"{args.seconds * batch / best:.1f}); {floor_ratios(best / batch, floors)}")
    if args.api:
        times = time_api(model.cpu(), args.config, n, args.prompts, args.threads, args.repeats, fused)
        best = min(times)
        print(f"API (fresh process, nets.load_model + inference_mode) batch 1 fp32: best {best:.3f} s per call (all: "
              f"{', '.join(f'{t:.3f}' for t in times)}); {floor_ratios(best, floors)}")
    if args.backend == "onnxruntime":
        time_onnxruntime(model.cpu(), args.config, mixes, args.seconds, args.prompts, args.threads, args.repeats,
                         device, floors, fused)


if __name__ == "__main__":
    main()
