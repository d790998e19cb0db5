"""Artefacts of the training tests, built once and shared: a fork server for training runs (one per test process) and
a tiny trained experiment (one per test run, for every pytest-xdist worker: under ``shared_tmp``, a file lock makes
the other workers wait while one builds it).

Tests must not modify the shared artefacts: one that writes into the tiny experiment works on a copy
(``shutil.copytree``), and no run resumes from a copy (its checkpoint callbacks would see their folder change)."""

import shutil
from pathlib import Path

import pytest
from filelock import FileLock

from datasets.synthetic import synthetic_overrides, write_synthetic_corpus

ROOT = Path(__file__).resolve().parents[2]
TINY_CONFIG = str(ROOT / "configs/tests/tiny.tuss.yaml")


@pytest.fixture(scope="session")
def train_server():
    """A fork server for runs of ``tests/launch_train.py`` (:class:`tests.launch_train.TrainServer`): each run is a
    process of its own, without the seconds of Python/torch/Lightning start-up of a new interpreter."""
    from tests.launch_train import TrainServer

    server = TrainServer()
    yield server
    server.close()


def _tiny(base: Path) -> tuple[dict[str, Path], Path]:
    """The corpus and the experiment of :func:`tiny_experiment` under ``base``, built unless complete."""
    from training.run import train

    root = Path(base) / "tiny-experiment"
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(root.with_suffix(".lock")):
        complete = root / "complete"
        if not complete.is_file():  # absent, or left half-built by a test process that died
            for part in ("corpus", "exp"):
                shutil.rmtree(root / part, ignore_errors=True)
            corpus = write_synthetic_corpus(root / "corpus", files_per_prompt=2)
            overrides = {**synthetic_overrides(corpus), "trainer_conf.enable_progress_bar": "false"}
            train(TINY_CONFIG, root / "exp", overrides)
            complete.write_text("")
        corpus = {name: (root / "corpus").resolve() / f"{name}.json" for name in ("pools", "fixed", "fixed_css")}
    return corpus, root / "exp"


@pytest.fixture(scope="session")
def tiny_corpus(shared_tmp):
    """The synthetic corpus (2 files per prompt) of :func:`tiny_experiment`: ``write_synthetic_corpus``'s manifests.
    Read-only."""
    return _tiny(shared_tmp)[0]


@pytest.fixture(scope="session")
def tiny_experiment(shared_tmp):
    """An experiment directory of the tiny TUSS config: two epochs of two steps on :func:`tiny_corpus` (both epochs in
    the top-k, so averaging them is not a no-op), no progress bar. Read-only."""
    return _tiny(shared_tmp)[1]
