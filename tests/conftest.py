"""Test set-up: run from the repository root, keep torch to one thread per test process (CI has 2 cores)."""

import os
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


@pytest.fixture(scope="session")
def shared_tmp(tmp_path_factory) -> Path:
    """A temporary folder shared by every pytest-xdist worker of the run (``run_tests.sh`` runs one per core, each
    test file on one worker): where an expensive artefact is built once for the whole run, under a file lock (the
    exported ONNX graphs of tests/nets/test_onnx_export.py). Without xdist, the session's own temporary folder."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
