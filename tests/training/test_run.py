"""train.py end to end on CPU with the tiny config: checkpoints, resume, pretrained weights, command-line errors."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from datasets.synthetic import synthetic_overrides, write_synthetic_corpus
from nets import build_model
from training.run import load_pretrained, main, parse_args, train
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


def data_args(corpus) -> list[str]:
    return [x for key, value in synthetic_overrides(corpus).items() for x in (f"--{key}", value)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Two epochs of two steps, then resumed for a third epoch."""
    tmp = tmp_path_factory.mktemp("train")
    corpus = write_synthetic_corpus(tmp / "corpus", files_per_prompt=2)
    exp = tmp / "exp"
    first = run_train(str(ROOT / CONFIG), "--exp_dir", str(exp), *data_args(corpus), cwd=tmp)
    after_two = torch.load(exp / "checkpoints" / "last.ckpt", weights_only=True)
    epoch_files = sorted(p.name for p in (exp / "checkpoints_epoch").iterdir())
    second = run_train("--config", str(ROOT / CONFIG), "--exp_dir", str(exp), *data_args(corpus),
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


def test_pretrained_weights_without_optimizer_state(trained):
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
    proc = run_train(CONFIG, "--exp_dir", str(new), *data_args(trained["corpus"]), "--trainer_conf.max_epochs", "1",
                     "--pretrained_model_path", str(source), cwd=ROOT)
    assert f"initialising weights from {source}" in proc.stderr
    ckpt = torch.load(new / "checkpoints" / "last.ckpt", weights_only=True)
    assert (ckpt["epoch"], ckpt["global_step"]) == (0, 2)  # a fresh run: not resumed
    assert ckpt["optimizer_states"][0]["state"][0]["step"] == 2  # a fresh optimizer


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
