"""Process-level runtime settings: the CPU allocator tuning (applied by the command lines and by ``nets.load_model``,
never on import), the choice of device, and this process's rank as its launcher set it."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

import torch

from utils.cli import first_line

__all__ = ["configure_cpu_allocator", "pick_device", "launch_rank"]

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_configured = False


def configure_cpu_allocator() -> bool:
    """Let glibc keep large freed blocks for reuse instead of mapping fresh pages for every big tensor.

    PyTorch's CPU allocator calls ``malloc`` for each tensor; glibc serves blocks above its mmap threshold
    (at most 32 MB by default) with new mappings whose pages fault and are zeroed on first touch, then unmaps them on
    free. The medium TUSS forward allocates hundreds of such tensors, and this page-fault traffic cost about 30 % of
    its CPU time (benchmarks/bench_forward.py: 7.6 s -> 5.5 s). Raising the mmap and trim thresholds makes the heap
    reuse those blocks; peak memory is unchanged, but freed memory is kept by the process.

    Returns ``True`` when applied (Linux with glibc), ``False`` elsewhere or when the environment sets
    ``TUSS_ALLOCATOR_TUNING=0`` (the opt-out). Idempotent.
    """
    global _configured
    if _configured:
        return True
    if os.environ.get("TUSS_ALLOCATOR_TUNING", "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    big = ctypes.c_int(2**31 - 1)
    _configured = bool(mallopt(_M_MMAP_THRESHOLD, big)) and bool(mallopt(_M_TRIM_THRESHOLD, big))
    return _configured


def pick_device(name: str | None = None) -> torch.device:
    """``name`` (``cpu``, ``cuda``, ``cuda:1``, ``mps``) or, when ``None``, CUDA, then MPS, then CPU.

    Raises:
        ValueError: not a device name, or the named device is not available here (the message names ``--device``).
    """
    if name is None:
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:  # torch.device("gpu")
        raise ValueError(f"--device {name}: not a device name ({first_line(err)}); expected cpu, cuda, "
                         "cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"--device {name}: MPS is not available on this machine")
    return device


def launch_rank() -> int:
    """This process's global rank as its launcher set it (before Lightning sets up): 0 for the process a user
    started, >0 for the other processes of a run on several (Lightning's children, torchrun, SLURM tasks, other
    nodes)."""
    for var in ("RANK", "SLURM_PROCID", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK"):
        value = os.environ.get(var)
        if value and value.isdigit() and int(value) > 0:
            return int(value)
    return 0
