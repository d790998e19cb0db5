"""``eval.py --devices N``: two CPU processes (DDP, gloo) give the result of one, every item scored exactly once."""

from __future__ import annotations

import copy
import csv
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import training.evaluate as evaluate_mod
from datasets.synthetic import write_synthetic_corpus
from eval import main
from tests.helpers import load_fixture, write_published_layout

ROOT = Path(__file__).resolve().parents[2]
TOL = 1e-6

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def experiment(tmp_path_factory) -> Path:
    """An experiment of the tiny reference TUSS model whose test sets have 3 items each (odd: the second process's
    shard is padded), two items per batch (a batch of one item and one padding), chunk-wise processing of ``dnr``."""
    base = tmp_path_factory.mktemp("eval-devices")
    corpus = write_synthetic_corpus(base / "corpus", files_per_prompt=1, num_mixtures=3)
    fx = load_fixture("tuss")
    hp = copy.deepcopy(fx["hparams"])
    hp["dataset_conf"]["test"] = {"json_path_and_num_data": [[str(corpus["fixed"]), None],
                                                             [str(corpus["fixed_css"]), None, 1]]}
    hp["css_datasets"] = ["dnr"]
    hp["css_conf"].update(segment_size=0.5, shift_size=0.25)
    hp["num_workers"] = 0
    hp["val_batch_size"] = 2
    write_published_layout(base / "exp", hp, fx["state_dict"], "epoch=3.ckpt")
    return base / "exp"


def _eval(exp: Path, *args: str, timeout: float = 240) -> tuple[subprocess.CompletedProcess, float]:
    """``python eval.py --ckpt_path <exp> --device cpu <args>`` from the repository root; ``(process, seconds)``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    for var in ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
                "MASTER_PORT", "TORCHELASTIC_RUN_ID", "SLURM_NTASKS", "SLURM_PROCID"):
        env.pop(var, None)  # a launcher's variables (a test run under torchrun or SLURM) are not this run's
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "eval.py", "--ckpt_path", str(exp), "--device", "cpu", *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=timeout)
    return proc, time.monotonic() - started


def _rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))


def _same_cell(a: str, b: str) -> bool:
    try:
        x, y = float(a), float(b)
    except ValueError:
        return a == b
    return (math.isnan(x) and math.isnan(y)) or abs(x - y) <= TOL


def test_two_processes_give_the_one_process_result(tmp_path, experiment):
    one, two = tmp_path / "one", tmp_path / "two"
    shutil.copytree(experiment, one)
    shutil.copytree(experiment, two)
    p1, t1 = _eval(one / "checkpoints" / "epoch=3.ckpt", "--devices", "1")
    p2, t2 = _eval(two / "checkpoints" / "epoch=3.ckpt", "--devices", "2")
    print(f"eval.py on 6 test items: 1 process {t1:.1f} s, 2 processes {t2:.1f} s")
    assert p1.returncode == 0, p1.stderr[-3000:]
    assert p2.returncode == 0, p2.stderr[-3000:]

    # the printed summary: the same lines (the result path aside), printed once
    def summary(out: str, exp: Path) -> str:
        return out.replace(str(exp), "<exp>")

    assert summary(p2.stdout, two) == summary(p1.stdout, one)
    assert p2.stdout.count("test/sisnri: ") == 1

    r1, r2 = (json.loads((e / "result.json").read_text()) for e in (one, two))
    assert set(r2) == set(r1) and "test/skipped" not in r1
    for key, value in r1.items():
        assert r2[key] == pytest.approx(value, abs=TOL), key
    assert (two / "result.txt").read_text() == (one / "result.txt").read_text()
    assert (two / "result.md").read_text() == (one / "result.md").read_text()

    # results_items.csv: the same rows in the same order, each output of each item once
    rows1, rows2 = _rows(one / "results_items.csv"), _rows(two / "results_items.csv")
    assert rows2[0] == rows1[0]
    assert len(rows1) - 1 == 3 * 2 + 3 * 3  # 3 items x 2 outputs (fixed) + 3 items x 3 outputs (fixed_css)
    assert len(rows2) == len(rows1)
    for a, b in zip(rows1[1:], rows2[1:], strict=True):
        assert a[:5] == b[:5]
        assert all(_same_cell(x, y) for x, y in zip(a[5:], b[5:], strict=True)), (a, b)
    ids = [tuple(r[:5]) for r in rows2[1:]]
    assert len(set(ids)) == len(ids)  # no padding duplicate

    # the separated audio: the same files (names carry the index and the SI-SNR), the same samples
    files1 = sorted(p.relative_to(one / "audio_outputs") for p in (one / "audio_outputs").rglob("*") if p.is_file())
    files2 = sorted(p.relative_to(two / "audio_outputs") for p in (two / "audio_outputs").rglob("*") if p.is_file())
    assert files2 == files1
    assert sum(f.suffix == ".wav" for f in files1) == len(rows1) - 1
    for rel in files1:
        if rel.suffix == ".wav":
            a, sr1 = sf.read(one / "audio_outputs" / rel, dtype="float32")
            b, sr2 = sf.read(two / "audio_outputs" / rel, dtype="float32")
            assert sr1 == sr2 and a.shape == b.shape and np.abs(a - b).max() <= TOL, rel
        else:
            assert (two / "audio_outputs" / rel).read_text() == (one / "audio_outputs" / rel).read_text()

    # nothing else left behind: no staging or provisional folder
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())


@pytest.mark.parametrize(("args", "message"), [
    (["--devices", "0"], "--devices must be a whole number >= 1, got 0"),
    (["--devices", "x"], "--devices must be a whole number >= 1, got x"),
    (["--devices", "1.5"], "--devices must be a whole number >= 1, got 1.5"),
    (["--num_nodes", "-1"], "--num_nodes must be a whole number >= 1, got -1"),
])
def test_bad_counts_are_a_usage_error_before_anything(tmp_path, experiment, capsys, args, message):
    exp = tmp_path / "exp"
    shutil.copytree(experiment, exp)
    assert main(["--ckpt_path", str(exp), "--device", "cpu", "--quiet", *args]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"error: {message}"]
    assert sorted(p.name for p in exp.iterdir()) == ["checkpoints", "hparams.yaml"]


def test_processes_a_launcher_started_must_match_the_flags(tmp_path, experiment, capsys, monkeypatch):
    exp = tmp_path / "exp"
    shutil.copytree(experiment, exp)
    monkeypatch.setenv("WORLD_SIZE", "3")  # e.g. torchrun --nproc_per_node 3
    assert main(["--ckpt_path", str(exp), "--device", "cpu", "--quiet", "--devices", "2"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: 3 process(es) were started (WORLD_SIZE=3), but --devices 2 x --num_nodes 1 is 2: give the processes "
        "per node as --devices and the nodes as --num_nodes"]
    assert sorted(p.name for p in exp.iterdir()) == ["checkpoints", "hparams.yaml"]


def test_several_gpus_are_named_by_their_count(monkeypatch):
    monkeypatch.setattr(evaluate_mod, "pick_device", torch.device)  # as if CUDA were there
    assert evaluate_mod._trainer_device("cuda", 4) == ("gpu", 4)
    assert evaluate_mod._trainer_device("cuda:1", 1) == ("gpu", [1])
    assert evaluate_mod._trainer_device("cpu", 2) == ("cpu", 2)
    with pytest.raises(evaluate_mod.EvaluationError, match="--device cuda:1 is one GPU"):
        evaluate_mod._trainer_device("cuda:1", 2)
    with pytest.raises(evaluate_mod.EvaluationError, match="mps is a single device"):
        evaluate_mod._trainer_device("mps", 2)
