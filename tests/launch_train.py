"""train.py's main with a recording callback, for the tests that run training in a subprocess.

Environment variables (all optional):
  DRAWS=path         append one JSON line per training batch: step, epoch, batch index, mixture ids
  STEP_SLEEP=s       sleep this long at the start of every batch (widens the window for an external signal)
  KILL_AT=step       send KILL_SIG (default SIGTERM) to this process at the start of that global step
  KILL_SIG=name      SIGTERM, SIGUSR1 or SIGKILL
  NAN_STEPS=a,b,..   make the training loss NaN at these global steps ("a-" : from step a on)
  SIGNAL_AT=point    send KILL_SIG (default SIGTERM) to this process at one point of the run: "startup" (as its data
                     check begins, before anything is written), "restore" (while the checkpoint is restored),
                     "validation:E" (at the first validation batch of epoch E)

Lightning's DDP launcher re-runs this script for the other ranks, so it must be a file.

``python tests/launch_train.py --serve`` is a fork server (:class:`TrainServer` starts and drives it): it imports
torch, Lightning and training.run once, then forks one child per run. Each child is a process of its own (its PID,
its signals, a SIGKILL kills it alone; stdout and stderr go to files) that runs ``main`` as this script would, with
the run's arguments, environment and working directory, so a test pays the seconds of Python/torch/Lightning start-up
once instead of once per run. What a child misses compared to a fresh interpreter: only that start-up (imports, which
write nothing), so tests of train.py's own start-up and its import-time warnings run train.py itself.
"""

import atexit
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
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

    def on_load_checkpoint(self, trainer, module, checkpoint):
        if os.environ.get("SIGNAL_AT") == "restore":
            _signal_self()

    def on_validation_batch_start(self, trainer, module, batch, batch_idx, dataloader_idx=0):
        if (not trainer.sanity_checking and batch_idx == 0 and dataloader_idx == 0
                and os.environ.get("SIGNAL_AT") == f"validation:{trainer.current_epoch}"):
            _signal_self()


def _signal_self() -> None:
    os.kill(os.getpid(), getattr(signal, os.environ.get("KILL_SIG", "SIGTERM")))


def _signal_at_startup() -> None:
    """``SIGNAL_AT=startup``: the signal comes as training.run checks the data (before anything is written)."""
    import training.run as run

    real = run.check_data

    def check_data(*args, **kwargs):
        _signal_self()
        return real(*args, **kwargs)

    run.check_data = check_data


def _nan_step(step: int) -> bool:
    for part in filter(None, os.environ.get("NAN_STEPS", "").split(",")):
        if part.endswith("-") and step >= int(part[:-1]) or part.isdigit() and step == int(part):
            return True
    return False


# -- fork server -----------------------------------------------------------------------------------------------------

def _child(request: dict) -> None:
    """In the forked child: become the run's process (files for stdout/stderr, its cwd, environment, argv), run
    ``main`` and exit with its code as the interpreter would (exit handlers run). Never returns."""
    code = 1
    try:
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)  # not the server's request pipe
        os.close(null)
        for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
            out = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(out, fd)
            os.close(out)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        if os.environ.get("PYTHONWARNINGS"):  # what the interpreter does with it at start-up
            warnings._processoptions(os.environ["PYTHONWARNINGS"].split(","))
        import torch

        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or 1))
        sys.argv = [__file__, *request["argv"]]  # as a fresh `python tests/launch_train.py ARGS` has it
        if os.environ.get("SIGNAL_AT") == "startup":
            _signal_at_startup()
        code = main(request["argv"], callbacks=[Record()])
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 0 if stop.code is None else 1
    except BaseException:  # noqa: BLE001 - the child must exit, whatever happened
        traceback.print_exc()
    finally:
        try:
            atexit._run_exitfuncs()
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def serve() -> None:
    """Read one JSON request a line on stdin, answer one JSON line on stdout: ``{"cmd": "run", "argv", "env", "cwd",
    "stdout", "stderr"}`` forks a run (answer ``{"pid"}``); ``{"cmd": "poll", "pid"}`` reaps it if it has ended
    (answer ``{"rc"}``: its exit code, ``-N`` when signal N ended it, ``null`` while it runs). The first line it
    writes, ``{"ready": true}``, says that the imports are done. At the end of its input, the runs still going are
    killed."""
    sys.stdout.write(json.dumps({"ready": True}) + "\n")
    sys.stdout.flush()
    running: set[int] = set()
    for line in sys.stdin:
        request = json.loads(line)
        if request["cmd"] == "run":
            pid = os.fork()
            if pid == 0:
                _child(request)
            running.add(pid)
            answer: dict = {"pid": pid}
        elif request["pid"] not in running:
            answer = {"error": f"no run {request['pid']} of this server is going"}
        else:
            done, status = os.waitpid(request["pid"], os.WNOHANG)
            answer = {"rc": os.waitstatus_to_exitcode(status) if done else None}
            if done:
                running.discard(done)
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()
    for pid in running:  # left by a test that failed before the end of its run
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


class ForkedRun:
    """A run of :class:`TrainServer`, with the parts of ``subprocess.Popen``'s interface the tests use."""

    def __init__(self, server: "TrainServer", pid: int, stdout: Path, stderr: Path):
        self.server, self.pid, self.returncode = server, pid, None
        self._stdout, self._stderr = stdout, stderr

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self.server._ask(cmd="poll", pid=self.pid)["rc"]
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(f"run {self.pid}", timeout)
            time.sleep(0.02)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:  # never signal a reaped PID (it may be another process's by now)
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        """Wait for the end of the run; its ``(stdout, stderr)``."""
        self.wait(timeout)
        return self._stdout.read_text(errors="replace"), self._stderr.read_text(errors="replace")


class TrainServer:
    """Client of ``tests/launch_train.py --serve``: :meth:`launch` starts a run like ``subprocess.Popen([python,
    tests/launch_train.py, *argv], env=env, cwd=cwd)`` would, without the start-up of a new interpreter."""

    def __init__(self):
        self._logs = Path(tempfile.mkdtemp(prefix="train-server-"))
        self._count = 0
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        env.pop("PYTHONWARNINGS", None)  # each run applies its own
        self._err = self._logs / "server.err"
        with open(self._err, "w") as err:
            self._proc = subprocess.Popen([sys.executable, __file__, "--serve"], stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, stderr=err, env=env, text=True,
                                          cwd=Path(__file__).resolve().parents[1])
        self._answer()  # {"ready": true}: its imports are done

    def _answer(self) -> dict:
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the training server ended (exit code {self._proc.wait()}): "
                               f"{self._err.read_text()[-3000:]}")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"training server: {answer['error']}")
        return answer

    def _ask(self, **request) -> dict:
        self._proc.stdin.write(json.dumps(request) + "\n")
        self._proc.stdin.flush()
        return self._answer()

    def launch(self, argv: list[str], env: dict[str, str] | None = None, cwd: str | os.PathLike | None = None
               ) -> ForkedRun:
        self._count += 1
        out, err = self._logs / f"{self._count}.out", self._logs / f"{self._count}.err"
        pid = self._ask(cmd="run", argv=[str(a) for a in argv], env=dict(os.environ if env is None else env),
                        cwd=str(cwd or os.getcwd()), stdout=str(out), stderr=str(err))["pid"]
        return ForkedRun(self, pid, out, err)

    def close(self) -> None:
        """End the server (and any run still going) and delete the runs' output files."""
        self._proc.stdin.close()
        self._proc.wait(timeout=60)
        shutil.rmtree(self._logs, ignore_errors=True)


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve"]:
        serve()
    else:
        if os.environ.get("SIGNAL_AT") == "startup":
            _signal_at_startup()
        sys.exit(main(sys.argv[1:], callbacks=[Record()]))
