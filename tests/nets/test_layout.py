"""Models built from the published medium/large configs have exactly the published state-dict layout."""

import json

import pytest
import torch

from nets import build_model, load_weights
from tests.helpers import FIXTURES

CASES = [
    ("configs/unified/tuss.medium.2-4src.yaml", "medium", 909, 11_132_472),
    ("configs/unified/tuss.large.2-4src.yaml", "large", 993, 38_210_320),
]


@pytest.mark.parametrize(("config", "size", "n_tensors", "n_values"), CASES)
def test_published_layout(config, size, n_tensors, n_values):
    layout = json.loads((FIXTURES / f"official_tuss_{size}_state_dict_layout.json").read_text())
    assert (layout["num_tensors"], layout["num_values"]) == (n_tensors, n_values)
    model = build_model(config)
    ours = {"model." + k: list(v.shape) for k, v in model.state_dict().items()}
    assert ours == layout["keys"]
    assert sum(v.numel() for v in model.state_dict().values()) == n_values

    # a random state dict in the published layout loads strictly and runs
    torch.manual_seed(0)
    state = {k: torch.randn(shape) * 0.05 for k, shape in layout["keys"].items()}
    load_weights(model, state)
    assert torch.equal(model.state_dict()["separator.prompts.speech"], state["model.separator.prompts.speech"])
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(1, 12_000), [["speech", "sfxbg", "musicbg"]])
    assert out.shape == (1, 3, 12_000) and torch.isfinite(out).all()
