"""The ONNX exporter (:mod:`nets.onnx`): the real-valued copy of a network, :class:`ExportWrapper` and
:func:`export_onnx`.

The copy (:func:`real_valued_copy`) is built explicitly: its modules share the model's parameters, its rotary
embeddings and band splits are explicit stand-ins (:class:`RealRotaryEmbedding`, :class:`PackedBandSplit`), and every
module is set to the export path (:data:`nets.paths.EXPORT`; docs/architecture.md §4), so the traced graph does not
depend on the grad mode of the caller.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import logging
import math
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from utils.atomic import atomic_path

from ..band_split import BandSplit
from ..locoformer import RotaryEmbedding
from ..paths import EXPORT, set_paths
from ..stft import STFTDecoder, STFTEncoder
from ..tuss import TUSS
from ..wrapper import SeparationModel
from .graph import MIX, MODEL_NAME, NUM_OUTPUTS, OUTPUT, PROMPT_NAMES, PROMPTS, SAMPLE_RATE, WINDOW_SAMPLES

__all__ = ["export_onnx", "check_opset", "ExportWrapper", "real_valued_copy", "RealRotaryEmbedding",
           "PackedBandSplit", "RealSTFT", "RealISTFT", "rotate_real", "encode_real", "MIN_OPSET"]

#: the lowest opset torch's (dynamo) exporter writes
MIN_OPSET = 18


# -- real-valued replacements of the complex parts --------------------------------------------------------------------

def rotate_real(x: torch.Tensor, freqs: torch.Tensor, seq_dim: int = -2) -> torch.Tensor:
    """What :meth:`nets.locoformer.RotaryEmbedding.forward` computes, without complex numbers: channel pairs
    ``(a, b) = (x[..., 2i], x[..., 2i+1])`` at position ``p`` along ``seq_dim`` become
    ``(a cos - b sin, b cos + a sin)`` of the angle ``p * freqs[i]`` (docs/architecture.md §4), in float32."""
    seq_dim = seq_dim % x.ndim
    angle = torch.outer(torch.arange(x.shape[seq_dim], device=x.device, dtype=torch.float32), freqs.float())
    angle = angle.view(angle.shape[0], *([1] * (x.ndim - seq_dim - 2)), angle.shape[1])  # (l, 1.., c/2)
    cos, sin = angle.cos(), angle.sin()
    pairs = x.float().unflatten(-1, (-1, 2))
    a, b = pairs[..., 0], pairs[..., 1]
    return torch.stack((a * cos - b * sin, b * cos + a * sin), dim=-1).flatten(-2).to(x.dtype)


class RealRotaryEmbedding(nn.Module):
    """Stands in for one :class:`~nets.locoformer.RotaryEmbedding` (same call, same ``freqs`` tensor)."""

    def __init__(self, rope: RotaryEmbedding):
        super().__init__()
        self.register_buffer("freqs", rope.freqs, persistent=False)

    def forward(self, x: torch.Tensor, seq_dim: int = -2) -> torch.Tensor:
        return rotate_real(x, self.freqs, seq_dim)


class PackedBandSplit(BandSplit):
    """Stands in for one :class:`~nets.band_split.BandSplit`: the same encoder and decoder on its per-band parameters
    packed once, by BandSplit's own packing, into buffers (BandSplit packs them on every call so that gradients reach
    the per-band modules; a graph needs them as constants only).

    Built from ``source`` explicitly: it has BandSplit's methods and what they read (band widths, outputs, eps, the
    gather and scatter indices, shared with ``source``) but no per-band modules, and it is on the export path
    (:data:`nets.paths.EXPORT`), so its decoder runs the batched products. ``source`` is not changed."""

    def __init__(self, source: BandSplit):
        nn.Module.__init__(self)  # not BandSplit.__init__: no per-band modules of its own
        self.widths, self.num_outputs, self.eps = list(source.widths), source.num_outputs, source.eps
        self.paths = EXPORT
        for name in ("_enc_index", "_enc_mask", "_dec_index"):
            self.register_buffer(name, getattr(source, name), persistent=False)
        with torch.no_grad():
            encoder, decoder = source._pack_encoder(), source._pack_decoder()
        self._packed_counts = len(encoder), len(decoder)
        for i, t in enumerate(encoder):
            self.register_buffer(f"packed_encoder_{i}", t.detach(), persistent=False)
        for i, t in enumerate(decoder):
            self.register_buffer(f"packed_decoder_{i}", t.detach(), persistent=False)

    def _pack_encoder(self) -> tuple[torch.Tensor, ...]:
        return tuple(getattr(self, f"packed_encoder_{i}") for i in range(self._packed_counts[0]))

    def _pack_decoder(self) -> tuple[torch.Tensor, ...]:
        return tuple(getattr(self, f"packed_decoder_{i}") for i in range(self._packed_counts[1]))


def real_valued_copy(module: nn.Module) -> nn.Module:
    """A structural copy of ``module`` for export: its modules are new objects but share every parameter and buffer
    with ``module`` (nothing is copied, ``module`` is not changed), with a :class:`RealRotaryEmbedding` wherever
    ``module`` has a rotary embedding (shared ones stay shared), a :class:`PackedBandSplit` for each band split, and
    every module set to the export path (:data:`nets.paths.EXPORT`: whatever the grad mode, the same operations).
    """
    memo: dict[int, object] = {id(t): t for t in itertools.chain(module.parameters(), module.buffers())}
    for m in module.modules():
        if id(m) in memo:
            continue
        if isinstance(m, RotaryEmbedding):
            memo[id(m)] = RealRotaryEmbedding(m)
        elif isinstance(m, BandSplit):
            memo[id(m)] = PackedBandSplit(m)
    twin = copy.deepcopy(module, memo)
    set_paths(twin, EXPORT)
    return twin


def _check_codec(codec: STFTEncoder | STFTDecoder) -> None:
    if codec.window_length != codec.fft_size or codec.hop_length > codec.window_length:
        raise ValueError(f"ONNX export needs window_length == fft_size >= hop_length; this model's STFT has fft_size "
                         f"{codec.fft_size}, window_length {codec.window_length}, hop_length {codec.hop_length}")


def _dft_angles(n_fft: int) -> torch.Tensor:
    """``2 pi k n / n_fft`` for bins ``k < n_fft // 2 + 1`` and samples ``n < n_fft``, float64 (``k n`` reduced
    modulo ``n_fft`` first, so the angles are exact)."""
    k = torch.arange(n_fft // 2 + 1, dtype=torch.int64)[:, None]
    n = torch.arange(n_fft, dtype=torch.int64)[None, :]
    return 2 * math.pi * ((k * n) % n_fft).double() / n_fft


class RealSTFT(nn.Module):
    """:class:`~nets.stft.STFTEncoder` as a strided ``conv1d``: ``(b, n)`` -> real and imaginary ``(b, t, f)``.

    The bases are the analysis window times ``cos`` and ``-sin`` (``torch.stft``'s ``exp(-j 2 pi k n / N)``), scaled
    by ``N ** -0.5`` for ``normalize: default``. The signal is padded with ``fft_size // 2`` zeros at the start and
    ``fft_size // 2 + hop - 1`` at the end: the frames the convolution takes are those of the encoder (which pads the
    end only up to the last frame; docs/architecture.md §2).
    """

    def __init__(self, encoder: STFTEncoder):
        super().__init__()
        _check_codec(encoder)
        self.n_fft, self.hop = encoder.fft_size, encoder.hop_length
        window = encoder.window.detach().double()
        angle = _dft_angles(self.n_fft).to(window.device)
        scale = self.n_fft ** -0.5 if encoder.normalized else 1.0
        basis = torch.cat([angle.cos() * window, -angle.sin() * window]) * scale  # (2f, N)
        self.register_buffer("basis", basis.float()[:, None, :], persistent=False)

    def forward(self, wave: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pad = self.n_fft // 2
        x = F.pad(wave.float()[:, None, :], (pad, pad + self.hop - 1))
        spec = F.conv1d(x, self.basis, stride=self.hop).transpose(1, 2)  # (b, t, 2f)
        re, im = spec.chunk(2, dim=-1)
        return re, im


class RealISTFT(nn.Module):
    """:class:`~nets.stft.STFTDecoder` as a strided ``conv_transpose1d``: real and imaginary ``(B, t, f)`` ->
    ``(B, (t - 1) * hop)``.

    Each frame is the one-sided inverse DFT (weights 1 for the DC and Nyquist bins, 2 for the others, over ``N``;
    imaginary parts of DC and Nyquist drop out as in ``irfft``) times the synthesis window; the transposed
    convolution overlap-adds the frames; the sum is divided by the overlap-added squared window and cut from
    ``fft_size // 2`` as ``torch.istft(center=True, length=(t - 1) * hop)`` does (docs/architecture.md §2).
    """

    def __init__(self, decoder: STFTDecoder):
        super().__init__()
        _check_codec(decoder)
        self.n_fft, self.hop = decoder.fft_size, decoder.hop_length
        n_bins = self.n_fft // 2 + 1
        window = decoder.window.detach().double()
        angle = _dft_angles(self.n_fft).to(window.device)
        weight = torch.full((n_bins, 1), 2.0, dtype=torch.float64, device=window.device)
        weight[0] = 1.0
        if self.n_fft % 2 == 0:
            weight[-1] = 1.0
        scale = (self.n_fft ** 0.5 if decoder.normalized else 1.0) / self.n_fft
        basis = torch.cat([weight * angle.cos(), -weight * angle.sin()]) * window * scale  # (2f, N)
        self.register_buffer("basis", basis.float()[:, None, :], persistent=False)
        self.register_buffer("window_sq", window.square().float()[None, None, :], persistent=False)

    def forward(self, re: torch.Tensor, im: torch.Tensor) -> torch.Tensor:
        x = torch.cat([re, im], dim=-1).transpose(1, 2)  # (B, 2f, t)
        frames = x.shape[-1]
        wave = F.conv_transpose1d(x, self.basis, stride=self.hop)[:, 0]  # (B, (t - 1) hop + N)
        envelope = F.conv_transpose1d(torch.ones_like(x[:1, :1]), self.window_sq, stride=self.hop)[0, 0]
        start = self.n_fft // 2
        keep = slice(start, start + (frames - 1) * self.hop)
        return wave[:, keep] / envelope[keep]


def encode_real(band_split, re: torch.Tensor, im: torch.Tensor) -> torch.Tensor:
    """:meth:`nets.band_split.BandSplit.encode` on the (real, imaginary) parts of ``(b, t, f)``: ``(b, d, t, k)``; the
    interleaved channels are stacked from the two parts instead of ``view_as_real`` (docs/architecture.md §3)."""
    b, t, f = re.shape
    return band_split.encode_interleaved(torch.stack((re, im), dim=-1).reshape(b, t, 2 * f))


# -- the export wrapper -------------------------------------------------------------------------------------------

class ExportWrapper(nn.Module):
    """``model`` with real-valued STFT, iSTFT, mask product, rotary embedding and prompt lookup by index.

    ``wrapper(mix (b, n), prompts (b, s) int64) -> (b, s, n)``, equal to ``model(mix, names)`` with
    ``names[i][j] = model.prompt_names[prompts[i, j]]`` (the conventional model: ``wrapper(mix) -> (b, num_spk, n)``).
    ``model`` itself is not changed: the wrapper's network is :func:`real_valued_copy` of its separator.
    """

    def __init__(self, model: SeparationModel):
        super().__init__()
        self.separator = real_valued_copy(model.separator)
        self.stft = RealSTFT(model.encoder)
        self.istft = RealISTFT(model.decoder)
        self.variance_normalization = model.variance_normalization
        self.prompt_names = model.prompt_names

    def _masks(self, re: torch.Tensor, im: torch.Tensor, prompts: torch.Tensor | None) -> torch.Tensor:
        """The separator up to its mask: ``(b, s, 2, t, f)``, real part first (docs/architecture.md §5 steps 2-8,
        §6): the separator's own ``masks`` on the real-valued encoding, the prompt vectors gathered by index."""
        sep = self.separator
        feature = encode_real(sep.band_split_module, re, im)  # (b, d, t, k)
        if not isinstance(sep, TUSS):
            return sep.masks(feature)
        table = torch.stack([sep.prompts[p] for p in sep.prompt_names]).flatten(1)  # (P, d)
        return sep.masks(feature, table[prompts].transpose(1, 2).unsqueeze(-1))  # prompt vectors (b, d, s, 1)

    def forward(self, mix: torch.Tensor, prompts: torch.Tensor | None = None) -> torch.Tensor:
        n = mix.shape[-1]
        if self.variance_normalization:
            std = mix.std(dim=-1, keepdim=True) + 1e-8  # (b, 1)
            mix = mix / std
        re, im = self.stft(mix)  # (b, t, f) each
        mask = self._masks(re, im, prompts)  # (b, s, 2, t, f)
        mr, mi = mask[:, :, 0], mask[:, :, 1]
        xr, xi = re.unsqueeze(1), im.unsqueeze(1)
        yr, yi = mr * xr - mi * xi, mr * xi + mi * xr  # (b, s, t, f): the complex product M * X
        b, s, t, f = yr.shape
        wave = self.istft(yr.reshape(b * s, t, f), yi.reshape(b * s, t, f)).reshape(b, s, -1)[..., :n]
        if self.variance_normalization:
            wave = wave * std.unsqueeze(-1)
        return wave


def check_opset(opset: int | None) -> None:
    """Raise ``ValueError`` unless ``opset`` is ``None`` (torch's default) or an int >= :data:`MIN_OPSET`."""
    if opset is not None and (isinstance(opset, bool) or not isinstance(opset, int) or opset < MIN_OPSET):
        raise ValueError(f"--opset must be an integer >= {MIN_OPSET} (torch.onnx's exporter), got {opset!r}")


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's warnings and its log lines about optional packages (torchvision) while exporting."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "onnxscript")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _set_dims(value, names: Sequence[str | int]) -> None:
    for dim, name in zip(value.type.tensor_type.shape.dim, names, strict=True):
        if isinstance(name, int):
            dim.dim_value = name
        else:
            dim.dim_param = name


def export_onnx(model: SeparationModel, path: str | os.PathLike, opset: int | None = None) -> Path:
    """Export ``model`` (a :class:`nets.SeparationModel`) as one ONNX graph to ``path`` (``.onnx``, atomically).

    The graph (see :mod:`nets.onnx`): ``mix (batch, samples)`` float32 at ``model.sample_rate`` [and ``prompts
    (batch, n_prompts)`` int64, indices into ``model.prompt_names``] -> ``stems (batch, n_prompts | num_spk,
    samples)``; metadata ``prompts``, ``sample_rate``, ``window_samples`` (and ``num_outputs``, ``model_name``).
    ``model`` is not changed. Checked with ``onnx.checker`` before it is written.

    Args:
        opset: the ONNX opset (>= :data:`MIN_OPSET`; default: torch's).

    Raises:
        ValueError: a path without ``.onnx``, a bad opset, or an STFT the graph cannot reproduce.
        utils.atomic.WriteError: the file could not be written.
    """
    try:
        import onnx
        import onnxscript.optimizer
    except ImportError as err:
        raise RuntimeError(f"ONNX export needs the onnx and onnxscript packages (pip install -r requirements.txt): "
                           f"{err}") from None

    path = Path(path)
    if path.suffix.lower() != ".onnx":
        raise ValueError(f"the ONNX model's file name must end in .onnx, got {path}")
    check_opset(opset)
    wrapper = ExportWrapper(model).eval()
    device = model.encoder.window.device
    window = model.window_samples
    mix = torch.randn(2, 3 * window + 321, generator=torch.Generator().manual_seed(0)).to(device)
    args, names, shapes = (mix,), [MIX], {MIX: {0: "batch", 1: "samples"}}
    prompted = model.prompt_names is not None
    if prompted:  # example sizes 2 and 3: distinct, so that the exporter keeps batch and n_prompts apart
        args += ((torch.arange(6).view(2, 3) % len(model.prompt_names)).to(device),)
        names.append(PROMPTS)
        shapes[PROMPTS] = {0: "batch", 1: "n_prompts"}
    # The wrapper's network is on the export path (real_valued_copy): the out-of-place operations whatever the grad
    # mode here (docs/architecture.md §4); the inference path's in-place writes into views would become ScatterND
    # copies in the graph.
    with _quiet_exporter():
        program = torch.onnx.export(wrapper, args, input_names=names, output_names=[OUTPUT], dynamic_shapes=shapes,
                                    opset_version=opset, dynamo=True, verbose=False, optimize=False)
        # Constant folding and dead-node removal only: onnxscript's pattern rewrites (torch's optimize=True) take
        # longer than the whole export and change nothing measurable in ONNX Runtime, which fuses at load time.
        onnxscript.optimizer.fold_constants(program.model)
        onnxscript.optimizer.remove_unused_nodes(program.model)
    proto = program.model_proto
    _set_dims(proto.graph.output[0], ["batch", "n_prompts" if prompted else int(model.num_outputs), "samples"])
    meta = {SAMPLE_RATE: str(int(model.sample_rate)), WINDOW_SAMPLES: str(int(window))}
    if prompted:
        meta[PROMPT_NAMES] = ",".join(model.prompt_names)
    else:
        meta[NUM_OUTPUTS] = str(int(model.num_outputs))
    if isinstance(model.config, Mapping) and model.config.get("model_name"):
        meta[MODEL_NAME] = str(model.config["model_name"])
    onnx.helper.set_model_props(proto, {**{p.key: p.value for p in proto.metadata_props}, **meta})
    onnx.checker.check_model(proto)
    data = proto.SerializeToString()
    with atomic_path(path, suffix=".onnx") as tmp:
        tmp.write_bytes(data)
    return path
