#!/usr/bin/env python3
"""Evaluate a trained model on the test sets of its config (dataset_conf.test in hparams.yaml).

  python eval.py --ckpt_path exp/oss/tuss.medium.2-4src/checkpoints/epoch=149.ckpt
  python eval.py --ckpt_path exp/oss/tuss.medium.2-4src                   # average checkpoints/* but last.ckpt
  python eval.py --ckpt_path ... --single_prompt                          # one forward per distinct prompt
  python eval.py --ckpt_path ... --css_segment_size 8 --css_shift_size 4  # chunk-wise settings (default: hparams)

Writes result.txt (result_single.txt with --single_prompt) in the experiment directory, sorted `key: value` lines
with two decimals (test/loss, test/snr, test/sisnr, {dataset}_test/{prompt}/{metric}, ...), the same numbers
unrounded in result.json, and the separated audio under audio_outputs/<dataset>/ (audio_outputs_single/ with
--single_prompt) named <index>_<id>_<prompt><k>_sisnr<value>.wav.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

__all__ = ["main", "evaluate", "format_results"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python eval.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt_path", required=True, help=".ckpt/.pth file, or an experiment directory (averaged)")
    p.add_argument("--single_prompt", action="store_true", help="single-prompt evaluation (see the paper)")
    p.add_argument("--css_segment_size", type=float, help="CSS segment in seconds (default: css_conf in hparams)")
    p.add_argument("--css_shift_size", type=float, help="CSS shift in seconds (default: css_conf in hparams, or "
                   "the segment size when only --css_segment_size is given)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing result file")
    p.add_argument("--no_audio", action="store_true", help="do not save the separated audio")
    p.add_argument("--device", help="cpu or cuda (default: a GPU when present)")
    p.add_argument("--precision", default="32", help="Lightning precision for inference (default 32)")
    return p


def format_results(results: dict[str, float]) -> str:
    """Sorted ``key: value`` lines with two decimals."""
    return "".join(f"{k}: {results[k]:.2f}\n" for k in sorted(results))


def _write_text(path: Path, text: str) -> None:
    from utils.audio import atomic_path

    tmp, final = atomic_path(path)
    try:
        tmp.write_text(text)
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def evaluate(ckpt_path: str | os.PathLike, single_prompt: bool = False, css_segment_size: float | None = None,
             css_shift_size: float | None = None, overwrite: bool = False, save_audio: bool = True,
             device: str | None = None, precision: str = "32") -> tuple[dict[str, float], Path]:
    """Run the test sets of the checkpoint's config; write the result files; return ``(results, result.txt)``."""
    import lightning.pytorch as pl

    from nets import load_model
    from utils.audio import write_audio
    from utils.checkpoint import find_config
    from utils.config import load_config
    from utils.lightning_module import SeparationModule
    from utils.runtime import configure_cpu_allocator, pick_device

    ckpt_path = Path(ckpt_path)
    if not ckpt_path.exists():
        raise FileNotFoundError(f"checkpoint not found: {ckpt_path}")
    config_path = find_config(ckpt_path)
    exp_dir = config_path.parent
    suffix = "_single" if single_prompt else ""
    result_txt = exp_dir / f"result{suffix}.txt"
    if result_txt.exists() and not overwrite:
        raise FileExistsError(f"{result_txt} exists; pass --overwrite to replace it")
    config = load_config(config_path)
    if not ((config.get("dataset_conf") or {}).get("test") or {}).get("json_path_and_num_data"):
        raise ValueError(f"{config_path} names no test sets (dataset_conf.test.json_path_and_num_data)")

    configure_cpu_allocator()
    dev = pick_device(device)
    module = SeparationModule(config, model=load_model(ckpt_path, dev))
    module.single_prompt = single_prompt
    if css_segment_size is not None:
        module.css_conf["segment_size"] = css_segment_size
        module.css_conf["shift_size"] = css_segment_size if css_shift_size is None else css_shift_size
    elif css_shift_size is not None:
        module.css_conf["shift_size"] = css_shift_size

    if save_audio:
        audio_root = exp_dir / f"audio_outputs{suffix}"
        counters: dict[str, int] = {}

        def save(info: dict, est, sample_rate: int) -> None:
            index = counters.get(info["dataset"], 0)
            counters[info["dataset"]] = index + 1
            item = Path(str(info["id"])).stem + (f"_ch{info['channel']}" if info.get("channel") else "")
            for k, (prompt, value) in enumerate(zip(info["prompts"], info["sisnr"], strict=True)):
                name = f"{index:04d}_{item}_{prompt}{k}_sisnr{value:.2f}.wav"
                write_audio(audio_root / info["dataset"] / name, est[k], sample_rate)

        module.output_hook = save

    trainer = pl.Trainer(accelerator="gpu" if dev.type == "cuda" else "cpu", devices=1, precision=precision,
                         logger=False, enable_checkpointing=False, enable_model_summary=False,
                         default_root_dir=str(exp_dir))
    trainer.test(module, verbose=False)
    results = module.test_results()
    if not results:
        raise ValueError("the test sets held no items")
    _write_text(exp_dir / f"result{suffix}.json", json.dumps(dict(sorted(results.items())), indent=2) + "\n")
    _write_text(result_txt, format_results(results))
    return results, result_txt


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        results, path = evaluate(args.ckpt_path, args.single_prompt, args.css_segment_size, args.css_shift_size,
                                 args.overwrite, not args.no_audio, args.device, args.precision)
    except (ValueError, OSError) as err:  # CheckpointError, ModelLoadError, ConfigError, FileExistsError, ...
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(f"error: {msg}", file=sys.stderr)
        return 1
    print(format_results({k: v for k, v in results.items() if k.startswith("test/")}), end="")
    print(f"wrote {path} and {path.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
