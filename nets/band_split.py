"""Band-split encoder and band-wise decoder (docs/architecture.md §3), vectorised over bands.

The parameters stay one ``GroupNorm``/``Conv1d`` stack per band, under the published names
(``band_split_module.<k>.{0,1}``, ``bandwise_decoding_module.<k>.{0,1,3,5}``), so checkpoints load directly.
The forward pass packs them into zero-padded per-band tensors and runs every band in a few batched
``einsum`` calls instead of a Python loop over the bands (61 at 48 kHz).

Axis legend: b batch, t frames, f frequency bins, k bands, w padded band width, d channels (emb_dim), o outputs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from . import onednn
from .paths import PathOptions, fused_weight, use_fused

__all__ = ["band_widths", "BandSplit"]

# (start Hz, end Hz) -> bins per band; the remaining bins above 16 kHz form 4 (48 kHz) or 2 bands.
_BAND_TABLE = (((0, 1000), 2), ((1000, 2000), 4), ((2000, 4000), 12), ((4000, 8000), 24), ((8000, 16000), 48))


def band_widths(sample_rate: int, stft_size: int) -> list[int]:
    """Number of STFT bins in each band; sums to ``stft_size // 2 + 1``.

    >>> w = band_widths(48000, 2048); len(w), w[:3], w[-4:]
    (61, [2, 2, 2], [66, 66, 66, 67])
    """
    n_bins = stft_size // 2 + 1
    hz_per_bin = (sample_rate // 2) / n_bins
    widths: list[int] = []
    for (start, end), bins in _BAND_TABLE:
        widths += [bins] * math.ceil((end - start) / (bins * hz_per_bin))
    rest = n_bins - sum(widths)
    if rest <= 0:
        raise ValueError(f"sample_rate {sample_rate} / stft_size {stft_size} leave no bins above 16 kHz; the band "
                         "table needs a sample rate of at least 32 kHz (models run at 48 kHz)")
    if sample_rate == 48000:
        widths += [rest // 4] * 3 + [rest // 4 + rest % 4]
    else:
        widths += [rest // 2, rest - rest // 2]
    return widths


class BandSplit(nn.Module):
    """Band-split encoder ``(b, t, f) complex -> (b, d, t, k)`` and decoder ``(b, d, t, k) -> (b, 2, o, t, f)``.

    Encoder, per band: real/imag channels ``2*bin + {0, 1}``, ``GroupNorm(1, 2*w)``, ``Conv1d(2*w, d, 1)``.
    Decoder, per band: ``GroupNorm(1, d)``, ``Conv1d(d, 4d)``, ``Tanh``, ``Conv1d(4d, 4d)``, ``Tanh``,
    ``Conv1d(4d, 4*w*o)``, ``GLU`` -> ``(2, o, w)`` per frame.
    """

    def __init__(self, sample_rate: int, stft_size: int, emb_dim: int, num_outputs: int = 1, eps: float = 1e-5):
        super().__init__()
        self.widths = band_widths(sample_rate, stft_size)
        self.num_outputs = num_outputs
        d, o = emb_dim, num_outputs
        self.band_split_module = nn.ModuleList(
            nn.Sequential(nn.GroupNorm(1, 2 * w, eps=eps), nn.Conv1d(2 * w, d, 1)) for w in self.widths
        )
        self.bandwise_decoding_module = nn.ModuleList(
            nn.Sequential(
                nn.GroupNorm(1, d, eps=eps), nn.Conv1d(d, 4 * d, 1), nn.Tanh(), nn.Conv1d(4 * d, 4 * d, 1), nn.Tanh(),
                nn.Conv1d(4 * d, w * o * 4, 1), nn.GLU(dim=1),
            )
            for w in self.widths
        )
        self.eps = eps
        self.paths = PathOptions()  # which path it computes by (nets.paths): the decoder band by band when fused
        self._build_index()

    def _build_index(self) -> None:
        widths, wmax, o = self.widths, max(self.widths), self.num_outputs
        k = len(widths)
        starts = torch.tensor([0] + widths[:-1]).cumsum(0)
        # Encoder gather: band k, padded channel c = 2*j + ri  ->  flat index 2*(start_k + j) + ri of (f, 2).
        c = torch.arange(2 * wmax)
        valid = c[None, :] < 2 * torch.tensor(widths)[:, None]  # (k, 2*wmax)
        enc_index = torch.where(valid, 2 * starts[:, None] + c[None, :], 0)
        self.register_buffer("_enc_index", enc_index.flatten(), persistent=False)
        self.register_buffer("_enc_mask", valid, persistent=False)
        # Decoder scatter: band k emits (2, o, w_k) values; padded channel r*o*wmax + oo*wmax + j.
        # Output position (r, oo, f) with f = start_k + j reads padded index k*2*o*wmax + r*o*wmax + oo*wmax + j.
        band_of_bin = torch.repeat_interleave(torch.arange(k), torch.tensor(widths))  # (f,)
        j = torch.arange(sum(widths)) - starts[band_of_bin]
        r = torch.arange(2)[:, None, None]
        oo = torch.arange(o)[None, :, None]
        dec_index = band_of_bin * 2 * o * wmax + r * o * wmax + oo * wmax + j  # (2, o, f)
        self.register_buffer("_dec_index", dec_index.flatten(), persistent=False)

    # -- packed parameters (rebuilt every call so gradients reach the per-band modules) --------------------------
    def _pack_encoder(self) -> tuple[torch.Tensor, ...]:
        wmax2 = 2 * max(self.widths)
        mods = self.band_split_module
        gamma = torch.stack([F.pad(m[0].weight, (0, wmax2 - m[0].weight.numel())) for m in mods])  # (k, 2w)
        beta = torch.stack([F.pad(m[0].bias, (0, wmax2 - m[0].bias.numel())) for m in mods])
        weight = torch.stack([F.pad(m[1].weight[..., 0], (0, wmax2 - m[1].weight.shape[1])) for m in mods])  # (k,d,2w)
        bias = torch.stack([m[1].bias for m in mods])  # (k, d)
        return gamma, beta, weight, bias

    def encode(self, spec: torch.Tensor) -> torch.Tensor:
        """``(b, t, f)`` complex STFT -> ``(b, d, t, k)`` band features."""
        b, t, f = spec.shape
        if f != sum(self.widths):
            raise ValueError(f"band-split encoder expects {sum(self.widths)} frequency bins, got {f}")
        return self.encode_interleaved(torch.view_as_real(spec).reshape(b, t, 2 * f))

    def encode_interleaved(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`encode` on real ``(b, t, 2f)`` with each bin's (real, imaginary) pair side by side (what
        ``view_as_real`` gives; the ONNX graph builds it from the two parts, nets/onnx/export.py)."""
        b, t, _ = x.shape
        x = x[..., self._enc_index].view(b, t, len(self.widths), -1)
        mask = self._enc_mask.to(x.dtype)  # (k, 2w): 0 on padding channels
        x = x * mask
        count = mask.sum(-1) * t  # elements of each band's GroupNorm
        mean = x.sum((1, 3)) / count  # (b, k)
        centred = (x - mean[:, None, :, None]) * mask
        var = centred.square().sum((1, 3)) / count
        gamma, beta, weight, bias = self._pack_encoder()
        normed = centred * torch.rsqrt(var + self.eps)[:, None, :, None] * gamma + beta  # (b, t, k, 2w)
        out = torch.einsum("btkc,kdc->bdtk", normed, weight)
        return out + bias.T[None, :, None, :]

    def _pack_decoder(self) -> tuple[torch.Tensor, ...]:
        mods = self.bandwise_decoding_module
        o, wmax = self.num_outputs, max(self.widths)
        g = torch.stack([m[0].weight for m in mods])  # (k, d)
        be = torch.stack([m[0].bias for m in mods])
        w1 = torch.stack([m[1].weight[..., 0] for m in mods])  # (k, 4d, d)
        b1 = torch.stack([m[1].bias for m in mods])
        w2 = torch.stack([m[3].weight[..., 0] for m in mods])  # (k, 4d, 4d)
        b2 = torch.stack([m[3].bias for m in mods])
        # Last conv: 4*w*o channels = [value half (2, o, w) | gate half (2, o, w)], padded to wmax per band.
        w3, b3 = [], []
        for m, w in zip(mods, self.widths, strict=True):
            wt = m[5].weight[..., 0].view(2, 2, o, w, -1)  # (glu half, r, o, w, 4d)
            w3.append(F.pad(wt, (0, 0, 0, wmax - w)))
            b3.append(F.pad(m[5].bias.view(2, 2, o, w), (0, wmax - w)))
        return g, be, w1, b1, w2, b2, torch.stack(w3).flatten(1, 4), torch.stack(b3).flatten(1)

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """``(b, d, t, k)`` -> ``(b, 2, o, t, f)`` real/imag mask values."""
        b, d, t, k = x.shape
        mean = x.mean((1, 2), keepdim=True)
        var = x.var((1, 2), keepdim=True, unbiased=False)
        x = (x - mean) * torch.rsqrt(var + self.eps)  # GroupNorm(1, d) of each band, before its affine
        x = x.permute(3, 0, 2, 1).reshape(k, b * t, d)  # (k, b*t, d) contiguous
        if self.paths.per_band_decoder and use_fused(x, self):
            return self._decode_bands(x).view(b, t, 2, self.num_outputs, -1).permute(0, 2, 3, 1, 4)
        g, be, w1, b1, w2, b2, w3, b3 = self._pack_decoder()
        x = x * g[:, None, :] + be[:, None, :]
        h = torch.tanh(torch.baddbmm(b1[:, None, :], x, w1.transpose(1, 2)))  # (k, b*t, 4d)
        h = torch.tanh(torch.baddbmm(b2[:, None, :], h, w2.transpose(1, 2)))
        half = w3.shape[1] // 2  # GLU: value half, gate half
        value = torch.baddbmm(b3[:, None, :half], h, w3[:, :half].transpose(1, 2))  # (k, b*t, 2*o*wmax)
        gate = torch.baddbmm(b3[:, None, half:], h, w3[:, half:].transpose(1, 2))
        y = (value * torch.sigmoid(gate)).view(k, b, t, -1).permute(1, 2, 0, 3).reshape(b, t, -1)
        out = y[..., self._dec_index].view(b, t, 2, self.num_outputs, -1)  # gather bands into bins: (b, t, 2, o, f)
        return out.permute(0, 2, 3, 1, 4)

    def _decode_bands(self, x: torch.Tensor) -> torch.Tensor:
        """The fused inference path of the decoder (docs/architecture.md §3): normalised ``(k, n, d)`` ->
        ``(n, 2, o, f)``, one band at a time through oneDNN's linear op with the tanh, the sigmoid and the GLU
        product inside the GEMMs, and without the batched path's padding to the widest band (4x the last layer's
        work at 48 kHz)."""
        o = self.num_outputs
        out = x.new_empty(x.shape[1], 2, o, sum(self.widths))
        start = 0
        for band, (mod, w) in enumerate(zip(self.bandwise_decoding_module, self.widths, strict=True)):
            norm, conv1, conv2, conv3 = mod[0], mod[1], mod[3], mod[5]
            n = 2 * o * w  # conv3's channels: the GLU's value half, then its gate half
            h = x[band] * norm.weight + norm.bias
            h = onednn.LINEAR(h, fused_weight(self, conv1.weight[..., 0]), conv1.bias, "tanh", [], "")
            h = onednn.LINEAR(h, fused_weight(self, conv2.weight[..., 0]), conv2.bias, "tanh", [], "")
            w3 = conv3.weight[..., 0]
            gate = onednn.LINEAR(h, fused_weight(self, w3[n:]), conv3.bias[n:], "sigmoid", [], "")
            y = onednn.LINEAR.binary(h, gate, fused_weight(self, w3[:n]), conv3.bias[:n], "mul")  # (n, 2*o*w)
            out[..., start : start + w] = y.view(-1, 2, o, w)
            start += w
        return out
