"""Fine-tuning a pretrained TUSS: new prompts, dropped prompts, frozen modules (docs/finetuning.md).

Three config keys, read when ``pretrained_model_path`` initialises the weights of a run:

- ``model_conf.prompts`` may name prompts the checkpoint lacks (*new* prompts). A new prompt's vector starts as a
  copy of a pretrained prompt's, ``init_new_prompts: {piano: other}``, or, for a new prompt not listed there, as the
  mean of the pretrained prompt vectors. Every other tensor loads strictly (name and shape).
- A pretrained prompt that ``model_conf.prompts`` leaves out is refused, unless ``drop_prompts: true``.
- ``freeze: [band_split_module, cross_prompt_module, prompts.speech, ...]``: the parameters under these paths of the
  separator (modules or single parameters, as in its state dict without ``separator.``) get no gradient and stay out
  of the optimizer. A resumed run freezes the same ones (the Lightning module applies them when it is built).

Errors are :class:`~utils.config.ConfigError` (train.py: exit 2, before anything is written).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import nn

from utils.config import ConfigError

__all__ = ["PROMPT_PREFIX", "adapt_prompts", "freeze_parameters", "parameter_counts"]

log = logging.getLogger(__name__)

#: the state-dict prefix of TUSS prompt vectors (after the ``model.`` prefix is removed)
PROMPT_PREFIX = "separator.prompts."


def _prompt_names(state: Mapping[str, torch.Tensor]) -> list[str]:
    return [k[len(PROMPT_PREFIX):] for k in state if k.startswith(PROMPT_PREFIX)]


def adapt_prompts(state: Mapping[str, torch.Tensor], model_prompts: Sequence[str] | None,
                  init_new_prompts: Mapping[str, str] | None = None, drop_prompts: bool = False,
                  source: str = "the checkpoint") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """``state`` (keys without the ``model.`` prefix) fitted to a model with the prompts ``model_prompts``.

    Returns:
        ``(state, new)``: the state dict with a vector for every new prompt and without the dropped ones, and
        ``{new prompt: its initialisation}`` (``"copy of other"``, ``"mean of 8 pretrained prompts"``).

    Raises:
        ConfigError: a pretrained prompt left out without ``drop_prompts``; an ``init_new_prompts`` entry whose key is
            not a new prompt or whose value is not a prompt of the checkpoint.
    """
    init_new_prompts = dict(init_new_prompts or {})
    pretrained = _prompt_names(state)
    if model_prompts is None or not pretrained:  # not a TUSS checkpoint/model: nothing to adapt
        if init_new_prompts:
            raise ConfigError("config key 'init_new_prompts' needs a TUSS model and a TUSS pretrained_model_path")
        return dict(state), {}
    new = [p for p in model_prompts if p not in pretrained]
    dropped = [p for p in pretrained if p not in model_prompts]
    if dropped and not drop_prompts:
        raise ConfigError(f"model_conf.prompts leaves out the pretrained prompt(s) {', '.join(dropped)} of {source}: "
                          "add them, or set 'drop_prompts: true' to train without them")
    for name, init in init_new_prompts.items():
        if name not in new:
            why = "a pretrained prompt" if name in pretrained else "not in model_conf.prompts"
            raise ConfigError(f"config key 'init_new_prompts.{name}': {name} is {why}; only new prompts (in "
                              f"model_conf.prompts, not in {source}) are initialised: {', '.join(new) or 'none'}")
        if init not in pretrained:
            raise ConfigError(f"config key 'init_new_prompts.{name}': {init!r} is not a prompt of {source} (it has: "
                              f"{', '.join(pretrained)})")
    out = {k: v for k, v in state.items() if not (k.startswith(PROMPT_PREFIX) and k[len(PROMPT_PREFIX):] in dropped)}
    kept = [p for p in pretrained if p not in dropped] or pretrained
    vectors = [state[PROMPT_PREFIX + p] for p in kept]
    how: dict[str, str] = {}
    for name in new:
        if name in init_new_prompts:
            out[PROMPT_PREFIX + name] = state[PROMPT_PREFIX + init_new_prompts[name]].clone()
            how[name] = f"copy of {init_new_prompts[name]}"
        elif len({v.shape for v in vectors}) == 1:  # (else a shape mismatch, which loading reports by name)
            out[PROMPT_PREFIX + name] = torch.stack(vectors).mean(0)
            how[name] = f"mean of {len(kept)} pretrained prompts"
    for name, init in how.items():
        log.info("new prompt %s: initialised as the %s", name, init)
    if dropped:
        log.info("dropped pretrained prompt(s): %s", ", ".join(dropped))
    return out, how


def _top_level(separator: nn.Module) -> list[str]:
    return sorted([*dict(separator.named_children()), *dict(separator.named_parameters(recurse=False))])


def freeze_parameters(model: nn.Module, paths: Iterable[str]) -> list[str]:
    """Freeze (``requires_grad = False``) the parameters of ``model.separator`` under each of ``paths`` (a module
    such as ``cross_prompt_module`` or ``prompts``, or a parameter such as ``prompts.speech``; a leading
    ``separator.`` is allowed); returns the frozen parameter names.

    Raises:
        ConfigError: a path that names nothing in the separator (listing its top-level modules).
    """
    separator = getattr(model, "separator", model)
    params = dict(separator.named_parameters())
    frozen: list[str] = []
    for path in paths:
        rel = path[len("separator."):] if path.startswith("separator.") else path
        names = [n for n in params if n == rel or n.startswith(rel + ".")] if rel else []
        if not names:
            raise ConfigError(f"config key 'freeze': {path!r} is not a module or parameter of the model; its "
                              f"top-level modules: {', '.join(_top_level(separator))}")
        for n in names:
            params[n].requires_grad_(False)
        frozen += [n for n in names if n not in frozen]
    return frozen


def parameter_counts(model: nn.Module) -> tuple[int, int]:
    """``(trainable, total)`` parameter counts of ``model``."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)
