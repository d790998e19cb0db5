"""Atomic file writes: the project's one way to put a file on disk.

Every file the project writes (checkpoints, exported weights, configs, manifests, results, separated audio) goes
through :func:`atomic_path`: the content is written to a temporary file *beside* the target (same directory, so the
same filesystem), flushed and ``fsync``'d, then renamed onto the target with ``os.replace`` and the directory entry
``fsync``'d. A reader therefore sees the old file or the new one, never a half-written one; a write that fails (full
disk, permission, a crash of the writer) leaves the previous file untouched and no partial file behind.

Errors from the operating system are re-raised as :class:`WriteError` (an ``OSError``) whose message names the
target path, e.g. ``cannot write exp/oss/x/checkpoints/last.ckpt: No space left on device``.

Example::

    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "result.txt"
    >>> with atomic_path(target) as tmp:
    ...     _ = tmp.write_text("snr: 10.00\\n")
    >>> target.read_text()
    'snr: 10.00\\n'
    >>> _ = write_text(target, "sisnr: 9.00\\n")
    >>> target.read_text()
    'sisnr: 9.00\\n'
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

__all__ = ["WriteError", "atomic_path", "write_text", "write_bytes", "save_torch", "TMP_PREFIX"]

#: temporary files start with this prefix (hidden, and never matched by ``*.ckpt`` / ``*.pth`` lookups)
TMP_PREFIX = ".tmp-"

_UMASK = os.umask(0)
os.umask(_UMASK)


class WriteError(OSError):
    """A file could not be written; the message names the path and the reason (``errno`` is kept)."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()


def _fsync(path: str | os.PathLike, directory: bool = False) -> None:
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        if directory:  # some filesystems do not allow opening directories: the rename is still atomic
            return
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not directory:
            raise
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block succeeds it replaces ``path`` atomically.

    Args:
        path: the target file (its directory is created if needed).
        suffix: suffix of the temporary file (default ``.tmp``; give the target's suffix to writers that pick the
            format from the file name).

    Raises:
        WriteError: the directory, the write, the flush or the rename failed (message names ``path``); the
            temporary file is removed and ``path`` is left as it was. Other exceptions of the block propagate
            unchanged (after the same clean-up).
    """
    final = Path(path)
    tmp: Path | None = None
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=final.parent, prefix=f"{TMP_PREFIX}{final.name}.", suffix=suffix or ".tmp")
        os.close(fd)
        tmp = Path(name)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the file the permissions open() would
        yield tmp
        _fsync(tmp)
        os.replace(tmp, final)
        tmp = None
        _fsync(final.parent, directory=True)
    except WriteError:
        raise
    except OSError as err:
        raise WriteError(err.errno, f"cannot write {final}: {err.strerror or err}") from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                tmp.unlink()


def _write_with(path: str | os.PathLike, writer: Callable[[Path], Any], suffix: str | None = None) -> Path:
    with atomic_path(path, suffix) as tmp:
        writer(tmp)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns ``path``."""
    return _write_with(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``path``."""
    return _write_with(path, lambda tmp: tmp.write_bytes(data))


def save_torch(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj)`` to ``path`` atomically; returns ``path``."""
    return _write_with(path, lambda tmp: torch.save(obj, tmp))
