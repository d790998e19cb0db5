"""Networks and the public model API.

>>> import torch
>>> from nets import build_model, load_model
>>> model = load_model("tuss.demo")     # the bundled demo model (pretrained_models/tuss.demo), from any directory
>>> mix = torch.randn(1, 48000)
>>> with torch.inference_mode():
...     est = model(mix, [["speech", "sfxbg", "musicbg"]])
>>> est.shape
torch.Size([1, 3, 48000])

``build_model(config)`` builds an untrained model from an experiment config or a published ``hparams.yaml``;
``load_model(path)`` loads weights from a ``.pth``, a Lightning ``.ckpt``, an experiment directory (averaged) or a
bundled model's name, and -- for the CPU -- tunes the process's memory allocator as the command lines do
(``utils.runtime``; about 30 % faster forwards; opt out with ``TUSS_ALLOCATOR_TUNING=0`` in the environment).
``load_model(path, fused=...)`` chooses the fused CPU inference path (docs/architecture.md §4; default automatic).

Checkpoint key mapping (the one mapping applied; docs/architecture.md §7): published keys are ``model.separator.*``
(the training module stores the model as ``model``); :class:`SeparationModel` keys are ``separator.*``. The ``model.``
prefix is removed when present; everything else must match exactly (names and shapes), or loading fails naming the
key.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch
from torch import nn

from utils.checkpoint import CheckpointError, find_model, require_finite, resolve_checkpoint
from utils.config import load_config
from utils.runtime import configure_cpu_allocator

from .bslocoformer import BSLocoformerStack
from .prompts import PromptError
from .stft import STFTDecoder, STFTEncoder
from .tuss import TUSS
from .wrapper import SeparationModel

__all__ = ["build_model", "load_model", "load_weights", "export_onnx", "SeparationModel", "TUSS",
           "BSLocoformerStack", "PromptError", "ModelLoadError", "MODELS"]


def __getattr__(name: str):
    """``nets.export_onnx`` (:func:`nets.onnx.export_onnx`), imported on first use: importing :mod:`nets` does not
    import the exporter."""
    if name == "export_onnx":
        from .onnx import export_onnx

        return export_onnx
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

#: ``model_name`` -> separator class; the class's keyword arguments are the keys of ``model_conf``.
MODELS: dict[str, type[nn.Module]] = {"tuss": TUSS, "bslocoformer_stack": BSLocoformerStack}
_CODECS = {"stft": (STFTEncoder, STFTDecoder)}


class ModelLoadError(CheckpointError):
    """Weights that do not fit the model built from their config; the message names the key."""


def build_model(config: str | os.PathLike | Mapping) -> SeparationModel:
    """Build an (untrained) :class:`SeparationModel` from a config path, dict or :class:`Config`.

    Uses ``model_name``, ``model_conf``, ``encoder_name/conf``, ``decoder_name/conf`` and
    ``variance_normalization``; other keys are ignored here.
    """
    cfg = load_config(config)
    name = cfg.get("model_name")
    if name not in MODELS:
        raise ValueError(f"model_name must be one of {sorted(MODELS)}, got {name!r}")
    model_conf = dict(cfg.get("model_conf") or {})
    try:
        separator = MODELS[name](**model_conf)
    except TypeError as err:
        raise ValueError(f"model_conf does not fit model {name!r}: {err}") from None
    codecs = []
    for part in ("encoder", "decoder"):
        kind = cfg.get(f"{part}_name", "stft")
        if kind not in _CODECS:
            raise ValueError(f"{part}_name must be one of {sorted(_CODECS)}, got {kind!r}")
        codecs.append(_CODECS[kind][part == "decoder"](**(cfg.get(f"{part}_conf") or {})))
    fft = codecs[0].fft_size
    if model_conf.get("stft_size", fft) != fft:
        raise ValueError(f"model_conf.stft_size {model_conf['stft_size']} differs from encoder fft_size {fft}")
    return SeparationModel(separator, *codecs, variance_normalization=bool(cfg.get("variance_normalization", True)),
                           sample_rate=int(model_conf.get("sample_rate", 48000)), config=cfg)


def load_weights(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Load a published-layout (``model.separator.*``) or plain (``separator.*``) state dict strictly.

    Raises:
        ModelLoadError: a missing or unexpected key, or a shape mismatch — naming the first offending keys.
    """
    state = {(k[len("model."):] if k.startswith("model.") else k): v for k, v in state_dict.items()}
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [f"{k} (checkpoint {tuple(state[k].shape)}, model {tuple(v.shape)})"
                  for k, v in expected.items() if k in state and state[k].shape != v.shape]

    def few(keys: list[str]) -> str:
        return ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")

    problems = [f"{len(missing)} missing key(s): {few(missing)}" if missing else "",
                f"{len(unexpected)} unexpected key(s): {few(unexpected)}" if unexpected else "",
                f"shape mismatch: {few(mismatched)}" if mismatched else ""]
    problems = [p for p in problems if p]
    if problems:
        raise ModelLoadError(f"{source} does not fit its config: " + "; ".join(problems))
    model.load_state_dict(state, strict=True)


def load_model(ckpt_path: str | os.PathLike, device: str | torch.device = "cpu",
               fused: bool | None = None) -> SeparationModel:
    """Load a trained model in eval mode.

    Args:
        ckpt_path: a ``.pth`` state dict or Lightning ``.ckpt`` (config: ``hparams.yaml`` two levels up; a ``.ckpt``
            written by train.py also carries its config and loads alone), an experiment directory (its
            ``hparams.yaml``; the checkpoints its run recorded as its top-k are averaged), or the name of a bundled
            model (``"tuss.demo"``: ``pretrained_models/tuss.demo``, found from any working directory;
            :func:`utils.checkpoint.find_model`).
        device: where to put the model.
        fused: the fused CPU inference path (docs/architecture.md §4; :meth:`SeparationModel.set_fused`): ``None``
            (default) automatic -- fused for a float32 CPU forward in eval mode without autograd or autocast, where
            oneDNN's op exists --, ``True`` always (a call it cannot run raises), ``False`` never. ``TUSS_ONEDNN=0``
            in the environment, read at this call, turns it off.

    On the CPU, the process's allocator is tuned for inference first (:func:`utils.runtime.configure_cpu_allocator`,
    as train.py, eval.py and separate.py do): the Python API is as fast as the command lines. It is process-wide and
    keeps freed memory for reuse; ``TUSS_ALLOCATOR_TUNING=0`` in the environment leaves glibc's defaults.

    Raises:
        CheckpointError: missing checkpoint or config, unreadable file, NaN or infinite weights.
        ModelLoadError: keys or shapes that do not fit the config.
        ValueError: ``fused=True`` with a device other than the CPU.
        RuntimeError: ``fused=True`` and this torch has no oneDNN fused linear op.
    """
    on_cpu = torch.device(device).type == "cpu"
    if fused and not on_cpu:
        raise ValueError(f"fused=True is the CPU inference path; the model goes to {device}")
    if on_cpu:
        configure_cpu_allocator()
    path = find_model(ckpt_path)
    state, config = resolve_checkpoint(path)
    require_finite(state, path)
    model = build_model(load_config(config))
    load_weights(model, state, source=str(path))
    return model.to(device).eval().set_fused(fused)
