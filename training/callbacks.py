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

__all__ = ["AtomicCheckpointIO", "RecordedModelCheckpoint", "PreemptionCheckpoint", "Preempted", "StopSignals",
           "LineProgress", "STOP_SIGNALS", "LIGHTNING_LOGGERS", "quiet_lightning"]

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

    # Lightning 2.6 writes ``last.ckpt`` only in a step where it also saved a top-k checkpoint (and at the end of a
    # run that saved none): after the last top-k save, once validation stops improving, last.ckpt fell behind, and a
    # resume (after a time limit, max_steps or a crash) silently trained those epochs again. ``save_last`` means the
    # latest state: write it at every save point where Lightning skipped it.
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._save_last_if_behind(trainer)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._save_last_if_behind(trainer)

    def _save_last_if_behind(self, trainer: pl.Trainer) -> None:
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):  # (skips a step saved already)
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

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
    """The run stopped on a signal after writing its checkpoint (not an error: run the same command to resume).

    ``path`` is ``None`` when the signal came before training started (start-up, checkpoint restore): nothing new
    was there to save, and the next run starts where this one would have."""

    def __init__(self, signum: int, step: int, path: Path | None):
        self.signum, self.step, self.path = signum, step, path
        name = signal.Signals(signum).name
        if path is None:
            super().__init__(f"stopped on {name} before training started (step {step}); nothing new to save")
        else:
            super().__init__(f"stopped on {name} at step {step}; checkpoint {path}")


class StopSignals:
    """Notes SIGTERM/SIGUSR1 instead of dying of them, from the very start of a run (docs/training.md, "Preemption").

    :meth:`install` makes the handler the one of both signals (again, after Lightning has put its own in front of
    it); :meth:`restore` puts back what was there before the first install. Outside the main thread signals cannot
    be handled, and both are no-ops.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def _note(self, signum: int, frame: Any) -> None:
        if self.received is None:
            self.received = signum
            log.warning("received %s: stopping at the next safe point (a checkpoint is saved there)",
                        signal.Signals(signum).name)

    def install(self) -> StopSignals:
        try:
            for sig in STOP_SIGNALS:
                previous = signal.signal(sig, self._note)
                self._previous.setdefault(sig, previous)
        except ValueError:  # not the main thread
            pass
        return self

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self._previous.clear()


class PreemptionCheckpoint(pl.Callback):
    """Save ``path`` and stop on SIGTERM/SIGUSR1; optionally save ``path`` every ``every_n_steps`` training steps.

    The signal handlers (:class:`StopSignals`: ``signals``, which train() installs before any work; this callback's
    own otherwise) only note the signal. All processes agree (one boolean reduction when several run) at these
    points whether any of them got one:

    - at the end of every training step but an epoch's last: each finishes the step, the checkpoint is written at
      that step and every process raises :class:`Preempted`;
    - at the end of an epoch (a signal during its last step or its validation): the epoch's bookkeeping is finished
      first -- its top-k and epoch checkpoints, ``top_k.json``, the schedulers' epoch step -- then the run stops
      and the checkpoint is written at the end of training (a run that has just completed its last epoch ends as
      it would have);
    - when training starts (a signal during start-up, checkpoint restore or the sanity check): the run stops before
      its first step, with nothing new to save.

    Under SLURM, SIGUSR1 also requeues the job (``scontrol requeue``, rank 0), as Lightning's own auto-requeue does;
    SIGTERM does not (SLURM's preemption requeues by itself).

    Args:
        path: the resume checkpoint (``checkpoints/last.ckpt``).
        every_n_steps: also rewrite ``path`` every this many optimizer steps (0: only on a signal).
        signals: the run's :class:`StopSignals` (default: one of its own, installed when training starts).
    """

    def __init__(self, path: str | os.PathLike, every_n_steps: int = 0, signals: StopSignals | None = None):
        self.path = Path(path)
        self.every_n_steps = int(every_n_steps or 0)
        self._own = signals is None
        self.signals = StopSignals() if signals is None else signals
        self._at_end: int | None = None

    @property
    def received(self) -> int | None:
        return self.signals.received

    # -- signals ---------------------------------------------------------------------------------------------------
    def _take_over(self, trainer: pl.Trainer) -> None:
        """Make our handler the only one again: Lightning's (registered just before the sanity check and training)
        would raise its SIGTERMException at an arbitrary point of one rank, and exit 1."""
        self.signals.install()
        connector = getattr(trainer, "_signal_connector", None)
        if connector is not None:
            connector.received_sigterm = False

    def on_sanity_check_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._take_over(trainer)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._take_over(trainer)
        signum = self._agreed_signal(trainer)
        if signum is not None:  # during start-up, restore or the sanity check: nothing new to save
            self._stop(trainer, signum, save=False)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        try:
            if self._at_end is not None:
                signum, self._at_end = self._at_end, None
                if self._complete(trainer):
                    log.info("the run is complete; the %s it received at its last epoch's end changes nothing",
                             signal.Signals(signum).name)
                else:
                    self._stop(trainer, signum)
        finally:
            if self._own:
                self.signals.restore()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if self._own:
            self.signals.restore()

    # -- checks ----------------------------------------------------------------------------------------------------
    def _agreed_signal(self, trainer: pl.Trainer) -> int | None:
        """The signal, if any process got one (every process calls this at the same points)."""
        local = self.received is not None
        if trainer.world_size > 1:
            stop = trainer.strategy.reduce_boolean_decision(local, all=False)
            return (self.received or signal.SIGTERM) if stop else None
        return self.received

    @staticmethod
    def _complete(trainer: pl.Trainer) -> bool:
        """Whether the run has done all it was asked to (max_epochs or max_steps)."""
        max_epochs = trainer.max_epochs if trainer.max_epochs is not None else -1
        max_steps = trainer.max_steps if trainer.max_steps is not None else -1
        return (0 <= max_epochs <= trainer.current_epoch) or (0 <= max_steps <= trainer.global_step)

    def _stop(self, trainer: pl.Trainer, signum: int, save: bool = True) -> None:
        if save:
            trainer.save_checkpoint(self.path, weights_only=False)
        if trainer.is_global_zero and signum == signal.SIGUSR1 and os.environ.get("SLURM_JOB_ID"):
            requeue_slurm_job()
        raise Preempted(signum, trainer.global_step, self.path if save else None)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        # Not after an epoch's last batch: Lightning (2.6) restores a checkpoint written there, then validated, into
        # loop counters that make the *next* resume replay batches. The end of training (after the epoch's
        # validation, checkpoints and scheduler step) is a safe point instead: see on_train_epoch_end.
        if batch_idx + 1 >= trainer.num_training_batches:
            return
        signum = self._agreed_signal(trainer)
        if signum is not None:
            self._stop(trainer, signum)
        if self.every_n_steps and trainer.global_step % self.every_n_steps == 0:
            trainer.save_checkpoint(self.path, weights_only=False)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # This hook runs before the checkpoint callbacks' own (Lightning calls those last) and before the epoch's
        # scheduler step: raising here would drop both. Ask the loop to stop once the epoch is done instead; the
        # checkpoint is written in on_train_end.
        signum = self._agreed_signal(trainer)
        if signum is not None:
            self._at_end = signum
            trainer.should_stop = True


def requeue_slurm_job() -> None:
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
    "TPU available: ...", "HPU available: ...", "LOCAL_RANK: ...", "Using bfloat16 Automatic Mixed Precision", a
    DDP run's "Initializing distributed: ..." and its dashed "All distributed processes registered" block),
    those of a resume and a time-limit stop, and its advertising ("💡 Tip: ... try installing litlogger/litmodels").
    train.py prints one line of its own for each instead: the devices, strategy and precision; "resuming from
    last.ckpt"; at a time-limit stop, where it stopped and the checkpoint to resume from."""

    PREFIXES = ("💡 Tip", "GPU available:", "TPU available:", "HPU available:", "IPU available:", "LOCAL_RANK:",
                "Time limit reached.", "Restoring states from the checkpoint",
                "Restored all states from the checkpoint", "Initializing distributed:", "-" * 20)

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
