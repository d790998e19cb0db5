"""The TUSS separator (docs/architecture.md §5): band-split encoder, learnable prompts and SOS token, cross-prompt
module, conditional target-source-extraction (TSE) module, band-wise decoder, complex mask.

Axis legend: b batch, s prompts (sources), d channels (emb_dim), t frames, k bands, f frequency bins.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from .band_split import BandSplit
from .locoformer import TFLocoformerStack
from .prompts import PromptError, check_prompts

__all__ = ["TUSS", "PromptError"]


class TUSS(nn.Module):
    """Task-aware unified source separator: one output per prompt, prompts chosen per call.

    Args:
        prompts: names of the learnable prompts (published: speech, sfx, sfxbg, drums, bass, vocals, other, musicbg).
        conf_cross_prompt_module, conf_cond_tse_module: TF-Locoformer block configs of the two modules.
        nblocks_cross_prompt_module, nblocks_cond_tse_module: number of blocks in each.
        use_sos_token: insert a learnable start-of-sequence token between prompts and frames.
    """

    def __init__(self, *, prompts: Sequence[str], conf_cross_prompt_module: Mapping, conf_cond_tse_module: Mapping,
                 nblocks_cross_prompt_module: int = 4, nblocks_cond_tse_module: int = 2, use_sos_token: bool = True,
                 sample_rate: int = 48000, stft_size: int = 2048, eps: float = 1e-5, dropout: float = 0.0):
        super().__init__()
        emb_dim = conf_cross_prompt_module["emb_dim"]
        if conf_cond_tse_module["emb_dim"] != emb_dim:
            raise ValueError("conf_cross_prompt_module and conf_cond_tse_module must share emb_dim")
        if len(set(prompts)) != len(prompts) or any("_" in p for p in prompts):
            raise ValueError(f"prompt names must be unique and contain no '_': {list(prompts)}")
        if use_sos_token:
            self.sos_token = nn.Parameter(torch.randn(emb_dim, 1, 1) * 0.02)
        self.use_sos_token = use_sos_token
        self.cross_prompt_module = TFLocoformerStack(
            nblocks_cross_prompt_module, conf_cross_prompt_module, eps, dropout
        )
        self.cond_tse_module = TFLocoformerStack(nblocks_cond_tse_module, conf_cond_tse_module, eps, dropout)
        self.band_split_module = BandSplit(sample_rate, stft_size, emb_dim, num_outputs=1, eps=eps)
        self.prompts = nn.ParameterDict({p: nn.Parameter(torch.randn(emb_dim, 1, 1) * 0.02) for p in prompts})
        self.prompt_names = tuple(prompts)

    def check_prompts(self, prompts: Sequence[Sequence[str]], batch_size: int) -> None:
        """Raise :class:`PromptError` unless ``prompts`` is ``batch_size`` equal-length lists of known names
        (:func:`nets.prompts.check_prompts` against :attr:`prompt_names`)."""
        check_prompts(self.prompt_names, prompts, batch_size)

    def masks(self, feature: torch.Tensor, prompt_vecs: torch.Tensor) -> torch.Tensor:
        """Band features ``(b, d, t, k)`` and prompt vectors ``(b, d, s, 1)`` -> the real and imaginary mask
        ``(b, s, 2, t, f)`` (docs/architecture.md §5 steps 3-8; also the ONNX graph's, nets/onnx/export.py)."""
        b, d, t, k = feature.shape
        s = prompt_vecs.shape[2]
        parts = [prompt_vecs.expand(b, d, s, k)]
        if self.use_sos_token:
            parts.append(self.sos_token.expand(d, 1, k).expand(b, d, 1, k))
        n_head = s + int(self.use_sos_token)
        seq = self.cross_prompt_module(torch.cat(parts + [feature.to(prompt_vecs.dtype)], dim=2))  # (b,d,s+1+t,k)
        cond = seq[:, :, :s].transpose(1, 2).unsqueeze(3)  # (b, s, d, 1, k)
        feature = seq[:, :, n_head:]  # (b, d, t, k)
        feature = (feature.unsqueeze(1) * cond).reshape(b * s, d, t, k)
        feature = self.cond_tse_module(feature)
        mask = self.band_split_module.decode(feature)  # (b*s, 2, 1, t, f)
        return mask.reshape(b, s, 2, t, -1).float()  # a view of the decoder layout, as published

    def forward(self, spec: torch.Tensor, prompts: Sequence[Sequence[str]]) -> torch.Tensor:
        """``(b, t, f)`` complex mixture STFT, ``b`` prompt lists of length ``s`` -> ``(b, s, t, f)`` complex."""
        self.check_prompts(prompts, spec.shape[0])
        feature = self.band_split_module.encode(spec)  # (b, d, t, k)
        prompt_vecs = torch.stack([torch.cat([self.prompts[p] for p in item], dim=1) for item in prompts])  # (b,d,s,1)
        mask = self.masks(feature, prompt_vecs)
        return torch.complex(mask[:, :, 0], mask[:, :, 1]) * spec.unsqueeze(1)
