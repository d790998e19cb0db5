"""Warm-start a network whose SwiGLU FFNs have longer kernels from a trained one with shorter kernels.

    python -m training.warm_start exp/init/tuss.demo.stage1/checkpoints/model.pth exp/init/tuss.demo.k4.pth \
        --config configs/demo/tuss.demo.yaml

The FFN of a Locoformer path (:class:`nets.locoformer.SwiGLUConvDeconv`, stride 1) is a convolution of kernel ``k``
followed by its transposed convolution. Placing a trained kernel-``k0`` convolution and transposed convolution in the
last ``k0`` taps of kernel-``k1`` ones (the other taps zero) gives exactly the same function: with the left padding
``k - 1`` the two extra offsets cancel. Training then grows the new taps from zero (their gradients are not zero).

Used for the bundled demo TUSS: its cross-prompt module's frame FFNs were widened from kernel 1 to 4 so that equal
prompts (``speech speech``, ``sfx sfx``), which differ only by their positions on the time axis, get distinct
outputs quickly (docs/results.md). Every other tensor must match the new network exactly.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Mapping
from pathlib import Path

import torch

from nets import build_model
from utils.atomic import save_torch
from utils.checkpoint import CheckpointError, check_finite, read_state_dict
from utils.cli import run_main
from utils.config import load_config

__all__ = ["widen_ffn_kernels", "main"]

log = logging.getLogger(__name__)

_FFN_WEIGHTS = ("conv1d.weight", "deconv1d.weight")


def widen_ffn_kernels(state: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` re-shaped to the keys and shapes of ``target`` (a new network's state dict).

    Tensors of equal shape are copied. An FFN convolution weight (``*.conv1d.weight`` ``(2i, d, k0)`` or
    ``*.deconv1d.weight`` ``(i, d, k0)``) whose target differs only in a longer kernel ``k1`` is placed in the last
    ``k0`` taps, the others zero (the same function, see the module docstring).

    Raises:
        CheckpointError: a missing or unexpected key, or a shape difference other than a longer FFN kernel.
    """
    missing = [k for k in target if k not in state]
    unexpected = [k for k in state if k not in target]
    if missing or unexpected:
        raise CheckpointError(f"keys differ from the new network: missing {missing[:3]}, unexpected {unexpected[:3]}")
    out = {}
    for key, ref in target.items():
        src = state[key]
        if src.shape == ref.shape:
            out[key] = src.clone()
            continue
        k0, k1 = src.shape[-1], ref.shape[-1]
        is_ffn = ".".join(key.split(".")[-2:]) in _FFN_WEIGHTS
        if not (is_ffn and src.dim() == 3 and src.shape[:2] == ref.shape[:2] and k1 > k0):
            raise CheckpointError(f"{key}: shape {tuple(src.shape)} cannot become {tuple(ref.shape)} (only a longer "
                                  "kernel of an FFN conv1d/deconv1d weight can be widened)")
        wide = src.new_zeros(ref.shape)
        wide[..., k1 - k0:] = src
        out[key] = wide
        log.info("%s: kernel %d -> %d", key, k0, k1)
    return out


def main(argv: list[str] | None = None) -> int:
    """Command line: ``IN OUT --config CONFIG``; writes OUT (a plain state dict) atomically."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", type=Path, help="trained weights (.pth or Lightning .ckpt)")
    parser.add_argument("dst", type=Path, help="output .pth for the network of --config")
    parser.add_argument("--config", type=Path, required=True, help="config of the new network")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    def run() -> None:  # bad weights or config: 2; a failed write: 1
        model = build_model(load_config(args.config))
        src = read_state_dict(args.src)
        prefix = "model." if all(k.startswith("model.") for k in src) else ""
        target = {prefix + k: v for k, v in model.state_dict().items()}
        state = widen_ffn_kernels(src, target)  # keys and shapes are the new network's: it loads strictly
        check_finite(state, args.dst)
        print(f"wrote {save_torch(state, args.dst)}")

    return run_main(run)


if __name__ == "__main__":
    sys.exit(main())
