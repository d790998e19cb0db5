"""Experiment configuration: a YAML file (or a published ``hparams.yaml``) as one attribute-accessible object.

Keys the project does not know are kept unchanged, so a published ``hparams.yaml`` loads, round-trips and can be
passed straight to the Lightning Trainer. Files are parsed with ``yaml.safe_load``; nothing in a config is executed.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from utils.atomic import write_text
from utils.cli import first_line

__all__ = ["Config", "load_config", "save_config", "apply_overrides", "parse_value", "ConfigError"]


class ConfigError(ValueError):
    """A configuration file or override that cannot be used (the message names the file or key)."""


class Config(dict):
    """A ``dict`` whose string keys can also be read and written as attributes (recursively).

    >>> cfg = Config({"model_conf": {"emb_dim": 64}})
    >>> cfg.model_conf.emb_dim
    64
    >>> cfg.get("missing") is None
    True
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(key, _wrap(value))

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"config has no key {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __delattr__(self, name: str) -> None:
        try:
            del self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __deepcopy__(self, memo: dict) -> Config:
        return Config(copy.deepcopy(self.to_dict(), memo))

    def update(self, *args: Any, **kwargs: Any) -> None:  # keep wrapping on update()
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def to_dict(self) -> dict:
        """Plain nested ``dict``/``list`` copy (what YAML and Lightning's ``save_hyperparameters`` expect)."""
        return _unwrap(self)


def _wrap(value: Any) -> Any:
    if isinstance(value, Config):
        return value
    if isinstance(value, Mapping):
        return Config(value)
    if isinstance(value, list):
        return [_wrap(v) for v in value]
    return value


def _unwrap(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _unwrap(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_unwrap(v) for v in value]
    return value


#: the largest config file read (bytes); configs are kilobytes: a larger file is refused unread
MAX_CONFIG_BYTES = 4 * 1024 * 1024
#: the most values (mappings, lists and scalars) a config may hold once its YAML aliases are expanded
MAX_CONFIG_VALUES = 200_000


def _expanded_size(data: Any, limit: int) -> int:
    """How many values ``data`` holds with every shared (aliased) part counted at each of its places, computed
    without expanding it (each distinct container once); stops counting past ``limit``."""
    sizes: dict[int, int] = {}

    def size(node: Any) -> int:
        if not isinstance(node, (Mapping, list)):
            return 1
        if id(node) in sizes:
            return sizes[id(node)]
        sizes[id(node)] = limit + 1  # a cycle (a recursive alias) counts as too large
        children = list(node.values()) if isinstance(node, Mapping) else node
        total = 1
        for child in children:
            total += size(child)
            if total > limit:
                break
        sizes[id(node)] = min(total, limit + 1)
        return sizes[id(node)]

    return size(data)


def _check_size(data: Any, what: str) -> None:
    if _expanded_size(data, MAX_CONFIG_VALUES) > MAX_CONFIG_VALUES:
        raise ConfigError(f"{what} expands to more than {MAX_CONFIG_VALUES} values (YAML aliases repeating "
                          "anchors, or a recursive alias): refused, it is not a config")


def load_config(source: str | os.PathLike | Mapping) -> Config:
    """Load an experiment config from a YAML path or a mapping.

    Args:
        source: path to a ``.yaml`` file (experiment config or a published ``hparams.yaml``), or a dict.

    Returns:
        A :class:`Config`; unknown keys are preserved.

    Raises:
        ConfigError: the file is missing, is not valid YAML, or its top level is not a mapping.
    """
    if isinstance(source, Mapping):  # e.g. the config a checkpoint carries: shared parts are expanded too
        _check_size(source, "the config")
        return Config(copy.deepcopy(_unwrap(source)))
    path = Path(source)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    size = path.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise ConfigError(f"config file {path} is {size / 2**20:.1f} MiB: refused unread (a config is at most "
                          f"{MAX_CONFIG_BYTES // 2**20} MiB; is it the right file?)")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {err}".replace("\n", " ")) from None
    except (UnicodeDecodeError, RecursionError) as err:
        raise ConfigError(f"config file {path} cannot be read as a YAML text ({first_line(err)})") from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"config file {path} must hold a mapping of keys, got {type(data).__name__}")
    _check_size(data, f"config file {path}")
    return Config(data)


def save_config(config: Mapping, path: str | os.PathLike) -> None:
    """Write a config as YAML, atomically (temporary file then rename), keeping key order."""
    write_text(path, yaml.safe_dump(_unwrap(config), sort_keys=False))


def parse_value(text: str) -> Any:
    """A command-line value as YAML (``2``, ``true``, ``null``, ``[1, 2]``), with ``5e-4``-style floats read as
    numbers (YAML 1.1 would keep them as strings)."""
    value = yaml.safe_load(text)
    _check_size(value, f"the value {text[:40]!r}")
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def apply_overrides(config: Config, overrides: Mapping[str, str]) -> Config:
    """Set config values by dotted name (``{"trainer_conf.max_epochs": "2"}``), parsing each value as YAML.

    Intermediate mappings are created when missing; a dotted path through a non-mapping value is an error.
    """
    for dotted, raw in overrides.items():
        try:
            value = parse_value(raw) if isinstance(raw, str) else raw
        except yaml.YAMLError as err:
            raise ConfigError(f"--{dotted} {raw!r} is not a valid YAML value ({first_line(err)})") from None
        node: Any = config
        parts = dotted.split(".")
        for part in parts[:-1]:
            if part not in node or node[part] is None:
                node[part] = Config()
            node = node[part]
            if not isinstance(node, Mapping):
                raise ConfigError(f"cannot override {dotted!r}: {part!r} is not a mapping")
        node[parts[-1]] = value
    return config
