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
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

__all__ = ["WriteError", "atomic_path", "write_text", "write_bytes", "save_torch", "TMP_PREFIX", "write_error",
           "probe_writable", "StagedFolder", "FolderSwapError"]

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
    import torch  # here, not at the top: the command lines' --help must not wait for torch

    return _write_with(path, lambda tmp: torch.save(obj, tmp))


# -- folders of outputs: staged, then swapped in as a whole --------------------------------------------------------

def _reason(err: OSError, staged: Path | None = None) -> str:
    """The operating system's reason of an error, without a path (``No space left on device``)."""
    if err.errno:
        return os.strerror(err.errno)
    text = err.strerror or str(err)
    prefix = f"cannot write {staged}: "
    if staged is not None and text.startswith(prefix):  # a WriteError of the staged file without errno
        text = text[len(prefix):]
    return text or type(err).__name__


def write_error(err: OSError, path: str | os.PathLike, verb: str = "write", staged: Path | None = None) -> WriteError:
    """A :class:`WriteError` naming ``path`` (what the user will look for, not a temporary file ``staged``) and the
    reason of ``err``: ``cannot write out/wav/mix.wav: No space left on device``."""
    return WriteError(err.errno, f"cannot {verb} {path}: {_reason(err, staged)}")


def _existing_ancestor(path: Path) -> Path:
    path = Path(os.path.abspath(path))
    while not os.path.lexists(path) and path.parent != path:
        path = path.parent
    return path


def probe_writable(folder: str | os.PathLike) -> None:
    """Check that ``folder`` can be written -- or, when it does not exist yet, created (its nearest existing parent
    writable) -- by making and removing a folder there: the one reliable test (``access()`` ignores read-only mounts
    and ACLs). Nothing is left behind.

    Raises:
        ValueError: a file stands where a parent folder must be (a usage error: another folder must be chosen).
        WriteError: the folder cannot be written or created (``cannot create out: Permission denied``).
    """
    folder = Path(folder)
    base = _existing_ancestor(folder)
    if not base.is_dir():
        raise ValueError(f"cannot create output folder {folder}: {base} is not a folder")
    try:
        os.rmdir(tempfile.mkdtemp(dir=base, prefix=".write-test-"))
    except OSError as err:
        raise write_error(err, folder, "write" if base == Path(os.path.abspath(folder)) else "create") from None


class FolderSwapError(WriteError):
    """A swap that failed and whose undo failed too: the previous outputs are kept in the staging folder, which the
    message names, and which is therefore not removed."""


class StagedFolder:
    """A hidden temporary folder in which a complete set of outputs is written before it replaces the old set.

    ``StagedFolder(parent, prefix)`` makes ``parent/<prefix>XXXX`` (same filesystem as the targets, so every swap is
    a rename). :meth:`swap` replaces each target folder by its staged counterpart; :meth:`close` removes the staging
    folder and the old outputs moved into it; :meth:`discard` does the same after a failure and removes the parent
    folders that :class:`StagedFolder` created. Used as a context manager, it discards on an exception and closes
    otherwise.

    Example::

        >>> import tempfile, pathlib
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "out"
        >>> with StagedFolder(out, ".separating-") as staged:
        ...     _ = write_text(staged.path / "wav" / "mix.txt", "new")
        ...     staged.swap([(out / "wav", staged.path / "wav")])
        >>> (out / "wav" / "mix.txt").read_text(), sorted(p.name for p in out.iterdir())
        ('new', ['wav'])
    """

    def __init__(self, parent: str | os.PathLike, prefix: str):
        parent = Path(parent)
        self._created = [d for d in (parent, *parent.parents) if not os.path.lexists(d)]
        try:
            parent.mkdir(parents=True, exist_ok=True)
            self.path = Path(tempfile.mkdtemp(dir=parent, prefix=prefix))
        except OSError as err:
            self._remove_created()
            raise write_error(err, parent) from None
        self._keep = False

    def swap(self, pairs: Sequence[tuple[Path, Path | None]]) -> None:
        """For each ``(target, new)``: move the existing ``target`` (if any) into the staging folder, then rename
        ``new`` (a path inside it, or ``None``: the target is only removed) onto ``target``. Renames only; on a
        failure every rename done is undone, so the targets hold the old set again.

        Raises:
            WriteError: a rename failed (naming the target); FolderSwapError when the undo failed too.
        """
        old = Path(tempfile.mkdtemp(dir=self.path, prefix="old-"))
        done: list[tuple[Path, Path]] = []  # (src, dst) of each rename, to undo in reverse
        try:
            for i, (target, new) in enumerate(pairs):
                if os.path.lexists(target):
                    aside = old / target.name
                    if os.path.lexists(aside):  # two targets of one name (in different folders)
                        aside = old / f"{target.name}-{i}"
                    try:
                        os.replace(target, aside)
                    except OSError as err:
                        raise write_error(err, target, "replace") from None
                    done.append((target, aside))
                if new is not None and os.path.lexists(new):
                    try:
                        os.replace(new, target)
                    except OSError as err:
                        raise write_error(err, target) from None
                    done.append((new, target))
        except BaseException as err:
            lost = False
            for src, dst in reversed(done):
                try:
                    os.replace(dst, src)
                except OSError:
                    lost = True
            if lost:  # keep the old set where it is rather than remove it with the staging folder
                self._keep = True
                reason = err.strerror if isinstance(err, OSError) else err
                raise FolderSwapError(getattr(err, "errno", None), f"{reason}; the previous outputs could not be "
                                      f"put back: they are in {old}") from None
            raise
        for target in {p[0].parent for p in pairs}:
            _fsync(target, directory=True)

    def close(self) -> None:
        """Remove the staging folder (and the old outputs swapped into it)."""
        if not self._keep:
            shutil.rmtree(self.path, ignore_errors=True)

    def discard(self) -> None:
        """After a failure: remove the staging folder (unless it holds outputs that could not be put back) and the
        parent folders that were created for it, when empty."""
        self.close()
        if not self._keep:
            self._remove_created()

    def _remove_created(self) -> None:
        for folder in self._created:  # deepest first
            try:
                folder.rmdir()
            except OSError:
                return

    def __enter__(self) -> StagedFolder:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.discard()
