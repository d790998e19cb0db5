"""Training throughput: optimisation steps per second of a config, and dynamic-mixing mixtures per second.

Default case: medium TUSS on the CPU, batch 1, 2 s chunks, 3 prompts (speech sfx musicbg), fp32, AdamW;
and the dataloader of the medium config (6 s chunks, batch 4) over a synthetic corpus with 2 workers.

    python benchmarks/bench_train.py                              # CPU, 2 threads
    python benchmarks/bench_train.py --device cuda --batch 4 --seconds 6 --bf16
    python benchmarks/bench_train.py --skip-loader                # model steps only
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from datasets.dynamic_mixing import DynamicMixingDataset, load_source_pools  # noqa: E402
from datasets.fixed import collate_mixtures  # noqa: E402
from datasets.sampler import SourceCountBatchSampler  # noqa: E402
from datasets.synthetic import write_synthetic_corpus  # noqa: E402
from training.module import OPTIMIZERS, SeparationModule  # noqa: E402
from utils.config import load_config  # noqa: E402
from utils.runtime import configure_cpu_allocator, pick_device  # noqa: E402


def bench_steps(config, device, batch: int, seconds: float, prompts: list[str], steps: int, bf16: bool) -> float:
    """Seconds per training step (forward, loss with permutation search, backward, clipping, AdamW step)."""
    torch.manual_seed(0)
    module = SeparationModule(config).to(device).train()
    optimizer = OPTIMIZERS[config.get("optimizer_name", "adamw")](module.model.parameters(),
                                                                  **dict(config.optimizer_conf))
    n = round(seconds * 48000)
    refs = torch.randn(batch, len(prompts), n, device=device) * 0.1
    mix, batch_prompts = refs.sum(1), [list(prompts)] * batch

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            est = module(mix, batch_prompts if module.is_tuss else None)
        loss = module._loss(est, refs, batch_prompts).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), 5.0)
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    step()  # warm-up
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return min(times)


def bench_loader(config, workers: int, batches: int) -> float:
    """Mixtures per second of the config's dynamic mixing (its chunk size and batch size) over a synthetic corpus."""
    with tempfile.TemporaryDirectory() as tmp:
        corpus = write_synthetic_corpus(tmp, files_per_prompt=4, num_mixtures=1, duration_scale=6.0)
        pools = load_source_pools([corpus["pools"]])
        train = config.dataset_conf.train
        dataset = DynamicMixingDataset(pools, config.prompts, train.chunk_size, train.sample_rate,
                                       train.downsample_to_minimum_fs, seed=0)
        sampler = SourceCountBatchSampler(batches + 2, config.batch_size, config.num_srcs_and_weights, seed=0)
        loader = DataLoader(dataset, batch_sampler=sampler, num_workers=workers, collate_fn=collate_mixtures)
        it = iter(loader)
        next(it), next(it)  # worker start-up excluded
        start = time.perf_counter()
        count = sum(next(it)["mix"].shape[0] for _ in range(batches))
        return count / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/unified/tuss.medium.2-4src.yaml")
    parser.add_argument("--seconds", type=float, default=2.0, help="chunk length of the step benchmark")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--prompts", nargs="+", default=["speech", "sfx", "musicbg"])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (as trainer_conf.precision bf16-mixed)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--loader-batches", type=int, default=10)
    parser.add_argument("--skip-loader", action="store_true")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    configure_cpu_allocator()
    device = pick_device(args.device)
    config = load_config(args.config)
    sec = bench_steps(config, device, args.batch, args.seconds, args.prompts, args.steps, args.bf16)
    print(f"train step: {args.config} on {device} ({args.threads} threads), batch {args.batch}, {args.seconds:g} s "
          f"chunks, prompts {' '.join(args.prompts)}{', bf16' if args.bf16 else ''}: {sec:.2f} s/step "
          f"= {1 / sec:.3f} steps/s (best of {args.steps})")
    if not args.skip_loader:
        rate = bench_loader(config, args.workers, args.loader_batches)
        print(f"dataloader: {args.workers} workers, {config.dataset_conf.train.chunk_size:g} s chunks, batch "
              f"{config.batch_size}: {rate:.1f} mixtures/s (synthetic corpus, 16/44.1/48 kHz files)")


if __name__ == "__main__":
    main()
