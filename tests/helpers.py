"""Shared test helpers: tiny models in the published on-disk layout."""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from utils.config import save_config

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def load_fixture(name: str) -> dict:
    """A reference fixture (``tuss`` or ``conventional``): hparams, state_dict, mix and reference outputs."""
    return torch.load(FIXTURES / f"reference_{name}_tiny.pt", weights_only=True)


def write_published_layout(root: Path, hparams: dict, state_dict: dict, name: str = "model.pth") -> Path:
    """Write ``root/hparams.yaml`` and ``root/checkpoints/<name>`` (a ``.pth`` state dict or a Lightning-style
    ``.ckpt`` dict) as the published models are laid out; return the checkpoint path."""
    save_config(hparams, root / "hparams.yaml")
    ckpt = root / "checkpoints" / name
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    obj = {"state_dict": state_dict, "epoch": 3, "global_step": 30} if name.endswith(".ckpt") else state_dict
    torch.save(obj, ckpt)
    return ckpt


def tiny_tuss_hparams(**model_conf) -> dict:
    """The reference tiny TUSS hparams with ``model_conf`` entries replaced."""
    hp = copy.deepcopy(load_fixture("tuss")["hparams"])
    hp["model_conf"].update(model_conf)
    return hp
