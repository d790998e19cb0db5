"""Checkpoint files: safe loading (``weights_only=True``; safetensors), averaging, and finding a checkpoint's config.

Layouts (docs/architecture.md §7): ``<exp>/hparams.yaml`` with ``<exp>/checkpoints/model.pth`` (a plain state dict) or
``<exp>/checkpoints/*.ckpt`` (Lightning: the state dict is under ``"state_dict"``); a bundled model folder
(``python -m training.bundle``) also has ``<model>/model.safetensors`` beside its ``hparams.yaml``: the same state
dict in the safetensors format, which holds tensors only and so cannot carry code. Every reader here takes any of
these files; a directory is read through its ``checkpoints/`` (:func:`checkpoint_files`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from utils.atomic import TMP_PREFIX, write_bytes, write_text
from utils.cli import first_line

__all__ = ["CheckpointError", "NonFiniteWeightsError", "read_checkpoint", "read_state_dict", "average_state_dicts",
           "average_checkpoints", "checkpoint_files", "find_config", "resolve_checkpoint", "nonfinite_tensors",
           "check_finite", "TOP_K_RECORD", "read_top_k_record", "write_top_k_record", "find_model",
           "SAFETENSORS_SUFFIX", "save_safetensors", "require_finite"]

log = logging.getLogger(__name__)

#: the checkpoints :func:`checkpoint_files` averages in a folder without a top-k record
CHECKPOINT_SUFFIXES = (".ckpt", ".pth", ".pt")

#: the suffix of a safetensors weight file (a state dict of tensors only: reading it runs no code)
SAFETENSORS_SUFFIX = ".safetensors"

#: the file, in ``checkpoints/``, where a training run records its current top-k checkpoints (name -> score)
TOP_K_RECORD = "top_k.json"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file."""


class NonFiniteWeightsError(RuntimeError):
    """Weights with NaN or infinite values, refused before they are written."""


def nonfinite_tensors(state: Mapping[str, object]) -> list[str]:
    """Names of the floating-point tensors of ``state`` that hold NaN or infinite values."""
    return [k for k, v in state.items()
            if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all())]


def check_finite(state: Mapping[str, object], target: str | os.PathLike) -> None:
    """Raise :class:`NonFiniteWeightsError` (naming ``target`` and the first bad tensors) if ``state`` holds a
    non-finite weight; called before every weight file the project writes."""
    bad = nonfinite_tensors(state)
    if bad:
        raise NonFiniteWeightsError(f"refusing to write {target}: {len(bad)} weight tensor(s) hold NaN or infinite "
                                    f"values ({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''})")


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file  # here: only the readers of a .safetensors file need it

    try:
        return load_file(path, device="cpu")
    except Exception as err:  # SafetensorError (header, offsets), OSError, ...: all mean "not usable"
        raise CheckpointError(f"{path} is not a loadable safetensors file ({first_line(err)})") from None


def require_finite(state: Mapping[str, object], source: str | os.PathLike) -> None:
    """Raise :class:`CheckpointError` (an input error: exit status 2) naming ``source`` and the first bad tensors when
    a weight of ``state`` is NaN or infinite: such weights are refused where they are read (``load_model``, train.py's
    ``pretrained_model_path``), before any output is computed from them."""
    bad = nonfinite_tensors(state)
    if bad:
        raise CheckpointError(f"{source} holds NaN or infinite weights in {len(bad)} tensor(s) ({', '.join(bad[:3])}"
                              f"{', ...' if len(bad) > 3 else ''}): not a usable model")


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict | None]:
    """The model state dict of a ``.pth``, Lightning ``.ckpt`` or ``.safetensors`` file (on CPU, never executing
    code) and the config a ``.ckpt`` of this project carries (``hyper_parameters["config"]``, else ``None``). A
    ``.safetensors`` file is read with ``safetensors.torch.load_file`` (its keys in the file's order, not the
    writer's).

    Raises:
        CheckpointError: missing file, a file that is not a torch checkpoint (or not a safetensors file, for a
            ``.safetensors`` name), or one without tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.suffix.lower() == SAFETENSORS_SUFFIX:
        state = _read_safetensors(path)
        if not state:
            raise CheckpointError(f"{path} holds no state dict of tensors")
        return state, None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle/zip errors of many kinds; all mean "not a safe torch checkpoint"
        raise CheckpointError(f"{path} is not a loadable torch checkpoint ({first_line(err)})") from None
    config = None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        hparams = obj.get("hyper_parameters")
        config = hparams.get("config") if isinstance(hparams, dict) else None
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} holds no state dict of tensors")
    return obj, config if isinstance(config, dict) else None


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The model state dict of a ``.pth``, Lightning ``.ckpt`` or ``.safetensors`` file (:func:`read_checkpoint`)."""
    return read_checkpoint(path)[0]


def _standalone(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` on CPU with every tensor contiguous and owning its memory (safetensors refuses tensors that share
    storage); tensors that already do are not copied."""
    out, seen = {}, set()
    for key, value in state.items():
        value = value.detach().cpu().contiguous()
        ptr = value.untyped_storage().data_ptr()
        if value.numel() and ptr in seen:
            value = value.clone()
            ptr = value.untyped_storage().data_ptr()
        seen.add(ptr)
        out[key] = value
    return out


def save_safetensors(state: Mapping[str, torch.Tensor], path: str | os.PathLike,
                     metadata: Mapping[str, str] | None = None) -> Path:
    """Write the state dict ``state`` to ``path`` in the safetensors format, atomically
    (:func:`utils.atomic.write_bytes`); returns ``path``. The tensors are written as they are (same keys, dtypes and
    values); ones that share storage or are not contiguous are copied first. ``metadata``: text entries of the
    file's header (default ``{"format": "pt"}``).

    Raises:
        utils.atomic.WriteError: the file could not be written (``path`` is left as it was).
    """
    from safetensors.torch import save

    data = save(_standalone(state), metadata={"format": "pt", **(metadata or {})})
    return write_bytes(path, data)


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


def average_checkpoints(files: Sequence[str | os.PathLike]) -> dict[str, torch.Tensor]:
    """The element-wise mean (:func:`average_state_dicts`) of the model state dicts of ``files`` (``.pth``,
    Lightning ``.ckpt`` or ``.safetensors``, read by :func:`read_state_dict`): the one averaging of train.py's
    ``pretrained_model_path``, ``python -m training.bundle`` and :func:`resolve_checkpoint` (docs/architecture.md §7).

    Raises:
        CheckpointError: no files, an unreadable one, or state dicts with different keys.
    """
    return average_state_dicts([read_state_dict(f) for f in files])


def write_top_k_record(folder: str | os.PathLike, scores: Mapping[str, float | None], monitor: str | None,
                       mode: str) -> Path:
    """Record (atomically) the checkpoints a run currently keeps as its top-k: ``{"monitor", "mode",
    "checkpoints": {file name: score}}`` in ``folder/top_k.json``."""
    data = {"monitor": monitor, "mode": mode, "checkpoints": {Path(k).name: v for k, v in scores.items()}}
    return write_text(Path(folder) / TOP_K_RECORD, json.dumps(data, indent=2) + "\n")


def read_top_k_record(folder: str | os.PathLike) -> list[Path] | None:
    """The checkpoints recorded in ``folder/top_k.json`` (sorted by name), or ``None`` without a record.

    The record is a file of the experiment, but not trusted: each name must be a plain file name, and the file it
    names must be inside ``folder`` (a name with a path, ``..`` or a link out of the folder is refused), so reading
    a record never opens another file.

    Raises:
        CheckpointError: an unreadable record, one naming a file outside ``folder``, or one naming a file that is not
            there.
    """
    record = Path(folder) / TOP_K_RECORD
    if not record.is_file():
        return None
    try:
        names = list(json.loads(record.read_text())["checkpoints"])
        if not all(isinstance(n, str) for n in names):
            raise TypeError("checkpoint names must be strings")
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{record} is not a readable top-k record ({err})") from None
    inside = Path(folder).resolve()
    for n in names:
        if not n or n in (".", "..") or Path(n).name != n or "\\" in n or \
                (Path(folder) / n).resolve().parent != inside:
            raise CheckpointError(f"{record} names {n!r}, which is not a checkpoint file in {folder}: only files "
                                  "of that folder are read (a damaged or tampered record?)")
    files = sorted(Path(folder) / n for n in names)
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise CheckpointError(f"{record} lists checkpoint(s) that are missing: {', '.join(missing)}")
    return files


def checkpoint_files(exp_dir: str | os.PathLike) -> list[Path]:
    """The checkpoints to average for an experiment directory (its ``checkpoints/``, or the directory itself when it
    has none): exactly those its training run recorded as its top-k (:data:`TOP_K_RECORD`; never ``last.ckpt``, an
    orphan of an interrupted save or a ``-v1`` copy), or, for a directory without a record (e.g. the authors'
    layout), every ``.ckpt``/``.pth`` except ``last*.ckpt``. Sorted by name.

    Raises:
        CheckpointError: no checkpoint to average, or a record naming missing files.
    """
    exp_dir = Path(exp_dir)
    folder = exp_dir / "checkpoints" if (exp_dir / "checkpoints").is_dir() else exp_dir
    files = read_top_k_record(folder)
    if files is None:
        files = sorted(p for p in folder.iterdir() if p.suffix in CHECKPOINT_SUFFIXES
                       and not p.name.startswith(("last", TMP_PREFIX)))
    if not files:
        raise CheckpointError(f"no checkpoints to average in {folder} (an empty {TOP_K_RECORD}, or no *.ckpt/*.pth "
                              "other than last.ckpt)")
    return files


def find_config(ckpt_path: str | os.PathLike) -> Path:
    """``hparams.yaml`` for a checkpoint: inside a directory; for a checkpoint file, two levels above it or beside
    it -- the nearer one first unless the file is in a ``checkpoints/`` folder (``<exp>/checkpoints/x.ckpt ->
    <exp>/hparams.yaml``, ``<model>/model.safetensors -> <model>/hparams.yaml``, even when ``<model>`` is inside
    another experiment)."""
    ckpt_path = Path(ckpt_path)
    if ckpt_path.is_dir():
        candidates = [ckpt_path / "hparams.yaml"]
    else:
        candidates = [ckpt_path.parent.parent / "hparams.yaml", ckpt_path.parent / "hparams.yaml"]
        if ckpt_path.parent.name != "checkpoints":
            candidates.reverse()
    for c in candidates:
        if c.is_file():
            return c
    raise CheckpointError(f"no hparams.yaml for checkpoint {ckpt_path} (looked for "
                          f"{' and '.join(str(c) for c in candidates)})")


def resolve_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], Path | dict]:
    """State dict (averaged for a directory) and config -- the ``hparams.yaml`` path, or, for a lone ``.ckpt`` of
    this project, the config it carries -- of a checkpoint file or experiment directory."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.is_file():
        state, carried = read_checkpoint(path)
        try:
            return state, find_config(path)
        except CheckpointError:
            if carried is None:
                raise
            return state, carried
    config = find_config(path)
    files = checkpoint_files(path)
    log.info("averaging %d checkpoint(s) of %s: %s", len(files), path, ", ".join(f.name for f in files))
    return average_checkpoints(files), config


def find_model(path_or_name: str | os.PathLike) -> Path:
    """The checkpoint ``path_or_name`` names: the path itself when it exists; else, for a bare name (no path
    separator) of a bundled model folder ``<repository>/pretrained_models/<name>/`` (``hparams.yaml`` and
    ``checkpoints/``; docs/architecture.md §7), that folder's ``checkpoints/model.pth`` (the folder itself when it
    has none); else the path unchanged, for the caller's "checkpoint not found" error. Works from any directory:
    ``find_model("tuss.demo")`` is ``<repository>/pretrained_models/tuss.demo/checkpoints/model.pth``.
    """
    path = Path(path_or_name)
    if path.exists():
        return path
    name = os.fspath(path_or_name)
    if name and not any(sep and sep in name for sep in ("/", os.sep, os.altsep)):
        folder = Path(__file__).resolve().parents[1] / "pretrained_models" / name
        if (folder / "hparams.yaml").is_file() and (folder / "checkpoints").is_dir():
            ckpt = folder / "checkpoints" / "model.pth"
            return ckpt if ckpt.is_file() else folder
    return path
