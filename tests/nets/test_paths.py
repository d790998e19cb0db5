"""The computation paths are chosen per model instance (nets.paths, docs/architecture.md §4): ``fused`` None, True
and False, the ``TUSS_ONEDNN`` opt-out read when the choice is made, the FFN's one dispatch, and no class swaps or
import-time environment reads in nets/."""

import ast
from pathlib import Path

import pytest
import torch

from nets import build_model, load_model, onednn
from nets.locoformer import SwiGLUConvDeconv
from nets.paths import EXPORT, PLAIN, PathOptions, fused_mode, set_paths
from tests.helpers import load_fixture, tiny_tuss_hparams, write_published_layout

NETS = Path(__file__).resolve().parents[2] / "nets"
N = 6_001
PROMPTS = [["speech", "sfx"], ["bass", "sfxbg"]]
needs_onednn = pytest.mark.skipif(onednn.LINEAR is None, reason="this torch has no oneDNN fused linear op")


class Counting:
    """oneDNN's linear op, its calls counted."""

    def __init__(self, op):
        self.op, self.calls = op, 0

    def __call__(self, *args):
        self.calls += 1
        return self.op(*args)

    def binary(self, *args):
        self.calls += 1
        return self.op.binary(*args)


@pytest.fixture
def counting(monkeypatch):
    """``nets.onednn.LINEAR`` counted for this test only (the real op underneath)."""
    counter = Counting(onednn.LINEAR)
    monkeypatch.setattr(onednn, "LINEAR", counter)
    return counter


def _tiny():
    torch.manual_seed(0)
    return build_model(tiny_tuss_hparams()).eval()


def _paths(model) -> set:
    return {m.paths for m in model.modules() if hasattr(m, "paths")}


@needs_onednn
def test_fused_none_true_false(counting):
    model = _tiny()
    mix = torch.randn(2, N)
    assert _paths(model) == {PathOptions()}  # automatic, on every module
    with_grad = model(mix, PROMPTS)
    assert counting.calls == 0  # automatic: plain with autograd on
    with torch.no_grad():
        auto = model(mix, PROMPTS)
    assert counting.calls > 0  # automatic: fused without autograd in eval mode
    torch.testing.assert_close(with_grad.detach(), auto, rtol=1e-5, atol=1e-6)

    assert model.set_fused(True) is model and _paths(model) == {PathOptions(fused=True)}
    with torch.no_grad():
        forced = model(mix, PROMPTS)
    assert counting.calls > 0 and torch.equal(forced, auto)  # the same path as the automatic choice here
    with pytest.raises(RuntimeError, match="fused=True: .*autograd on"):
        model(mix, PROMPTS)  # forced: no silent fallback
    model.train()
    with torch.no_grad(), pytest.raises(RuntimeError, match="fused=True: .*train mode"):
        model(mix, PROMPTS)
    model.eval()

    counting.calls = 0
    model.set_fused(False)
    assert _paths(model) == {PLAIN}
    with torch.no_grad():
        plain = model(mix, PROMPTS)
    assert counting.calls == 0
    assert (plain - auto).abs().max() / auto.abs().max() < 1e-5
    model.set_fused(None)
    with torch.no_grad(), pytest.MonkeyPatch.context() as without_onednn:
        without_onednn.setattr(onednn, "LINEAR", None)  # the plain path as a torch without oneDNN runs it
        assert torch.equal(model(mix, PROMPTS), plain)  # fused=False is exactly that path


@needs_onednn
def test_the_environment_is_read_when_the_choice_is_made(tmp_path, monkeypatch, counting):
    """``TUSS_ONEDNN=0`` set after ``nets`` was imported takes effect in load_model / set_fused, overriding any
    ``fused``; unset again, the same model is fused once set_fused is called."""
    fx = load_fixture("tuss")
    ckpt = write_published_layout(tmp_path / "m", fx["hparams"], fx["state_dict"])
    mix = fx["mix"][:, :N]
    monkeypatch.setenv("TUSS_ONEDNN", "0")
    for fused in (None, True):
        model = load_model(ckpt, fused=fused)
        assert _paths(model) == {PLAIN}
        with torch.inference_mode():
            model(mix, [["speech"]])
        assert counting.calls == 0
    assert fused_mode(True) is False and fused_mode(None) is False
    monkeypatch.delenv("TUSS_ONEDNN")
    assert model.paths.fused is False  # set when it was loaded: the environment is not read on every call
    model.set_fused(None)
    with torch.inference_mode():
        model(mix, [["speech"]])
    assert model.paths.fused is None and counting.calls > 0


def test_fused_true_needs_onednn_and_the_cpu(monkeypatch, tmp_path):
    fx = load_fixture("tuss")
    ckpt = write_published_layout(tmp_path / "m", fx["hparams"], fx["state_dict"])
    with pytest.raises(ValueError, match="fused=True is the CPU inference path"):
        load_model(ckpt, device="cuda", fused=True)
    with pytest.raises(TypeError, match="fused must be None"):
        fused_mode("yes")
    monkeypatch.delenv("TUSS_ONEDNN", raising=False)
    monkeypatch.setattr(onednn, "LINEAR", None)  # a torch without oneDNN's op
    assert fused_mode(None) is False and fused_mode(False) is False
    with pytest.raises(RuntimeError, match="fused=True: this torch has no oneDNN fused linear op"):
        load_model(ckpt, fused=True)
    assert load_model(ckpt).paths == PLAIN


def test_set_paths_reaches_every_module_that_chooses():
    model = _tiny()
    kinds = {type(m).__name__ for m in model.modules() if hasattr(m, "paths")}
    assert kinds == {"SeparationModel", "BandSplit", "LocoformerPath", "MultiHeadSelfAttention", "SwiGLUConvDeconv"}
    options = PathOptions(fused=None, input_major=False, per_band_decoder=False)
    assert model.set_paths(options) is model and _paths(model) == {options}
    model.set_fused(False)  # the other options are kept
    assert _paths(model) == {PathOptions(fused=False, input_major=False, per_band_decoder=False)}
    with pytest.raises(TypeError, match="PathOptions"):
        set_paths(model, "fused")


@pytest.mark.parametrize("kernel", [1, 4])
def test_the_ffn_chooses_its_computation_in_one_place(kernel):
    ffn = SwiGLUConvDeconv(8, 12, kernel, 1).eval()
    x = torch.randn(3, 17, 8)
    with torch.inference_mode():
        assert ffn.variant(x) == (ffn._ffn_fused if onednn.LINEAR is not None else ffn._ffn_inference)
        ffn.paths = PLAIN
        assert ffn.variant(x) == ffn._ffn_inference
        ffn.paths = EXPORT  # the export path: out-of-place whatever the grad mode
        assert ffn.variant(x) == ffn._ffn_plain
    assert ffn.variant(x) == ffn._ffn_plain
    ffn.paths = PLAIN
    assert ffn.variant(x) == ffn._ffn_plain  # autograd on
    strided = SwiGLUConvDeconv(8, 12, kernel + 1, 2).eval()
    with torch.inference_mode():
        assert strided.variant(x) == strided._ffn_conv
    ref = ffn(x)
    for variant in (ffn._ffn_conv, ffn._ffn_plain, ffn._ffn_inference, ffn._ffn_fused):
        if variant == ffn._ffn_fused and onednn.LINEAR is None:
            continue
        with torch.inference_mode():
            torch.testing.assert_close(variant(x), ref, rtol=1e-5, atol=1e-5)


def _sources() -> list[Path]:
    return sorted(NETS.rglob("*.py"))


def test_no_class_swaps_and_no_import_time_environment_reads():
    """No ``__class__`` assignment anywhere in nets/, and ``os.environ`` read only inside functions."""
    for path in _sources():
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                assert not any(isinstance(t, ast.Attribute) and t.attr == "__class__" for t in targets), path
        in_functions = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                        for n in ast.walk(f)}
        environ = [n for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr == "environ"]
        assert all(id(n) in in_functions for n in environ), f"{path}: os.environ read outside a function"
