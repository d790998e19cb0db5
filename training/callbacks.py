"""Lightning plugins and callbacks that make training durable: atomic, finite checkpoints; a recorded top-k; saving
and stopping on a scheduler's signal; a rolling mid-epoch checkpoint.

- :class:`AtomicCheckpointIO`: every Lightning checkpoint is written through :func:`utils.atomic.save_torch`
  (temporary file beside the target, fsync, rename) after checking that no weight is NaN/Inf.
- :class:`RecordedModelCheckpoint`: Lightning's ``ModelCheckpoint`` that records its current top-k in
  ``checkpoints/top_k.json`` (so averaging a directory uses exactly those files) and overwrites an orphan of an
  interrupted run instead of writing ``-v1`` copies.
- :class:`PreemptionCheckpoint`: on SIGTERM or SIGUSR1 (what SLURM and most schedulers send before killing a job)
  every process finishes its current step, ``last.ckpt`` is written at that step, and the run stops with
  :class:`Preempted` (train.py exits 0); the next run resumes from that exact step. Optionally also rewrites
  ``last.ckpt`` every N steps for jobs killed without warning.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint

from utils.atomic import save_torch
from utils.checkpoint import check_finite, write_top_k_record

__all__ = ["AtomicCheckpointIO", "RecordedModelCheckpoint", "PreemptionCheckpoint", "Preempted", "LineProgress",
           "STOP_SIGNALS", "LIGHTNING_LOGGERS", "quiet_lightning"]

log = logging.getLogger(__name__)

#: the signals that stop a run after a checkpoint
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint I/O that never leaves a truncated or non-finite checkpoint.

    Raises (on save):
        utils.checkpoint.NonFiniteWeightsError: a weight of the checkpoint is NaN/Inf (nothing is written).
        utils.atomic.WriteError: the write failed (the previous file is intact; no partial file is left).
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike,
                        storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        check_finite(checkpoint.get("state_dict", {}), path)
        save_torch(checkpoint, path)


class RecordedModelCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` that writes ``<dirpath>/top_k.json`` after every checkpoint it saves.

    Lightning saves a new top-k file, then removes the one it displaces; the record is written between the two, so
    it always lists existing files: a kill before it leaves an orphan that the record does not list, a kill after it
    leaves the displaced file unlisted. File names are never versioned (``enable_version_counter=False``): with one
    run per experiment (the experiment lock) an existing name is an orphan, and is overwritten.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("enable_version_counter", False)
        super().__init__(*args, **kwargs)

    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        super()._save_checkpoint(trainer, filepath)
        if not trainer.is_global_zero or Path(filepath).stem == self.CHECKPOINT_NAME_LAST or self.dirpath is None:
            return
        if self.monitor is None:  # keeps the latest checkpoint only
            scores: dict[str, float | None] = {filepath: None}
        else:
            scores = {k: float(v) for k, v in self.best_k_models.items()}
        write_top_k_record(self.dirpath, scores, self.monitor, self.mode)


class Preempted(Exception):
    """The run stopped on a signal after writing its checkpoint (not an error: run the same command to resume)."""

    def __init__(self, signum: int, step: int, path: Path):
        self.signum, self.step, self.path = signum, step, path
        super().__init__(f"stopped on {signal.Signals(signum).name} at step {step}; checkpoint {path}")


class PreemptionCheckpoint(pl.Callback):
    """Save ``path`` and stop on SIGTERM/SIGUSR1; optionally save ``path`` every ``every_n_steps`` training steps.

    The signal handlers (installed when training starts, restored at the end) only note the signal. At the end of
    every training step all processes agree (one boolean reduction when several run) whether any of them got one;
    if so each finishes the step, the checkpoint is written at that step and every process raises
    :class:`Preempted`. A signal during an epoch's last step or its validation takes effect when the epoch ends
    (after validation and the epoch's checkpoints). Under SLURM, SIGUSR1 also requeues the job (``scontrol
    requeue``, rank 0), as Lightning's own auto-requeue does; SIGTERM does not (SLURM's preemption requeues by
    itself).

    Args:
        path: the resume checkpoint (``checkpoints/last.ckpt``).
        every_n_steps: also rewrite ``path`` every this many optimizer steps (0: only on a signal).
    """

    def __init__(self, path: str | os.PathLike, every_n_steps: int = 0):
        self.path = Path(path)
        self.every_n_steps = int(every_n_steps or 0)
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    # -- signals ---------------------------------------------------------------------------------------------------
    def _note(self, signum: int, frame: Any) -> None:
        if self.received is None:
            self.received = signum
            log.warning("received %s: saving a checkpoint at the end of this step, then stopping",
                        signal.Signals(signum).name)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # after Lightning's own handlers (registered before this hook): ours replace them for the training loop,
        # so Lightning's SIGTERM path (an exception at an arbitrary point of one rank) never runs
        try:
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._note)
        except ValueError:  # not the main thread: signals cannot be handled here
            self._previous.clear()

    def _restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self._previous.clear()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restore()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._restore()

    # -- checks ----------------------------------------------------------------------------------------------------
    def _agreed_signal(self, trainer: pl.Trainer) -> int | None:
        """The signal, if any process got one (every process calls this at the same points)."""
        local = self.received is not None
        if trainer.world_size > 1:
            stop = trainer.strategy.reduce_boolean_decision(local, all=False)
            return (self.received or signal.SIGTERM) if stop else None
        return self.received

    def _stop(self, trainer: pl.Trainer, signum: int) -> None:
        trainer.save_checkpoint(self.path, weights_only=False)
        if trainer.is_global_zero and signum == signal.SIGUSR1 and os.environ.get("SLURM_JOB_ID"):
            _requeue_slurm_job()
        raise Preempted(signum, trainer.global_step, self.path)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        # Not after an epoch's last batch: Lightning (2.6) restores a checkpoint written there, then validated, into
        # loop counters that make the *next* resume replay batches. The epoch's end (after validation) is a safe
        # point instead: a signal during the last step or validation is honoured there.
        if batch_idx + 1 >= trainer.num_training_batches:
            return
        signum = self._agreed_signal(trainer)
        if signum is not None:
            self._stop(trainer, signum)
        if self.every_n_steps and trainer.global_step % self.every_n_steps == 0:
            trainer.save_checkpoint(self.path, weights_only=False)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        signum = self._agreed_signal(trainer)
        if signum is not None:
            self._stop(trainer, signum)


def _requeue_slurm_job() -> None:
    job = os.environ["SLURM_JOB_ID"]
    if os.environ.get("SLURM_ARRAY_JOB_ID"):
        job = f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ.get('SLURM_ARRAY_TASK_ID', '')}"
    try:
        result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as err:
        log.warning("could not requeue SLURM job %s: %s", job, err)
        return
    if result.returncode == 0:
        log.warning("requeued SLURM job %s", job)
    else:
        log.warning("scontrol requeue %s failed (%d): %s", job, result.returncode, result.stderr.strip())


class LineProgress(pl.Callback):
    """Progress for a log file (no terminal): whole lines, rate-limited, instead of ``\\r``-redrawn bars.

    Training: a line every ``every_seconds`` (and at the end of each complete epoch) with epoch, step, loss and steps
    per second; an epoch cut short (``max_time``, ``max_steps``) gets no end line, the run's stop line says where it
    stopped. Validation and test: a line per set when it is done. train.py and eval.py use it when stderr is not a
    terminal (Lightning's bars otherwise).
    """

    def __init__(self, every_seconds: float = 30.0):
        self.every_seconds = float(every_seconds)
        self._last = self._start = 0.0
        self._start_step = 0

    def _line(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = self._last = time.monotonic()
        self._start_step = trainer.global_step

    def _train_line(self, trainer: pl.Trainer, batch_idx: int, now: float) -> None:
        rate = (trainer.global_step - self._start_step) / max(now - self._start, 1e-9)
        loss = trainer.callback_metrics.get("train/loss_step", trainer.callback_metrics.get("train/loss"))
        loss_text = f", loss {float(loss):.3f}" if loss is not None else ""
        self._line(f"epoch {trainer.current_epoch} batch {batch_idx + 1}/{trainer.num_training_batches}, step "
                   f"{trainer.global_step}{loss_text}, {rate:.2f} steps/s")

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        now = time.monotonic()
        if now - self._last >= self.every_seconds:
            self._last = now
            self._train_line(trainer, batch_idx, now)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # the batches of this epoch done so far (those before a resume too); fewer when the run stopped early
        done = int(trainer.fit_loop.epoch_loop.batch_progress.current.processed)
        if done >= int(trainer.num_training_batches):  # a complete epoch: no stale "batch 20/20" after a stop
            self._train_line(trainer, int(trainer.num_training_batches) - 1, time.monotonic())
        val = trainer.callback_metrics.get("val/loss")
        if val is not None:
            self._line(f"epoch {trainer.current_epoch}: val/loss {float(val):.3f}")

    def _eval_set_done(self, trainer: pl.Trainer, stage: str, dataloader_idx: int, batch_idx: int) -> None:
        total = trainer.num_val_batches if stage == "validation" else trainer.num_test_batches
        count = int(total[dataloader_idx]) if dataloader_idx < len(total) else 0
        if batch_idx + 1 == count:
            name = getattr(getattr(getattr(trainer, f"{'val' if stage == 'validation' else 'test'}_dataloaders")
                                   [dataloader_idx], "dataset", None), "name", f"set {dataloader_idx}")
            self._line(f"{stage} {name}: {count} batch(es) done")

    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        if not trainer.sanity_checking:
            self._eval_set_done(trainer, "validation", dataloader_idx, batch_idx)

    def on_test_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                          batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_set_done(trainer, "test", dataloader_idx, batch_idx)


#: the loggers Lightning's set-up lines come through: its rank-zero messages go to one of the two ``rank_zero``
#: loggers (``lightning_utilities`` logs to the one of the module imported last), the per-process
#: ``LOCAL_RANK: 0 - CUDA_VISIBLE_DEVICES`` line to its CUDA accelerator's. A filter on a logger sees only the records
#: of that logger (not those of its children), so each is filtered.
LIGHTNING_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero",
                     "lightning.pytorch.accelerators.cuda")


class _DropSetupLines(logging.Filter):
    """Drops Lightning's info lines that restate the hardware and precision on every run ("GPU available: ...",
    "TPU available: ...", "HPU available: ...", "LOCAL_RANK: ...", "Using bfloat16 Automatic Mixed Precision"),
    those of a resume and a time-limit stop, and its advertising ("💡 Tip: ... try installing litlogger/litmodels").
    train.py prints one line of its own for each instead: the devices, strategy and precision; "resuming from
    last.ckpt"; at a time-limit stop, where it stopped and the checkpoint to resume from."""

    PREFIXES = ("💡 Tip", "GPU available:", "TPU available:", "HPU available:", "IPU available:", "LOCAL_RANK:",
                "Time limit reached.", "Restoring states from the checkpoint",
                "Restored all states from the checkpoint")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.INFO:
            return True
        text = str(record.msg).lstrip()
        return not (text.startswith(self.PREFIXES)
                    or (text.startswith("Using ") and "Automatic Mixed Precision" in text))


def quiet_lightning() -> None:
    """Keep Lightning's output to what concerns the run: its info lines that restate the set-up on every run and its
    "💡 Tip" advertisements are dropped (:class:`_DropSetupLines`, on each of :data:`LIGHTNING_LOGGERS`; warnings
    pass), and the one deprecation warning Lightning 2.6 itself triggers in torch 2.11 (``LeafSpec`` in its
    ``_pytree``, raised from Lightning's own code, not ours) is not shown. Idempotent."""
    for name in LIGHTNING_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropSetupLines) for f in logger.filters):
            logger.addFilter(_DropSetupLines())
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                            category=FutureWarning, module=r"lightning\.pytorch\.utilities\._pytree")
