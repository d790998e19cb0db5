"""The ONNX Runtime backend: ``Separator(..., backend="onnxruntime")`` and ``separate.py --backend onnxruntime`` run
an exported graph through the one inference path (docs/architecture.md §13) and give the PyTorch stems."""

import numpy as np
import onnx
import pytest
import soundfile as sf

from nets import PromptError
from separate import main
from separation.separator import SeparationError, Separator
from tests.helpers import tone_noise, write_wav
from tests.nets.test_onnx_export import exported_tiny
from utils.checkpoint import CheckpointError

TOL = 1e-4  # of the stem's peak


@pytest.fixture(scope="module")
def tiny(shared_tmp):
    """``(checkpoint, .onnx)`` of the tiny reference TUSS (exported once per session)."""
    return exported_tiny("tuss", shared_tmp)


@pytest.fixture(scope="module")
def both(tiny):
    ckpt, path = tiny
    return Separator(ckpt, device="cpu"), Separator(path, device="cpu", backend="onnxruntime")


def _error(ours, ref) -> float:
    """Max difference as a fraction of ``ref``'s peak (``inf`` when the shapes differ)."""
    ours, ref = np.asarray(ours), np.asarray(ref)
    if ours.shape != ref.shape:
        return float("inf")
    return float(np.abs(ours - ref).max() / np.abs(ref).max())


def test_the_graph_metadata_gives_prompts_rate_and_window(both):
    torch_sep, ort_sep = both
    assert ort_sep.prompt_names == torch_sep.prompt_names == ("speech", "sfx", "sfxbg", "drums", "bass", "vocals",
                                                               "other", "musicbg")
    assert (ort_sep.sample_rate, ort_sep.window_samples) == (torch_sep.sample_rate, torch_sep.window_samples)
    assert ort_sep.min_samples(16000) == torch_sep.min_samples(16000) == 683
    assert ort_sep.num_outputs(["sfx", "sfx"]) == 2
    messages = []
    for sep in both:
        with pytest.raises(SeparationError) as err:
            sep.separate(tone_noise(682, 16000)[0], 16000, ["speech"])
        messages.append(str(err.value))
    assert messages[0] == messages[1] and "needs at least 683 samples at 16000 Hz" in messages[0]


# The inputs are full-band (44.1 kHz): a band-limited input (e.g. 16 kHz resampled to 48 kHz) leaves bands of
# rounding noise that the band-split GroupNorm (eps 1e-5, docs/architecture.md §3) amplifies, so that even PyTorch's
# own output moves by ~1e-3 of its peak when the input moves by 1e-8; no two STFT implementations agree there.

@pytest.mark.parametrize("options", [
    dict(),  # one pass
    dict(css_segment_size=0.5, css_shift_size=0.25, css_batch_size=2),  # CSS, two segments per call
])
def test_separate_gives_the_pytorch_stems(both, options):
    """Resampling (44.1 kHz), two channels as the batch, CSS: as with PyTorch."""
    torch_sep, ort_sep = both
    wave = tone_noise(int(1.3 * 44100), 44100, channels=2, seed=3)
    prompts = ["speech", "sfx", "sfx", "musicbg"]
    ref = torch_sep.separate(wave, 44100, prompts, **options)
    ours = ort_sep.separate(wave, 44100, prompts, **options)
    assert len(ours) == 4
    for o, r in zip(ours, ref, strict=True):
        assert o.shape == wave.shape
        assert _error(o, r) <= TOL


def test_css_permutation_alignment_as_with_pytorch(both):
    """``css_solve_perm``: the tiny random model's two ``sfx`` outputs are nearly equal, so which order fits a segment
    best is a near-tie that rounding may decide either way; outputs outside the group, and the group's sum (a
    reordering within the group keeps it), are the PyTorch ones."""
    torch_sep, ort_sep = both
    wave = tone_noise(int(1.3 * 44100), 44100, channels=2, seed=3)
    prompts = ["speech", "sfx", "sfx", "musicbg"]
    options = dict(css_segment_size=0.5, css_shift_size=0.25, css_solve_perm=True)
    ref = torch_sep.separate(wave, 44100, prompts, **options)
    ours = ort_sep.separate(wave, 44100, prompts, **options)
    assert _error(ours[0], ref[0]) <= TOL
    assert _error(ours[3], ref[3]) <= TOL
    assert _error(ours[1] + ours[2], ref[1] + ref[2]) <= TOL


def test_prompts_are_checked_as_with_pytorch(both):
    messages = []
    for sep in both:
        with pytest.raises(PromptError) as err:
            sep.options(prompts=["speech", "piano"])  # the model's own check (nets.prompts.check_prompts)
        messages.append(str(err.value))
        with pytest.raises(SeparationError, match="no prompts given"):
            sep.options(prompts=[])
    assert messages[0] == messages[1] and "unknown prompt(s) piano" in messages[0]


def test_command_line_backend_onnxruntime_writes_the_pytorch_stems(tmp_path, tiny, capsys):
    ckpt, path = tiny
    wav = write_wav(tmp_path / "in.wav", tone_noise(int(1.6 * 44100), 44100, channels=2, seed=5), 44100, "FLOAT")
    common = ["--audio_path", str(wav), "--prompts", "speech", "sfxbg", "--start_time", "0.25", "--end_time", "1.5",
              "--css_segment_size", "0.5", "--residual", "--bit_depth", "32", "--no_spectrograms", "--quiet"]
    assert main(["--ckpt_path", str(ckpt), "--audio_output_dir", str(tmp_path / "pt"), *common]) == 0
    assert main(["--backend", "onnxruntime", "--ckpt_path", str(path), "--audio_output_dir", str(tmp_path / "ort"),
                 *common]) == 0
    assert capsys.readouterr().err == ""
    names = sorted(p.name for p in (tmp_path / "pt" / "wav").iterdir())
    assert names == ["mix.wav", "residual.wav", "sfxbg1.wav", "speech0.wav"]
    assert sorted(p.name for p in (tmp_path / "ort" / "wav").iterdir()) == names
    for name in names:
        ref, sr = sf.read(str(tmp_path / "pt" / "wav" / name), always_2d=True)
        ours, sr2 = sf.read(str(tmp_path / "ort" / "wav" / name), always_2d=True)
        assert sr == sr2 == 44100 and ref.shape == (round(1.5 * 44100) - round(0.25 * 44100), 2)
        assert _error(ours, ref) <= TOL


def _cli_error(args, capsys, out) -> str:
    assert main([*args, "--audio_output_dir", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert not out.exists()
    return err[0]


def test_bad_backend_and_model_combinations_exit_2(tmp_path, tiny, capsys):
    ckpt, path = tiny
    wav = write_wav(tmp_path / "in.wav", tone_noise(16000, 16000), 16000)
    out = tmp_path / "out"
    audio = ["--audio_path", str(wav), "--prompts", "speech"]
    msg = _cli_error(["--backend", "onnxruntime", "--ckpt_path", str(ckpt), *audio], capsys, out)
    assert msg.startswith(f"error: --backend onnxruntime takes an .onnx model, got {ckpt}")
    msg = _cli_error(["--ckpt_path", str(path), *audio], capsys, out)
    assert msg == f"error: {path} is an ONNX model: run it with --backend onnxruntime (Separator(..., " \
                  "backend='onnxruntime'))"
    msg = _cli_error(["--backend", "onnxruntime", *audio], capsys, out)
    assert msg.startswith("error: --backend onnxruntime needs --ckpt_path MODEL.onnx")
    msg = _cli_error(["--backend", "onnxruntime", "--ckpt_path", str(tmp_path / "none.onnx"), *audio], capsys, out)
    assert msg == f"error: ONNX model not found: {tmp_path / 'none.onnx'}"
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a graph")
    msg = _cli_error(["--backend", "onnxruntime", "--ckpt_path", str(garbage), *audio], capsys, out)
    assert msg.startswith(f"error: cannot load ONNX model {garbage}: ")
    bare = onnx.load(str(path))  # a graph without this project's metadata
    del bare.metadata_props[:]
    onnx.save(bare, str(tmp_path / "bare.onnx"))
    msg = _cli_error(["--backend", "onnxruntime", "--ckpt_path", str(tmp_path / "bare.onnx"), *audio], capsys, out)
    assert msg.startswith(f"error: {tmp_path / 'bare.onnx'} has no valid metadata 'sample_rate'")


def test_separator_refuses_a_model_its_backend_cannot_run(tiny):
    ckpt, path = tiny
    with pytest.raises(SeparationError, match="takes an .onnx model"):
        Separator(ckpt, device="cpu", backend="onnxruntime")
    with pytest.raises(SeparationError, match="is an ONNX model"):
        Separator(path, device="cpu")
    with pytest.raises(SeparationError, match="backend must be one of pytorch, onnxruntime, got 'tensorrt'"):
        Separator(path, device="cpu", backend="tensorrt")
    with pytest.raises(CheckpointError):
        Separator(path.with_name("missing.onnx"), device="cpu", backend="onnxruntime")


def test_bundled_model_on_the_bundled_example_through_onnxruntime(tmp_path, capsys):
    """The bundled demo model, exported with the command line, separates the bundled example (``python separate.py``'s
    defaults) into the PyTorch stems to 1e-4 of their peak (float output: 16-bit files differ by their rounding)."""
    import separate
    from nets.onnx.__main__ import main as export_main

    if not separate.BUNDLED_MODEL.is_file():
        pytest.skip("the bundled demo model is not in this checkout")
    graph = tmp_path / "demo.onnx"
    assert export_main([str(separate.BUNDLED_MODEL), str(graph)]) == 0
    common = ["--bit_depth", "32", "--no_spectrograms", "--quiet"]
    assert main(["--audio_output_dir", str(tmp_path / "pt"), *common]) == 0
    assert main(["--backend", "onnxruntime", "--ckpt_path", str(graph), "--audio_output_dir", str(tmp_path / "ort"),
                 *common]) == 0
    names = sorted(p.name for p in (tmp_path / "pt" / "wav").iterdir())
    assert names == ["mix.wav", "musicbg2.wav", "sfxbg1.wav", "speech0.wav"]
    for name in names:
        ref, _ = sf.read(str(tmp_path / "pt" / "wav" / name), always_2d=True)
        ours, _ = sf.read(str(tmp_path / "ort" / "wav" / name), always_2d=True)
        assert _error(ours, ref) <= TOL


@pytest.mark.parametrize(("key", "value", "match"), [
    ("sample_rate", "0", "metadata 'sample_rate' must be a positive integer, got 0"),
    ("window_samples", "-5", "metadata 'window_samples' must be a positive integer"),
    ("prompts", "speech,sfx,sfxbg,drums,bass,vocals,other,musicbg,piano", "names 9 prompts, which is not the number"),
    ("prompts", "speech,sfx,sfxbg,drums,bass,vocals,other", "names 7 prompts, which is not the number"),
    ("prompts", "speech,speech,sfxbg,drums,bass,vocals,other,musicbg", "must be distinct, non-empty names"),
    ("prompts", "speech,,sfxbg,drums,bass,vocals,other,musicbg", "must be distinct, non-empty names"),
])
def test_metadata_that_does_not_fit_the_graph_is_refused(tiny, tmp_path, key, value, match):
    from nets.onnx import OnnxModel

    path = tiny[1]
    assert len(OnnxModel(path).prompt_names) == 8  # the graph as exported loads
    proto = onnx.load(str(path))
    for prop in proto.metadata_props:
        if prop.key == key:
            prop.value = value
    edited = tmp_path / "edited.onnx"
    onnx.save(proto, str(edited))
    with pytest.raises(CheckpointError, match=match):
        OnnxModel(edited)
