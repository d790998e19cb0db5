"""The exported graph's interface, shared by the exporter (:mod:`nets.onnx.export`) and the runtime
(:mod:`nets.onnx.runtime`): input and output names, and the metadata keys (see :mod:`nets.onnx`)."""

from __future__ import annotations

__all__ = ["MIX", "PROMPTS", "OUTPUT", "SAMPLE_RATE", "WINDOW_SAMPLES", "PROMPT_NAMES", "NUM_OUTPUTS", "MODEL_NAME"]

#: names of the graph's inputs and output
MIX, PROMPTS, OUTPUT = "mix", "prompts", "stems"
#: metadata keys (``metadata_props``)
SAMPLE_RATE, WINDOW_SAMPLES, PROMPT_NAMES, NUM_OUTPUTS, MODEL_NAME = (
    "sample_rate", "window_samples", "prompts", "num_outputs", "model_name")
