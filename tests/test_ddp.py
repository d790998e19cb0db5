"""Two-process DDP on CPU (gloo): training and sharded validation complete, and the ranks draw different mixtures."""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from datasets.synthetic import synthetic_overrides, write_synthetic_corpus

ROOT = Path(__file__).resolve().parents[1]

# Lightning's DDP launcher re-runs this script for rank 1, so the recording callback lives in a script file.
LAUNCHER = '''
import json, sys
sys.path.insert(0, {root!r})
import lightning.pytorch as pl
from utils.training import main


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


def test_two_process_ddp_on_cpu(tmp_path):
    corpus = write_synthetic_corpus(tmp_path / "corpus", files_per_prompt=2)
    out = tmp_path / "out"
    out.mkdir()
    script = tmp_path / "launch.py"
    script.write_text(LAUNCHER.format(root=str(ROOT), out=str(out)))
    overrides = {**synthetic_overrides(corpus, num_valid=3), "trainer_conf.max_epochs": "1",
                 "trainer_conf.devices": "2", "trainer_conf.strategy": "ddp_find_unused_parameters_true",
                 "trainer_conf.enable_progress_bar": "false"}
    args = [x for k, v in overrides.items() for x in (f"--{k}", v)]
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
