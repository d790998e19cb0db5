"""Shared test helpers: tiny models in the published on-disk layout."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import soundfile as sf
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


def tone_noise(n: int, sr: int, channels: int = 1, seed: int = 0):
    """``(channels, n)`` float32 test audio: a tone per channel (220 Hz + 110 Hz per channel) plus a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / sr
    x = [0.3 * np.sin(2 * np.pi * (220 + 110 * c) * t) + 0.05 * rng.standard_normal(n) for c in range(channels)]
    return np.stack(x).astype(np.float32)


def write_wav(path, audio, sr: int, subtype: str = "PCM_16"):
    """Write ``(channels, n)`` or ``(n,)`` audio with soundfile directly (the test's own writer); returns ``path``."""
    sf.write(str(path), np.atleast_2d(audio).T, sr, subtype=subtype)
    return path
