"""train.py end to end on CPU with the tiny config: checkpoints, resume, pretrained weights, command-line errors.

The first run of the experiment is ``python train.py`` itself (its start-up, imports and log as a user gets them); the
later runs whose log is checked are processes of the ``train_server`` fork server (tests/launch_train.py: training.run's
main, as train.py runs it, without a new interpreter's start-up)."""

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from datasets.synthetic import synthetic_overrides, write_synthetic_corpus
from nets import build_model
from training.callbacks import LIGHTNING_LOGGERS, quiet_lightning
from training.run import load_pretrained, main, parse_args, train
from training.settings import manifest_command
from utils.checkpoint import average_state_dicts, read_state_dict
from utils.config import load_config

ROOT = Path(__file__).resolve().parents[2]
CONFIG = "configs/tests/tiny.tuss.yaml"


def run_train(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # warnings shown: the log must not hold any of ours
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def run_forked(server, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """:func:`run_train`'s run as a process of the fork server ``server`` (no interpreter start-up)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONWARNINGS", None)  # warnings shown, as in run_train
    run = server.launch(list(args), env=env, cwd=cwd)
    out, err = run.communicate(timeout=300)
    assert run.returncode == 0, err[-3000:]
    return subprocess.CompletedProcess(list(args), run.returncode, out, err)


def data_args(corpus) -> list[str]:
    return [x for key, value in synthetic_overrides(corpus).items() for x in (f"--{key}", value)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, train_server):
    """Two epochs of two steps (``python train.py``), then resumed for a third epoch."""
    tmp = tmp_path_factory.mktemp("train")
    corpus = write_synthetic_corpus(tmp / "corpus", files_per_prompt=2)
    exp = tmp / "exp"
    first = run_train(str(ROOT / CONFIG), "--exp_dir", str(exp), *data_args(corpus), cwd=tmp)
    after_two = torch.load(exp / "checkpoints" / "last.ckpt", weights_only=True)
    epoch_files = sorted(p.name for p in (exp / "checkpoints_epoch").iterdir())
    second = run_forked(train_server, "--config", str(ROOT / CONFIG), "--exp_dir", str(exp), *data_args(corpus),
                        "--trainer_conf.max_epochs", "3", cwd=tmp)
    return {"tmp": tmp, "corpus": corpus, "exp": exp, "first": first, "second": second, "after_two": after_two,
            "epoch_files": epoch_files}


def test_two_epochs_write_checkpoints_logs_and_hparams(trained):
    exp, ckpt = trained["exp"], trained["after_two"]
    assert (ckpt["epoch"], ckpt["global_step"]) == (1, 4)
    assert set(ckpt["state_dict"]) == {"model." + k for k in build_model(CONFIG).state_dict()}
    assert trained["epoch_files"] == ["epoch=0.ckpt", "epoch=1.ckpt"]
    assert list((exp / "tensorboard").glob("events.out.tfevents.*"))
    log = trained["first"].stderr + trained["first"].stdout
    assert "mixtures per epoch: 2 steps x batch 2 x 1 process(es) = 4" in log
    assert "0.67 M trainable parameters" in log


def test_one_line_per_event_and_none_of_lightnings_set_up_lines(trained):
    """Our own line for the hardware, strategy and precision and one for the model; not Lightning's "GPU available",
    "TPU available" lines nor its model summary table; a resume is one line too."""
    for run in (trained["first"], trained["second"]):
        log = run.stderr + run.stdout
        assert not [line for line in log.splitlines()
                    if line.startswith(("GPU available", "TPU available", "HPU available"))], log
        assert "Trainable params" not in log and "Total params" not in log
        hardware = "running on 1 x cpu (1 node, 1 process); strategy SingleDeviceStrategy; precision 32-true"
        assert log.count(hardware) == 1
        assert log.count("trainable parameters; experiment directory") == 1
    resumed = trained["second"].stderr
    assert resumed.count("resuming from") == 1 and "Restoring states" not in resumed


def test_quiet_lightning_drops_the_set_up_lines_of_each_logger_they_come_through():
    """Also the lines of a GPU machine (not seen on CPU): "GPU available: True (cuda)", "LOCAL_RANK: 0 -
    CUDA_VISIBLE_DEVICES", the AMP line; warnings and other info lines pass."""
    from lightning.pytorch.utilities.rank_zero import rank_zero_info

    quiet_lightning()
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    dropped = ["GPU available: True (cuda), used: True", "TPU available: False, using: 0 TPU cores",
               "HPU available: False, using: 0 HPUs", "LOCAL_RANK: 0 - CUDA_VISIBLE_DEVICES: [0]",
               "Using bfloat16 Automatic Mixed Precision (AMP)", "💡 Tip: For seamless cloud logging",
               "Time limit reached. Elapsed time is 0:00:01. Signaling Trainer to stop."]
    kept = ["`Trainer.fit` stopped: `max_epochs=2` reached."]
    for name in LIGHTNING_LOGGERS:
        logger = logging.getLogger(name)
        level = logger.level
        logger.setLevel(logging.INFO)
        logger.addHandler(handler)
        try:
            for text in dropped + kept:
                logger.info(text)
            logger.warning("GPU available but not used.")
        finally:
            logger.removeHandler(handler)
            logger.setLevel(level)
    assert [r.getMessage() for r in records] == (kept + ["GPU available but not used."]) * len(LIGHTNING_LOGGERS)
    records.clear()
    loggers = [logging.getLogger(name) for name in LIGHTNING_LOGGERS[:2]]  # whichever rank_zero_info logs to
    levels = [logger.level for logger in loggers]  # an earlier test of this process (eval.py --quiet) may raise them
    for logger in loggers:
        logger.setLevel(logging.INFO)
        logger.addHandler(handler)
    try:
        rank_zero_info("GPU available: True (cuda), used: True")  # Lightning's own call
        rank_zero_info(kept[0])
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.removeHandler(handler)
            logger.setLevel(level)
    assert [r.getMessage() for r in records] == kept


def test_a_time_limit_stop_says_where_it_stopped_and_where_last_ckpt_is(trained, tmp_path, train_server):
    exp = tmp_path / "timed"
    proc = run_forked(train_server, CONFIG, "--exp_dir", str(exp), *data_args(trained["corpus"]),
                      "--trainer_conf.max_epochs", "1", "--trainer_conf.limit_train_batches", "50",
                      "--trainer_conf.max_time", "00:00:00:01", cwd=ROOT)
    log = proc.stderr + proc.stdout
    last = exp / "checkpoints" / "last.ckpt"
    stop = [line for line in log.splitlines() if "stopped at the time limit" in line]
    assert len(stop) == 1 and "(trainer_conf.max_time 00:00:00:01) in epoch 0 after batch " in stop[0]
    assert f"checkpoint {last}" in stop[0] and last.is_file()
    assert "batch 50/50" not in log and "Time limit reached" not in log
    stopped = torch.load(last, weights_only=True)
    # the same command with a higher limit resumes: Lightning ended epoch 0 at the stop, so training goes on with
    # epoch 1 from its first batch (the data module must draw that epoch's mixtures, not the rest of epoch 0's)
    proc = run_forked(train_server, CONFIG, "--exp_dir", str(exp), *data_args(trained["corpus"]),
                      "--trainer_conf.max_epochs", "2", "--trainer_conf.limit_train_batches", "50",
                      "--trainer_conf.max_time", "00:00:10:00", cwd=ROOT)
    assert "resuming from" in proc.stderr and "data position lost" not in proc.stderr + proc.stdout
    resumed = torch.load(last, weights_only=True)
    assert resumed["epoch"] == 1 and resumed["global_step"] == stopped["global_step"] + 50


def test_last_ckpt_holds_the_latest_step_also_after_epochs_that_make_no_top_k(trained, tmp_path, train_server):
    """Lightning 2.6 rewrites last.ckpt only beside a top-k save: after the last one (in a long run, once validation
    stops improving) it fell behind, and a resume (time limit, crash) trained those epochs again. Here only the first
    validation makes the top-1 (monitor: step, mode: min)."""
    exp = tmp_path / "exp"
    proc = run_forked(train_server, CONFIG, "--exp_dir", str(exp), *data_args(trained["corpus"]),
                      "--model_checkpoint.monitor", "step", "--model_checkpoint.mode", "min",
                      "--model_checkpoint.save_top_k", "1", "--trainer_conf.max_epochs", "3",
                      "--trainer_conf.limit_train_batches", "2", cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(p.name for p in (exp / "checkpoints").glob("*.ckpt")) == ["epoch=0-step=2.ckpt", "last.ckpt"]
    last = torch.load(exp / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 6 and last["epoch"] == 2


def test_a_log_file_gets_whole_progress_lines_and_no_tips_or_deprecations(trained):
    """stderr is a pipe here, as in a cluster log: one line per epoch (rate-limited lines within), no \\r bars,
    no Lightning advertisements, no deprecation warnings."""
    log = trained["first"].stderr
    assert "\r" not in log and "Tip" not in log and "deprecated" not in log.lower()
    assert "epoch 0 batch 2/2, step 2, loss " in log and "epoch 1 batch 2/2, step 4, loss " in log
    assert "epoch 1: val/loss " in log and "validation fixed: " in log


def test_help_lists_the_common_keys_with_defaults_and_explains_overrides(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--help"])
    text = capsys.readouterr().out
    assert stop.value.code == 0
    assert "--a.b.c VALUE or --a.b.c=VALUE; values are parsed as" in text
    rows = {line.split()[0]: line.split()[1] for line in text.splitlines() if line.startswith("  --")}
    assert rows["--batch_size"] == "4" and rows["--num_workers"] == "0" and rows["--max_nonfinite_steps"] == "20"
    assert rows["--optimizer_conf.lr"] == "0.001" and rows["--trainer_conf.limit_train_batches"] == "required"
    assert {"--trainer_conf.devices", "--trainer_conf.num_nodes", "--save_last_every_n_steps",
            "--pretrained_model_path"} <= set(rows)


def test_resume_continues_epoch_and_step(trained):
    exp = trained["exp"]
    last = torch.load(exp / "checkpoints" / "last.ckpt", weights_only=True)
    assert (last["epoch"], last["global_step"]) == (2, 6)
    assert "resuming from" in trained["second"].stderr
    assert last["optimizer_states"][0]["state"][0]["step"] == 6  # optimizer state carried over
    assert load_config(exp / "hparams.yaml").trainer_conf.max_epochs == 3  # the config as run
    top_k = sorted(p.name for p in (exp / "checkpoints").glob("epoch=*.ckpt"))
    assert len(top_k) == 2  # save_top_k: 2 by val/loss


def test_pretrained_weights_without_optimizer_state(trained, train_server):
    tmp, exp = trained["tmp"], trained["exp"]
    source = exp / "checkpoints" / "last.ckpt"
    model = build_model(CONFIG)
    load_pretrained(model, source)
    expected = read_state_dict(source)
    assert all(torch.equal(v, expected["model." + k]) for k, v in model.state_dict().items())
    load_pretrained(model, exp)  # a directory: its top-k checkpoints averaged
    files = sorted((exp / "checkpoints").glob("epoch=*.ckpt"))
    mean = average_state_dicts([read_state_dict(f) for f in files])
    assert all(torch.allclose(v, mean["model." + k]) for k, v in model.state_dict().items())

    new = tmp / "finetune"
    proc = run_forked(train_server, CONFIG, "--exp_dir", str(new), *data_args(trained["corpus"]),
                      "--trainer_conf.max_epochs", "1", "--pretrained_model_path", str(source), cwd=ROOT)
    assert f"initialising weights from {source}" in proc.stderr
    ckpt = torch.load(new / "checkpoints" / "last.ckpt", weights_only=True)
    assert (ckpt["epoch"], ckpt["global_step"]) == (0, 2)  # a fresh run: not resumed
    assert ckpt["optimizer_states"][0]["state"][0]["step"] == 2  # a fresh optimizer


def test_the_help_shows_the_data_step_before_the_first_training_example(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    examples = capsys.readouterr().out.split("Examples", 1)[1].splitlines()
    commands = [line.split("#")[0].strip() for line in examples if line.startswith("  ")]
    first_train = next(i for i, c in enumerate(commands) if c.startswith("python train.py"))
    assert commands[first_train - 1] == "python -m datasets.synthetic datasets/json_files/synthetic"
    assert "configs/tests/tiny.tuss.yaml" in commands[first_train]
    assert any(c.startswith("bash dataprep/") for c in commands[first_train + 1:])


def test_a_missing_manifest_names_the_command_that_makes_it(tmp_path, capsys):
    assert manifest_command("datasets/json_files/synthetic/pools.json") == (
        "python -m datasets.synthetic datasets/json_files/synthetic")
    assert manifest_command("datasets/json_files/vctk_48k.json") == "bash dataprep/prepare_vctk_speech.sh"
    assert manifest_command("datasets/json_files/demand_48k.json") == "bash dataprep/prepare_demand_noise.sh"
    assert manifest_command("datasets/json_files/vctk_demand_48k.json") == "bash dataprep/prepare_vctk_demand.sh"
    assert manifest_command("datasets/json_files/fuss_3src_16k.json") == "bash dataprep/prepare_fuss.sh"
    assert manifest_command("datasets/json_files/musdb18hq_44.1k_sad.json") == "bash dataprep/prepare_musdb.sh"
    assert manifest_command("datasets/json_files/demo_pools.json") == "bash dataprep/prepare_demo.sh"
    assert manifest_command("/data/manifests/wham_max_16k.json") == (
        "JSON_DIR=/data/manifests bash dataprep/prepare_whamr.sh")
    assert manifest_command("mine.json") is None
    exp = tmp_path / "e"
    pools = tmp_path / "synthetic" / "pools.json"
    assert main([CONFIG, "--exp_dir", str(exp), "--dataset_conf.train.json_paths", f"[{pools}]"]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: config key 'dataset_conf.train.json_paths': manifest {pools} not found (make it with: "
                   f"python -m datasets.synthetic {pools.parent}; or point the key at your manifests)\n")
    valid = tmp_path / "json" / "vctk_demand_48k.json"
    assert main([CONFIG, "--exp_dir", str(exp), *data_args(write_synthetic_corpus(tmp_path / "c", 1)),
                 "--dataset_conf.valid.json_path_and_num_data", f"[[{valid}, 2]]"]) == 2
    assert (f"manifest {valid} not found (make it with: JSON_DIR={valid.parent} bash dataprep/prepare_vctk_demand.sh;"
            in capsys.readouterr().err)
    assert not exp.exists()


def test_command_line_errors(tmp_path, capsys):
    assert main([]) == 2 and "no config given" in capsys.readouterr().err
    assert main(["missing.yaml"]) == 2 and "config file not found: missing.yaml" in capsys.readouterr().err
    assert main([CONFIG, "--exp_dir", str(tmp_path / "e"), "--prompt_dropout", "true"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "p_prompt_dropout" in err
    assert main([CONFIG, "--exp_dir", str(tmp_path / "e"), "--dataset_conf.train.json_paths", "[none.json]"]) == 2
    assert "'dataset_conf.train.json_paths': manifest none.json not found" in capsys.readouterr().err
    assert not (tmp_path / "e").exists()  # refused runs write nothing
    args, overrides = parse_args(["--config", "a.yaml", "--trainer_conf.max_epochs", "3", "--seed=4"])
    assert args.config == "a.yaml" and overrides == {"trainer_conf.max_epochs": "3", "seed": "4"}


def test_resume_refuses_a_different_model(trained, capsys):
    argv = [CONFIG, "--exp_dir", str(trained["exp"]), "--model_conf.nblocks_cond_tse_module", "2"]
    assert main(argv) == 2
    assert "different model" in capsys.readouterr().err


def test_a_run_is_reproducible_from_its_seed(trained, tmp_path):
    overrides = {**synthetic_overrides(trained["corpus"]), "trainer_conf.max_epochs": "1",
                 "trainer_conf.enable_progress_bar": "false"}

    def weights(name, seed):
        train(CONFIG, tmp_path / name, {**overrides, "seed": str(seed)})
        return read_state_dict(tmp_path / name / "checkpoints" / "last.ckpt")

    first, again, other = weights("a", 5), weights("b", 5), weights("c", 6)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)
