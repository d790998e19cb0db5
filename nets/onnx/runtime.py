"""The ONNX Runtime model (:mod:`nets.onnx`): :class:`OnnxModel` runs a graph written by
:func:`nets.onnx.export_onnx` behind the inference interface of :class:`nets.SeparationModel`, its prompts, sample
rate and window read from the graph's metadata. Needs ``onnxruntime`` only (not the exporter's packages)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from utils.checkpoint import CheckpointError
from utils.cli import first_line

from ..prompts import check_prompts
from .graph import MIX, NUM_OUTPUTS, PROMPT_NAMES, PROMPTS, SAMPLE_RATE, WINDOW_SAMPLES

__all__ = ["OnnxModel"]


class OnnxModel:
    """An exported graph run by ONNX Runtime, with the inference interface of :class:`nets.SeparationModel`:
    ``model(mix (b, n), prompts) -> (b, s, n)`` (prompt names, checked as the model checks them), ``prompt_names``,
    ``sample_rate``, ``window_samples``, ``num_outputs`` -- all read from the graph's metadata.

    Args:
        path: a ``.onnx`` file written by :func:`nets.onnx.export_onnx`.
        device: ``cuda[:i]`` runs on ONNX Runtime's CUDAExecutionProvider when this onnxruntime has it (otherwise on
            the CPU, with a warning); anything else on the CPUExecutionProvider. Outputs are on ``mix``'s device.
        threads: ONNX Runtime's intra-op threads (default: ``torch.get_num_threads()``).

    Raises:
        utils.checkpoint.CheckpointError: a missing file, not ``.onnx``, not loadable, or without the metadata.
    """

    def __init__(self, path: str | os.PathLike, device: str | torch.device = "cpu", threads: int | None = None):
        try:
            import onnxruntime as ort
        except ImportError as err:
            raise RuntimeError(f"the ONNX Runtime backend needs onnxruntime (pip install -r requirements.txt): "
                               f"{err}") from None

        self.path = Path(path)
        if self.path.suffix.lower() != ".onnx":
            raise CheckpointError(f"{self.path} is not an ONNX model (.onnx)")
        if not self.path.is_file():
            raise CheckpointError(f"ONNX model not found: {self.path}")
        device = torch.device(device)
        providers: list = ["CPUExecutionProvider"]
        if device.type == "cuda":
            if "CUDAExecutionProvider" in ort.get_available_providers():
                providers.insert(0, ("CUDAExecutionProvider", {"device_id": device.index or 0}))
            else:
                warnings.warn(f"this onnxruntime has no CUDAExecutionProvider (it has "
                              f"{', '.join(ort.get_available_providers())}); running {self.path} on the CPU",
                              RuntimeWarning, stacklevel=2)
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads or torch.get_num_threads())
        options.log_severity_level = 3  # errors only
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=providers)
        except Exception as err:  # onnxruntime's own exception types (InvalidProtobuf, Fail, ...)
            raise CheckpointError(f"cannot load ONNX model {self.path}: {first_line(err)}") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        inputs = [i.name for i in self.session.get_inputs()]

        def entry(key: str) -> int:
            try:
                return int(meta[key])
            except (KeyError, ValueError):
                raise CheckpointError(f"{self.path} has no valid metadata {key!r} (got {meta.get(key)!r}); export "
                                      "the model with python -m nets.onnx") from None

        self.sample_rate, self.window_samples = entry(SAMPLE_RATE), entry(WINDOW_SAMPLES)
        names = meta.get(PROMPT_NAMES)
        self.prompt_names: tuple[str, ...] | None = tuple(names.split(",")) if names else None
        self.num_outputs: int | None = None if self.prompt_names else entry(NUM_OUTPUTS)
        expected = [MIX, PROMPTS] if self.prompt_names else [MIX]
        if inputs != expected:
            raise CheckpointError(f"{self.path} takes inputs {inputs}, expected {expected} for its metadata")
        self._index = {p: i for i, p in enumerate(self.prompt_names or ())}
        self._output = self.session.get_outputs()[0].name
        # the prompt table is probed on the CPU (the CPU's Gather refuses an index out of the table)
        probe = self.session if self.providers[0] == "CPUExecutionProvider" else ort.InferenceSession(
            str(self.path), options, providers=["CPUExecutionProvider"])
        self._check_metadata(probe)

    def _check_metadata(self, session) -> None:
        """Refuse metadata that does not fit the graph (the file is not trusted): a rate, window or output count
        that is not positive, prompt names that are empty, repeated or hold a ``_``, or a number of names other
        than the rows of the graph's prompt table (found by running it: the last name's index must run, the next
        one must be out of the table)."""
        for key, value in ((SAMPLE_RATE, self.sample_rate), (WINDOW_SAMPLES, self.window_samples),
                           (NUM_OUTPUTS, self.num_outputs)):
            if value is not None and value <= 0:
                raise CheckpointError(f"{self.path}: metadata {key!r} must be a positive integer, got {value}")
        names = self.prompt_names
        if names is None:
            return
        repeated = sorted({p for p in names if names.count(p) > 1})
        if repeated or any(not p or "_" in p for p in names):
            raise CheckpointError(f"{self.path}: metadata {PROMPT_NAMES!r} must be distinct, non-empty names without "
                                  f"'_', got {','.join(names)!r}")
        mix = np.zeros((1, self.window_samples), np.float32)

        def runs(index: int) -> bool:
            try:
                session.run([self._output], {MIX: mix, PROMPTS: np.array([[index]], np.int64)})
            except Exception:  # onnxruntime's own error: the index is out of the graph's prompt table
                return False
            return True

        if not runs(len(names) - 1) or runs(len(names)):
            raise CheckpointError(f"{self.path}: its metadata names {len(names)} prompts, which is not the number of "
                                  "rows of the graph's prompt table (a damaged or edited file; export it again with "
                                  "python -m nets.onnx)")

    @property
    def providers(self) -> list[str]:
        """The execution providers the session uses, in order of preference."""
        return self.session.get_providers()

    def check_prompts(self, prompts: Sequence[Sequence[str]], batch_size: int) -> None:
        """Raise :class:`nets.PromptError` unless ``prompts`` fit :attr:`prompt_names`: the model's own check
        (:func:`nets.prompts.check_prompts`, the same messages)."""
        check_prompts(self.prompt_names, prompts, batch_size)

    def inputs(self, mix: torch.Tensor, prompts: Sequence[Sequence[str]] | None = None) -> dict[str, np.ndarray]:
        """The session's feeds for ``model(mix, prompts)``: ``mix`` as float32 and the prompts as indices."""
        if mix.ndim != 2 or not mix.is_floating_point():
            raise ValueError(f"mix must be a float tensor (batch, samples), got {tuple(mix.shape)} {mix.dtype}")
        feeds = {MIX: np.ascontiguousarray(mix.detach().float().cpu().numpy())}
        if self.prompt_names is not None:
            self.check_prompts(prompts, mix.shape[0])
            feeds[PROMPTS] = np.array([[self._index[p] for p in item] for item in prompts], dtype=np.int64)
        return feeds

    def __call__(self, mix: torch.Tensor, prompts: Sequence[Sequence[str]] | None = None) -> torch.Tensor:
        out = self.session.run([self._output], self.inputs(mix, prompts))[0]
        return torch.from_numpy(out).to(mix.device)
