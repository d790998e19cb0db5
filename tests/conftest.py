"""Test set-up: run from the repository root, keep torch to one thread per test process (CI has 2 cores)."""

import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

torch.set_num_threads(1)

FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture
def fixtures_dir() -> Path:
    """Directory of the copied reference fixtures (tests read nothing outside the repository)."""
    return FIXTURES
