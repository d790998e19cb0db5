"""The networks reproduce the authors' code on the published-layout fixtures, loaded through ``load_model``."""

import pytest
import torch

from nets import load_model
from tests.helpers import load_fixture, write_published_layout

TOL = 1e-5  # of the output's peak (docs/architecture.md §7); we are at ~5e-7, fused inference path or plain


def _check(out: torch.Tensor, ref: torch.Tensor) -> None:
    n = out.shape[-1]
    assert out.shape == ref[..., :n].shape
    err = (out - ref[..., :n]).abs().max() / ref[..., :n].abs().max()
    assert err <= TOL, f"max error {err:.2e} of peak"


@pytest.mark.parametrize("name", ["model.pth", "epoch=3.ckpt"])
def test_tuss_reproduces_reference_outputs(tmp_path, name):
    fx = load_fixture("tuss")
    ckpt = write_published_layout(tmp_path / "tuss_tiny", fx["hparams"], fx["state_dict"], name)
    model = load_model(ckpt)
    assert not model.training
    assert model.prompt_names == ("speech", "sfx", "sfxbg", "drums", "bass", "vocals", "other", "musicbg")
    assert len(fx["prompt_sets"]) == 4
    with torch.no_grad():
        for prompts in fx["prompt_sets"]:
            out = model(fx["mix"], [prompts])
            assert out.shape == (1, len(prompts), fx["mix"].shape[-1])
            _check(out, fx["outputs"]["+".join(prompts)])


def test_conventional_reproduces_reference_output(tmp_path):
    fx = load_fixture("conventional")
    ckpt = write_published_layout(tmp_path / "conv_tiny", fx["hparams"], fx["state_dict"])
    model = load_model(ckpt)
    assert model.prompt_names is None and model.num_outputs == 4
    with torch.no_grad():
        _check(model(fx["mix"]), fx["output"])


def test_experiment_directory_is_averaged_and_reproduces(tmp_path):
    """Two checkpoints whose mean is the reference weights: the averaged model reproduces the reference."""
    fx = load_fixture("tuss")
    exp = tmp_path / "exp"
    offset = {k: torch.randn_like(v) if v.is_floating_point() else torch.zeros_like(v)
              for k, v in fx["state_dict"].items()}
    write_published_layout(exp, fx["hparams"], {k: v + offset[k] for k, v in fx["state_dict"].items()}, "a.ckpt")
    write_published_layout(exp, fx["hparams"], {k: v - offset[k] for k, v in fx["state_dict"].items()}, "b.ckpt")
    # last.ckpt must be ignored: garbage weights there would break the result
    write_published_layout(exp, fx["hparams"], {k: v * 10 for k, v in fx["state_dict"].items()}, "last.ckpt")
    model = load_model(exp)
    with torch.no_grad():
        prompts = fx["prompt_sets"][0]
        _check(model(fx["mix"], [prompts]), fx["outputs"]["+".join(prompts)])
