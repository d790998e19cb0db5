"""training.warm_start: widening FFN kernels keeps the trained network's function exactly."""

import copy

import pytest
import torch

from nets import build_model, load_weights
from nets.locoformer import SwiGLUConvDeconv
from tests.helpers import load_fixture, write_published_layout
from training.warm_start import main, widen_ffn_kernels
from utils.checkpoint import CheckpointError


def _widened_hparams(hparams: dict, kernel: int) -> dict:
    hp = copy.deepcopy(hparams)
    for entry in hp["model_conf"]["conf_cross_prompt_module"]["frame_ffn_config"]:
        entry["conf"]["conv1d_kernel"] = kernel
    return hp


@pytest.mark.parametrize("k0, k1", [(1, 4), (2, 4), (3, 5)])
def test_widened_ffn_is_the_same_function(k0, k1):
    torch.manual_seed(k0)
    small, wide = SwiGLUConvDeconv(8, 12, k0, 1), SwiGLUConvDeconv(8, 12, k1, 1)
    state = widen_ffn_kernels(small.state_dict(), wide.state_dict())
    assert state["conv1d.weight"].shape == (24, 8, k1) and state["deconv1d.weight"].shape == (12, 8, k1)
    assert torch.equal(state["conv1d.weight"][..., : k1 - k0], torch.zeros(24, 8, k1 - k0))
    wide.load_state_dict(state)
    x = torch.randn(3, 17, 8)
    torch.testing.assert_close(wide(x), small(x), rtol=1e-6, atol=1e-6)


def test_widened_tuss_reproduces_the_reference_and_then_tells_equal_prompts_apart():
    fx = load_fixture("tuss")
    wide_hp = _widened_hparams(fx["hparams"], 4)
    model = build_model(wide_hp).eval()
    target = {"model." + k: v for k, v in model.state_dict().items()}
    state = widen_ffn_kernels(fx["state_dict"], target)
    load_weights(model, state)
    mix = fx["mix"]
    with torch.inference_mode():
        for key, ref in fx["outputs"].items():
            out = model(mix, [key.split("+")])
            torch.testing.assert_close(out, ref[..., : out.shape[-1]], rtol=0, atol=1e-4 * float(ref.abs().max()))
    # with kernel 1 only the rotary positions separate two equal prompts; the new taps, once trained, see neighbours
    for key, value in state.items():
        if "cross_prompt_module" in key and "frame_path.ffn" in key and key.endswith("conv1d.weight"):
            value[..., :3] = 0.3 * torch.randn_like(value[..., :3])
    load_weights(model, state)
    with torch.inference_mode():
        out = model(mix[:, :16000], [["sfx", "sfx"]])[0]
    assert float((out[0] - out[1]).norm() / out[0].norm()) > 1e-2


def test_widening_refuses_other_shape_changes():
    fx = load_fixture("tuss")
    target = {"model." + k: v for k, v in build_model(_widened_hparams(fx["hparams"], 4)).state_dict().items()}
    key = next(k for k in target if k.endswith("frame_path.ffn.0.conv1d.weight") and "cross" in k)
    bad = dict(fx["state_dict"])
    bad[key] = torch.zeros(5, 5, 1)
    with pytest.raises(CheckpointError, match="cannot become"):
        widen_ffn_kernels(bad, target)
    with pytest.raises(CheckpointError, match="missing"):
        widen_ffn_kernels({k: v for k, v in fx["state_dict"].items() if k != key}, target)


def test_command_line_writes_a_loadable_state_dict_or_one_error_line(tmp_path, capsys):
    fx = load_fixture("tuss")
    src = write_published_layout(tmp_path / "old", fx["hparams"], fx["state_dict"])
    write_published_layout(tmp_path / "new", _widened_hparams(fx["hparams"], 4), {"x": torch.zeros(1)}, "unused.pth")
    dst = tmp_path / "wide.pth"
    assert main([str(src), str(dst), "--config", str(tmp_path / "new" / "hparams.yaml")]) == 0
    load_weights(build_model(_widened_hparams(fx["hparams"], 4)), torch.load(dst, weights_only=True))
    # a narrower target is refused, and nothing is written
    dst2 = tmp_path / "narrow.pth"
    assert main([str(dst), str(dst2), "--config", str(tmp_path / "old" / "hparams.yaml")]) == 2  # input error
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "cannot become" in err and "\n" not in err
    assert not dst2.exists() and not list(tmp_path.glob(".narrow*"))
