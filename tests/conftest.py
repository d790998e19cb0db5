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


#: test files that share a session artefact: kept on one pytest-xdist worker so that it is built once
SHARED = {"tests/nets/test_onnx_export.py": "onnx", "tests/separation/test_onnx_backend.py": "onnx"}


def pytest_collection_modifyitems(items):
    """Under pytest-xdist's ``--dist loadgroup`` (run_tests.sh), every test file runs on one worker, so its module
    fixtures are built once; files that share a session artefact (:data:`SHARED`) run on the same one."""
    for item in items:
        if not any(m.name == "xdist_group" for m in item.iter_markers()):
            path = Path(str(item.fspath)).resolve().relative_to(ROOT).as_posix()
            item.add_marker(pytest.mark.xdist_group(SHARED.get(path, path)))
