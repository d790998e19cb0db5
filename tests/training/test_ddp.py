"""Two-process DDP on CPU (gloo): training and sharded validation complete, and the ranks draw different mixtures."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from datasets.synthetic import synthetic_overrides, write_synthetic_corpus
from training.run import resolve_strategy
from utils.config import load_config

ROOT = Path(__file__).resolve().parents[2]

# Lightning's DDP launcher re-runs this script for rank 1, so the recording callback lives in a script file.
LAUNCHER = '''
import json, sys
sys.path.insert(0, {root!r})
import lightning.pytorch as pl
from training.run import main


class RecordDraws(pl.Callback):
    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        with open({out!r} + f"/draws_rank{{trainer.global_rank}}.jsonl", "a") as f:
            f.write(json.dumps({{"ids": batch["id"], "prompts": batch["prompts"],
                                "energy": float(batch["mix"].pow(2).sum())}}) + "\\n")

    def on_validation_end(self, trainer, module):
        with open({out!r} + f"/val_rank{{trainer.global_rank}}.json", "w") as f:
            json.dump({{k: float(v) for k, v in trainer.callback_metrics.items() if "val" in k}}, f)


sys.exit(main(sys.argv[1:], callbacks=[RecordDraws()]))
'''


# the strategy the shipped configs carry (the release's `ddp_find_unused_parameters_true`), and `auto`, which plain
# Lightning turns into DDP without unused-parameter detection (crashes at the second step without our resolution)
SHIPPED = load_config(ROOT / "configs/unified/tuss.medium.2-4src.yaml").trainer_conf.strategy


def prepare(tmp_path, **trainer_conf):
    """A synthetic corpus, the launcher script and the train.py arguments (``trainer_conf`` overrides added);
    returns ``(script, out folder, arguments)``."""
    corpus = write_synthetic_corpus(tmp_path / "corpus", files_per_prompt=2)
    out = tmp_path / "out"
    out.mkdir()
    script = tmp_path / "launch.py"
    script.write_text(LAUNCHER.format(root=str(ROOT), out=str(out)))
    overrides = {**synthetic_overrides(corpus, num_valid=3), "trainer_conf.max_epochs": "1",
                 "trainer_conf.enable_progress_bar": "false",
                 **{f"trainer_conf.{k}": str(v) for k, v in trainer_conf.items()}}
    return script, out, [x for k, v in overrides.items() for x in (f"--{k}", v)]


@pytest.mark.parametrize("strategy", [SHIPPED, "auto"])
def test_two_process_ddp_on_cpu(tmp_path, strategy):
    script, out, args = prepare(tmp_path, devices=2, strategy=strategy)
    exp = tmp_path / "exp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, str(script), str(ROOT / "configs/tests/tiny.tuss.yaml"), "--exp_dir",
                           str(exp), *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "mixtures per epoch: 2 steps x batch 2 x 2 process(es) = 8" in proc.stderr

    draws = {r: [json.loads(line) for line in (out / f"draws_rank{r}.jsonl").read_text().splitlines()]
             for r in (0, 1)}
    assert [len(draws[r]) for r in (0, 1)] == [2, 2]  # 2 steps per process
    ids = {r: [i for d in draws[r] for i in d["ids"]] for r in (0, 1)}
    assert ids[0] == ["e0-r0-i0", "e0-r0-i1", "e0-r0-i2", "e0-r0-i3"]
    assert ids[1] == ["e0-r1-i0", "e0-r1-i1", "e0-r1-i2", "e0-r1-i3"]
    assert {d["energy"] for d in draws[0]}.isdisjoint({d["energy"] for d in draws[1]})  # different mixtures

    # sharded validation (3 + 1 items over 2 processes) gathered: both ranks log the same aggregates
    val = [json.loads((out / f"val_rank{r}.json").read_text()) for r in (0, 1)]
    assert val[0]["val/loss"] == val[1]["val/loss"] and "vctk_demand_val/speech/snr" in val[0]
    ckpt = torch.load(exp / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 2

    assert "-> ddp_find_unused_parameters_true (2 processes)" in proc.stderr or strategy == SHIPPED


def test_two_nodes_of_one_process_each(tmp_path):
    """Multi-node as Lightning runs it: one launch per node (NODE_RANK), here both nodes on this machine."""
    script, out, args = prepare(tmp_path, devices=1, num_nodes=2, strategy=SHIPPED)
    exp = tmp_path / "exp"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for node in (0, 1):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", "MASTER_ADDR": "127.0.0.1",
               "MASTER_PORT": str(port), "NODE_RANK": str(node)}
        procs.append(subprocess.Popen([sys.executable, str(script), str(ROOT / "configs/tests/tiny.tuss.yaml"),
                                       "--exp_dir", str(exp), *args], cwd=tmp_path, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    logs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, logs, strict=True):
        assert p.returncode == 0, err[-3000:]
    assert "mixtures per epoch: 2 steps x batch 2 x 2 process(es) = 8" in logs[0][1]
    ids = {r: [i for line in (out / f"draws_rank{r}.jsonl").read_text().splitlines()
               for i in json.loads(line)["ids"]] for r in (0, 1)}
    assert ids[0][0] == "e0-r0-i0" and ids[1][0] == "e0-r1-i0"  # the second node is rank 1
    assert torch.load(exp / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2
    assert not (exp / "train.lock").exists()


@pytest.mark.parametrize(("conf", "gpus", "expected"), [
    ({"strategy": "ddp_find_unused_parameters_true"}, 0, "auto"),  # CPU: one process
    ({"strategy": "ddp_find_unused_parameters_true"}, 1, "auto"),  # one GPU: no DDP wrapper
    ({"strategy": "ddp_find_unused_parameters_true"}, 8, "ddp_find_unused_parameters_true"),  # devices auto: all 8
    ({"strategy": "auto", "devices": 4}, 8, "ddp_find_unused_parameters_true"),
    ({"strategy": "ddp", "devices": [0, 1]}, 8, "ddp_find_unused_parameters_true"),
    ({"strategy": "ddp", "devices": 1}, 8, "auto"),
    ({"strategy": "auto", "devices": 1, "num_nodes": 4}, 1, "ddp_find_unused_parameters_true"),
    ({"strategy": "auto", "accelerator": "cpu", "devices": 2}, 8, "ddp_find_unused_parameters_true"),
    ({"strategy": "auto", "accelerator": "cpu"}, 8, "auto"),
    ({"strategy": "fsdp", "devices": 4}, 8, "fsdp"),  # other strategies are the user's choice
    ({"strategy": "ddp_spawn", "devices": 2}, 8, "ddp_spawn"),
])
def test_strategy_is_resolved_for_the_hardware(monkeypatch, conf, gpus, expected):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    assert resolve_strategy(conf) == expected
