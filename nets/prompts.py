"""Prompt checking, one function for every model that takes prompts: :class:`nets.TUSS`,
:class:`nets.SeparationModel` and the ONNX Runtime model :class:`nets.onnx.OnnxModel` (docs/architecture.md §5
step 1)."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["PromptError", "check_prompts"]


class PromptError(ValueError):
    """Prompts that the model cannot take (unknown name, unequal counts in a batch)."""


def check_prompts(known_names: Sequence[str] | None, prompts: Sequence[Sequence[str]], batch_size: int) -> None:
    """Raise :class:`PromptError` unless ``prompts`` is ``batch_size`` equal-length, non-empty lists of names in
    ``known_names`` (a model's prompt list, in its order). A model without prompts (``known_names`` ``None``) ignores
    them: nothing is checked.

    >>> check_prompts(("speech", "sfx"), [["sfx", "sfx"]], 1)
    >>> check_prompts(("speech", "sfx"), [["piano"]], 1)
    Traceback (most recent call last):
    ...
    nets.prompts.PromptError: unknown prompt(s) piano; this model knows: speech, sfx
    """
    if known_names is None:
        return
    if isinstance(prompts, str) or len(prompts) != batch_size or any(isinstance(p, str) for p in prompts):
        raise PromptError(f"prompts must be a list of {batch_size} prompt lists (one per item), got {prompts!r}")
    counts = {len(p) for p in prompts}
    if len(counts) != 1 or 0 in counts:
        raise PromptError(f"every batch item needs the same non-zero number of prompts; got {sorted(counts)}")
    unknown = sorted({p for item in prompts for p in item} - set(known_names))
    if unknown:
        known = ", ".join(known_names)
        raise PromptError(f"unknown prompt(s) {', '.join(unknown)}; this model knows: {known}")
