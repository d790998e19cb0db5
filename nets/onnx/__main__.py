"""``python -m nets.onnx CKPT OUT.onnx [--opset N]``: export a model to one ONNX graph (:mod:`nets.onnx`).

Exit codes (:mod:`utils.cli`): 0 written, 2 a usage or input error (nothing written), 1 a failure while writing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nets.onnx
from nets import load_model
from utils.cli import UsageError, run_main

from .export import MIN_OPSET, check_opset, export_onnx

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """``python -m nets.onnx CKPT OUT.onnx [--opset N]``: exit 0, 2 (usage or input error) or 1 (write)."""
    parser = argparse.ArgumentParser(prog="python -m nets.onnx", description=nets.onnx.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("ckpt_path", help="the model: .pth, .ckpt or experiment directory (as nets.load_model)")
    parser.add_argument("out", help="the .onnx file to write")
    parser.add_argument("--opset", type=int, help=f"ONNX opset (>= {MIN_OPSET}; default: torch's)")
    args = parser.parse_args(argv)
    return run_main(lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.suffix.lower() != ".onnx":
        raise UsageError(f"the output must be an .onnx file, got {out}")
    try:
        check_opset(args.opset)
    except ValueError as err:
        raise UsageError(str(err)) from None
    model = load_model(args.ckpt_path)
    export_onnx(model, out, args.opset)
    what = (f"prompts {','.join(model.prompt_names)} (input prompts: indices)" if model.prompt_names is not None
            else f"{model.num_outputs} outputs, no prompts")
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB): mix (batch, samples) at {model.sample_rate} Hz -> "
          f"stems (batch, outputs, samples); {what}; window {model.window_samples} samples")
    return 0


if __name__ == "__main__":
    sys.exit(main())
