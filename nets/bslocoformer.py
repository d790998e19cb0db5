"""The conventional BS-Locoformer stack (the paper's baseline, docs/architecture.md §6): a fixed number of
outputs, no prompts."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from .band_split import BandSplit
from .locoformer import TFLocoformerStack

__all__ = ["BSLocoformerStack"]


class BSLocoformerStack(nn.Module):
    """Band-split encoder, ``n_first_blocks`` + ``n_second_blocks`` TF-Locoformer blocks, band-wise decoder with
    ``num_spk`` outputs. ``(b, t, f)`` complex -> ``(b, num_spk, t, f)`` complex."""

    def __init__(self, *, num_spk: int, n_first_blocks: int, config_first_block: Mapping, n_second_blocks: int,
                 config_second_block: Mapping, sample_rate: int = 48000, stft_size: int = 2048, eps: float = 1e-5,
                 dropout: float = 0.0):
        super().__init__()
        emb_dim = config_first_block["emb_dim"]
        self.num_spk = num_spk
        self.first_block = TFLocoformerStack(n_first_blocks, config_first_block, eps, dropout)
        self.second_block = TFLocoformerStack(n_second_blocks, config_second_block, eps, dropout)
        self.band_split_module = BandSplit(sample_rate, stft_size, emb_dim, num_outputs=num_spk, eps=eps)

    def masks(self, feature: torch.Tensor) -> torch.Tensor:
        """Band features ``(b, d, t, k)`` -> the real and imaginary mask ``(b, num_spk, 2, t, f)``
        (docs/architecture.md §6; also the ONNX graph's, nets/onnx/export.py)."""
        b, _, t, _ = feature.shape
        mask = self.band_split_module.decode(self.second_block(self.first_block(feature)))  # (b, 2, num_spk, t, f)
        # Published weights depend on reading this (2, num_spk) memory layout as (num_spk, 2): a view, not a permute.
        return mask.reshape(b, self.num_spk, 2, t, -1).float()

    def forward(self, spec: torch.Tensor, prompts=None) -> torch.Tensor:
        mask = self.masks(self.band_split_module.encode(spec))
        return torch.complex(mask[:, :, 0], mask[:, :, 1]) * spec.unsqueeze(1)
