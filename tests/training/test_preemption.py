"""Preemptible clusters: SIGTERM/SIGUSR1 save last.ckpt at the current step and exit 0; the next run resumes from that
exact step and ends with the weights of an uninterrupted run; SLURM jobs are requeued on SIGUSR1.

Every run is a process of its own, started by the ``train_server`` fork server (tests/launch_train.py) instead of a
new interpreter each: the signals are real, only Python/torch/Lightning start-up is not repeated."""

import json
import os
import signal
import time
from pathlib import Path

import pytest
import torch

from datasets.synthetic import synthetic_overrides, write_synthetic_corpus
from utils.checkpoint import read_state_dict

ROOT = Path(__file__).resolve().parents[2]
CONFIG = str(ROOT / "configs/tests/tiny.tuss.yaml")
STEPS, EPOCHS = 5, 2  # 10 steps in all; the signal lands in the middle


def args(corpus, exp):
    overrides = {**synthetic_overrides(corpus), "trainer_conf.limit_train_batches": str(STEPS),
                 "trainer_conf.max_epochs": str(EPOCHS), "trainer_conf.enable_progress_bar": "false",
                 "num_workers": "1"}
    return [CONFIG, "--exp_dir", str(exp), *[x for k, v in overrides.items() for x in (f"--{k}", v)]]


def start(server, corpus, exp, draws, **env):
    """``python tests/launch_train.py ARGS`` (as a child of the fork server ``server``)."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", "DRAWS": str(draws),
                **{k: str(v) for k, v in env.items()}}
    return server.launch(args(corpus, exp), env=full_env, cwd=exp.parent)


def finish(proc, timeout=300):
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out + err


def lines(path):
    return [json.loads(x) for x in Path(path).read_text().splitlines()] if Path(path).exists() else []


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, train_server):
    tmp = tmp_path_factory.mktemp("preempt")
    corpus = write_synthetic_corpus(tmp / "corpus", files_per_prompt=2)
    exp = tmp / "full"
    code, log = finish(start(train_server, corpus, exp, tmp / "full.jsonl"))
    assert code == 0, log[-3000:]
    return {"tmp": tmp, "corpus": corpus, "weights": read_state_dict(exp / "checkpoints" / "last.ckpt"),
            "draws": lines(tmp / "full.jsonl"), "exp": exp}


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGUSR1"])
def test_signal_saves_the_step_exits_0_and_resume_equals_an_uninterrupted_run(uninterrupted, signame, tmp_path,
                                                                             train_server):
    corpus = uninterrupted["corpus"]
    exp, draws = tmp_path / "exp", tmp_path / "draws.jsonl"
    bin_dir = tmp_path / "bin"  # a fake scontrol records the requeue a SLURM job gets on SIGUSR1
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(f"#!/bin/sh\necho \"$@\" > {tmp_path / 'scontrol.txt'}\n")
    (bin_dir / "scontrol").chmod(0o755)
    env = {"STEP_SLEEP": 0.4, "SLURM_JOB_ID": "4242", "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    proc = start(train_server, corpus, exp, draws, **env)
    deadline = time.time() + 240
    while len(lines(draws)) < 3 and proc.poll() is None and time.time() < deadline:  # training is under way
        time.sleep(0.05)
    sent = time.time()
    proc.send_signal(getattr(signal, signame))
    code, log = finish(proc)
    elapsed = time.time() - sent
    assert code == 0, log[-3000:]
    assert elapsed < 15, f"took {elapsed:.1f} s to stop"
    ckpt = torch.load(exp / "checkpoints" / "last.ckpt", weights_only=True)
    done = len(lines(draws))
    assert 3 <= ckpt["global_step"] == done < STEPS * EPOCHS  # saved at the step it was on, before the end
    assert f"stopped on {signame} at step {ckpt['global_step']}" in log
    assert not (exp / "train.lock").exists()
    requeued = (tmp_path / "scontrol.txt").read_text().split() if (tmp_path / "scontrol.txt").exists() else []
    assert requeued == (["requeue", "4242"] if signame == "SIGUSR1" else [])

    code, log = finish(start(train_server, corpus, exp, draws))  # the next job: same command
    assert code == 0, log[-3000:]
    assert "resuming from" in log
    resumed = lines(draws)
    assert [(d["epoch"], d["idx"], d["ids"]) for d in resumed] == [
        (d["epoch"], d["idx"], d["ids"]) for d in uninterrupted["draws"]]  # the same mixtures, each once
    final = read_state_dict(exp / "checkpoints" / "last.ckpt")
    expected = uninterrupted["weights"]
    assert final.keys() == expected.keys()
    for k in expected:
        torch.testing.assert_close(final[k], expected[k], rtol=1e-6, atol=1e-7)


def test_signal_before_the_first_step_of_a_resumed_epoch_loses_nothing(uninterrupted, tmp_path, train_server):
    """A signal that arrives at the very start (the first batch of a run) still leaves a resumable checkpoint."""
    corpus = uninterrupted["corpus"]
    exp, draws = tmp_path / "exp", tmp_path / "draws.jsonl"
    code, log = finish(start(train_server, corpus, exp, draws, KILL_AT=STEPS))  # first step of epoch 1
    assert code == 0, log[-3000:]
    assert torch.load(exp / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == STEPS + 1
    code, log = finish(start(train_server, corpus, exp, draws))
    assert code == 0, log[-3000:]
    final = read_state_dict(exp / "checkpoints" / "last.ckpt")
    for k, v in uninterrupted["weights"].items():
        torch.testing.assert_close(final[k], v, rtol=1e-6, atol=1e-7)


def test_the_workers_of_every_loader_survive_the_stop_signals(tmp_path):
    """A scheduler signals every process of the job; a validation worker that died of it failed the run (its main
    process stopped with "DataLoader worker ... is killed by signal") instead of saving and exiting."""
    import multiprocessing

    from training.data import SeparationDataModule, _ignore_stop_signals
    from utils.config import apply_overrides, load_config

    corpus = write_synthetic_corpus(tmp_path / "corpus", files_per_prompt=1)
    config = load_config(CONFIG)
    apply_overrides(config, {**synthetic_overrides(corpus), "num_workers": "1"})
    data = SeparationDataModule(config)
    loaders = [data.train_dataloader(), *data.val_dataloader(), *data.test_dataloader()]
    assert len(loaders) == 5 and all(loader.worker_init_fn is _ignore_stop_signals for loader in loaders)

    def worker(ready):
        _ignore_stop_signals(0)
        ready.set()
        time.sleep(30)

    ready = multiprocessing.get_context("fork").Event()
    child = multiprocessing.get_context("fork").Process(target=worker, args=(ready,))
    child.start()
    try:
        assert ready.wait(10)
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            os.kill(child.pid, sig)
        time.sleep(0.3)
        assert child.is_alive()
    finally:
        child.kill()
        child.join()


def outcome(exp):
    """What a finished run leaves: checkpoint names (both folders), the top-k record, every checkpoint's weights, and
    last.ckpt's step, epoch and scheduler state."""
    ckpts = exp / "checkpoints"
    names = sorted(p.name for p in ckpts.glob("*.ckpt"))
    epochs = sorted(p.name for p in (exp / "checkpoints_epoch").glob("*.ckpt"))
    last = torch.load(ckpts / "last.ckpt", weights_only=True)
    return {"names": names, "epochs": epochs, "top_k": json.loads((ckpts / "top_k.json").read_text()),
            "weights": {n: read_state_dict(ckpts / n) for n in names} | {
                f"epoch/{n}": read_state_dict(exp / "checkpoints_epoch" / n) for n in epochs},
            "step": last["global_step"], "epoch": last["epoch"], "schedulers": last["lr_schedulers"]}


def assert_same_outcome(got, want):
    assert got["names"] == want["names"] and got["epochs"] == want["epochs"]
    assert (got["step"], got["epoch"]) == (want["step"], want["epoch"])
    assert got["top_k"]["checkpoints"].keys() == want["top_k"]["checkpoints"].keys()
    for name, score in want["top_k"]["checkpoints"].items():
        assert got["top_k"]["checkpoints"][name] == pytest.approx(score, rel=1e-5, abs=1e-6)
    assert len(got["schedulers"]) == len(want["schedulers"])
    for mine, theirs in zip(got["schedulers"], want["schedulers"], strict=True):
        assert mine.keys() == theirs.keys()
        for key, value in theirs.items():  # last_epoch, best, num_bad_epochs, _last_lr, ...
            numeric = isinstance(value, (int, float)) or (isinstance(value, list) and all(
                isinstance(x, (int, float)) for x in value))
            assert mine[key] == (pytest.approx(value, rel=1e-5, abs=1e-7) if numeric else value), key
    for name, weights in want["weights"].items():
        for k, v in weights.items():
            torch.testing.assert_close(got["weights"][name][k], v, rtol=1e-5, atol=1e-6, msg=f"{name} {k}")


#: where the fault injection signals a run: the start-up checks, the restore of a checkpoint (the run resumes one
#: stopped at step 3), the last step of epoch 0 (step 4 of 0-4), its validation, and a step drawn at random
_RANDOM_STEP = int(__import__("random").Random(24).choice([1, 2, 3, 6, 7, 8]))
FAULTS = [("startup", "SIGTERM", {"SIGNAL_AT": "startup"}),
          ("restore", "SIGUSR1", {"SIGNAL_AT": "restore"}),
          ("last step of epoch 0", "SIGUSR1", {"KILL_AT": STEPS - 1}),
          ("validation of epoch 0", "SIGTERM", {"SIGNAL_AT": "validation:0"}),
          ("validation of the last epoch", "SIGUSR1", {"SIGNAL_AT": f"validation:{EPOCHS - 1}"}),
          (f"step {_RANDOM_STEP}", "SIGTERM", {"KILL_AT": _RANDOM_STEP})]


@pytest.mark.parametrize(("where", "signame", "env"), FAULTS, ids=[f[0] for f in FAULTS])
def test_a_signal_anywhere_ends_with_the_checkpoints_top_k_and_scheduler_of_an_uninterrupted_run(
        uninterrupted, tmp_path, train_server, where, signame, env):
    corpus = uninterrupted["corpus"]
    exp, draws = tmp_path / "exp", tmp_path / "draws.jsonl"
    if where == "restore":  # a checkpoint to restore: a run signalled in step 2 stops after it
        code, log = finish(start(train_server, corpus, exp, draws, KILL_AT=2))
        assert code == 0 and "stopped on SIGTERM at step 3" in log, log[-3000:]
    code, log = finish(start(train_server, corpus, exp, draws, KILL_SIG=signame, **env))
    assert code == 0, log[-3000:]
    assert "Traceback" not in log and not (exp / "train.lock").exists()
    if where == "startup":
        assert f"stopped on {signame} before training started" in log and not exp.exists()  # nothing written
    elif where == "restore":
        assert f"stopped on {signame} before training started (step 3)" in log
    elif where == "validation of the last epoch":  # nothing left to do: the run is complete
        assert "the run is complete" in log
    else:
        assert f"stopped on {signame} at step" in log
    for _ in range(2):  # the next job(s), same command, until done
        if "stopped on" not in log:
            break
        code, log = finish(start(train_server, corpus, exp, draws))
        assert code == 0, log[-3000:]
    assert "stopped on" not in log
    assert_same_outcome(outcome(exp), outcome(uninterrupted["exp"]))
    assert [(d["epoch"], d["idx"], d["ids"]) for d in lines(draws)] == [
        (d["epoch"], d["idx"], d["ids"]) for d in uninterrupted["draws"]]  # the same mixtures, each once
