"""train.py's main with a recording callback, for the tests that run training in a subprocess.

Environment variables (all optional):
  DRAWS=path         append one JSON line per training batch: step, epoch, batch index, mixture ids
  STEP_SLEEP=s       sleep this long at the start of every batch (widens the window for an external signal)
  KILL_AT=step       send KILL_SIG (default SIGTERM) to this process at the start of that global step
  KILL_SIG=name      SIGTERM, SIGUSR1 or SIGKILL
  NAN_STEPS=a,b,..   make the training loss NaN at these global steps ("a-" : from step a on)

Lightning's DDP launcher re-runs this script for the other ranks, so it must be a file.
"""

import json
import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import lightning.pytorch as pl  # noqa: E402

from training.run import main  # noqa: E402


class Record(pl.Callback):
    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if os.environ.get("DRAWS"):
            with open(os.environ["DRAWS"], "a") as f:
                f.write(json.dumps({"step": trainer.global_step, "epoch": trainer.current_epoch, "idx": batch_idx,
                                    "rank": trainer.global_rank, "ids": batch["id"]}) + "\n")
        if os.environ.get("STEP_SLEEP"):
            time.sleep(float(os.environ["STEP_SLEEP"]))
        if trainer.global_step == int(os.environ.get("KILL_AT", "-1")) and trainer.is_global_zero:
            os.kill(os.getpid(), getattr(signal, os.environ.get("KILL_SIG", "SIGTERM")))
        if _nan_step(trainer.global_step):
            batch["mix"][:] = float("nan")


def _nan_step(step: int) -> bool:
    for part in filter(None, os.environ.get("NAN_STEPS", "").split(",")):
        if part.endswith("-") and step >= int(part[:-1]) or part.isdigit() and step == int(part):
            return True
    return False


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], callbacks=[Record()]))
