"""Property: a checkpoint written by a real (tiny) training run loads through ``nets.load_model`` into a model that
computes what the training module restored from the same weights computes."""

import shutil
from pathlib import Path

import pytest
import torch

from nets import load_model
from training.module import SeparationModule
from utils.checkpoint import TOP_K_RECORD, average_state_dicts, read_top_k_record
from utils.config import load_config

PROMPTS = [["speech", "sfxbg", "musicbg"], ["sfx", "speech", "speech"]]


@pytest.fixture(scope="module")
def run(tiny_experiment):
    """The session's tiny experiment (tests/training/conftest.py): two epochs of two steps, both epochs in the top-k, so
    averaging is not a no-op. Read-only."""
    mix = torch.randn(2, 12_000, generator=torch.Generator().manual_seed(5)) * 0.1
    return {"exp": tiny_experiment, "mix": mix}


def module_outputs(exp: Path, state_dict: dict, mix: torch.Tensor) -> torch.Tensor:
    """Outputs of a training module (the run's config) restored from ``state_dict``."""
    module = SeparationModule(load_config(exp / "hparams.yaml"))
    module.load_state_dict(state_dict)  # strict
    module.eval()
    with torch.no_grad():
        return module(mix, PROMPTS)


def loaded_outputs(path: Path, mix: torch.Tensor) -> torch.Tensor:
    model = load_model(path)
    assert not model.training
    with torch.no_grad():
        return model(mix, PROMPTS)


def ckpt_state(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def test_last_ckpt_loads_with_the_modules_outputs(run):
    last = run["exp"] / "checkpoints" / "last.ckpt"
    expected = module_outputs(run["exp"], ckpt_state(last), run["mix"])
    got = loaded_outputs(last, run["mix"])
    assert got.shape == (2, 3, run["mix"].shape[-1])
    assert got.abs().max() > 0
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_the_experiment_directory_loads_the_average_of_the_recorded_top_k(run):
    exp = run["exp"]
    files = read_top_k_record(exp / "checkpoints")
    assert files is not None, f"the run wrote no {TOP_K_RECORD}"
    assert len(files) == 2 and all(f.name != "last.ckpt" for f in files)
    states = [ckpt_state(f) for f in files]
    assert any(not torch.equal(states[0][k], states[1][k]) for k in states[0])  # the epochs differ
    expected = module_outputs(exp, average_state_dicts(states), run["mix"])
    got = loaded_outputs(exp, run["mix"])
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    # and the average is not simply one of its members
    for state in states:
        assert (module_outputs(exp, state, run["mix"]) - got).abs().max() > 1e-5


def test_a_lone_ckpt_loads_without_hparams_yaml(run, tmp_path):
    last = run["exp"] / "checkpoints" / "last.ckpt"
    lone = tmp_path / "elsewhere" / "last.ckpt"
    lone.parent.mkdir()
    shutil.copy(last, lone)
    assert not list(tmp_path.rglob("hparams*.yaml"))
    expected = module_outputs(run["exp"], ckpt_state(last), run["mix"])
    got = loaded_outputs(lone, run["mix"])
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
