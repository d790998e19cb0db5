"""Fixtures of the separation tests: the tiny reference TUSS in the published layout, loaded once."""

import pytest

from separate import Separator
from tests.helpers import load_fixture, write_published_layout


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    fx = load_fixture("tuss")
    return write_published_layout(tmp_path_factory.mktemp("model") / "tiny", fx["hparams"], fx["state_dict"])


@pytest.fixture(scope="module")
def sep(tiny_ckpt):
    return Separator(tiny_ckpt, device="cpu")
