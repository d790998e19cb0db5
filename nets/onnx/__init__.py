"""ONNX export of a separation model (:mod:`nets.onnx.export`), and the ONNX Runtime model that runs the exported
graph (:mod:`nets.onnx.runtime`).

    python -m nets.onnx pretrained_models/tuss.medium.2-4src/checkpoints/model.pth tuss.medium.onnx
    python -m nets.onnx exp/oss/tuss.demo tuss.demo.onnx --opset 18

The checkpoint argument is anything :func:`nets.load_model` takes (``.pth``, ``.ckpt``, experiment directory, a
bundled model's name).

**The graph** (one per model, every axis but the model's own sizes dynamic; docs/architecture.md §2):

- inputs ``mix`` float32 ``(batch, samples)`` at the model rate and, for TUSS, ``prompts`` int64
  ``(batch, n_prompts)``: indices into the model's prompt list (``model.prompt_names``); items may use different
  prompts, repeats allowed;
- output ``stems`` float32 ``(batch, n_prompts, samples)`` (the conventional model: no ``prompts`` input,
  ``(batch, num_spk, samples)``);
- metadata (``metadata_props``): ``prompts`` (comma-separated names in index order; absent for the conventional
  model), ``sample_rate``, ``window_samples`` (the shortest input: one STFT window), ``num_outputs`` (conventional
  model only), ``model_name``.

**What is replaced** (:class:`ExportWrapper`): the graph holds no complex tensors. The wrapper reuses the model's own
submodules and parameters (band split, Locoformer stacks, prompt vectors: shared, not copied; the model is not
changed) and replaces only

- the STFT (§2) by a ``conv1d`` with precomputed ``window * cos`` / ``-window * sin`` bases (the same zero padding:
  ``fft_size // 2`` at the start, up to the end of the last frame at the end);
- the inverse STFT by a ``conv_transpose1d`` with the one-sided inverse DFT bases times the synthesis window
  (overlap-add), divided by the overlap-added squared window and cut as ``torch.istft(center=True)`` does;
- the complex mask product (§5 step 8, §6) by the same product on (real, imaginary) pairs;
- the prompt lookup by name by a gather of the stacked prompt vectors by index;
- the rotary embedding (§4, a complex product) by its real form ``(a cos - b sin, b cos + a sin)``, in a structural
  copy of the network whose modules share the model's parameters; in that copy the band split's per-band parameters
  are packed once (§3 packs them on every call) and become constants of the graph, and every module is set to the
  export path (:data:`nets.paths.EXPORT`: out-of-place operations, no fused path), so the graph is the same whatever
  the grad mode the export runs in.

Export needs ``onnx`` and ``onnxscript`` (torch's exporter); running a graph needs ``onnxruntime`` only.

:class:`OnnxModel` runs a graph with ONNX Runtime behind the inference interface of :class:`nets.SeparationModel`
(``model(mix, prompts)``, ``prompt_names``, ``sample_rate``, ``window_samples``, ``num_outputs``), so the one
inference path (``separation.pipeline.separate_mixture``) takes it unchanged.
"""

from __future__ import annotations

from .export import MIN_OPSET, ExportWrapper, check_opset, export_onnx
from .graph import MIX, OUTPUT, PROMPTS
from .runtime import OnnxModel

__all__ = ["export_onnx", "check_opset", "OnnxModel", "ExportWrapper", "MIN_OPSET", "MIX", "PROMPTS", "OUTPUT"]
