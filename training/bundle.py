"""Bundle a trained experiment into a model folder in the published layout (docs/architecture.md §7).

    python -m training.bundle exp/oss/tuss.demo pretrained_models/tuss.demo
    python -m training.bundle exp/oss/tuss.demo /tmp/tuss.demo \\
        --ckpts exp/oss/tuss.demo/checkpoints/epoch=9-step=2000.ckpt
    python -m training.bundle exp/oss/tuss.demo pretrained_models/tuss.demo --config configs/demo/tuss.demo.yaml

Writes ``<out>/hparams.yaml`` (the experiment's, or ``--config``) and ``<out>/checkpoints/model.pth``: a plain state
dict (keys ``model.separator.*``, no optimizer state) that is the element-wise average of the experiment's checkpoints
(every ``checkpoints/*.ckpt`` except ``last.ckpt``: with ``save_top_k`` these are the top-k by the monitored
``val/loss``), or of ``--ckpts``. The bundled model is checked before anything is written: it must load strictly into
the network of the config (:func:`nets.load_model`). Both files are written atomically.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from nets import build_model, load_weights
from utils.atomic import save_torch, write_bytes
from utils.checkpoint import CheckpointError, average_checkpoints, check_finite, checkpoint_files, find_config
from utils.cli import run_main
from utils.config import load_config

__all__ = ["bundle_model", "main"]

log = logging.getLogger(__name__)


def bundle_model(exp_dir: str | os.PathLike, out_dir: str | os.PathLike,
                 ckpts: Sequence[str | os.PathLike] | None = None,
                 config: str | os.PathLike | None = None) -> Path:
    """Average checkpoints of ``exp_dir`` (or ``ckpts``) into ``out_dir/checkpoints/model.pth`` next to
    ``out_dir/hparams.yaml``; returns the path of ``model.pth``.

    Raises:
        CheckpointError: no checkpoints, unreadable ones, or weights that do not fit the config's network.
        ValueError: an unreadable config (ConfigError) or one that builds no network.
    """
    exp_dir, out_dir = Path(exp_dir), Path(out_dir)
    if not exp_dir.is_dir():
        raise CheckpointError(f"experiment directory not found: {exp_dir} (expected hparams.yaml and checkpoints/)")
    files = [Path(p) for p in ckpts] if ckpts else checkpoint_files(exp_dir)
    config_path = Path(config) if config is not None else find_config(exp_dir)
    cfg = load_config(config_path)
    state = average_checkpoints(files)
    state = {k: v.contiguous() for k, v in state.items()}
    load_weights(build_model(cfg), state, source=" + ".join(str(p) for p in files))  # strict: fails before writing
    log.info("averaged %d checkpoint(s): %s", len(files), ", ".join(p.name for p in files))
    check_finite(state, out_dir / "checkpoints" / "model.pth")
    final_pth = save_torch(state, out_dir / "checkpoints" / "model.pth")
    write_bytes(out_dir / "hparams.yaml", Path(config_path).read_bytes())
    return final_pth


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (utils.cli: 2 for bad input, 1 for a failed write)."""
    parser = argparse.ArgumentParser(prog="python -m training.bundle", description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("exp_dir", help="experiment directory (hparams.yaml, checkpoints/)")
    parser.add_argument("out_dir", help="output directory (hparams.yaml, checkpoints/model.pth)")
    parser.add_argument("--ckpts", nargs="+", help="average these checkpoint files instead of checkpoints/*.ckpt")
    parser.add_argument("--config", help="copy this config as hparams.yaml (default: <exp_dir>/hparams.yaml)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    def run() -> None:  # CheckpointError, ConfigError, ModelLoadError: 2; a failed write: 1
        path = bundle_model(args.exp_dir, args.out_dir, args.ckpts, args.config)
        print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB) and {Path(args.out_dir) / 'hparams.yaml'}")

    return run_main(run)


if __name__ == "__main__":
    sys.exit(main())
