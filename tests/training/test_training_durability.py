"""Nothing lost, nothing silently broken, in training: non-finite steps, failed writes, concurrent runs, bad values,
recorded top-k, and 20 random SIGKILLs followed by reruns.

The runs that take a signal or watch a stderr are processes of their own, started by the ``train_server`` fork server
(tests/launch_train.py) instead of a new interpreter each; the others run in this process."""

import errno
import hashlib
import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from datasets.synthetic import synthetic_overrides
from training.callbacks import AtomicCheckpointIO
from training.run import main, train
from utils import atomic as atomic_mod
from utils.atomic import TMP_PREFIX, WriteError
from utils.checkpoint import (
    NonFiniteWeightsError,
    average_state_dicts,
    checkpoint_files,
    read_state_dict,
    resolve_checkpoint,
)
from utils.lock import ExperimentLock, LockedError

ROOT = Path(__file__).resolve().parents[2]
CONFIG = str(ROOT / "configs/tests/tiny.tuss.yaml")


@pytest.fixture(scope="module")
def corpus(tiny_corpus):
    return tiny_corpus  # the session's synthetic corpus (2 files per prompt), read-only


def overrides(corpus, **extra):
    return {**synthetic_overrides(corpus), "trainer_conf.enable_progress_bar": "false",
            **{k.replace("__", "."): str(v) for k, v in extra.items()}}


def argv(corpus, exp, **extra):
    return [CONFIG, "--exp_dir", str(exp), *[x for k, v in overrides(corpus, **extra).items() for x in (f"--{k}", v)]]


def launch(server, corpus, exp, env=None, **extra):
    """``python tests/launch_train.py ARGS`` (as a child of the fork server ``server``)."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", **(env or {})}
    return server.launch(argv(corpus, exp, **extra), env=full_env, cwd=exp.parent)


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with its content hash (what a refused run must not change)."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def trained(tiny_experiment, tmp_path_factory):
    """Two epochs of two steps on ``corpus``: a copy of the session's tiny experiment (should a refused run write into
    it after all, the session's stays intact)."""
    return shutil.copytree(tiny_experiment, tmp_path_factory.mktemp("trained") / "exp")


# -- non-finite data and steps ---------------------------------------------------------------------------------------

def test_non_finite_steps_are_skipped_logged_and_the_run_ends_with_finite_weights(corpus, tmp_path, train_server):
    exp = tmp_path / "exp"
    proc = launch(train_server, corpus, exp, {"NAN_STEPS": "1,2"})
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    skipped = [line for line in err.splitlines() if "update skipped" in line]
    assert len(skipped) == 2 and "step 1: non-finite loss" in skipped[0] and "2 in a row" in skipped[1]
    assert "mixtures ['e0-r0-i2', 'e0-r0-i3'] from " in skipped[0] and skipped[0].endswith(".wav")  # its files
    ckpt = torch.load(exp / "checkpoints" / "last.ckpt", weights_only=True)
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values())
    updates = max(float(s["step"]) for s in ckpt["optimizer_states"][0]["state"].values())
    assert ckpt["global_step"] == 4 and updates == 2  # 4 steps counted, 2 of them updated the weights


def test_non_finite_steps_in_a_row_stop_the_run_with_one_line_and_exit_1(corpus, tmp_path, train_server):
    exp = tmp_path / "exp"
    proc = launch(train_server, corpus, exp, {"NAN_STEPS": "1-"}, max_nonfinite_steps=2, trainer_conf__max_epochs=3)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1
    assert err.strip().splitlines()[-1].startswith("error: 2 consecutive training steps had a non-finite loss")
    for f in (exp / "checkpoints").glob("*.ckpt"):  # what was written before is intact and finite
        assert all(torch.isfinite(v).all() for v in read_state_dict(f).values())
    assert not (exp / "train.lock").exists()


def test_checkpoint_io_refuses_non_finite_weights(tmp_path):
    io = AtomicCheckpointIO()
    target = tmp_path / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}}, target)
    before = target.read_bytes()
    with pytest.raises(NonFiniteWeightsError, match=r"refusing to write .*last.ckpt.*\(w\)"):
        io.save_checkpoint({"state_dict": {"w": torch.tensor([1.0, float("inf"), 0.0])}}, target)
    assert target.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


# -- failed writes ---------------------------------------------------------------------------------------------------

def failing_open(match: str, room: int, code: int):
    """An ``open`` for :mod:`utils.atomic` whose files named like ``match`` take ``room`` bytes, then fail with
    ``code`` (ENOSPC: a full disk) as the operating system would; torch's writer then fails as it does on a full
    disk (``enforce fail at inline_container.cc ... unexpected pos``)."""
    real_open = open

    def fake(path, mode="r", *args, **kwargs):
        f = real_open(path, mode, *args, **kwargs)
        if "w" not in mode or match not in str(path):
            return f

        class Failing:
            written = 0

            def write(self, data):
                if self.written + len(data) > room:
                    raise OSError(code, os.strerror(code))
                self.written += len(data)
                return f.write(data)

            def __getattr__(self, name):
                return getattr(f, name)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                f.close()

        return Failing()

    return fake


def test_disk_full_while_rewriting_last_ckpt_keeps_the_previous_one(corpus, tmp_path, monkeypatch, capsys):
    exp = tmp_path / "exp"
    assert main(argv(corpus, exp, trainer_conf__max_epochs=1)) == 0
    last = exp / "checkpoints" / "last.ckpt"
    before = last.read_bytes()
    monkeypatch.setattr(atomic_mod, "open", failing_open("last.ckpt", 5000, errno.ENOSPC), raising=False)
    code = main(argv(corpus, exp, trainer_conf__max_epochs=2))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and err[-1] == f"error: cannot write {last}: No space left on device"
    assert last.read_bytes() == before  # the old last.ckpt is intact...
    assert not [p for p in exp.rglob("*") if p.name.startswith(TMP_PREFIX)]  # ...and no partial file is left
    monkeypatch.undo()
    assert main(argv(corpus, exp, trainer_conf__max_epochs=2)) == 0  # and the next run resumes from it
    assert torch.load(last, weights_only=True)["global_step"] == 4


def test_a_failed_first_save_leaves_no_partial_file(tmp_path, monkeypatch):
    monkeypatch.setattr(atomic_mod, "open", failing_open("epoch=0", 10, errno.EIO), raising=False)
    with pytest.raises(WriteError, match=r"cannot write .*epoch=0.ckpt: Input/output error"):
        AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.ones(1)}}, tmp_path / "epoch=0.ckpt")
    assert list(tmp_path.iterdir()) == []


FILE_SIZE_LIMIT = """
import resource, signal, sys, torch
from training.callbacks import AtomicCheckpointIO
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write then fails with EFBIG, as a full disk fails with ENOSPC
resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
try:
    AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.ones(100_000)}}, sys.argv[1])
except OSError as err:
    print(type(err).__name__, err)
"""


def test_a_checkpoint_write_the_kernel_refuses_names_the_file_and_the_reason(tmp_path):
    target = tmp_path / "last.ckpt"
    target.write_bytes(b"the previous checkpoint")
    out = subprocess.run([sys.executable, "-c", FILE_SIZE_LIMIT, str(target)], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert out.stdout.strip() == f"WriteError cannot write {target}: File too large", out.stderr[-2000:]
    assert "inline_container" not in out.stdout + out.stderr
    assert target.read_bytes() == b"the previous checkpoint" and sorted(p.name for p in tmp_path.iterdir()) == [
        "last.ckpt"]


# -- one run per experiment ------------------------------------------------------------------------------------------

def test_a_second_run_on_the_same_experiment_is_refused_naming_the_holder(corpus, tmp_path, capsys, train_server):
    exp = tmp_path / "exp"
    first = launch(train_server, corpus, exp, {"STEP_SLEEP": "1"})
    deadline = time.time() + 120
    def settled() -> bool:  # the lock is held and the first run's atomic hparams write is complete
        return ((exp / "train.lock").exists() and (exp / "hparams.yaml").exists()
                and not list(exp.glob(".tmp-*")))

    while not settled() and time.time() < deadline:
        time.sleep(0.05)
    before = snapshot(exp)
    code = main(argv(corpus, exp))
    err = capsys.readouterr().err.strip().splitlines()
    after = snapshot(exp)  # while the first run holds the lock (once stopped, it removes its lock file)
    first.send_signal(signal.SIGTERM)
    first.communicate(timeout=120)
    assert code == 2 and len(err) == 1
    assert f"is in use by another run (host {os.uname().nodename}, PID {first.pid}" in err[0]
    assert after.keys() >= before.keys() and not list((exp / "checkpoints").glob("*-v1*"))


def test_a_lock_left_by_a_dead_run_is_taken_over(tmp_path, caplog):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / "train.lock").write_text(json.dumps({"host": os.uname().nodename, "pid": dead.pid, "start": None,
                                                     "since": "2026-01-01 00:00:00"}))
    with caplog.at_level(logging.WARNING), ExperimentLock(tmp_path) as lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    assert "taking over the lock" in caplog.text and str(dead.pid) in caplog.text
    (tmp_path / "train.lock").write_text(json.dumps({"host": "another-host", "pid": 1, "since": "x"}))
    with pytest.raises(LockedError, match="host another-host, PID 1"):
        ExperimentLock(tmp_path).acquire()  # another host's lock cannot be checked: respected


def _take(folder, barrier, holders, results):
    """One contender of the race below: wait for the others, try the lock, hold it a moment when taken."""
    barrier.wait()
    try:
        with ExperimentLock(folder):
            with holders.get_lock():
                holders.value += 1
                results.append(holders.value)  # how many hold it now, this one included
            time.sleep(0.05)
            with holders.get_lock():
                holders.value -= 1
    except LockedError:
        results.append(0)


def test_of_many_runs_that_find_the_same_stale_lock_exactly_one_takes_it(tmp_path):
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = json.dumps({"host": os.uname().nodename, "pid": dead.pid, "start": None, "since": "2026-01-01 00:00:00"})
    rounds, takers = 40, 6
    with ctx.Manager() as manager:
        for i in range(rounds):
            folder = tmp_path / f"exp{i}"
            folder.mkdir()
            (folder / "train.lock").write_text(stale)
            barrier, holders, results = ctx.Barrier(takers), ctx.Value("i", 0), manager.list()
            procs = [ctx.Process(target=_take, args=(folder, barrier, holders, results)) for _ in range(takers)]
            for proc in procs:
                proc.start()
            for proc in procs:
                proc.join(30)
            assert [proc.exitcode for proc in procs] == [0] * takers
            outcome = sorted(results)
            # each contender either took the lock alone (1) or was refused (0), and the stale lock was taken once
            # or more only one after another: never two holders at once
            assert max(outcome) == 1 and len(outcome) == takers, outcome
            assert outcome.count(1) >= 1
            assert not (folder / "train.lock").exists()


def test_a_lock_file_is_not_taken_from_a_live_holder_even_when_its_record_is_unreadable(tmp_path):
    with ExperimentLock(tmp_path) as held:
        held.path.write_text("[1]")  # damaged under a live holder: the flock still refuses
        old = time.time() - 120
        os.utime(held.path, (old, old))
        with pytest.raises(LockedError, match="is in use by another run"):
            ExperimentLock(tmp_path).acquire()


@pytest.mark.parametrize("content", ["[1]", "5", "null", '"text"', "{not json"])
def test_a_lock_of_another_shape_is_refused_while_fresh_and_taken_over_when_old(tmp_path, content, caplog):
    lock = tmp_path / "train.lock"
    lock.write_text(content)
    with pytest.raises(LockedError, match="is in use by another run \\(host \\?, PID \\?"):
        ExperimentLock(tmp_path).acquire()  # fresh: perhaps a run writing it right now
    old = time.time() - 120
    os.utime(lock, (old, old))
    with caplog.at_level(logging.WARNING), ExperimentLock(tmp_path) as held:
        assert json.loads(held.path.read_text())["pid"] == os.getpid()
    assert "taking over the lock" in caplog.text and not lock.exists()


# -- values checked before anything is written -----------------------------------------------------------------------

@pytest.mark.parametrize(("extra", "message"), [
    (["--batch_size", "four"], "config key 'batch_size' must be an integer >= 1, got 'four'"),
    (["--optimizer_conf.lr", "abc"], "config key 'optimizer_conf.lr' must be a finite number > 0, got 'abc'"),
    (["--optimizer_conf.lr", "nan"], "config key 'optimizer_conf.lr' must be a finite number > 0, got nan"),
    (["--trainer_conf.max_epoch", "3"], "unknown config key 'trainer_conf.max_epoch' (did you mean 'max_epochs'?)"),
    (["--num_workers", "[1, 2"], "--num_workers '[1, 2' is not a valid YAML value"),
    (["--prompts.speech.gain", "[0, -10]"], "config key 'prompts.speech.gain' must be [low, high] in dB"),
    (["--model_conf.nblocks_cond_tse_module", "2"], "holds a run of a different model"),
    (["--dataset_conf.train.json_paths", "[gone.json]"], "manifest gone.json not found"),
])
def test_a_refused_run_changes_nothing_on_disk(trained, corpus, extra, message, capsys):
    before = snapshot(trained)
    code = main(argv(corpus, trained) + extra)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and message in err[0]
    assert snapshot(trained) == before


def test_a_corrupt_last_ckpt_is_refused_and_kept(corpus, tmp_path, capsys):
    exp = tmp_path / "exp"
    (exp / "checkpoints").mkdir(parents=True)
    (exp / "checkpoints" / "last.ckpt").write_bytes(b"PK\x03\x04 not a checkpoint")
    before = snapshot(exp)
    assert main(argv(corpus, exp)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"cannot resume from {exp / 'checkpoints' / 'last.ckpt'}" in err[0]
    assert snapshot(exp) == before and not (exp / "tensorboard").exists() and not (exp / "hparams.yaml").exists()


def test_resuming_with_a_last_ckpt_that_does_not_fit_the_model_is_refused_before_anything_is_written(
        trained, corpus, tmp_path, capsys):
    exp = shutil.copytree(trained, tmp_path / "exp")
    (exp / "hparams.yaml").unlink()  # deleted (or edited) since: nothing tells the run the checkpoint's model
    shutil.rmtree(exp / "tensorboard")
    before = snapshot(exp)
    assert main(argv(corpus, exp) + ["--model_conf.nblocks_cond_tse_module", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: cannot resume from {exp / 'checkpoints' / 'last.ckpt'}: "
                                                "it does not fit the model of this config (")
    assert "weight(s) missing (first: model.separator.cond_tse_module.1." in err[0]
    assert snapshot(exp) == before and not (exp / "tensorboard").exists() and not (exp / "hparams.yaml").exists()


def _bad_copy(corpus, tmp_path, damage):
    """A copy of the corpus manifests, damaged by ``damage(pools, fixed)`` (dicts, or the paths for bytes edits)."""
    folder = tmp_path / "bad"
    folder.mkdir()
    manifests = {}
    for name in ("pools", "fixed", "fixed_css"):
        manifests[name] = folder / f"{name}.json"
        shutil.copy(corpus[name], manifests[name])
    damage(manifests, folder)
    return manifests


def _not_utf8(m, folder):
    m["pools"].write_bytes(m["pools"].read_bytes() + b"\xff\xfe")


def _no_ref(m, folder):
    data = json.loads(m["fixed"].read_text())
    del next(iter(data["valid"].values()))["ref"]
    m["fixed"].write_text(json.dumps(data))


def _silent_pool(m, folder):
    import soundfile as sf

    data = json.loads(m["pools"].read_text())
    for i, entry in enumerate(data["train"]["speech"]):
        audio, sr = sf.read(entry["path"], dtype="float32")
        entry["path"] = str(folder / f"silent{i}.wav")
        sf.write(entry["path"], audio * 0, sr)
    m["pools"].write_text(json.dumps(data))


def _nan_valid_reference(m, folder):
    import soundfile as sf

    data = json.loads(m["fixed"].read_text())
    entry = list(data["valid"].values())[1]  # not the first: a sanity check of one batch would not find it
    key = next(iter(entry["ref"]))
    audio, sr = sf.read(entry["ref"][key], dtype="float32")
    audio[len(audio) // 2] = np.nan
    entry["ref"][key] = str(folder / "nan.wav")
    sf.write(entry["ref"][key], audio, sr, subtype="FLOAT")
    m["fixed"].write_text(json.dumps(data))


@pytest.mark.parametrize(("damage", "message"), [
    (_not_utf8, "pools.json is not UTF-8 text (byte "),
    (_no_ref, "fixed.json is not a valid manifest: valid/"),
    (_silent_pool, "dataset_conf.train.json_paths: could not draw a readable, finite, non-silent 'speech' source"),
    (_nan_valid_reference, "nan.wav ("),
])
def test_bad_data_is_refused_before_anything_is_written(corpus, tmp_path, capsys, damage, message):
    bad = _bad_copy(corpus, tmp_path, damage)
    exp = tmp_path / "exp"
    assert main(argv(bad, exp)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not exp.exists()  # no hparams.yaml, no tensorboard/, not even the folder


def test_a_resumed_run_with_changed_values_keeps_the_previous_hparams(corpus, tmp_path, caplog):
    exp = tmp_path / "exp"
    train(CONFIG, exp, overrides(corpus, trainer_conf__max_epochs=1))
    first = (exp / "hparams.yaml").read_text()
    with caplog.at_level(logging.WARNING):
        train(CONFIG, exp, overrides(corpus, trainer_conf__max_epochs=2, optimizer_conf__lr=5e-4))
    kept = list(exp.glob("hparams.*.yaml"))
    assert len(kept) == 1 and kept[0].read_text() == first
    assert "optimizer_conf.lr: 0.001 -> 0.0005" in caplog.text and "trainer_conf.max_epochs: 1 -> 2" in caplog.text


# -- averaging uses exactly the recorded top-k -----------------------------------------------------------------------

def test_directory_average_uses_the_recorded_top_k_only(tiny_experiment, tmp_path, caplog):
    trained = shutil.copytree(tiny_experiment, tmp_path / "exp")  # orphans are added to the copy
    folder = trained / "checkpoints"
    recorded = sorted(json.loads((folder / "top_k.json").read_text())["checkpoints"])
    assert len(recorded) == 2 and all((folder / n).is_file() for n in recorded)
    extra = [folder / "epoch=0-step=2-v1.ckpt", folder / "epoch=9-step=99.ckpt", folder / "last-v1.ckpt"]
    for f in extra:  # duplicates and orphans of interrupted runs
        f.write_bytes((folder / recorded[0]).read_bytes())
    assert [p.name for p in checkpoint_files(trained)] == recorded
    with caplog.at_level(logging.INFO):
        state, _ = resolve_checkpoint(trained)
    assert f"averaging 2 checkpoint(s) of {trained}: {', '.join(recorded)}" in caplog.text
    mean = average_state_dicts([read_state_dict(folder / n) for n in recorded])
    assert all(torch.equal(state[k], mean[k]) for k in mean)


# -- fault injection -------------------------------------------------------------------------------------------------

def test_twenty_random_sigkills_then_reruns_end_like_an_uninterrupted_run(corpus, tmp_path, train_server):
    """Kill -9 a run at random moments 20 times (rerunning after each); with a rolling checkpoint every step, the last
    run ends with a loadable last.ckpt, a top-k record of existing files, and the uninterrupted run's weights."""
    extra = {"trainer_conf__limit_train_batches": 4, "trainer_conf__max_epochs": 3, "save_last_every_n_steps": 1}
    reference = tmp_path / "reference"
    started = time.time()
    proc = launch(train_server, corpus, reference, **extra)
    assert proc.communicate(timeout=300) and proc.returncode == 0
    step_time = (time.time() - started) / 14  # a run: start-up (~2 steps' time) + 12 steps, validation and writes
    exp, draws, rng, kills, done = tmp_path / "exp", tmp_path / "draws.jsonl", random.Random(20261201), 0, False
    started = time.time()
    # Each rerun is killed at a random moment of its start-up (the lock, stale temporaries, hparams, the resume: about
    # two steps' time) or of its training (the step it begins with, that step's checkpoint write, an epoch's validation
    # and checkpoints); it resumes from the last step's checkpoint, so the training advances from kill to kill.
    while kills < 20:
        draws.unlink(missing_ok=True)
        proc = launch(train_server, corpus, exp, {"DRAWS": str(draws)}, **extra)
        in_training, delay = rng.random() >= 0.3 and not done, rng.uniform(0.0, 2.0) * step_time
        if in_training:  # counted from the start of the rerun's first step
            while not draws.exists() and proc.poll() is None and time.time() - started < 900:
                time.sleep(0.01)
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate()
        if proc.returncode == -signal.SIGKILL:
            kills += 1
        else:  # this rerun ended before its kill: the training is done, the next reruns only start up
            assert proc.returncode == 0, err[-3000:]
            done = True
        assert time.time() - started < 900
    proc = launch(train_server, corpus, exp, **extra)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    last = torch.load(exp / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 12
    files = checkpoint_files(exp)
    assert [f.name for f in files] == sorted(json.loads((exp / "checkpoints" / "top_k.json").read_text())
                                             ["checkpoints"])
    resolve_checkpoint(exp)  # averages exactly those, all loadable
    expected = read_state_dict(reference / "checkpoints" / "last.ckpt")
    final = read_state_dict(exp / "checkpoints" / "last.ckpt")
    for k, v in expected.items():
        torch.testing.assert_close(final[k], v, rtol=1e-6, atol=1e-7)
