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

import argparse
import logging
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only

from nets import load_weights
from training.callbacks import (
    AtomicCheckpointIO,
    LineProgress,
    Preempted,
    PreemptionCheckpoint,
    RecordedModelCheckpoint,
    quiet_lightning,
)
from training.data import SeparationDataModule
from training.module import SeparationModule
from training.settings import TrainingSettings, check_config_files, check_training_config
from utils.atomic import TMP_PREFIX
from utils.checkpoint import CheckpointError, average_state_dicts, checkpoint_files, read_state_dict
from utils.cli import RUNTIME, USAGE, report
from utils.config import Config, ConfigError, apply_overrides, load_config, save_config
from utils.lock import ExperimentLock

__all__ = ["parse_args", "prepare_config", "experiment_dir", "load_pretrained", "resolve_strategy", "build_trainer",
           "train", "main"]

log = logging.getLogger("train")

#: strategies that mean "data parallel" and are resolved for the number of processes
DDP_STRATEGIES = ("auto", "ddp", "ddp_find_unused_parameters_true", "ddp_find_unused_parameters_false")


def usage_text() -> str:
    """``train.py --help``: the command, how overrides work, and the commonly changed keys with their defaults."""
    d = TrainingSettings()
    keys = [
        ("batch_size", d.batch_size, "mixtures per step and process (release: 4 medium, 2 large)"),
        ("num_workers", d.num_workers, "data-loader workers per process (release: 4)"),
        ("seed", d.seed, "every mixture derives from (seed, epoch, rank, index)"),
        ("trainer_conf.max_epochs", "-", "epochs to train; raise it and rerun to train longer (release: 150)"),
        ("trainer_conf.limit_train_batches", "required", "steps per epoch and process (release: 2500)"),
        ("trainer_conf.devices", "auto", "devices per node (auto: every GPU, else the CPU)"),
        ("trainer_conf.num_nodes", 1, "nodes (one launch per node: srun, or NODE_RANK/MASTER_ADDR/MASTER_PORT)"),
        ("trainer_conf.precision", "32-true", "bf16-mixed in the release configs; 32 where bf16 is slow or missing"),
        ("trainer_conf.strategy", "auto", "resolved for the hardware: DDP with unused-parameter detection for >1 "
                                          "process"),
        ("optimizer_conf.lr", d.lr, "peak learning rate (after warmup_steps)"),
        ("warmup_steps", d.warmup_steps, "linear warm-up steps (release: 10000)"),
        ("keep_lr_epochs", d.keep_lr_epochs, "epochs before ReduceLROnPlateau may act (release: 75)"),
        ("p_prompt_dropout", d.p_prompt_dropout, "per batch, drop each prompt present once in every item"),
        ("pretrained_model_path", "null", "initialise the weights only (.ckpt/.pth or an experiment directory)"),
        ("save_last_every_n_steps", d.save_last_every_n_steps, "also rewrite last.ckpt every N steps (0: off)"),
        ("max_nonfinite_steps", d.max_nonfinite_steps, "non-finite steps in a row that stop the run"),
        ("dataset_conf.train.json_paths", "-", "training manifests (a YAML list)"),
    ]
    width = max(len(k) for k, _, _ in keys) + 2
    rows = "\n".join(f"  --{k:<{width}}{str(v):<10}{what}" for k, v, what in keys)
    return f"""usage: python train.py [--config] CONFIG [--exp_dir DIR] [--dotted.key VALUE ...]

Train a TUSS or conventional separation model on the data and settings of CONFIG (configs/<...>.yaml).
Checkpoints and logs go to exp/oss/<config stem>/ (or --exp_dir); an existing checkpoints/last.ckpt there is
resumed (also from the middle of an epoch). SIGTERM/SIGUSR1 save last.ckpt at the current step and exit 0.

Overrides: any config key can be set by its dotted name, --a.b.c VALUE or --a.b.c=VALUE; values are parsed as
YAML (2, 0.5, 5e-4, true, null, [a, b], {{2: 0.5, 3: 0.5}}). The whole config is checked before anything is
written: an unknown key (with the nearest valid name), a wrong type or range, a missing manifest is refused with
one line and exit status 2.

Commonly changed keys (the value used when a config leaves the key out; the release configs set most of them):
{rows}

Examples:
  python train.py --config configs/unified/tuss.medium.2-4src.yaml
  python train.py configs/musdb/musdb.task-specialist.tuss.medium.yaml --trainer_conf.devices 4
  python train.py configs/unified/tuss.large.2-4src.promptdropout.yaml --pretrained_model_path exp/oss/tuss.large.2-4src
  python train.py configs/tests/tiny.tuss.yaml --exp_dir exp/tiny --trainer_conf.max_epochs 2   # a CPU smoke run

Exit status: 0 done (or stopped by a signal after saving), 2 refused (config, input, experiment in use),
1 failed while training (disk full, repeated non-finite steps). See the README's "Training" section."""

def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, dict[str, str]]:
    """``[--config] CONFIG``, ``--exp_dir DIR`` and ``--dotted.key value`` (or ``--dotted.key=value``) overrides.

    Parsed by hand rather than with argparse: override values may look like anything (``[a, b]``, ``-1``).

    Raises:
        ConfigError: no config, a stray argument, or an override without a value.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        print(usage_text())
        raise SystemExit(0)
    config = exp_dir = None
    overrides: dict[str, str] = {}
    i = 0
    while i < len(argv):
        token = argv[i]
        if not token.startswith("--"):
            if config is not None:
                raise ConfigError(f"unexpected argument {token!r}: overrides are --dotted.key value")
            config, i = token, i + 1
            continue
        if "=" in token:
            key, value = token[2:].split("=", 1)
            i += 1
        elif i + 1 < len(argv):
            key, value = token[2:], argv[i + 1]
            i += 2
        else:
            raise ConfigError(f"argument {token} has no value")
        if key == "config":
            config = value
        elif key == "exp_dir":
            exp_dir = value
        elif key:
            overrides[key] = value
        else:
            raise ConfigError("empty option '--'")
    if not config:
        raise ConfigError("no config given: python train.py --config configs/<...>.yaml")
    return argparse.Namespace(config=config, exp_dir=exp_dir), overrides


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


def load_pretrained(model: torch.nn.Module, path: str | os.PathLike) -> None:
    """Initialise ``model``'s weights (only) from a ``.ckpt``/``.pth`` file, or from an experiment directory whose
    recorded top-k checkpoints (:func:`utils.checkpoint.checkpoint_files`) are averaged.

    Raises:
        CheckpointError: missing or unreadable checkpoint; nets.ModelLoadError: keys or shapes that do not fit.
    """
    path = Path(path)
    if path.is_dir():
        files = checkpoint_files(path)
        state = average_state_dicts([read_state_dict(f) for f in files])
        log.info("initialising weights from the average of %d checkpoint(s) in %s: %s", len(files), path,
                 ", ".join(f.name for f in files))
    else:
        state = read_state_dict(path)
        log.info("initialising weights from %s", path)
    load_weights(model, state, source=str(path))


def _check_same_model(config: Mapping, exp_dir: Path) -> None:
    saved_path = exp_dir / "hparams.yaml"
    if not saved_path.is_file():
        return
    saved = load_config(saved_path)
    for key in ("model_name", "model_conf", "encoder_conf"):
        if saved.get(key) != config.get(key):
            raise ConfigError(f"{exp_dir} holds a run of a different model ({key} differs from its hparams.yaml); "
                              "use another --exp_dir to start a new run")


def _check_resumable(last: Path) -> None:
    """Refuse (before anything is written) a ``last.ckpt`` that cannot be resumed from."""
    try:
        ckpt = torch.load(last, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, pickle of a foreign type...: all mean "cannot resume from this"
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"cannot resume from {last}: not a loadable checkpoint ({first[:200]}); move it away "
                              "to start again from the pretrained weights, or restore a copy") from None
    if not isinstance(ckpt, dict) or not {"state_dict", "optimizer_states", "loops"} <= set(ckpt):
        raise CheckpointError(f"cannot resume from {last}: not a Lightning training checkpoint (no state_dict, "
                              "optimizer_states and loops)")


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


def _launch_rank() -> int:
    """This process's global rank as the launcher set it (before Lightning sets up): 0 for the process a user
    started, >0 for the other processes of a DDP run (Lightning's children, torchrun, SLURM tasks, other nodes)."""
    for var in ("RANK", "SLURM_PROCID", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK"):
        value = os.environ.get(var)
        if value and value.isdigit() and int(value) > 0:
            return int(value)
    return 0


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


def build_trainer(config: Mapping, exp_dir: Path, callbacks: Sequence[pl.Callback] = ()) -> pl.Trainer:
    """Lightning Trainer from ``trainer_conf`` with the experiment's logger, checkpoint callbacks (atomic, finite,
    recorded top-k), preemption handling and resolved strategy."""
    trainer_conf = dict(config.get("trainer_conf") or {})
    if trainer_conf.pop("use_distributed_sampler", False):
        log.warning("trainer_conf.use_distributed_sampler is ignored: every process draws its own mixtures")
    trainer_conf["strategy"] = resolve_strategy(trainer_conf)
    for key in ("limit_val_batches", "limit_test_batches"):  # Lightning's default: passing it only prints a line
        if trainer_conf.get(key) == 1.0:
            del trainer_conf[key]
    line_progress = "enable_progress_bar" not in trainer_conf and not sys.stderr.isatty()
    if line_progress:  # a log file: whole lines, not \r-redrawn bars
        trainer_conf["enable_progress_bar"] = False
    has_val = bool(((config.get("dataset_conf") or {}).get("valid") or {}).get("json_path_and_num_data"))
    ckpt_conf = dict(config.get("model_checkpoint") or {"monitor": "val/loss", "save_top_k": 5, "mode": "min",
                                                         "save_last": True})
    if not has_val:  # nothing to rank checkpoints by: keep the last one
        ckpt_conf.update(monitor=None, save_top_k=1)
    cbs: list[pl.Callback] = [RecordedModelCheckpoint(dirpath=exp_dir / "checkpoints", **ckpt_conf),
                              LearningRateMonitor(logging_interval="step"),
                              PreemptionCheckpoint(exp_dir / "checkpoints" / "last.ckpt",
                                                   int(config.get("save_last_every_n_steps") or 0))]
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


def train(config_path: str | os.PathLike, exp_dir: str | os.PathLike | None = None,
          overrides: Mapping[str, str] | None = None, callbacks: Sequence[pl.Callback] = ()) -> pl.Trainer:
    """Train (or resume) the experiment of ``config_path``; returns the fitted Trainer.

    Everything is checked before the experiment directory is touched; a run stopped by SIGTERM/SIGUSR1 returns
    normally after writing ``last.ckpt`` (``trainer.preempted`` holds the :class:`~training.callbacks.Preempted`).

    Raises:
        ConfigError, CheckpointError, ManifestError, LockedError: the run is refused (nothing written).
        NonFiniteTrainingError, WriteError: the run failed (checkpoints written before are intact).
    """
    exp = experiment_dir(config_path, exp_dir)
    last = exp / "checkpoints" / "last.ckpt"
    resume = last.is_file()
    config = prepare_config(config_path, overrides)
    if resume:
        _check_same_model(config, exp)
    check_config_files(config)
    if resume:
        _check_resumable(last)
    pl.seed_everything(int(config.get("seed", 0)), workers=True, verbose=False)
    try:
        module = SeparationModule(config)
    except (TypeError, KeyError) as err:  # a model_conf the network's constructor does not take
        raise ConfigError(f"model_conf does not fit model {config.get('model_name')!r}: {err}") from None
    if not resume and config.get("pretrained_model_path"):
        load_pretrained(module.model, config["pretrained_model_path"])
    n_train = sum(p.numel() for p in module.model.parameters() if p.requires_grad)
    lock = ExperimentLock(exp) if _launch_rank() == 0 else None
    if lock is not None:
        lock.acquire()  # the first write into the experiment directory
        _remove_stale_temporaries(exp)
    try:
        if rank_zero_only.rank == 0:
            _save_hparams(config, exp)
        log.info("model %s: %.2f M trainable parameters; experiment directory %s", config.get("model_name"),
                 n_train / 1e6, exp)
        if resume:
            log.info("resuming from %s", last)
        trainer = build_trainer(config, exp, callbacks)
        trainer.preempted = None
        try:
            trainer.fit(module, datamodule=SeparationDataModule(config, module.prompt_names or ()),
                        ckpt_path=str(last) if resume else None, weights_only=True)
        except Preempted as stop:
            trainer.preempted = stop
            log.warning("%s; run the same command to resume from there", stop)
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
