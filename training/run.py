"""Training from the command line: config and overrides -> checks -> experiment directory -> ``Trainer.fit``.

``python train.py --config configs/unified/tuss.medium.2-4src.yaml [--exp_dir DIR] [--dotted.key value ...]``

- The whole config (file plus overrides) is checked first (:func:`training.settings.check_training_config`: known keys,
  types, ranges, manifests that must exist, the network it builds, a readable ``last.ckpt`` to resume); a refused
  run exits with code 2 and has changed nothing on disk.
- The experiment directory is ``exp/oss/<config stem>/`` (``--exp_dir`` overrides it). One run at a time: a lock file
  (``train.lock``, host and PID) refuses a second run. It holds ``hparams.yaml`` (the config as run; a resumed run
  with changed values keeps the previous one as ``hparams.<time>.yaml`` and logs the changed keys), ``tensorboard/``
  logs, ``checkpoints/`` (top-k by ``val/loss``, recorded in ``top_k.json``, and ``last.ckpt``) and
  ``checkpoints_epoch/`` (every ``save_checkpoint_every_n_epochs`` epochs). Every checkpoint is written atomically
  and never with NaN/Inf weights (:mod:`training.callbacks`).
- When ``checkpoints/last.ckpt`` exists the run resumes from it (model, optimizer, scheduler, epoch, step; from the
  middle of an epoch too, drawing the mixtures the uninterrupted run would have drawn); raise
  ``trainer_conf.max_epochs`` to train longer. Otherwise ``pretrained_model_path`` (a ``.ckpt``/``.pth`` file or an
  experiment directory, whose recorded top-k checkpoints are averaged) initialises the weights only.
- ``trainer_conf.strategy`` is resolved for the hardware (:func:`resolve_strategy`): one process runs without DDP,
  several use DDP with unused-parameter detection (each batch leaves some prompt vectors unused).
- SIGTERM/SIGUSR1 (a scheduler's warning before it kills the job) save ``last.ckpt`` at the current step and end
  the run with exit code 0; ``save_last_every_n_steps`` also rewrites it every N steps (for jobs killed without a
  warning). See the README's "Training on a cluster".
- Checkpoints are read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint, Timer
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only

from datasets.manifest import known_prompts, load_manifest
from nets import load_weights
from training.arguments import parse_args
from training.callbacks import (
    AtomicCheckpointIO,
    LineProgress,
    Preempted,
    PreemptionCheckpoint,
    RecordedModelCheckpoint,
    StopSignals,
    quiet_lightning,
    requeue_slurm_job,
)
from training.data import SeparationDataModule, check_data
from training.finetune import adapt_prompts, parameter_counts
from training.module import SeparationModule
from training.settings import check_config_files, check_training_config
from utils.atomic import TMP_PREFIX
from utils.checkpoint import (
    CheckpointError,
    average_checkpoints,
    checkpoint_files,
    read_state_dict,
    require_finite,
)
from utils.cli import RUNTIME, USAGE, first_line, report
from utils.config import Config, ConfigError, apply_overrides, load_config, save_config
from utils.lock import ExperimentLock
from utils.runtime import launch_rank

__all__ = ["parse_args", "prepare_config", "experiment_dir", "load_pretrained", "resolve_strategy", "build_trainer",
           "describe_hardware", "train", "main"]

log = logging.getLogger("train")

#: strategies that mean "data parallel" and are resolved for the number of processes
DDP_STRATEGIES = ("auto", "ddp", "ddp_find_unused_parameters_true", "ddp_find_unused_parameters_false")


def prepare_config(config_path: str | os.PathLike, overrides: Mapping[str, str] | None = None,
                   check_files: bool = False) -> Config:
    """Load a config, apply dotted overrides and check the result (:func:`training.settings.check_training_config`;
    ``check_files``: the manifests and ``pretrained_model_path`` must exist)."""
    config = load_config(config_path)
    apply_overrides(config, dict(overrides or {}))
    check_training_config(config, check_files=check_files)
    return config


def experiment_dir(config_path: str | os.PathLike, exp_dir: str | os.PathLike | None = None) -> Path:
    """``exp_dir`` or ``exp/oss/<config stem>``."""
    return Path(exp_dir) if exp_dir else Path("exp") / "oss" / Path(config_path).stem


def load_pretrained(model: torch.nn.Module, path: str | os.PathLike, init_new_prompts: Mapping[str, str] | None = None,
                    drop_prompts: bool = False) -> dict[str, str]:
    """Initialise ``model``'s weights (only) from a ``.ckpt``/``.pth``/``.safetensors`` file, or from an experiment
    directory whose recorded top-k checkpoints (:func:`utils.checkpoint.checkpoint_files`) are averaged.

    Prompts of ``model`` that the checkpoint lacks are new prompts, initialised by ``init_new_prompts`` (or the mean
    of the pretrained prompts); pretrained prompts the model lacks are dropped only with ``drop_prompts``
    (:func:`training.finetune.adapt_prompts`). Everything else loads strictly. Returns ``{new prompt: how it was
    initialised}``.

    Raises:
        CheckpointError: missing or unreadable checkpoint; nets.ModelLoadError: keys or shapes that do not fit;
        ConfigError: prompts that do not fit (see :func:`training.finetune.adapt_prompts`).
    """
    path = Path(path)
    if path.is_dir():
        files = checkpoint_files(path)
        state = average_checkpoints(files)
        log.info("initialising weights from the average of %d checkpoint(s) in %s: %s", len(files), path,
                 ", ".join(f.name for f in files))
    else:
        state = read_state_dict(path)
        log.info("initialising weights from %s", path)
    require_finite(state, path)  # refused at start, not blamed on the audio after an epoch
    state = {(k[len("model."):] if k.startswith("model.") else k): v for k, v in state.items()}
    state, new = adapt_prompts(state, getattr(model, "prompt_names", None), init_new_prompts, drop_prompts,
                               source=str(path))
    load_weights(model, state, source=str(path))
    return new


def _check_new_prompts(config: Mapping, new: Mapping[str, str]) -> None:
    """Refuse new prompts that training cannot draw: no entry in the config's ``prompts`` chain, or no training
    recordings in the manifests of ``dataset_conf.train.json_paths``."""
    if not new:
        return
    chain = config.get("prompts") or {}
    manifests = list(config["dataset_conf"]["train"]["json_paths"])
    pooled: set[str] = set()
    for path in manifests:
        pooled |= {p for p, entries in load_manifest(path, prompts=known_prompts(new)).split("train").items()
                   if isinstance(entries, list) and entries}
    for name in new:
        if name not in chain:
            raise ConfigError(f"new prompt {name!r} has no entry in the config's 'prompts' (init_prob, next, "
                              "num_appear, gain): training would never draw it")
        if name not in pooled:
            raise ConfigError(f"new prompt {name!r} has no training recordings in {', '.join(manifests)} (their "
                              f"prompts: {', '.join(sorted(pooled)) or 'none'}); is it a folder of your corpus? "
                              "(python -m dataprep.build_folders, docs/data.md)")


def _check_same_model(config: Mapping, exp_dir: Path) -> None:
    saved_path = exp_dir / "hparams.yaml"
    if not saved_path.is_file():
        return
    saved = load_config(saved_path)
    for key in ("model_name", "model_conf", "encoder_conf"):
        if saved.get(key) != config.get(key):
            raise ConfigError(f"{exp_dir} holds a run of a different model ({key} differs from its hparams.yaml); "
                              "use another --exp_dir to start a new run")


def _check_resumable(last: Path) -> dict[str, tuple[int, ...]]:
    """Refuse (before anything is written) a ``last.ckpt`` that cannot be resumed from; returns the shapes of its
    weights (``{name: shape}``) for :func:`_check_fits`."""
    try:
        ckpt = torch.load(last, map_location="cpu", weights_only=True, mmap=True)  # shapes only: Lightning reads it
    except Exception as err:  # truncated zip, pickle of a foreign type...: all mean "cannot resume from this"
        raise CheckpointError(f"cannot resume from {last}: not a loadable checkpoint ({first_line(err)[:200]}); "
                              "move it away to start again from the pretrained weights, or restore a copy") from None
    if not isinstance(ckpt, dict) or not {"state_dict", "optimizer_states", "loops"} <= set(ckpt):
        raise CheckpointError(f"cannot resume from {last}: not a Lightning training checkpoint (no state_dict, "
                              "optimizer_states and loops)")
    state = ckpt["state_dict"]
    if not isinstance(state, dict):
        raise CheckpointError(f"cannot resume from {last}: its state_dict is not a mapping of weights")
    return {str(k): tuple(v.shape) for k, v in state.items() if isinstance(v, torch.Tensor)}


def _check_fits(shapes: Mapping[str, tuple[int, ...]], module: pl.LightningModule, last: Path) -> None:
    """Refuse (before anything is written) a ``last.ckpt`` whose weights do not fit the model the config builds
    (``hparams.yaml`` edited or deleted since the run that wrote it)."""
    model = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    missing = sorted(model.keys() - shapes.keys())
    unexpected = sorted(shapes.keys() - model.keys())
    wrong = sorted(k for k in model.keys() & shapes.keys() if model[k] != shapes[k])
    if not (missing or unexpected or wrong):
        return
    parts = []
    if wrong:
        k = wrong[0]
        parts.append(f"{len(wrong)} weight(s) of another shape (first: {k} is {list(shapes[k])} in the checkpoint, "
                     f"{list(model[k])} in the model)")
    if missing:
        parts.append(f"{len(missing)} weight(s) missing (first: {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} weight(s) the model lacks (first: {unexpected[0]})")
    raise CheckpointError(f"cannot resume from {last}: it does not fit the model of this config ({'; '.join(parts)}); "
                          "give the run's own config, or another --exp_dir to start a new run")


def _flat(config: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(config, Mapping):
        out: dict[str, Any] = {}
        for k, v in config.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: config}


def _save_hparams(config: Mapping, exp_dir: Path) -> None:
    """Write ``hparams.yaml``; when it exists with other values, keep it as ``hparams.<time>.yaml`` and log the
    changed keys first."""
    path = exp_dir / "hparams.yaml"
    if path.is_file():
        old, new = _flat(load_config(path).to_dict()), _flat(load_config(config).to_dict())
        changed = sorted(k for k in old.keys() | new.keys() if old.get(k, "<absent>") != new.get(k, "<absent>"))
        if not changed:
            return
        kept = path.with_name(f"hparams.{time.strftime('%Y%m%d-%H%M%S')}.yaml")
        os.replace(path, kept)
        log.warning("the config differs from the run's %s (kept as %s): %s", path.name, kept.name,
                    "; ".join(f"{k}: {old.get(k, '<absent>')!r} -> {new.get(k, '<absent>')!r}" for k in changed))
    save_config(config, path)


def _remove_stale_temporaries(exp_dir: Path) -> None:
    """Delete the temporary files a killed run left beside its checkpoints (only the lock holder may write here)."""
    for folder in (exp_dir / "checkpoints", exp_dir / "checkpoints_epoch", exp_dir):
        for tmp in folder.glob(f"{TMP_PREFIX}*") if folder.is_dir() else ():
            log.info("removing %s, left by an interrupted write", tmp)
            tmp.unlink(missing_ok=True)


def _num_processes(trainer_conf: Mapping) -> int:
    """Processes a Lightning Trainer with these settings runs: devices per node x ``num_nodes``."""
    accelerator = str(trainer_conf.get("accelerator", "auto"))
    devices = trainer_conf.get("devices", "auto")
    gpus = torch.cuda.device_count() if accelerator in ("auto", "gpu", "cuda") else 0
    if isinstance(devices, (list, tuple)):
        per_node = len(devices)
    elif isinstance(devices, str) and devices != "auto":
        parts = [p for p in devices.split(",") if p.strip()]
        per_node = (gpus if devices.strip() == "-1" else int(parts[0])) if len(parts) == 1 else len(parts)
    elif devices == "auto" or devices == -1:
        per_node = max(gpus, 1) if accelerator != "cpu" else 1
    else:
        per_node = int(devices)
    return max(1, per_node) * int(trainer_conf.get("num_nodes", 1) or 1)


def resolve_strategy(trainer_conf: Mapping) -> Any:
    """The Lightning strategy to run ``trainer_conf`` with on this hardware.

    Every batch leaves the prompt vectors it does not use without a gradient, which plain DDP refuses. So the
    data-parallel names (``auto``, ``ddp``, ``ddp_find_unused_parameters_true|false``) become
    ``ddp_find_unused_parameters_true`` when several processes run, and ``auto`` (no DDP wrapper, no unused-parameter
    search) for a single process. Other strategies (``ddp_spawn``, ``fsdp``, ``deepspeed``, objects) are kept.
    Giving every parameter a zero gradient instead would let plain DDP run, but AdamW's moments and weight decay
    would then move the unused prompts: the optimisation would differ from a single-process run.
    """
    strategy = trainer_conf.get("strategy", "auto")
    if not isinstance(strategy, str) or strategy not in DDP_STRATEGIES:
        return strategy
    n = _num_processes(trainer_conf)
    resolved = "ddp_find_unused_parameters_true" if n > 1 else "auto"
    if resolved != strategy:
        log.info("trainer_conf.strategy %s -> %s (%d process%s)", strategy, resolved, n, "es" if n > 1 else "")
    return resolved


def build_trainer(config: Mapping, exp_dir: Path, callbacks: Sequence[pl.Callback] = (),
                  signals: StopSignals | None = None) -> pl.Trainer:
    """Lightning Trainer from ``trainer_conf`` with the experiment's logger, checkpoint callbacks (atomic, finite,
    recorded top-k), preemption handling (``signals``: the run's noted stop signals) and resolved strategy."""
    trainer_conf = dict(config.get("trainer_conf") or {})
    if trainer_conf.pop("use_distributed_sampler", False):
        log.warning("trainer_conf.use_distributed_sampler is ignored: every process draws its own mixtures")
    trainer_conf["strategy"] = resolve_strategy(trainer_conf)
    for key in ("limit_val_batches", "limit_test_batches"):  # Lightning's default: passing it only prints a line
        if trainer_conf.get(key) == 1.0:
            del trainer_conf[key]
    # one line of ours (train(): the model's trainable parameters) instead of Lightning's summary table, which it
    # prints unless a config says otherwise; an explicit enable_model_summary: true still gets it
    trainer_conf.setdefault("enable_model_summary", False)
    line_progress = "enable_progress_bar" not in trainer_conf and not sys.stderr.isatty()
    if line_progress:  # a log file: whole lines, not \r-redrawn bars
        trainer_conf["enable_progress_bar"] = False
    has_val = bool(((config.get("dataset_conf") or {}).get("valid") or {}).get("json_path_and_num_data"))
    ckpt_conf = dict(config.get("model_checkpoint") or {"monitor": "val/loss", "save_top_k": 5, "mode": "min",
                                                         "save_last": True})
    if not has_val:  # nothing to rank checkpoints by: keep the last one
        ckpt_conf.update(monitor=None, save_top_k=1)
    if (exp_dir / "checkpoints" / "last.ckpt").is_file():
        # a resumed experiment holds its checkpoints: Lightning's "Checkpoint directory ... exists and is not empty"
        # (from every ModelCheckpoint's set-up) is expected then, for this experiment's two checkpoint folders
        folders = re.escape(os.path.realpath(exp_dir / "checkpoints"))
        warnings.filterwarnings("ignore", message=rf"Checkpoint directory {folders}(_epoch)? exists and is not empty",
                                category=UserWarning)
    cbs: list[pl.Callback] = [RecordedModelCheckpoint(dirpath=exp_dir / "checkpoints", **ckpt_conf),
                              LearningRateMonitor(logging_interval="step"),
                              PreemptionCheckpoint(exp_dir / "checkpoints" / "last.ckpt",
                                                   int(config.get("save_last_every_n_steps") or 0), signals)]
    every = config.get("save_checkpoint_every_n_epochs")
    if every:
        cbs.append(ModelCheckpoint(dirpath=exp_dir / "checkpoints_epoch", filename="{epoch}", every_n_epochs=int(every),
                                   save_top_k=-1, monitor=None, save_last=False, enable_version_counter=False))
    if config.get("early_stopping"):
        cbs.append(EarlyStopping(**dict(config["early_stopping"])))
    if line_progress:
        cbs.append(LineProgress())
    cbs.extend(callbacks)
    quiet_lightning()
    logger = TensorBoardLogger(save_dir=str(exp_dir), name="tensorboard", version="", default_hp_metric=False)
    plugins: list[Any] = [AtomicCheckpointIO()]
    if SLURMEnvironment.detect():  # our PreemptionCheckpoint handles SIGUSR1 (and requeues), not Lightning's
        plugins.append(SLURMEnvironment(auto_requeue=False))
    try:
        return pl.Trainer(**trainer_conf, default_root_dir=str(exp_dir), logger=logger, callbacks=cbs,
                          plugins=plugins, use_distributed_sampler=False)
    except (TypeError, ValueError) as err:  # MisconfigurationException is a ValueError
        raise ConfigError(f"trainer_conf does not fit lightning.pytorch.Trainer: {err}") from None


def describe_hardware(trainer: pl.Trainer) -> str:
    """One line: the devices, processes, strategy and precision ``trainer`` runs with (train.py prints it instead of
    Lightning's "GPU available / TPU available" lines, see :func:`training.callbacks.quiet_lightning`), e.g.
    ``running on 1 x cpu (1 node, 1 process); strategy SingleDeviceStrategy; precision 32-true``."""
    strategy = trainer.strategy
    device = strategy.root_device
    name = f"{torch.cuda.get_device_name(device)} (cuda)" if device.type == "cuda" else device.type
    nodes, processes = trainer.num_nodes, trainer.world_size
    unused = getattr(strategy, "_ddp_kwargs", {}).get("find_unused_parameters")
    return (f"running on {trainer.num_devices} x {name} ({nodes} node{'s' if nodes > 1 else ''}, {processes} "
            f"process{'es' if processes > 1 else ''}); strategy {type(strategy).__name__}"
            f"{', find_unused_parameters=True' if unused else ''}; precision {trainer.precision}")


def _stopped_by_time_limit(trainer: pl.Trainer) -> bool:
    """Whether ``trainer.fit`` returned because ``trainer_conf.max_time`` ran out (Lightning's Timer stopped it)."""
    timer = next((cb for cb in trainer.callbacks if isinstance(cb, Timer)), None)
    remaining = timer.time_remaining("train") if timer is not None else None
    return bool(trainer.should_stop) and remaining is not None and remaining <= 0


def _time_limit_line(trainer: pl.Trainer, config: Mapping, last: Path) -> str:
    """The one line of a time-limit stop: where it stopped and the checkpoint to resume from."""
    done = int(trainer.fit_loop.epoch_loop.batch_progress.current.processed)
    epoch = max(trainer.current_epoch - 1, 0)  # the epoch cut short counts as completed once fit returns
    where = (f"stopped at the time limit (trainer_conf.max_time {(config.get('trainer_conf') or {}).get('max_time')}) "
             f"in epoch {epoch} after batch {done}/{int(trainer.num_training_batches)}, step {trainer.global_step}")
    if not last.is_file():
        return f"{where}; no {last} was written (model_checkpoint.save_last is off)"
    return (f"{where}; checkpoint {last}: the same command resumes from it once trainer_conf.max_time is raised (the "
            "time limit counts the time of earlier runs too)")


def _single_process(config: Mapping) -> bool:
    """Whether the run is one process (no launcher started others, the Trainer starts none)."""
    launched = max(int(os.environ.get(v, "1") or 1) for v in ("WORLD_SIZE", "SLURM_NTASKS"))
    return launched == 1 and _num_processes(config.get("trainer_conf") or {}) == 1


def train(config_path: str | os.PathLike, exp_dir: str | os.PathLike | None = None,
          overrides: Mapping[str, str] | None = None, callbacks: Sequence[pl.Callback] = ()) -> pl.Trainer | None:
    """Train (or resume) the experiment of ``config_path``; returns the fitted Trainer.

    Everything is checked before the experiment directory is touched; a run stopped by SIGTERM/SIGUSR1 returns
    normally after writing ``last.ckpt`` (``trainer.preempted`` holds the :class:`~training.callbacks.Preempted`).
    The signals are caught from the start: one that comes during the checks stops a single-process run before
    anything is written (``None`` is returned), one during Lightning's set-up or checkpoint restore stops it before
    its first step (:class:`~training.callbacks.PreemptionCheckpoint`).

    Raises:
        ConfigError, CheckpointError, ManifestError, LockedError: the run is refused (nothing written).
        NonFiniteTrainingError, WriteError: the run failed (checkpoints written before are intact).
    """
    signals = StopSignals().install()  # before any work: a signal now must not kill the run with a stale state
    try:
        return _train(config_path, exp_dir, overrides, callbacks, signals)
    finally:
        signals.restore()


def _train(config_path: str | os.PathLike, exp_dir: str | os.PathLike | None, overrides: Mapping[str, str] | None,
           callbacks: Sequence[pl.Callback], signals: StopSignals) -> pl.Trainer | None:
    exp = experiment_dir(config_path, exp_dir)
    last = exp / "checkpoints" / "last.ckpt"
    resume = last.is_file()
    config = prepare_config(config_path, overrides)
    if resume:
        _check_same_model(config, exp)
    check_config_files(config)
    shapes = _check_resumable(last) if resume else None
    pl.seed_everything(int(config.get("seed", 0)), workers=True, verbose=False)
    try:
        module = SeparationModule(config)
    except (TypeError, KeyError) as err:  # a model_conf the network's constructor does not take
        raise ConfigError(f"model_conf does not fit model {config.get('model_name')!r}: {err}") from None
    if shapes is not None:
        _check_fits(shapes, module, last)
        del shapes
    if not resume and config.get("pretrained_model_path"):
        new = load_pretrained(module.model, config["pretrained_model_path"], module.settings.init_new_prompts,
                              module.settings.drop_prompts)
        _check_new_prompts(config, new)
    elif module.settings.init_new_prompts and not resume:
        raise ConfigError("config key 'init_new_prompts' needs a pretrained_model_path to take the prompts from")
    n_train, n_total = parameter_counts(module.model)
    if n_train == 0:
        raise ConfigError(f"config key 'freeze' leaves no parameter to train ({', '.join(module.settings.freeze)})")
    if launch_rank() == 0:  # the data a run would stop on later: refused now, with nothing written
        check_data(config, module.prompt_names or ())
    if signals.received is not None and _single_process(config):  # (with several, they agree when training starts)
        stop = Preempted(signals.received, 0, None)
        if signals.received == signal.SIGUSR1 and os.environ.get("SLURM_JOB_ID"):
            requeue_slurm_job()
        log.warning("%s; nothing was written: run the same command to start again", stop)
        return None
    lock = ExperimentLock(exp) if launch_rank() == 0 else None
    if lock is not None:
        lock.acquire()  # the first write into the experiment directory
        _remove_stale_temporaries(exp)
    try:
        rank0 = rank_zero_only.rank == 0
        if rank0:
            _save_hparams(config, exp)
            counts = (f"{n_train / 1e6:.2f} M trainable parameters" if n_train == n_total else
                      f"{n_train:,} of {n_total:,} parameters trainable (frozen: {', '.join(module.settings.freeze)})")
            log.info("model %s: %s; experiment directory %s", config.get("model_name"), counts, exp)
            if resume:
                log.info("resuming from %s", last)
        trainer = build_trainer(config, exp, callbacks, signals)
        trainer.preempted = None
        if rank0:
            log.info("%s", describe_hardware(trainer))
        try:
            trainer.fit(module, datamodule=SeparationDataModule(config, module.prompt_names or ()),
                        ckpt_path=str(last) if resume else None, weights_only=True)
        except Preempted as stop:
            trainer.preempted = stop
            log.warning("%s; run the same command to resume from there", stop)
        else:
            if rank0 and _stopped_by_time_limit(trainer):
                log.info("%s", _time_limit_line(trainer, config, last))
        return trainer
    finally:
        if lock is not None:
            lock.release()


def main(argv: Sequence[str] | None = None, callbacks: Sequence[pl.Callback] = ()) -> int:
    """Command-line entry point; returns the exit status: 0 (also after a preemption signal), 2 for a refused run
    (bad config, override, manifest, checkpoint, or an experiment in use), 1 for a failure during training."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        args, overrides = parse_args(argv)
        train(args.config, args.exp_dir, overrides, callbacks)
    except ValueError as err:  # ConfigError, CheckpointError, ManifestError, LockedError, AudioError, ModelLoadError
        return report(err, USAGE)
    except (OSError, RuntimeError) as err:  # WriteError (disk full...), NonFiniteTrainingError, SourceDrawError
        return report(err, RUNTIME)
    return 0
