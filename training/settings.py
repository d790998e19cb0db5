"""Validation of a whole training config before anything is written: known keys, types, ranges, files.

:func:`check_training_config` walks the config (the file with its command-line overrides applied) against
:data:`SCHEMA`, the keys of the published ``hparams.yaml`` plus this project's own. The first problem raises
:class:`utils.config.ConfigError` with one line naming the dotted key, the value and what was expected, e.g.
``config key 'batch_size' must be an integer >= 1, got 'four'``; train.py turns it into exit code 2 before the
experiment directory is touched. Keys passed to Lightning (``trainer_conf``, ``model_checkpoint``,
``early_stopping``) and to torch (``optimizer_conf``, ``scheduler_conf``) are checked against the signatures of the
classes that receive them, so a typo is reported with the nearest valid name.

Example::

    >>> check_training_config({"batch_size": "four"}, partial=True)
    Traceback (most recent call last):
    ...
    utils.config.ConfigError: config key 'batch_size' must be an integer >= 1, got 'four'
"""

from __future__ import annotations

import difflib
import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

from datasets.sampler import parse_weights
from nets import MODELS
from training.losses import LOSSES, build_loss
from utils.config import ConfigError

__all__ = ["TrainingSettings", "check_training_config", "check_config_files", "OPTIMIZERS", "SCHEMA", "DEFAULTS"]

OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}

#: defaults of the keys this project adds to the release's schema (neutral: they change nothing when absent)
DEFAULTS = {"p_prompt_dropout": 0.0, "sort_prompts": False, "pretrained_model_path": None,
            "save_last_every_n_steps": 0, "max_nonfinite_steps": 20}

Check = Callable[[str, Any], None]


@dataclass(frozen=True)
class TrainingSettings:
    """Every setting the training system reads from a config, with its default: read once
    (:meth:`from_config`), used everywhere (module, data module, callbacks). A published ``hparams.yaml`` reads as
    the authors' code read it.

    >>> s = TrainingSettings.from_config({"batch_size": 2, "optimizer_conf": {"lr": 5e-4}})
    >>> s.batch_size, s.lr, s.optimizer_name, s.max_nonfinite_steps
    (2, 0.0005, 'adamw', 20)
    """

    seed: int = 0
    batch_size: int = 4
    val_batch_size: int = 1
    num_workers: int = 0
    steps_per_epoch: int | None = None  # trainer_conf.limit_train_batches (required to train)
    max_num_src: int | None = None
    num_srcs_and_weights: Mapping = field(default_factory=dict)
    loss_func_name: str = "snr_with_zero_refs"
    loss_func_conf: Mapping = field(default_factory=dict)
    pit_loss: bool = False
    sort_prompts: bool = False
    p_prompt_dropout: float = 0.0
    optimizer_name: str = "adamw"
    optimizer_conf: Mapping = field(default_factory=lambda: {"lr": 1e-3})
    scheduler_name: str | None = "reducelr"
    scheduler_conf: Mapping = field(default_factory=dict)
    warmup_steps: int = 0
    keep_lr_epochs: int = 0
    css_conf: Mapping = field(default_factory=dict)
    css_datasets: frozenset[str] = frozenset()
    max_nonfinite_steps: int = DEFAULTS["max_nonfinite_steps"]
    save_last_every_n_steps: int = DEFAULTS["save_last_every_n_steps"]

    @property
    def lr(self) -> float:
        return float(self.optimizer_conf.get("lr", 1e-3))

    @classmethod
    def from_config(cls, config: Mapping) -> TrainingSettings:
        """The settings of ``config`` (a mapping in the hparams schema; unset keys take the defaults above)."""
        d = cls()

        def get(key: str, default: Any) -> Any:
            value = config.get(key)
            return default if value is None else value

        train = ((config.get("dataset_conf") or {}).get("train") or {})
        return cls(
            seed=int(get("seed", d.seed)), batch_size=int(get("batch_size", d.batch_size)),
            val_batch_size=int(get("val_batch_size", d.val_batch_size)),
            num_workers=int(get("num_workers", d.num_workers)),
            steps_per_epoch=(config.get("trainer_conf") or {}).get("limit_train_batches"),
            max_num_src=train.get("max_num_src"), num_srcs_and_weights=dict(get("num_srcs_and_weights", {})),
            loss_func_name=get("loss_func_name", d.loss_func_name), loss_func_conf=dict(get("loss_func_conf", {})),
            pit_loss=bool(get("pit_loss", d.pit_loss)), sort_prompts=bool(get("sort_prompts", d.sort_prompts)),
            p_prompt_dropout=float(get("p_prompt_dropout", d.p_prompt_dropout)),
            optimizer_name=get("optimizer_name", d.optimizer_name),
            optimizer_conf=dict(get("optimizer_conf", d.optimizer_conf)),
            scheduler_name=config.get("scheduler_name", d.scheduler_name),
            scheduler_conf=dict(get("scheduler_conf", {})), warmup_steps=int(get("warmup_steps", d.warmup_steps)),
            keep_lr_epochs=int(get("keep_lr_epochs", d.keep_lr_epochs)), css_conf=dict(get("css_conf", {})),
            css_datasets=frozenset(get("css_datasets", ())),
            max_nonfinite_steps=int(get("max_nonfinite_steps", d.max_nonfinite_steps)),
            save_last_every_n_steps=int(get("save_last_every_n_steps", d.save_last_every_n_steps)))


def _fail(key: str, value: Any, expected: str) -> None:
    raise ConfigError(f"config key '{key}' must be {expected}, got {value!r}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def integer(lo: int | None = None, none: bool = False) -> Check:
    def check(key: str, v: Any) -> None:
        if v is None and none:
            return
        if not _is_int(v) or (lo is not None and v < lo):
            _fail(key, v, "an integer" + (f" >= {lo}" if lo is not None else "") + (" or null" if none else ""))
    return check


def number(lo: float | None = None, hi: float | None = None, lo_open: bool = False, hi_open: bool = False,
           none: bool = False) -> Check:
    def check(key: str, v: Any) -> None:
        if v is None and none:
            return
        ok = _is_num(v) and (lo is None or (v > lo if lo_open else v >= lo)) and (
            hi is None or (v < hi if hi_open else v <= hi))
        if not ok:
            lo_s = "" if lo is None else f"{'>' if lo_open else '>='} {lo:g}"
            hi_s = "" if hi is None else f"{'<' if hi_open else '<='} {hi:g}"
            _fail(key, v, "a finite number" + (f" {lo_s}" if lo_s else "") + (" and" if lo_s and hi_s else "")
                  + (f" {hi_s}" if hi_s else "") + (" or null" if none else ""))
    return check


def boolean(none: bool = False) -> Check:
    def check(key: str, v: Any) -> None:
        if not (isinstance(v, bool) or (v is None and none)):
            _fail(key, v, "true or false")
    return check


def choice(*options: Any) -> Check:
    def check(key: str, v: Any) -> None:
        if v not in options:
            _fail(key, v, "one of " + ", ".join(repr(o) for o in options))
    return check


def string(none: bool = False) -> Check:
    def check(key: str, v: Any) -> None:
        if not ((isinstance(v, str) and v) or (v is None and none)):
            _fail(key, v, "a non-empty string" + (" or null" if none else ""))
    return check


def anything(key: str, v: Any) -> None:
    return None


def weights(key: str, v: Any) -> None:
    try:
        parse_weights(v, key)
    except ValueError as err:
        raise ConfigError(f"config key '{key}': {str(err).removeprefix(key).lstrip(': ')}") from None


def gain(key: str, v: Any) -> None:
    if not (isinstance(v, (list, tuple)) and len(v) == 2 and all(_is_num(x) for x in v) and v[0] <= v[1]):
        _fail(key, v, "[low, high] in dB with low <= high")


def list_of(item: Check, none: bool = False) -> Check:
    def check(key: str, v: Any) -> None:
        if v is None and none:
            return
        if not isinstance(v, (list, tuple)):
            _fail(key, v, "a list" + (" or null" if none else ""))
        for i, x in enumerate(v):
            item(f"{key}[{i}]", x)
    return check


def mapping(fields: Mapping[str, Check] | None = None, extra: Check | None = None, none: bool = False,
            names: Callable[[], set[str]] | None = None) -> Check:
    """A mapping whose known keys are checked by ``fields``; other keys by ``extra`` (or, when ``names`` gives the
    accepted names, e.g. a class signature, refused unless listed)."""
    fields = dict(fields or {})

    def check(key: str, v: Any) -> None:
        if v is None and none:
            return
        if not isinstance(v, Mapping):
            _fail(key, v, "a mapping" + (" or null" if none else ""))
        allowed = set(fields) | (names() if names else set())
        for k, x in v.items():
            sub = f"{key}.{k}"
            if k in fields:
                fields[k](sub, x)
            elif extra is not None:
                extra(sub, x)
            elif k not in allowed:
                _unknown(sub, str(k), allowed)
    return check


def _unknown(key: str, name: str, allowed: set[str]) -> None:
    near = difflib.get_close_matches(name, sorted(allowed), n=1)
    raise ConfigError(f"unknown config key '{key}'" + (f" (did you mean '{near[0]}'?)" if near else ""))


def _signature(cls: type) -> Callable[[], set[str]]:
    return lambda: {p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "args", "kwargs")}


def _precision(key: str, v: Any) -> None:
    accepted = {"64", "64-true", "32", "32-true", "16", "16-mixed", "bf16", "bf16-mixed", "16-true", "bf16-true",
                "transformer-engine", "transformer-engine-float16"}
    if str(v) not in accepted:
        _fail(key, v, "a Lightning precision (32, 32-true, bf16-mixed, 16-mixed, ...)")


def _devices(key: str, v: Any) -> None:
    if v == "auto" or (_is_int(v) and (v >= 1 or v == -1)) or (isinstance(v, list) and all(_is_int(x) for x in v)):
        return
    if isinstance(v, str) and all(p.strip().lstrip("-").isdigit() for p in v.split(",") if p.strip()):
        return
    _fail(key, v, "'auto', a device count >= 1, -1 (all), or a list of device indices")


def _limit(key: str, v: Any) -> None:
    if not (_is_num(v) and v >= 0):
        _fail(key, v, "a number of batches or a fraction >= 0")


def _mix_spec(key: str, v: Any) -> None:
    if not (isinstance(v, (list, tuple)) and 1 <= len(v) <= 3 and isinstance(v[0], str)):
        _fail(key, v, "[manifest path, N or null, (channel)]")
    if len(v) > 1:
        integer(1, none=True)(f"{key}[1]", v[1])
    if len(v) > 2:
        integer(0)(f"{key}[2]", v[2])


def _prompt_conf(key: str, v: Any) -> None:
    mapping({"init_prob": number(0, 1), "next": mapping(extra=number(0, 1)), "num_appear": integer(1),
             "gain": gain, "dynamic_mixing_prob": number(0, 1), "num_srcs_and_weights": weights})(key, v)


def _prompt_dropout_flag(key: str, v: Any) -> None:
    if v:
        raise ConfigError("config key 'prompt_dropout' is not used (the authors' code never read it, so no dropout "
                          "happened); set 'p_prompt_dropout: <probability in [0, 1)>' instead and remove it")


def _stft_conf(key: str, v: Any) -> None:
    mapping({"fft_size": integer(1), "window_length": integer(1), "hop_length": integer(1),
             "window_type": string(), "normalize": anything})(key, v)


_TRAINER = mapping({"max_epochs": integer(-1, none=True), "max_steps": integer(-1),
                    "limit_train_batches": integer(1), "limit_val_batches": _limit, "limit_test_batches": _limit,
                    "gradient_clip_val": number(0, none=True),
                    "precision": _precision, "strategy": anything, "devices": _devices, "num_nodes": integer(1),
                    "deterministic": choice(True, False, "warn", None), "accumulate_grad_batches": integer(1),
                    "accelerator": string(), "num_sanity_val_steps": integer(-1), "log_every_n_steps": integer(1),
                    "check_val_every_n_epoch": integer(1, none=True), "enable_progress_bar": boolean(),
                    "enable_model_summary": boolean(), "use_distributed_sampler": boolean()},
                   names=_signature(pl.Trainer))

#: top-level key -> check; keys of the published hparams.yaml plus this project's (see DEFAULTS)
SCHEMA: dict[str, Check] = {
    "batch_size": integer(1), "val_batch_size": integer(1), "seed": integer(), "num_workers": integer(0),
    "trainer_conf": _TRAINER,
    "model_checkpoint": mapping({"monitor": string(none=True), "save_top_k": integer(-1), "mode": choice("min", "max"),
                                 "save_weights_only": boolean(), "save_last": choice(True, False, None, "link")},
                                names=_signature(ModelCheckpoint), none=True),
    "save_checkpoint_every_n_epochs": integer(0, none=True),
    "save_last_every_n_steps": integer(0, none=True),
    "max_nonfinite_steps": integer(1),
    "early_stopping": mapping(names=_signature(EarlyStopping), none=True),
    "dynamic_mixing": choice(True),
    "num_srcs_and_weights": weights,
    "prompts": mapping(extra=_prompt_conf),
    "dataset_conf": mapping({
        "train": mapping({"chunk_size": number(0, lo_open=True), "sample_rate": integer(1),
                          "downsample_to_minimum_fs": boolean(), "max_num_src": integer(1, none=True),
                          "json_paths": list_of(string()), "silence_threshold_db": number()}),
        "valid": mapping({"json_path_and_num_data": list_of(_mix_spec, none=True)}, none=True),
        "test": mapping({"json_path_and_num_data": list_of(_mix_spec, none=True)}, none=True)}),
    "css_datasets": list_of(string(), none=True),
    "css_conf": mapping({"segment_size": number(0, lo_open=True), "shift_size": number(0, lo_open=True),
                         "solve_perm": boolean(), "normalize_segment_scale": boolean(), "sample_rate": integer(1)},
                        none=True),
    "variance_normalization": boolean(),
    "encoder_name": string(), "encoder_conf": _stft_conf, "decoder_name": string(), "decoder_conf": _stft_conf,
    "model_name": choice(*MODELS), "model_conf": mapping(extra=anything),
    "loss_func_name": choice(*LOSSES), "loss_func_conf": mapping(extra=anything, none=True),
    "pit_loss": boolean(), "sort_prompts": boolean(), "p_prompt_dropout": number(0, 1, hi_open=True),
    "prompt_dropout": _prompt_dropout_flag, "pretrained_model_path": string(none=True),
    "optimizer_name": choice(*OPTIMIZERS),
    "optimizer_conf": mapping({"lr": number(0, lo_open=True), "weight_decay": number(0),
                               "eps": number(0, lo_open=True)},
                              names=lambda: {"betas", "amsgrad", "foreach", "maximize", "capturable", "differentiable",
                                             "fused"}, none=True),
    "scheduler_name": choice("reducelr", None),
    "scheduler_conf": mapping({"patience": integer(0), "factor": number(0, 1, lo_open=True, hi_open=True)},
                              names=_signature(torch.optim.lr_scheduler.ReduceLROnPlateau), none=True),
    "keep_lr_epochs": integer(0), "warmup_steps": integer(0),
}


def check_training_config(config: Mapping, check_files: bool = False, partial: bool = False) -> None:
    """Check a whole training config; raise :class:`~utils.config.ConfigError` naming the first bad key.

    Args:
        config: the config as run (file plus overrides).
        check_files: also require every manifest of ``dataset_conf`` and ``pretrained_model_path`` to exist (train.py;
            not for a published ``hparams.yaml`` read by eval or separate).
        partial: check only the keys present (tests and examples); otherwise the keys training needs must be there.
    """
    if not isinstance(config, Mapping):
        raise ConfigError(f"a config must be a mapping of keys, got {type(config).__name__}")
    for key, value in config.items():
        if key not in SCHEMA:
            _unknown(str(key), str(key), set(SCHEMA))
        SCHEMA[key](str(key), value)
    if partial:
        return
    for key in ("batch_size", "num_srcs_and_weights", "prompts", "dataset_conf", "model_name", "model_conf"):
        if key not in config:
            raise ConfigError(f"config key '{key}' is missing")
    if "train" not in config["dataset_conf"] or "json_paths" not in config["dataset_conf"]["train"]:
        raise ConfigError("config key 'dataset_conf.train.json_paths' is missing")
    trainer = config.get("trainer_conf") or {}
    if "limit_train_batches" not in trainer:
        raise ConfigError("config key 'trainer_conf.limit_train_batches' is missing: it sets the steps per epoch and "
                          "process (dynamic mixing draws a fresh set each epoch)")
    css = config.get("css_conf") or {}
    if css.get("shift_size", 0) > css.get("segment_size", math.inf):
        raise ConfigError(f"config key 'css_conf.shift_size' must be <= css_conf.segment_size "
                          f"({css['segment_size']}), got {css['shift_size']!r}")
    try:
        build_loss(config.get("loss_func_name", "snr_with_zero_refs"), config.get("loss_func_conf"))
    except (TypeError, ValueError) as err:
        raise ConfigError(f"config key 'loss_func_conf' does not fit {config.get('loss_func_name')}: {err}") from None
    max_src = config["dataset_conf"]["train"].get("max_num_src")
    counts, _ = parse_weights(config["num_srcs_and_weights"])
    if max_src is not None and counts.max() > max_src:
        raise ConfigError(f"config key 'num_srcs_and_weights' gives weight to {int(counts.max())} sources but "
                          f"dataset_conf.train.max_num_src is {max_src}")
    if check_files:
        check_config_files(config)


def check_config_files(config: Mapping) -> None:
    """Require every manifest of ``dataset_conf`` and ``pretrained_model_path`` (when set) to exist."""
    data = config["dataset_conf"]
    paths = [("dataset_conf.train.json_paths", p) for p in data["train"]["json_paths"]]
    for split in ("valid", "test"):
        specs = (data.get(split) or {}).get("json_path_and_num_data") or []
        paths += [(f"dataset_conf.{split}.json_path_and_num_data", spec[0]) for spec in specs]
    for key, path in paths:
        if not Path(path).is_file():
            raise ConfigError(f"config key '{key}': manifest {path} not found (see the README's data preparation, "
                              "or point the key at your manifests)")
    pretrained = config.get("pretrained_model_path")
    if pretrained and not Path(pretrained).exists():
        raise ConfigError(f"config key 'pretrained_model_path': {pretrained} not found")
