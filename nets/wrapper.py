"""Separation wrapper (docs/architecture.md §2): variance normalisation, STFT encoder, separator, inverse STFT."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from . import paths as path_options
from .paths import PathOptions
from .prompts import check_prompts
from .stft import STFTDecoder, STFTEncoder

__all__ = ["SeparationModel"]


class SeparationModel(nn.Module):
    """Waveform-in, waveform-out separation model.

    ``model(mix, prompts)``: ``mix`` ``(b, n)`` float at ``model.sample_rate``; ``prompts`` a list of ``b``
    equal-length lists of prompt names (ignored by the conventional model) -> ``(b, s, n)``. The caller's tensor is
    never modified. ``state_dict`` keys start with ``separator.`` (a training module storing this as ``model``
    gives the published ``model.separator.*`` layout).

    ``fused`` chooses the fused CPU inference path (docs/architecture.md §4; :meth:`set_fused`, called here): ``None``
    automatic, ``True`` always, ``False`` never. The choice, with the other path options, is :attr:`paths`.
    """

    def __init__(self, separator: nn.Module, encoder: STFTEncoder, decoder: STFTDecoder,
                 variance_normalization: bool = True, sample_rate: int = 48000, config=None,
                 fused: bool | None = None):
        super().__init__()
        self.separator = separator
        self.encoder = encoder
        self.decoder = decoder
        self.variance_normalization = variance_normalization
        self.sample_rate = sample_rate
        self.config = config
        self.paths = PathOptions()  # the model's path options (nets.paths), as set on every module
        self.set_fused(fused)

    def set_fused(self, mode: bool | None = None) -> SeparationModel:
        """Choose the fused CPU inference path on every module (docs/architecture.md §4): ``None`` automatic (a
        float32 CPU forward in eval mode without autograd or autocast, where oneDNN's op exists), ``True`` always
        (a call it cannot run raises ``RuntimeError``), ``False`` never (the plain path). ``TUSS_ONEDNN=0`` in the
        environment, read now, turns it off whatever ``mode`` (:func:`nets.paths.fused_mode`). Returns the model.

        Raises:
            RuntimeError: ``mode`` is ``True`` and this torch has no oneDNN fused linear op.
        """
        path_options.set_fused(self, mode)
        return self

    def set_paths(self, options: PathOptions) -> SeparationModel:
        """Set :class:`nets.paths.PathOptions` on every module as they are (no environment read); returns the model."""
        path_options.set_paths(self, options)
        return self

    @property
    def prompt_names(self) -> tuple[str, ...] | None:
        """The prompts the model knows, or ``None`` for a model without prompts."""
        return getattr(self.separator, "prompt_names", None)

    @property
    def window_samples(self) -> int:
        """The STFT window (frame) in samples at :attr:`sample_rate`: the shortest input the model separates."""
        return max(int(self.encoder.fft_size), int(self.encoder.window_length))

    @property
    def num_outputs(self) -> int | None:
        """Fixed number of outputs of a model without prompts (``None`` for TUSS)."""
        return getattr(self.separator, "num_spk", None)

    def check_prompts(self, prompts: Sequence[Sequence[str]], batch_size: int) -> None:
        """Raise :class:`nets.PromptError` unless ``prompts`` is ``batch_size`` equal-length lists of names in
        :attr:`prompt_names` (:func:`nets.prompts.check_prompts`; a model without prompts ignores them)."""
        check_prompts(self.prompt_names, prompts, batch_size)

    def forward(self, mix: torch.Tensor, prompts: Sequence[Sequence[str]] | None = None) -> torch.Tensor:
        if mix.ndim != 2 or not mix.is_floating_point():
            raise ValueError(f"mix must be a float tensor (batch, samples), got {tuple(mix.shape)} {mix.dtype}")
        n = mix.shape[-1]
        if self.variance_normalization:
            std = mix.std(dim=-1, keepdim=True) + 1e-8  # (b, 1)
            mix = mix / std  # a new tensor: the caller's is untouched
        spec = self.encoder(mix)  # (b, t, f)
        est = self.separator(spec, prompts)  # (b, s, t, f)
        wave = self.decoder(est)[..., :n]  # (b, s, n)
        if self.variance_normalization:
            wave = wave * std.unsqueeze(-1)
        return wave
