#!/usr/bin/env python3
"""Evaluate a trained model on the test sets of its config.

  python eval.py --ckpt_path exp/oss/tuss.medium.2-4src/checkpoints/epoch=99.ckpt
  python eval.py --ckpt_path exp/oss/tuss.medium.2-4src            # average checkpoints/* except last.ckpt
  python eval.py --ckpt_path ... --single_prompt                    # one prompt (group of equal prompts) per pass
  python eval.py --ckpt_path ... --css_segment_size 8 --css_shift_size 4
  python eval.py --ckpt_path ... --device cuda --precision bf16-mixed   # bf16 autocast on a GPU
  python eval.py --ckpt_path ... --metrics snr sisnr pesq estoi sdr     # more metrics (default: snr sisnr)
  python eval.py --ckpt_path ... --device cuda --devices 4              # 4 GPUs (--device cpu: 4 processes)
  torchrun --nnodes 2 --nproc_per_node 4 ... eval.py --ckpt_path ... --device cuda --devices 4 --num_nodes 2

Writes <experiment>/result.txt (sorted "key: value" lines, two decimals) and result.json, results_items.csv (one row
per output of every test item), result.md (the summary as a Markdown table) and result.png (a bar chart), or
result_single.* / results_items_single.csv with --single_prompt, and the separated audio under
<experiment>/audio_outputs[_single]/<dataset>/. The experiment directory is the checkpoint directory itself, or two
levels above a checkpoint file. CSS sizes default to css_conf in hparams.yaml; --css_shift_size defaults to half of a
given --css_segment_size.

Metrics (--metrics): snr, sisnr (each with its improvement over the mixture, snri/sisnri; the default), pesq
(wide-band, at 16 kHz) and estoi (extended STOI) for speech outputs, sdr (BSS Eval v4 as museval: median over 1 s
frames; datasets and prompts: median over items) and usdr (the MDX challenge's utterance SDR) for drums, bass,
vocals, other and musicbg outputs. One-source items of FUSS are scored by absolute SI-SNR and SNR.

Errors: one line "error: ..." on stderr; exit 2 for a usage, config or input error (bad option value, missing
checkpoint or test data, NaN weights, an existing result without --overwrite, an unusable experiment directory), 1
for a failure while working (full disk, permission). An existing result is replaced only once the new one is
complete. A test mixture that cannot be read is skipped: the results are written without it, test/skipped counts
and result.md names the skipped ones, and the exit status is 1 (--strict: exit 2 at the first, nothing written).

Several processes (--devices N per node, --num_nodes M; started by eval.py itself on one node, or by torchrun/srun):
each scores a shard of every test set (no item twice), and the first gathers every item's scores and writes the same
result as one process would; the experiment directory must be on a filesystem all of them see.
"""

from __future__ import annotations

import argparse
import logging
import sys

from training.metric_names import DEFAULT_EVAL_METRICS, EVAL_METRICS
from utils.cli import run_main

__all__ = ["main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python eval.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt_path", required=True, help=".ckpt/.pth file, experiment directory (averaged), or a "
                   "bundled model's name (tuss.demo: pretrained_models/tuss.demo)")
    p.add_argument("--single_prompt", action="store_true", help="single-prompt setup: each group of equal prompts "
                   "separated on its own")
    p.add_argument("--css_segment_size", type=float, help="CSS segment length in seconds (default: hparams.yaml)")
    p.add_argument("--css_shift_size", type=float, help="CSS shift in seconds (default: hparams.yaml, or half of "
                   "--css_segment_size)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing result")
    p.add_argument("--device", help="cpu, cuda, cuda:1 or mps (default: a GPU when present)")
    p.add_argument("--precision", default="32", choices=["32", "bf16-mixed", "16-mixed"],
                   help="network precision (default 32; bf16-mixed: bf16 autocast, for GPUs that support it)")
    p.add_argument("--no_audio", action="store_true", help="do not save the separated audio")
    p.add_argument("--metrics", nargs="+", default=list(DEFAULT_EVAL_METRICS), metavar="NAME",
                   help=f"metrics to compute and report, of {', '.join(EVAL_METRICS)} (default: "
                        f"{' '.join(DEFAULT_EVAL_METRICS)}); pesq/estoi only for speech outputs, sdr/usdr only for "
                        "drums, bass, vocals, other, musicbg")
    p.add_argument("--strict", action="store_true", help="stop (exit 2, nothing written) at a test mixture that "
                   "cannot be read; by default it is skipped, counted (test/skipped) and named in result.md, and the "
                   "exit status is 1")
    p.add_argument("--devices", default="1", metavar="N", help="processes per node (default 1): N CPU processes, "
                   "or N GPUs with --device cuda; each scores a shard of the test sets, the result is a one-process "
                   "run's (under torchrun/srun: the processes per node they start)")
    p.add_argument("--num_nodes", default="1", metavar="M", help="nodes of a multi-node run (default 1; torchrun "
                   "--nnodes, srun --nodes)")
    p.add_argument("--quiet", action="store_true", help="no progress bar, no summary")
    return p


def main(argv: list[str] | None = None) -> int:
    """The command line: exit 0, 2 (usage, config or input error) or 1 (failure while working), see utils.cli."""
    args = build_parser().parse_args(argv)
    from training.evaluate import first_process  # light: no model, no Lightning set-up

    if args.quiet or not first_process():  # the other processes of a run on several: warnings only
        for name in ("lightning.pytorch", "lightning.pytorch.utilities.rank_zero", "lightning.fabric"):
            logging.getLogger(name).setLevel(logging.WARNING)
    else:  # e.g. which checkpoints of an experiment directory are averaged (utils.checkpoint)
        logging.getLogger("utils.checkpoint").setLevel(logging.INFO)
        if not logging.getLogger().handlers:
            logging.basicConfig(format="%(message)s")
    return run_main(lambda: run(args))


def run(args: argparse.Namespace) -> int:
    """Evaluate as the parsed command line says (:func:`training.evaluate.evaluate` checks every value once) and
    print the summary."""
    from training.evaluate import evaluate, experiment_dir, first_process, format_results, result_paths
    from utils.checkpoint import find_model

    metrics = evaluate(args.ckpt_path, args.single_prompt, args.css_segment_size, args.css_shift_size,
                       args.overwrite, args.device, save_audio=not args.no_audio, progress=not args.quiet,
                       precision=args.precision, metrics=args.metrics, strict=args.strict, devices=args.devices,
                       num_nodes=args.num_nodes)
    txt = result_paths(experiment_dir(find_model(args.ckpt_path)), args.single_prompt)[0]
    first = first_process()  # several processes: only the first prints (every one returns the same status)
    if not args.quiet and first:
        summary = {k: v for k, v in metrics.items() if k.startswith("test/")}
        print(format_results(summary) + f"-> {txt}")
    skipped = int(metrics.get("test/skipped", 0))
    if skipped:  # the results are written, but not over every test mixture: say so in the exit status
        if first:
            print(f"error: {skipped} test mixture(s) could not be read and were not scored (listed in "
                  f"{txt.with_suffix('.md').name}); --strict stops at the first", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
