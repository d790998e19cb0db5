"""The settings of a training config and their validation before anything is written.

:data:`SETTINGS` is the one table of the training system's own settings: one :class:`Setting` row per key (its
dotted name, its default, its check, its line in ``train.py --help``, how it is read). :class:`TrainingSettings`
(the defaults, :meth:`TrainingSettings.from_config`), the :data:`SCHEMA` entries of those keys, :data:`DEFAULTS`
and the rows and defaults of ``train.py --help`` (:mod:`training.arguments`) are all derived from it. Keys read by
others (the network's, the data's, Lightning's nested ``trainer_conf``) keep their own :data:`SCHEMA` entries.

:func:`check_training_config` walks the config (the file with its command-line overrides applied) against
:data:`SCHEMA`, the keys of the published ``hparams.yaml`` plus this project's own (docs/architecture.md §8). The first
problem raises :class:`utils.config.ConfigError` with one line naming the dotted key, the value and what was
expected, e.g. ``config key 'batch_size' must be an integer >= 1, got 'four'``; train.py turns it into exit code 2
before the experiment directory is touched. Keys passed to Lightning (``trainer_conf``, ``model_checkpoint``,
``early_stopping``) and to torch (``optimizer_conf``, ``scheduler_conf``) are checked against the signatures of the
classes that receive them, so a typo is reported with the nearest valid name.

This module imports neither torch nor Lightning (``train.py --help`` reads the table): the classes whose signatures
are checked, the networks and the losses are imported on the first check that needs them.

Example::

    >>> check_training_config({"batch_size": "four"}, partial=True)
    Traceback (most recent call last):
    ...
    utils.config.ConfigError: config key 'batch_size' must be an integer >= 1, got 'four'
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import importlib
import inspect
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from utils.config import ConfigError

# OPTIMIZERS is provided by the module's __getattr__ (torch is imported on its first use)
__all__ = ["Setting", "SETTINGS", "TrainingSettings", "check_training_config", "check_config_files",
           "manifest_command", "OPTIMIZERS", "SCHEMA", "DEFAULTS"]  # noqa: F822

Check = Callable[[str, Any], None]

#: optimizer_name -> the class of torch.optim it names (:data:`OPTIMIZERS` holds the classes, imported on first use)
_OPTIMIZER_CLASSES = {"adam": "Adam", "adamw": "AdamW"}

#: the peak learning rate when ``optimizer_conf`` leaves ``lr`` out
DEFAULT_LR = 1e-3


def _fail(key: str, value: Any, expected: str) -> None:
    raise ConfigError(f"config key '{key}' must be {expected}, got {value!r}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def integer(lo: int | None = None, none: bool = False) -> Check:
    """An integer (not a bool), ``>= lo`` when given; ``none``: or null."""
    def check(key: str, v: Any) -> None:
        if v is None and none:
            return
        if not _is_int(v) or (lo is not None and v < lo):
            _fail(key, v, "an integer" + (f" >= {lo}" if lo is not None else "") + (" or null" if none else ""))
    return check


def number(lo: float | None = None, hi: float | None = None, lo_open: bool = False, hi_open: bool = False,
           none: bool = False) -> Check:
    """A finite number (not a bool) within the given bounds (``*_open``: the bound excluded); ``none``: or null."""
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
    """``true`` or ``false`` (``none``: or null)."""
    def check(key: str, v: Any) -> None:
        if not (isinstance(v, bool) or (v is None and none)):
            _fail(key, v, "true or false")
    return check


def choice(*options: Any) -> Check:
    """One of ``options``."""
    def check(key: str, v: Any) -> None:
        if v not in options:
            _fail(key, v, "one of " + ", ".join(repr(o) for o in options))
    return check


def choice_of(options: Callable[[], Sequence[Any]]) -> Check:
    """:func:`choice` among ``options()``, called on the first check (names that live in modules importing torch:
    the networks, the losses)."""
    names = functools.cache(lambda: tuple(options()))

    def check(key: str, v: Any) -> None:
        choice(*names())(key, v)
    return check


def string(none: bool = False) -> Check:
    """A non-empty string (``none``: or null)."""
    def check(key: str, v: Any) -> None:
        if not ((isinstance(v, str) and v) or (v is None and none)):
            _fail(key, v, "a non-empty string" + (" or null" if none else ""))
    return check


def anything(key: str, v: Any) -> None:
    """Any value (checked by whoever reads it)."""
    return None


def weights(key: str, v: Any) -> None:
    """``{count: weight}`` as :func:`datasets.sampler.parse_weights` reads it."""
    from datasets.sampler import parse_weights  # here: numpy is not needed for --help

    try:
        parse_weights(v, key)
    except ValueError as err:
        raise ConfigError(f"config key '{key}': {str(err).removeprefix(key).lstrip(': ')}") from None


def gain(key: str, v: Any) -> None:
    """``[low, high]`` in dB, ``low <= high``."""
    if not (isinstance(v, (list, tuple)) and len(v) == 2 and all(_is_num(x) for x in v) and v[0] <= v[1]):
        _fail(key, v, "[low, high] in dB with low <= high")


def list_of(item: Check, none: bool = False) -> Check:
    """A list whose items pass ``item`` (``none``: or null)."""
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


def _signature(target: str) -> Callable[[], set[str]]:
    """The keyword names of the constructor of ``target`` (``"module:Class"``), imported on the first check: this
    module is imported by ``train.py --help``, which must not wait for torch or Lightning."""
    @functools.cache
    def names() -> set[str]:
        module, _, name = target.partition(":")
        cls = getattr(importlib.import_module(module), name)
        return {p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "args", "kwargs")}
    return names


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


# -- the settings table ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Setting:
    """One setting of a training config (a row of :data:`SETTINGS`).

    Attributes:
        key: the dotted config key (``batch_size``, ``trainer_conf.limit_train_batches``).
        default: the value used when the config leaves the key out or sets it to null (see ``null_is_value``).
        check: the :data:`SCHEMA` entry of a top-level key; ``None`` for a nested key, which its parent's entry
            checks (``trainer_conf``, ``dataset_conf``, ``optimizer_conf``).
        help: its line in ``train.py --help`` (empty: not listed there).
        convert: how the value is read into :class:`TrainingSettings` (``int``, ``dict``...; ``None``: as it is).
        attr: the :class:`TrainingSettings` attribute ("": the key's last part; ``None``: none, the key is read
            where it is used, or documented for ``--help`` only).
        shown: the default as ``--help`` shows it, when not the value itself (``required``, ``-``).
        null_is_value: an explicit null is kept instead of the default (``scheduler_name: null``: no scheduler).
        ours: a key this project adds to the release's ``hparams.yaml`` schema (neutral at its default).
    """

    key: str
    default: Any
    check: Check | None
    help: str = ""
    convert: Callable[[Any], Any] | None = None
    attr: str | None = ""
    shown: str | None = None
    null_is_value: bool = False
    ours: bool = False

    @property
    def name(self) -> str | None:
        """The :class:`TrainingSettings` attribute, or ``None``."""
        return self.key.rsplit(".", 1)[-1] if self.attr == "" else self.attr

    @property
    def shown_default(self) -> str:
        """The default as ``train.py --help`` shows it."""
        if self.shown is not None:
            return self.shown
        return "null" if self.default is None else str(self.default)

    def read(self, config: Mapping) -> Any:
        """This setting's value in ``config`` (a mapping in the hparams schema), converted; the default when absent
        (or null, unless ``null_is_value``)."""
        *parents, last = self.key.split(".")
        node: Any = config
        for part in parents:
            node = node.get(part) or {}
        if last not in node:
            value = self.default
        else:
            value = node[last]
            if value is None and not self.null_is_value:
                value = self.default
        return value if self.convert is None else self.convert(value)


_SCHEDULER_CONF = mapping({"patience": integer(0), "factor": number(0, 1, lo_open=True, hi_open=True)},
                          names=_signature("torch.optim.lr_scheduler:ReduceLROnPlateau"), none=True)
_OPTIMIZER_CONF = mapping({"lr": number(0, lo_open=True), "weight_decay": number(0), "eps": number(0, lo_open=True)},
                          names=lambda: {"betas", "amsgrad", "foreach", "maximize", "capturable", "differentiable",
                                         "fused"}, none=True)
_CSS_CONF = mapping({"segment_size": number(0, lo_open=True), "shift_size": number(0, lo_open=True),
                     "solve_perm": boolean(), "normalize_segment_scale": boolean(), "sample_rate": integer(1)},
                    none=True)
_LOSSES = choice_of(lambda: importlib.import_module("training.losses").LOSSES)

#: every setting of the training system; the rows with a ``help`` are train.py --help's, in this order
SETTINGS: tuple[Setting, ...] = (
    Setting("batch_size", 4, integer(1), "mixtures per step and process (release: 4 medium, 2 large)", int),
    Setting("num_workers", 0, integer(0), "data-loader workers per process (release: 4)", int),
    Setting("seed", 0, integer(), "every mixture derives from (seed, epoch, rank, index)", int),
    Setting("trainer_conf.max_epochs", None, None, "epochs to train; raise it and rerun to train longer (release: 150)",
            attr=None, shown="-"),
    Setting("trainer_conf.limit_train_batches", None, None, "steps per epoch and process (release: 2500)",
            attr="steps_per_epoch", shown="required"),
    Setting("trainer_conf.devices", "auto", None, "devices per node (auto: every GPU, else the CPU)", attr=None),
    Setting("trainer_conf.num_nodes", 1, None,
            "nodes (one launch per node: srun, or NODE_RANK/MASTER_ADDR/MASTER_PORT)", attr=None),
    Setting("trainer_conf.precision", "32-true", None,
            "bf16-mixed in the release configs; 32 where bf16 is slow or missing", attr=None),
    Setting("trainer_conf.strategy", "auto", None,
            "resolved for the hardware: DDP with unused-parameter detection for >1 process", attr=None),
    Setting("optimizer_conf.lr", DEFAULT_LR, None, "peak learning rate (after warmup_steps)", attr=None),
    Setting("warmup_steps", 0, integer(0), "linear warm-up steps (release: 10000)", int),
    Setting("keep_lr_epochs", 0, integer(0), "epochs before ReduceLROnPlateau may act (release: 75)", int),
    Setting("p_prompt_dropout", 0.0, number(0, 1, hi_open=True),
            "per batch, drop each prompt present once in every item", float, ours=True),
    Setting("pretrained_model_path", None, string(none=True),
            "initialise the weights only (.ckpt/.pth or an experiment directory)", attr=None, ours=True),
    Setting("init_new_prompts", {}, mapping(extra=string(), none=True),
            "fine-tuning: a new prompt's vector copies a pretrained one ({piano: other}; else their mean)", dict,
            ours=True, shown="{}"),
    Setting("drop_prompts", False, boolean(), "fine-tuning: allow leaving pretrained prompts out of model_conf.prompts",
            bool, ours=True),
    Setting("freeze", (), list_of(string(), none=True),
            "fine-tuning: modules/parameters of the separator kept fixed (e.g. [band_split_module])", tuple,
            ours=True, shown="[]"),
    Setting("save_last_every_n_steps", 0, integer(0, none=True), "also rewrite last.ckpt every N steps (0: off)", int,
            ours=True),
    Setting("max_nonfinite_steps", 20, integer(1), "non-finite steps in a row that stop the run", int, ours=True),
    Setting("dataset_conf.train.json_paths", None, None, "training manifests (a YAML list)", attr=None, shown="-"),
    # not in --help
    Setting("val_batch_size", 1, integer(1), convert=int),
    Setting("dataset_conf.train.max_num_src", None, None),
    Setting("num_srcs_and_weights", {}, weights, convert=dict),
    Setting("save_checkpoint_every_n_epochs", None, integer(0, none=True), attr=None),
    Setting("loss_func_name", "snr_with_zero_refs", _LOSSES),
    Setting("loss_func_conf", {}, mapping(extra=anything, none=True), convert=dict),
    Setting("pit_loss", False, boolean(), convert=bool),
    Setting("sort_prompts", False, boolean(), convert=bool, ours=True),
    Setting("optimizer_name", "adamw", choice(*_OPTIMIZER_CLASSES)),
    Setting("optimizer_conf", {"lr": DEFAULT_LR}, _OPTIMIZER_CONF, convert=dict),
    Setting("scheduler_name", "reducelr", choice("reducelr", None), null_is_value=True),
    Setting("scheduler_conf", {}, _SCHEDULER_CONF, convert=dict),
    Setting("css_conf", {}, _CSS_CONF, convert=dict),
    Setting("css_datasets", frozenset(), list_of(string(), none=True), convert=frozenset),
)

#: defaults of the keys this project adds to the release's schema (neutral: they change nothing when absent)
DEFAULTS = {s.key: s.default for s in SETTINGS if s.ours}


def _settings_fields(cls: type) -> type:
    """Make ``cls`` the frozen dataclass of the :data:`SETTINGS` rows that have an attribute."""
    cls.__annotations__ = {}
    for s in SETTINGS:
        if s.name is None:
            continue
        cls.__annotations__[s.name] = s.convert if isinstance(s.convert, type) else Any
        mutable = isinstance(s.default, (dict, list, set))
        setattr(cls, s.name, dataclasses.field(default_factory=functools.partial(copy.deepcopy, s.default))
                if mutable else s.default)
    return dataclass(frozen=True)(cls)


@_settings_fields
class TrainingSettings:
    """Every setting the training system reads from a config, with its default (the rows of :data:`SETTINGS`), read
    by :meth:`from_config`; the Lightning module and the data module each hold the settings of their config. A
    published ``hparams.yaml`` reads as the authors' code read it.

    >>> s = TrainingSettings.from_config({"batch_size": 2, "optimizer_conf": {"lr": 5e-4}})
    >>> s.batch_size, s.lr, s.optimizer_name, s.max_nonfinite_steps
    (2, 0.0005, 'adamw', 20)
    """

    @property
    def lr(self) -> float:
        """The peak learning rate, ``optimizer_conf.lr``."""
        return float(self.optimizer_conf.get("lr", DEFAULT_LR))

    @classmethod
    def from_config(cls, config: Mapping) -> TrainingSettings:
        """The settings of ``config`` (a mapping in the hparams schema; unset keys take the defaults)."""
        return cls(**{s.name: s.read(config) for s in SETTINGS if s.name is not None})


# -- the schema ----------------------------------------------------------------------------------------------------

_TRAINER = mapping({"max_epochs": integer(-1, none=True), "max_steps": integer(-1),
                    "limit_train_batches": integer(1), "limit_val_batches": _limit, "limit_test_batches": _limit,
                    "gradient_clip_val": number(0, none=True),
                    "precision": _precision, "strategy": anything, "devices": _devices, "num_nodes": integer(1),
                    "deterministic": choice(True, False, "warn", None), "accumulate_grad_batches": integer(1),
                    "accelerator": string(), "num_sanity_val_steps": integer(-1), "log_every_n_steps": integer(1),
                    "check_val_every_n_epoch": integer(1, none=True), "enable_progress_bar": boolean(),
                    "enable_model_summary": boolean(), "use_distributed_sampler": boolean()},
                   names=_signature("lightning.pytorch:Trainer"))

#: top-level key -> check: the :data:`SETTINGS` rows' and the keys read by others (the network's, the data's,
#: Lightning's); together the keys of the published hparams.yaml plus this project's (see DEFAULTS)
SCHEMA: dict[str, Check] = {
    **{s.key: s.check for s in SETTINGS if s.check is not None},
    "trainer_conf": _TRAINER,
    "model_checkpoint": mapping({"monitor": string(none=True), "save_top_k": integer(-1), "mode": choice("min", "max"),
                                 "save_weights_only": boolean(), "save_last": choice(True, False, None, "link")},
                                names=_signature("lightning.pytorch.callbacks:ModelCheckpoint"), none=True),
    "early_stopping": mapping(names=_signature("lightning.pytorch.callbacks:EarlyStopping"), none=True),
    "dynamic_mixing": choice(True),
    "prompts": mapping(extra=_prompt_conf),
    "dataset_conf": mapping({
        "train": mapping({"chunk_size": number(0, lo_open=True), "sample_rate": integer(1),
                          "downsample_to_minimum_fs": boolean(), "max_num_src": integer(1, none=True),
                          "json_paths": list_of(string()), "silence_threshold_db": number(),
                          "same_song_prob": number(0, 1)}),
        "valid": mapping({"json_path_and_num_data": list_of(_mix_spec, none=True)}, none=True),
        "test": mapping({"json_path_and_num_data": list_of(_mix_spec, none=True)}, none=True)}),
    "variance_normalization": boolean(),
    "encoder_name": string(), "encoder_conf": _stft_conf, "decoder_name": string(), "decoder_conf": _stft_conf,
    "model_name": choice_of(lambda: importlib.import_module("nets").MODELS), "model_conf": mapping(extra=anything),
    "prompt_dropout": _prompt_dropout_flag,
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
    from datasets.sampler import parse_weights  # here, not at the top: see the module docstring
    from training.losses import build_loss

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
            command = manifest_command(path)
            how = (f"make it with: {command}; or point the key at your manifests" if command else
                   "see docs/data.md, or point the key at your manifests")
            raise ConfigError(f"config key '{key}': manifest {path} not found ({how})")
    pretrained = config.get("pretrained_model_path")
    if pretrained and not Path(pretrained).exists():
        raise ConfigError(f"config key 'pretrained_model_path': {pretrained} not found")


#: where the corpus scripts are: ``dataprep/prepare_<corpus>.sh`` writes its manifests into ``$JSON_DIR``
#: (default ``datasets/json_files``; docs/corpora.md §0)
DATAPREP = Path(__file__).resolve().parents[1] / "dataprep"
JSON_DIR = Path("datasets/json_files")
#: the manifests ``python -m datasets.synthetic DIR`` writes into DIR (datasets/synthetic.py, the tiny test configs')
SYNTHETIC_MANIFESTS = ("pools.json", "fixed.json", "fixed_css.json")


def manifest_command(path: str | Path) -> str | None:
    """The command that writes the manifest ``path``, or ``None`` when none of the repository does.

    A manifest named by a ``dataprep/prepare_<corpus>.sh`` (the name as a whole word in the script) is made by
    ``bash dataprep/prepare_<corpus>.sh``, with ``JSON_DIR=<folder>`` in front when ``path`` is not in
    ``datasets/json_files``; one of the synthetic corpus (:data:`SYNTHETIC_MANIFESTS`) by ``python -m
    datasets.synthetic <folder>``.

    >>> manifest_command("datasets/json_files/vctk_48k.json")
    'bash dataprep/prepare_vctk_speech.sh'
    >>> manifest_command("datasets/json_files/synthetic/pools.json")
    'python -m datasets.synthetic datasets/json_files/synthetic'
    """
    path = Path(path)
    word = re.compile(rf"(?<![\w.-]){re.escape(path.name)}(?![\w.-])")
    for script in sorted(DATAPREP.glob("prepare_*.sh")):
        try:
            text = script.read_text()
        except OSError:
            continue
        if word.search(text):
            folder = "" if path.parent == JSON_DIR else f"JSON_DIR={path.parent} "
            return f"{folder}bash dataprep/{script.name}"
    if path.name in SYNTHETIC_MANIFESTS:
        return f"python -m datasets.synthetic {path.parent}"
    return None


def __getattr__(name: str) -> Any:
    """``OPTIMIZERS`` (optimizer_name -> torch.optim class), built on first use: this module imports no torch."""
    if name == "OPTIMIZERS":
        import torch

        optimizers = {key: getattr(torch.optim, cls) for key, cls in _OPTIMIZER_CLASSES.items()}
        globals()["OPTIMIZERS"] = optimizers
        return optimizers
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
