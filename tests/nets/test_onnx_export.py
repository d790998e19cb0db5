"""nets.export_onnx and ``python -m nets.onnx``: one ONNX graph per model whose ONNX Runtime outputs are the
PyTorch model's (docs/architecture.md §2-§6), for any number of prompts, batch and length."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from filelock import FileLock

from nets import PromptError, build_model, export_onnx, load_model, load_weights
from nets.band_split import BandSplit
from nets.locoformer import RotaryEmbedding
from nets.onnx import ExportWrapper, OnnxModel
from nets.onnx.__main__ import main
from nets.onnx.export import PackedBandSplit, RealISTFT, RealRotaryEmbedding, RealSTFT, encode_real, rotate_real
from nets.paths import EXPORT, PathOptions
from nets.stft import STFTDecoder, STFTEncoder
from tests.helpers import load_fixture, write_published_layout

ROOT = Path(__file__).resolve().parents[2]
TOL = 1e-4  # of the output's peak, as the reference fixtures (docs/architecture.md §7)
PROMPT_SETS = [["speech"], ["speech", "sfxbg", "musicbg"], ["speech", "sfx", "sfx", "musicbg", "drums", "bass"]]


def exported_tiny(name: str, base: Path) -> tuple[Path, Path]:
    """``(checkpoint, .onnx)`` of the tiny reference model ``name`` (``tuss`` or ``conventional``) in the published
    layout under ``base``, exported once per test run (the ONNX backend tests reuse it; ``base`` is the
    ``shared_tmp`` of tests/conftest.py, and a file lock makes the other pytest-xdist workers wait for the export).

    An export takes tens of seconds, so both models are exported at once, each in its own process: TUSS through the
    command line (``python -m nets.onnx``, which must print one line and no warning), the conventional model
    through :func:`nets.export_onnx`."""
    root = Path(base) / "onnx-tiny"
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(root.with_suffix(".lock")):
        return _export_tiny(root)[name]


def _export_tiny(root: Path) -> dict[str, tuple[Path, Path]]:
    paths = {n: (root / n / "checkpoints" / "model.pth", root / f"{n}.onnx") for n in ("tuss", "conventional")}
    jobs = []
    for n, (ckpt, path) in paths.items():
        if path.is_file():  # written atomically: present means complete
            continue
        fx = load_fixture(n)
        write_published_layout(root / n, fx["hparams"], fx["state_dict"])
        code = (["-m", "nets.onnx", str(ckpt), str(path)] if n == "tuss" else
                ["-c", "import sys; from nets import export_onnx, load_model; "
                       "export_onnx(load_model(sys.argv[1]), sys.argv[2])", str(ckpt), str(path)])
        jobs.append((n, subprocess.Popen([sys.executable, *code], cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)))
    for n, job in jobs:
        out, err = job.communicate(timeout=900)
        assert job.returncode == 0, err
        if n == "tuss":
            assert err == "" and out.startswith(f"wrote {paths[n][1]} (") and "window 2048 samples" in out, (out, err)
    return paths


def _err(out, ref: torch.Tensor) -> float:
    out = torch.as_tensor(np.asarray(out))
    assert out.shape == ref.shape
    return float((out - ref).abs().max() / ref.abs().max())


def load_model_from_fixture(name: str):
    """The tiny reference model, built in memory (no files)."""
    fx = load_fixture(name)
    model = build_model(fx["hparams"])
    load_weights(model, fx["state_dict"])
    return model.eval()


def _mixes(n: int, batch: int = 1) -> torch.Tensor:
    """``batch`` different mixtures of ``n`` samples: the fixture's mixture, tiled, reversed and scaled."""
    mix = load_fixture("tuss")["mix"][0]
    mix = mix.repeat(-(-n // mix.numel()))[:n]
    return torch.stack([mix.flip(0) * (1 + i) if i % 2 else mix * (1 + i) for i in range(batch)])


@pytest.fixture(scope="module")
def tuss(shared_tmp):
    ckpt, path = exported_tiny("tuss", shared_tmp)
    return load_model(ckpt), path, ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def conventional(shared_tmp):
    ckpt, path = exported_tiny("conventional", shared_tmp)
    return load_model(ckpt), path, ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _run(session, mix: torch.Tensor, model, prompts=None) -> np.ndarray:
    feeds = {"mix": mix.numpy()}
    if prompts is not None:
        feeds["prompts"] = np.array([[model.prompt_names.index(p) for p in item] for item in prompts], np.int64)
    return session.run(None, feeds)[0]


def _torch(model, mix, prompts=None) -> torch.Tensor:
    with torch.no_grad():
        return model(mix, prompts)


# -- the real-valued replacements, against the modules they stand in for (no export) ---------------------------

@pytest.mark.parametrize("conf", [dict(fft_size=2048, hop_length=512, window_type="sqrt_hann", normalize=None),
                                  dict(fft_size=1024, hop_length=256, window_type="hann", normalize="default"),
                                  dict(fft_size=512, hop_length=128, window_type="sqrt_hann", normalize="window")])
@pytest.mark.parametrize("n", [1024, 4099, 24000])
def test_real_stft_and_istft_equal_the_codec(conf, n):
    enc = STFTEncoder(window_length=conf["fft_size"], **conf)
    dec = STFTDecoder(window_length=conf["fft_size"], **conf)
    wave = torch.randn(2, n, generator=torch.Generator().manual_seed(n))
    spec = enc(wave)  # (b, t, f) complex
    re, im = RealSTFT(enc)(wave)
    assert re.shape == spec.shape
    peak = spec.abs().max()
    assert (re - spec.real).abs().max() / peak < 1e-5 and (im - spec.imag).abs().max() / peak < 1e-5
    # the inverse of an arbitrary spectrum (imaginary DC and Nyquist parts included: irfft drops them)
    spec = torch.randn(spec.shape, dtype=torch.complex64, generator=torch.Generator().manual_seed(1))
    ref = dec(spec)
    out = RealISTFT(dec)(spec.real.contiguous(), spec.imag.contiguous())
    assert out.shape == ref.shape == (2, (spec.shape[1] - 1) * conf["hop_length"])
    assert (out - ref).abs().max() / ref.abs().max() < 1e-5


def test_real_rotary_embedding_and_band_split_encoder_equal_the_model():
    rope = RotaryEmbedding(8).eval()
    x = torch.randn(3, 17, 2, 4, 8)  # (n, l, q/k, h, c) as MultiHeadSelfAttention rotates it
    assert torch.allclose(rotate_real(x, rope.freqs, seq_dim=1), rope(x, seq_dim=1), atol=1e-6)
    assert torch.allclose(RealRotaryEmbedding(rope)(x[:, :, 0], seq_dim=-2), rope(x[:, :, 0]), atol=1e-6)
    assert not torch.allclose(rotate_real(x, rope.freqs, seq_dim=1), x, atol=1e-2)  # it does rotate
    model = load_model_from_fixture("tuss")
    spec = model.encoder(_mixes(6000, 2))
    band_split = model.separator.band_split_module
    ref = band_split.encode(spec)
    assert (encode_real(band_split, spec.real, spec.imag) - ref).abs().max() <= 1e-5 * ref.abs().max()


def test_wrapper_shares_the_weights_and_leaves_the_model_as_it_was():
    model = load_model_from_fixture("tuss")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    wrapper = ExportWrapper(model).eval()
    sep, twin = model.separator, wrapper.separator
    assert twin.prompts["speech"] is sep.prompts["speech"]  # shared, not copied
    qkv = sep.cross_prompt_module[0].frame_path.attn.qkv.weight
    assert twin.cross_prompt_module[0].frame_path.attn.qkv.weight is qkv

    def ropes(module):
        return {type(m.attn.rope) for m in module.modules() if hasattr(m, "attn")}

    assert ropes(model) == {RotaryEmbedding} and ropes(wrapper) == {RealRotaryEmbedding}  # the copy's only
    assert hasattr(sep.band_split_module, "bandwise_decoding_module")
    assert type(sep.band_split_module) is BandSplit and type(twin.band_split_module) is PackedBandSplit
    assert not hasattr(twin.band_split_module, "bandwise_decoding_module")
    assert {m.paths for m in model.modules() if hasattr(m, "paths")} == {PathOptions()}  # the model's untouched
    assert {m.paths for m in twin.modules() if hasattr(m, "paths")} == {EXPORT}  # the copy on the export path
    assert model.state_dict().keys() == before.keys()
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    mix = _mixes(9000, 2)
    idx = torch.tensor([[0, 1, 1, 7], [3, 4, 5, 0]])
    names = [[model.prompt_names[i] for i in row] for row in idx.tolist()]
    with torch.no_grad():
        assert _err(wrapper(mix, idx), model(mix, names)) < 1e-5


# -- the exported graph ------------------------------------------------------------------------------------------

def _dims(value) -> list:
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


def test_graph_inputs_outputs_and_metadata(tuss):
    model, path, _ = tuss
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    assert [(i.name, i.type.tensor_type.elem_type, _dims(i)) for i in proto.graph.input] == [
        ("mix", onnx.TensorProto.FLOAT, ["batch", "samples"]),
        ("prompts", onnx.TensorProto.INT64, ["batch", "n_prompts"])]
    assert [(o.name, o.type.tensor_type.elem_type, _dims(o)) for o in proto.graph.output] == [
        ("stems", onnx.TensorProto.FLOAT, ["batch", "n_prompts", "samples"])]
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["prompts"] == ",".join(model.prompt_names) == "speech,sfx,sfxbg,drums,bass,vocals,other,musicbg"
    assert (meta["sample_rate"], meta["window_samples"], meta["model_name"]) == ("48000", "2048", "tuss")
    assert "num_outputs" not in meta
    complex_types = {onnx.TensorProto.COMPLEX64, onnx.TensorProto.COMPLEX128}
    values = [*proto.graph.value_info, *proto.graph.input, *proto.graph.output]
    assert not [v.name for v in values if v.type.tensor_type.elem_type in complex_types]
    assert not [t.name for t in proto.graph.initializer if t.data_type in complex_types]
    assert {"Conv", "ConvTranspose"} <= {n.op_type for n in proto.graph.node}  # the STFT and its inverse


@pytest.mark.parametrize("prompts", PROMPT_SETS, ids=lambda p: f"{len(p)}-prompts")
def test_onnxruntime_reproduces_pytorch(tuss, prompts):
    model, _, session = tuss
    mix = _mixes(24000)
    ref = _torch(model, mix, [prompts])
    out = _run(session, mix, model, [prompts])
    assert out.shape == (1, len(prompts), 24000)
    assert _err(out, ref) <= TOL
    # the two sfx outputs differ (position-dependent prompts), so a wrong prompt order would show
    if prompts.count("sfx") == 2:
        assert (ref[0, 1] - ref[0, 2]).abs().max() > 10 * TOL * ref.abs().max()


def test_batch_of_two_items_with_different_prompts(tuss):
    model, _, session = tuss
    mix = _mixes(20000, batch=2)
    prompts = [["speech", "sfx", "musicbg"], ["drums", "bass", "speech"]]
    ref = _torch(model, mix, prompts)
    assert _err(_run(session, mix, model, prompts), ref) <= TOL
    alone = _run(session, mix[1:], model, prompts[1:])  # the batch does not mix items
    assert _err(alone, ref[1:]) <= TOL


@pytest.mark.parametrize("n", [2048, 31_337])
def test_any_length_through_the_same_graph(tuss, n):
    model, _, session = tuss
    mix = _mixes(n)
    prompts = [["sfx", "speech"]]
    out = _run(session, mix, model, prompts)
    assert out.shape == (1, 2, n)
    assert _err(out, _torch(model, mix, prompts)) <= TOL


def test_the_graph_reproduces_the_published_reference_outputs(tuss):
    """Beyond PyTorch: the authors' outputs stored with the fixture (docs/architecture.md §7)."""
    model, _, session = tuss
    fx = load_fixture("tuss")
    for prompts in fx["prompt_sets"]:
        ref = fx["outputs"]["+".join(prompts)][..., : fx["mix"].shape[-1]]
        assert _err(_run(session, fx["mix"], model, [prompts]), ref) <= TOL


def test_conventional_model_graph_takes_the_mixture_only(conventional):
    model, path, session = conventional
    proto = onnx.load(str(path))
    assert [i.name for i in proto.graph.input] == ["mix"]
    assert _dims(proto.graph.output[0]) == ["batch", 4, "samples"]
    meta = {p.key: p.value for p in proto.metadata_props}
    assert (meta["num_outputs"], meta["sample_rate"], meta["window_samples"]) == ("4", "48000", "2048")
    assert "prompts" not in meta
    for n in (24000, 5000):
        mix = _mixes(n, batch=2)
        out = _run(session, mix, model)
        assert out.shape == (2, 4, n)
        assert _err(out, _torch(model, mix)) <= TOL
    onnx_model = OnnxModel(path)
    assert (onnx_model.prompt_names, onnx_model.num_outputs, onnx_model.sample_rate) == (None, 4, 48000)
    assert _err(onnx_model(_mixes(7000)), _torch(model, _mixes(7000))) <= TOL


def test_onnx_model_checks_prompts_like_the_model(tuss):
    model, path, _ = tuss
    onnx_model = OnnxModel(path)
    assert onnx_model.prompt_names == model.prompt_names
    assert (onnx_model.sample_rate, onnx_model.window_samples, onnx_model.num_outputs) == (48000, 2048, None)
    mix = _mixes(6000, batch=2)
    prompts = [["vocals", "other"], ["sfxbg", "sfxbg"]]
    assert _err(onnx_model(mix, prompts), _torch(model, mix, prompts)) <= TOL
    for bad in ([["piano"], ["speech"]], [["speech"]], [["speech"], ["speech", "sfx"]]):
        with pytest.raises(PromptError) as ours:
            onnx_model(mix, bad)
        with pytest.raises(PromptError) as theirs:
            model(mix, bad)
        assert str(ours.value) == str(theirs.value)


def _structure(proto) -> tuple:
    """The graph without the exporter's per-node debug metadata: nodes, initializers, inputs, outputs, metadata."""
    nodes = [(n.op_type, tuple(n.input), tuple(n.output), tuple(a.SerializeToString() for a in n.attribute))
             for n in proto.graph.node]
    inits = [(t.name, t.SerializeToString()) for t in proto.graph.initializer]
    return (nodes, inits, [i.SerializeToString() for i in (*proto.graph.input, *proto.graph.output)],
            sorted((p.key, p.value) for p in proto.metadata_props), [o.SerializeToString() for o in proto.opset_import])


def test_the_graph_does_not_depend_on_the_grad_mode(conventional, tmp_path):
    """The session's graph was exported with autograd on (the default mode); under ``torch.no_grad()`` the exporter
    writes the same graph: its copy of the network is on the export path, whatever the grad mode."""
    model, path, _ = conventional
    with torch.no_grad():
        again = export_onnx(model, tmp_path / "no_grad.onnx")
    assert _structure(onnx.load(str(again))) == _structure(onnx.load(str(path)))


@pytest.mark.parametrize("args, message", [
    (["{ckpt}", "{tmp}/model.onnx.txt"], "error: the output must be an .onnx file, got "),
    (["{ckpt}", "{tmp}/model.onnx", "--opset", "11"], "error: --opset must be an integer >= 18"),
    (["{tmp}/missing/checkpoints/model.pth", "{tmp}/model.onnx"], "error: "),
])
def test_command_line_refuses_bad_arguments(tmp_path, capsys, args, message):
    fx = load_fixture("tuss")
    ckpt = write_published_layout(tmp_path / "tiny", fx["hparams"], fx["state_dict"])
    assert main([a.format(ckpt=ckpt, tmp=tmp_path) for a in args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(message), err
    assert not list(tmp_path.glob("*.onnx*"))
