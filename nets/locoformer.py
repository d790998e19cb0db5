"""TF-Locoformer building blocks (docs/architecture.md §4).

Axis legend used in shape comments: b batch, d channels (emb_dim), t frames, k bands, l sequence length,
h heads, c per-head channels, n = batch × (the axis that is not the sequence).

Parameter names (``ffn_norm``, ``ffn``, ``attn_norm``, ``attn.rope.freqs``, ``attn.qkv``,
``attn.aggregate_heads.0``, ``conv1d``, ``deconv1d``) are those of the published checkpoints.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from . import onednn
from .paths import PathOptions, fused_weight, in_place, use_fused

__all__ = ["RMSGroupNorm", "RotaryEmbedding", "MultiHeadSelfAttention", "SwiGLUConvDeconv", "LocoformerPath",
           "TFLocoformerBlock", "TFLocoformerStack"]


class RMSGroupNorm(nn.Module):
    """RMS normalisation within ``num_groups`` groups of the last axis, then a per-channel gain (no bias).

    Computed in float32 whatever the input dtype; the result has the input's dtype.
    """

    def __init__(self, num_groups: int, dim: int, eps: float = 1e-5):
        super().__init__()
        if dim % num_groups:
            raise ValueError(f"RMSGroupNorm: dim {dim} is not divisible by num_groups {num_groups}")
        self.num_groups = num_groups
        self.eps = eps
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., d) -> (..., d)
        dtype = x.dtype
        xg = x.float().unflatten(-1, (self.num_groups, -1))
        rms = torch.linalg.vector_norm(xg, dim=-1, keepdim=True) * (xg.shape[-1] ** -0.5)  # (..., g, 1)
        y = xg * (rms + self.eps).reciprocal()  # fresh tensor: scaling it in place is autograd-safe
        return y.mul_(self.gamma.float().view(self.num_groups, -1)).flatten(-2).to(dtype)


class RotaryEmbedding(nn.Module):
    """Rotary position embedding with interleaved channel pairs, positions ``0..L-1`` (lucidrains' layout).

    ``freqs[i] = 1 / theta ** (2i / dim)``; channels ``(2i, 2i+1)`` rotate with ``freqs[i]``. One instance is shared
    by all blocks of a module path, as in the published code (so its ``freqs`` appear under every block).
    """

    def __init__(self, dim: int, theta: float = 10000.0):
        super().__init__()
        if dim % 2:
            raise ValueError(f"RotaryEmbedding: per-head dim must be even, got {dim}")
        freqs = 1.0 / theta ** (torch.arange(0, dim, 2)[: dim // 2].float() / dim)
        self.register_buffer("freqs", freqs)
        self._cache: tuple[int, torch.device, torch.Tensor] | None = None

    def rotation(self, length: int, device: torch.device) -> torch.Tensor:
        """Unit complex numbers ``exp(i * pos * freqs)`` of shape ``(length, dim // 2)`` (cached in eval mode)."""
        c = self._cache
        if c is None or c[0] != length or c[1] != device or self.training:
            pos = torch.arange(length, device=device, dtype=torch.float32)
            c = (length, device, torch.polar(torch.ones(()), torch.outer(pos, self.freqs.float())))
            if not self.training:
                self._cache = c
        return c[2]

    def _apply(self, fn, recurse=True):  # device/dtype moves invalidate the cached table
        self._cache = None
        return super()._apply(fn, recurse)

    def forward(self, x: torch.Tensor, seq_dim: int = -2) -> torch.Tensor:
        """Rotate ``x (..., c)`` along axis ``seq_dim``: each channel pair ``(a, b)`` becomes
        ``(a cos - b sin, b cos + a sin)``, i.e. ``x*cos + rotate_half(x)*sin`` as one complex product."""
        seq_dim = seq_dim % x.ndim
        rot = self.rotation(x.shape[seq_dim], x.device)  # (l, c/2)
        rot = rot.view(rot.shape[0], *([1] * (x.ndim - seq_dim - 2)), rot.shape[1])
        xc = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)))  # a view: no copy for fp32 input
        return torch.view_as_real(xc * rot).flatten(-2).to(x.dtype)


class MultiHeadSelfAttention(nn.Module):
    """Multi-head self-attention with rotary positions on q and k; no bias, no mask, scale ``1/sqrt(c)``."""

    def __init__(self, emb_dim: int, attention_dim: int, n_heads: int, rope: RotaryEmbedding, dropout: float = 0.0):
        super().__init__()
        if attention_dim % n_heads:
            raise ValueError(f"attention_dim {attention_dim} is not divisible by n_heads {n_heads}")
        self.n_heads = n_heads
        self.rope = rope
        self.qkv = nn.Linear(emb_dim, attention_dim * 3, bias=False)
        self.aggregate_heads = nn.Sequential(nn.Linear(attention_dim, emb_dim, bias=False), nn.Dropout(dropout))
        self.dropout = dropout
        self.paths = PathOptions()  # which path it computes by (nets.paths)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:  # (n, l, d) -> same
        """Attention of ``x``; plus ``residual`` (same shape) when given, summed inside the output projection on the
        fused inference path (:func:`nets.paths.use_fused`)."""
        n, length, _ = x.shape
        fused = use_fused(x, self)
        if fused:
            qkv = onednn.LINEAR(x, fused_weight(self, self.qkv.weight), None, "none", [], "")
        else:
            qkv = self.qkv(x)
        qkv = qkv.view(n, length, 3, self.n_heads, -1)  # (n, l, 3, h, c)
        q, k = self.rope(qkv[:, :, :2], seq_dim=1).transpose(1, 3).unbind(2)  # rotate q and k at once: (n, h, l, c)
        v = qkv[:, :, 2].transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).flatten(2)  # (n, l, h*c)
        weight = self.aggregate_heads[0].weight
        if fused:
            weight = fused_weight(self, weight)
            if residual is None:
                return onednn.LINEAR(y, weight, None, "none", [], "")
            return onednn.LINEAR.binary(y, residual, weight, None, "add")
        y = self.aggregate_heads(y)  # (n, l, d)
        return y if residual is None else _residual(residual, y, in_place(self))


class SwiGLUConvDeconv(nn.Module):
    """SwiGLU feed-forward with a strided 1-D convolution and its transposed convolution along the sequence.

    Works channels-last on ``(n, l, d)``. With ``conv1d_shift == 1`` (every published config) the convolution runs as
    one GEMM on unfolded windows and the transposed convolution as one GEMM followed by a ``k``-term overlap-add,
    about twice as fast on CPU as ``nn.Conv1d``/``nn.ConvTranspose1d``; other shifts use those modules. Both give
    the same result (the parameters are the modules' own). :meth:`variant` picks one of the four computations
    (docs/architecture.md §4).
    """

    def __init__(self, emb_dim: int, dim_inner: int, conv1d_kernel: int, conv1d_shift: int, dropout: float = 0.0):
        super().__init__()
        self.kernel, self.shift = conv1d_kernel, conv1d_shift
        self.conv1d = nn.Conv1d(emb_dim, dim_inner * 2, conv1d_kernel, stride=conv1d_shift)
        self.deconv1d = nn.ConvTranspose1d(dim_inner, emb_dim, conv1d_kernel, stride=conv1d_shift)
        self.dropout = nn.Dropout(dropout)
        self.paths = PathOptions()  # which path it computes by (nets.paths)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (n, l, d) -> (n, l, d)
        return self.variant(x)(x)

    def variant(self, x: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """The computation this call of the FFN takes, all of the same function (docs/architecture.md §4): the
        convolution modules for a shift other than 1; else the fused oneDNN path (:func:`nets.paths.use_fused`);
        else, without autograd and off the export path, the in-place inference GEMMs; else the autograd-safe ones."""
        if self.shift != 1:
            return self._ffn_conv
        if use_fused(x, self):
            return self._ffn_fused
        if in_place(self):
            return self._ffn_inference
        return self._ffn_plain

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        """``(n, l, d)`` -> ``(n, lp, d)``: ``k - s`` zeros at the start, up to the last full window at the end."""
        k, s = self.kernel, self.shift
        length = x.shape[1]
        left = k - s
        padded = math.ceil((length + 2 * left - k) / s) * s + k
        return F.pad(x, (0, 0, left, padded - length - left))

    def _ffn_conv(self, x: torch.Tensor) -> torch.Tensor:
        """Any shift: ``nn.Conv1d`` and ``nn.ConvTranspose1d`` themselves."""
        length, left = x.shape[1], self.kernel - self.shift
        a, gate = self.conv1d(self._pad(x).transpose(1, 2)).chunk(2, dim=1)
        y = self.deconv1d(self.dropout(a * F.silu(gate)))
        return self.dropout(y[..., left : left + length].transpose(1, 2))

    def _gemm_operands(self, x: torch.Tensor) -> tuple[torch.Tensor, int, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Shift 1: the unfolded windows ``(n * l1, d * k)``, ``l1 = l + k - 1``, and the two GEMMs' weights: the
        convolution's ``(2i, d * k)`` (flattened as the windows) and bias, the transposed convolution's ``(i, k * d)``
        (contiguous taps)."""
        k, (n, _, d) = self.kernel, x.shape
        windows = self._pad(x).unfold(1, k, 1)  # (n, l1, d, k)
        l1 = windows.shape[1]
        windows = windows.reshape(n * l1, d * k)
        inner = self.deconv1d.in_channels
        w1, b1 = self.conv1d.weight.reshape(2 * inner, d * k), self.conv1d.bias  # (2i, d, k) flattened as windows
        w2 = self.deconv1d.weight.transpose(1, 2).reshape(inner, k * d)  # (i, d, k) -> (i, k, d): contiguous taps
        return windows, l1, w1, b1, w2

    def _ffn_plain(self, x: torch.Tensor) -> torch.Tensor:
        """Shift 1, autograd-safe (training, and the export path): fresh tensors, a ``k``-term overlap-add."""
        n, length, d = x.shape
        k, inner = self.kernel, self.deconv1d.in_channels
        windows, l1, w1, b1, w2 = self._gemm_operands(x)
        h = torch.addmm(b1, windows, w1.t())  # (n*l1, 2i): [value | gate]
        h = self.dropout(h[:, :inner] * F.silu(h[:, inner:]))
        z = torch.mm(h, w2).view(n, l1, k, d)
        # transposed conv, stride 1: full[t'] = sum_j z[t' - j, j]; keep t' = left + t, t < length (left = k - 1)
        left = k - 1
        y = z[:, left : left + length, 0] + self.deconv1d.bias
        for j in range(1, k):  # k <= 4 taps; accumulating in place into the fresh y is autograd-safe
            y += z[:, left - j : left - j + length, j]
        return self.dropout(y)

    def _ffn_inference(self, x: torch.Tensor) -> torch.Tensor:
        """Shift 1 without autograd: the gate applied in place in the GEMM output (about 2x faster than fresh tensors
        on CPU), the overlap-add as one strided sum."""
        n, length, d = x.shape
        inner = self.deconv1d.in_channels
        windows, l1, w1, b1, w2 = self._gemm_operands(x)
        h = torch.addmm(b1, windows, w1.t())  # (n*l1, 2i): [value | gate]
        h = h[:, :inner].mul_(F.silu(h[:, inner:], inplace=True))
        return self._overlap_add(torch.mm(h, w2).view(n, l1, self.kernel, d), length)

    def _ffn_fused(self, x: torch.Tensor) -> torch.Tensor:
        """Shift 1 on the fused path: the gate half with SiLU inside its GEMM, the value half times that gate inside
        its GEMM, then the transposed convolution's GEMM, through oneDNN's linear op; a strided overlap-add."""
        n, length, d = x.shape
        inner = self.deconv1d.in_channels
        windows, l1, w1, b1, w2 = self._gemm_operands(x)
        gate = onednn.LINEAR(windows, fused_weight(self, w1[inner:]), b1[inner:], "swish", [], "")
        h = onednn.LINEAR.binary(windows, gate, fused_weight(self, w1[:inner]), b1[:inner], "mul")  # (n*l1, i)
        z = onednn.LINEAR(h, w2.t(), None, "none", [], "")  # w2.t(): already input-major
        return self._overlap_add(z.view(n, l1, self.kernel, d), length)

    def _overlap_add(self, z: torch.Tensor, length: int) -> torch.Tensor:
        """The stride-1 transposed convolution's overlap-add of the taps ``z (n, l1, k, d)`` as one strided sum (no
        autograd): ``taps[:, t, i] = z[:, t + i, k - 1 - i]``, plus the bias."""
        n, _, k, d = z.shape
        s0, s1, s2, s3 = z.stride()
        taps_view = z.as_strided((n, length, k, d), (s0, s1, s1 - s2, s3), z.storage_offset() + (k - 1) * s2)
        return self.dropout(taps_view.sum(2).add_(self.deconv1d.bias))


def _residual(x: torch.Tensor, branch: torch.Tensor, inplace: bool) -> torch.Tensor:
    """``x + branch``; with ``inplace`` (:func:`nets.paths.in_place`), accumulated in place into ``branch`` (a fresh
    tensor of the same shape)."""
    if not inplace or torch.result_type(x, branch) != branch.dtype:  # keep autocast's type promotion
        return x + branch
    return branch.add_(x)


def _ffn_conf(entry: Mapping) -> Mapping:
    """An FFN config list entry is ``{"conf": {...}}`` in published configs; accept a bare mapping too."""
    return entry["conf"] if "conf" in entry else entry


class LocoformerPath(nn.Module):
    """One Locoformer layer along the last-but-one axis of ``(b, s1, s2, d)`` (sequences along ``s2``).

    Macaron order when two FFN configs ``[c0, c1]`` are given: ``x += FFN_a(norm(x))`` with ``c0``, then attention,
    then ``x += FFN_b(norm(x))`` with ``c1``. The published checkpoints store the FFN list reversed:
    ``ffn.0`` is ``FFN_b`` (c1) and ``ffn.1`` is ``FFN_a`` (c0); ``ffn_norm`` likewise.
    """

    def __init__(self, emb_dim: int, attention_dim: int, n_heads: int, num_groups: int,
                 ffn_configs: Sequence[Mapping], rope: RotaryEmbedding, eps: float = 1e-5, dropout: float = 0.0):
        super().__init__()
        if len(ffn_configs) not in (1, 2):
            raise ValueError(f"a Locoformer path takes 1 or 2 FFN configs, got {len(ffn_configs)}")
        stored = list(reversed(ffn_configs))  # published order: ffn.0 = last config
        self.macaron = len(ffn_configs) == 2
        self.ffn_norm = nn.ModuleList(RMSGroupNorm(num_groups, emb_dim, eps) for _ in stored)
        self.ffn = nn.ModuleList(SwiGLUConvDeconv(emb_dim, dropout=dropout, **_ffn_conf(c)) for c in stored)
        self.attn_norm = RMSGroupNorm(num_groups, emb_dim, eps)
        self.attn = MultiHeadSelfAttention(emb_dim, attention_dim, n_heads, rope, dropout)
        self.paths = PathOptions()  # which path it computes by (nets.paths): the residual sums in place or not

    def _ffn(self, i: int, x: torch.Tensor) -> torch.Tensor:
        b, s1, s2, d = x.shape
        return self.ffn[i](self.ffn_norm[i](x).reshape(b * s1, s2, d)).reshape(b, s1, s2, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (b, s1, s2, d) -> same
        b, s1, s2, d = x.shape
        if self.macaron:
            x = _residual(x, self._ffn(1, x), in_place(self))
        x = self.attn(self.attn_norm(x).reshape(b * s1, s2, d), residual=x.reshape(b * s1, s2, d)).view(b, s1, s2, d)
        return _residual(x, self._ffn(0, x), in_place(self))


class TFLocoformerBlock(nn.Module):
    """A frequency path (sequences along bands) and a frame path (sequences along time) on ``(b, d, t, k)``.

    ``tf_order="ft"`` runs the frequency path first, ``"tf"`` the frame path first.
    """

    def __init__(self, *, emb_dim: int, attention_dim: int, n_heads: int, num_groups: int,
                 freq_ffn_config: Sequence[Mapping], frame_ffn_config: Sequence[Mapping], tf_order: str = "ft",
                 freq_rope: RotaryEmbedding, frame_rope: RotaryEmbedding, eps: float = 1e-5, dropout: float = 0.0):
        super().__init__()
        if tf_order not in ("ft", "tf"):
            raise ValueError(f"tf_order must be 'ft' or 'tf', got {tf_order!r}")
        self.tf_order = tf_order
        common = dict(emb_dim=emb_dim, attention_dim=attention_dim, n_heads=n_heads, num_groups=num_groups, eps=eps,
                      dropout=dropout)
        self.freq_path = LocoformerPath(ffn_configs=freq_ffn_config, rope=freq_rope, **common)
        self.frame_path = LocoformerPath(ffn_configs=frame_ffn_config, rope=frame_rope, **common)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (b, d, t, k) -> (b, d, t, k)
        # Each path works on a contiguous channels-last copy: strided inputs make norm/FFN ops several times slower.
        if self.tf_order == "ft":
            x = self.freq_path(x.permute(0, 2, 3, 1).contiguous())  # (b, t, k, d): sequences along k
            x = self.frame_path(x.transpose(1, 2).contiguous())  # (b, k, t, d): sequences along t
            return x.permute(0, 3, 2, 1)
        x = self.frame_path(x.permute(0, 3, 2, 1).contiguous())  # (b, k, t, d)
        x = self.freq_path(x.transpose(1, 2).contiguous())  # (b, t, k, d)
        return x.permute(0, 3, 1, 2)


class TFLocoformerStack(nn.ModuleList):
    """``num_blocks`` TF-Locoformer blocks sharing one rotary table per path (published-checkpoint structure).

    ``block_conf`` is a published block config: ``emb_dim, attention_dim, n_heads, num_groups, tf_order,
    freq_ffn_config, frame_ffn_config`` (+ ignored ``flash_attention``).
    """

    def __init__(self, num_blocks: int, block_conf: Mapping, eps: float = 1e-5, dropout: float = 0.0):
        conf = dict(block_conf)
        conf.pop("flash_attention", None)  # SDPA picks the fastest exact kernel by itself
        head_dim = conf["attention_dim"] // conf["n_heads"]
        freq_rope, frame_rope = RotaryEmbedding(head_dim), RotaryEmbedding(head_dim)
        super().__init__(
            TFLocoformerBlock(**conf, freq_rope=freq_rope, frame_rope=frame_rope, eps=eps, dropout=dropout)
            for _ in range(num_blocks)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self:
            x = block(x)
        return x
