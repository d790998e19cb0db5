"""Checkpoint files: safe loading (``weights_only=True``), averaging, and finding a checkpoint's config.

Layouts (architecture.md §5): ``<exp>/hparams.yaml`` with ``<exp>/checkpoints/model.pth`` (a plain state dict) or
``<exp>/checkpoints/*.ckpt`` (Lightning: the state dict is under ``"state_dict"``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch

__all__ = ["CheckpointError", "read_state_dict", "average_state_dicts", "checkpoint_files", "find_config",
           "resolve_checkpoint"]

CHECKPOINT_SUFFIXES = (".ckpt", ".pth", ".pt")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file."""


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load the model state dict of a ``.pth`` or Lightning ``.ckpt`` file on CPU, never executing code.

    Raises:
        CheckpointError: missing file, a file that is not a torch checkpoint, or one without tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle/zip errors of many kinds; all mean "not a safe torch checkpoint"
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path} is not a loadable torch checkpoint ({first})") from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} holds no state dict of tensors")
    return obj


def average_state_dicts(state_dicts: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Element-wise mean of several state dicts with identical keys (integer tensors are summed, as published)."""
    if not state_dicts:
        raise CheckpointError("no state dicts to average")
    keys = list(state_dicts[0])
    for i, sd in enumerate(state_dicts[1:], 1):
        if list(sd) != keys and set(sd) != set(keys):
            raise CheckpointError(f"checkpoint {i} has different keys from checkpoint 0; cannot average")
    out = {}
    for key in keys:
        tensors = [sd[key] for sd in state_dicts]
        if tensors[0].is_floating_point() or tensors[0].is_complex():
            out[key] = torch.stack([t.to(torch.float64) for t in tensors]).mean(0).to(tensors[0].dtype)
        else:
            out[key] = torch.stack(tensors).sum(0)
    return out


def checkpoint_files(exp_dir: str | os.PathLike) -> list[Path]:
    """The checkpoints to average for an experiment directory: every ``.ckpt``/``.pth`` in ``checkpoints/`` (or in
    the directory itself when it has no ``checkpoints/``) except ``last.ckpt``, sorted by name."""
    exp_dir = Path(exp_dir)
    folder = exp_dir / "checkpoints" if (exp_dir / "checkpoints").is_dir() else exp_dir
    files = sorted(p for p in folder.iterdir() if p.suffix in CHECKPOINT_SUFFIXES and p.name != "last.ckpt")
    if not files:
        raise CheckpointError(f"no checkpoints (*.ckpt, *.pth other than last.ckpt) in {folder}")
    return files


def find_config(ckpt_path: str | os.PathLike) -> Path:
    """``hparams.yaml`` for a checkpoint: inside a directory, or two levels above a checkpoint file
    (``<exp>/checkpoints/x.ckpt -> <exp>/hparams.yaml``)."""
    ckpt_path = Path(ckpt_path)
    candidates = [ckpt_path / "hparams.yaml"] if ckpt_path.is_dir() else [ckpt_path.parent.parent / "hparams.yaml",
                                                                          ckpt_path.parent / "hparams.yaml"]
    for c in candidates:
        if c.is_file():
            return c
    raise CheckpointError(f"no hparams.yaml for checkpoint {ckpt_path} (looked for {candidates[0]})")


def resolve_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], Path]:
    """State dict (averaged for a directory) and config path for a checkpoint file or experiment directory."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    config = find_config(path)
    if path.is_dir():
        state = average_state_dicts([read_state_dict(p) for p in checkpoint_files(path)])
    else:
        state = read_state_dict(path)
    return state, config
