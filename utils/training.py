"""Training from the command line: config and overrides -> experiment directory -> ``Trainer.fit``.

``python train.py --config configs/unified/tuss.medium.2-4src.yaml [--exp_dir DIR] [--dotted.key value ...]``

- The experiment directory is ``exp/oss/<config stem>/`` (``--exp_dir`` overrides it). It holds ``hparams.yaml``
  (the config as run, overrides applied), ``tensorboard/`` logs, ``checkpoints/`` (top-k by ``val/loss`` and
  ``last.ckpt``) and ``checkpoints_epoch/`` (every ``save_checkpoint_every_n_epochs`` epochs).
- When ``checkpoints/last.ckpt`` exists the run resumes from it (model, optimizer, scheduler, epoch, step); raise
  ``trainer_conf.max_epochs`` to train longer. Otherwise ``pretrained_model_path`` (a ``.ckpt``/``.pth`` file or an
  experiment directory, whose checkpoints are averaged) initialises the weights only.
- Checkpoints are read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only

from datasets.manifest import ManifestError
from utils.checkpoint import CheckpointError, average_state_dicts, checkpoint_files, read_state_dict
from utils.config import Config, ConfigError, apply_overrides, load_config, save_config
from utils.lightning_module import SeparationModule, check_training_config

__all__ = ["parse_args", "prepare_config", "experiment_dir", "load_pretrained", "build_trainer", "train", "main"]

log = logging.getLogger("train")


USAGE = """usage: python train.py [--config] CONFIG [--exp_dir DIR] [--dotted.key VALUE ...]

Train a TUSS or conventional separation model. Checkpoints and logs go to exp/oss/<config stem>/ (or --exp_dir);
an existing checkpoints/last.ckpt there is resumed. Any config key can be overridden by its dotted name, e.g.
--trainer_conf.max_epochs 2 or --dataset_conf.train.json_paths '[a.json, b.json]' (values are parsed as YAML)."""


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, dict[str, str]]:
    """``[--config] CONFIG``, ``--exp_dir DIR`` and ``--dotted.key value`` (or ``--dotted.key=value``) overrides.

    Parsed by hand rather than with argparse: override values may look like anything (``[a, b]``, ``-1``).

    Raises:
        ConfigError: no config, a stray argument, or an override without a value.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        print(USAGE)
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


def prepare_config(config_path: str | os.PathLike, overrides: Mapping[str, str] | None = None) -> Config:
    """Load a config, apply dotted overrides and check it (:func:`check_training_config`)."""
    config = load_config(config_path)
    for key in overrides or {}:
        node: object = config
        for part in key.split("."):
            if not isinstance(node, Mapping) or part not in node:
                log.warning("override --%s adds a key that is not in %s", key, config_path)
                break
            node = node[part]
    apply_overrides(config, dict(overrides or {}))
    check_training_config(config)
    return config


def experiment_dir(config_path: str | os.PathLike, exp_dir: str | os.PathLike | None = None) -> Path:
    """``exp_dir`` or ``exp/oss/<config stem>``."""
    return Path(exp_dir) if exp_dir else Path("exp") / "oss" / Path(config_path).stem


def load_pretrained(model: torch.nn.Module, path: str | os.PathLike) -> None:
    """Initialise ``model``'s weights (only) from a ``.ckpt``/``.pth`` file, or from an experiment directory whose
    checkpoints (except ``last.ckpt``) are averaged.

    Raises:
        CheckpointError: missing or unreadable checkpoint; nets.ModelLoadError: keys or shapes that do not fit.
    """
    from nets import load_weights

    path = Path(path)
    if path.is_dir():
        files = checkpoint_files(path)
        state = average_state_dicts([read_state_dict(f) for f in files])
        log.info("initialising weights from the average of %d checkpoint(s) in %s", len(files), path)
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


def build_trainer(config: Mapping, exp_dir: Path, callbacks: Sequence[pl.Callback] = ()) -> pl.Trainer:
    """Lightning Trainer from ``trainer_conf`` with the experiment's logger and checkpoint callbacks."""
    trainer_conf = dict(config.get("trainer_conf") or {})
    if trainer_conf.pop("use_distributed_sampler", False):
        log.warning("trainer_conf.use_distributed_sampler is ignored: every process draws its own mixtures")
    has_val = bool(((config.get("dataset_conf") or {}).get("valid") or {}).get("json_path_and_num_data"))
    ckpt_conf = dict(config.get("model_checkpoint") or {"monitor": "val/loss", "save_top_k": 5, "mode": "min",
                                                         "save_last": True})
    if not has_val:  # nothing to rank checkpoints by: keep the last one
        ckpt_conf.update(monitor=None, save_top_k=1)
    cbs: list[pl.Callback] = [ModelCheckpoint(dirpath=exp_dir / "checkpoints", **ckpt_conf),
                              LearningRateMonitor(logging_interval="step")]
    every = config.get("save_checkpoint_every_n_epochs")
    if every:
        cbs.append(ModelCheckpoint(dirpath=exp_dir / "checkpoints_epoch", filename="{epoch}", every_n_epochs=int(every),
                                   save_top_k=-1, monitor=None, save_last=False))
    if config.get("early_stopping"):
        cbs.append(EarlyStopping(**dict(config["early_stopping"])))
    cbs.extend(callbacks)
    logger = TensorBoardLogger(save_dir=str(exp_dir), name="tensorboard", version="", default_hp_metric=False)
    try:
        return pl.Trainer(**trainer_conf, default_root_dir=str(exp_dir), logger=logger, callbacks=cbs,
                          use_distributed_sampler=False)
    except TypeError as err:
        raise ConfigError(f"trainer_conf does not fit lightning.pytorch.Trainer: {err}") from None


def train(config_path: str | os.PathLike, exp_dir: str | os.PathLike | None = None,
          overrides: Mapping[str, str] | None = None, callbacks: Sequence[pl.Callback] = ()) -> pl.Trainer:
    """Train (or resume) the experiment of ``config_path``; returns the fitted Trainer."""
    config = prepare_config(config_path, overrides)
    exp = experiment_dir(config_path, exp_dir)
    last = exp / "checkpoints" / "last.ckpt"
    resume = last.is_file()
    if resume:
        _check_same_model(config, exp)
    if rank_zero_only.rank == 0:
        save_config(config, exp / "hparams.yaml")
    pl.seed_everything(int(config.get("seed", 0)), workers=True)
    module = SeparationModule(config)
    n_train = sum(p.numel() for p in module.model.parameters() if p.requires_grad)
    log.info("model %s: %.2f M trainable parameters; experiment directory %s", config.get("model_name"),
             n_train / 1e6, exp)
    if resume:
        log.info("resuming from %s", last)
    elif config.get("pretrained_model_path"):
        load_pretrained(module.model, config["pretrained_model_path"])
    trainer = build_trainer(config, exp, callbacks)
    trainer.fit(module, ckpt_path=str(last) if resume else None, weights_only=True)
    return trainer


def main(argv: Sequence[str] | None = None, callbacks: Sequence[pl.Callback] = ()) -> int:
    """Command-line entry point; returns the exit status (2 for a bad config or input, with a one-line error)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        args, overrides = parse_args(argv)
        train(args.config, args.exp_dir, overrides, callbacks)
    except (ConfigError, ManifestError, CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
