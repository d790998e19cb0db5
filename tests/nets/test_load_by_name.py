"""``load_model("tuss.demo")``: a bundled model by name from any working directory (utils.checkpoint.find_model),
and the one prompt check shared by TUSS, SeparationModel and the ONNX Runtime model (nets.prompts)."""

from pathlib import Path

import pytest
import torch

from nets import PromptError, build_model, load_model
from nets.prompts import check_prompts
from tests.helpers import load_fixture, tiny_tuss_hparams
from utils.checkpoint import CheckpointError, find_model

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "pretrained_models" / "tuss.demo" / "checkpoints" / "model.pth"
needs_demo = pytest.mark.skipif(not DEMO.is_file(), reason="the bundled demo model is not in this checkout")


@needs_demo
def test_a_bundled_model_loads_by_name_from_any_directory(tmp_path, monkeypatch):
    explicit = load_model(DEMO)
    monkeypatch.chdir(tmp_path)
    by_name = load_model("tuss.demo")
    assert find_model("tuss.demo") == DEMO
    assert by_name.state_dict().keys() == explicit.state_dict().keys()
    assert all(torch.equal(v, explicit.state_dict()[k]) for k, v in by_name.state_dict().items())
    assert by_name.prompt_names == explicit.prompt_names and not by_name.training


@needs_demo
def test_an_existing_path_wins_over_a_bundled_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tuss.demo").mkdir()
    assert find_model("tuss.demo") == Path("tuss.demo")  # the path as given, not the bundled model
    assert find_model(str(Path("elsewhere") / "tuss.demo")) == Path("elsewhere") / "tuss.demo"  # not a bare name


def test_an_unknown_name_is_still_a_missing_checkpoint(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert find_model("no.such.model") == Path("no.such.model")
    with pytest.raises(CheckpointError, match="checkpoint not found: no.such.model"):
        load_model("no.such.model")


def test_one_prompt_check_for_every_model():
    torch.manual_seed(0)
    model = build_model(tiny_tuss_hparams())
    names = model.prompt_names
    for bad in ([["piano"], ["speech"]], [["speech"]], [["speech"], ["speech", "sfx"]], "speech", [[], []]):
        messages = set()
        for check in (model.check_prompts, model.separator.check_prompts,
                      lambda p, b: check_prompts(names, p, b)):
            with pytest.raises(PromptError) as err:
                check(bad, 2)
            messages.add(str(err.value))
        assert len(messages) == 1, messages
    check_prompts(names, [["sfx", "sfx"], ["speech", "bass"]], 2)
    conventional = build_model(load_fixture("conventional")["hparams"])
    conventional.check_prompts([["anything"]], 5)  # a model without prompts ignores them
