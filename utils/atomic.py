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
import errno
import glob
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

__all__ = ["WriteError", "atomic_path", "write_text", "write_bytes", "save_torch", "TMP_PREFIX", "write_error",
           "probe_writable", "StagedFolder", "FolderSwapError", "fsync_file"]

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


def fsync_file(path: str | os.PathLike) -> None:
    """Flush a written file to disk (``fsync``): before a rename makes it visible, its content must be there."""
    _fsync(path)


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
    """``torch.save(obj)`` to ``path`` atomically; returns ``path``.

    Raises:
        WriteError: the write failed, the message naming ``path`` and the operating system's reason (``cannot write
            exp/x/checkpoints/last.ckpt: No space left on device``), not torch's ``enforce fail at
            inline_container.cc ... unexpected pos``.
    """
    import torch  # here, not at the top: the command lines' --help must not wait for torch

    def writer(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a Python file: torch's writer then fails with the OSError of the write
            try:
                torch.save(obj, f)
            except RuntimeError as err:
                cause = err.__context__ or err.__cause__
                if isinstance(cause, OSError):
                    raise cause from None
                if _no_space_left(tmp):
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)) from None
                raise

    return _write_with(path, writer)


def _no_space_left(path: Path) -> bool:
    """Whether the filesystem of ``path`` has no block left for an unprivileged writer."""
    try:
        return os.statvfs(path.parent).f_bavail == 0
    except OSError:
        return False


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


#: the swap's journal in a staging folder: present from the first rename of a swap to its last (docs/separation.md)
JOURNAL_NAME = "swap.json"
#: in a staging folder: held (``flock``) by the live writer; :meth:`StagedFolder.recover` leaves such a folder alone
WRITER_LOCK_NAME = ".writer.lock"
#: in a staging folder whose swap could not be undone: it holds the previous outputs and is never removed
KEPT_NAME = "KEPT"
#: a staging folder without a writer lock is a leftover only when older than this (seconds): one just made has none
LEFTOVER_AGE = 60.0
#: a staging folder renamed so (in one step) when its writer is done with it: only leftovers, removed by anyone
DONE_SUFFIX = ".done"


def _roll_forward(staging: Path, parent: Path, steps: Sequence[Sequence[str | None]],
                  done: list[tuple[Path, Path]] | None = None) -> None:
    """Carry out the renames of a swap's journal (``[target, new or None, aside]``, relative to ``parent``,
    ``staging`` and ``staging`` respectively), skipping those already done: a target whose new version is no longer
    in ``staging`` is complete. Each rename done is appended to ``done`` (``(src, dst)``, for an undo)."""
    for target_rel, new_rel, aside_rel in steps:
        target, aside = parent / target_rel, staging / aside_rel
        new = None if new_rel is None else staging / new_rel
        if new is not None and not os.path.lexists(new):
            continue  # renamed in before a kill
        if os.path.lexists(target) and not os.path.lexists(aside):
            aside.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.replace(target, aside)
            except OSError as err:
                raise write_error(err, target, "replace") from None
            if done is not None:
                done.append((target, aside))
        if new is not None:
            try:
                os.replace(new, target)
            except OSError as err:
                raise write_error(err, target) from None
            if done is not None:
                done.append((new, target))


def _settle(parent: Path, steps: Sequence[Sequence[str | None]], journal: Path) -> None:
    """After the last rename of a swap: its targets' folders flushed, then its journal removed."""
    for folder in {(parent / step[0]).parent for step in steps}:
        _fsync(folder, directory=True)
    journal.unlink()


def _claim_leftover(staging: Path) -> int | None:
    """The staging folder's writer lock, taken (an fd to close; ``-1``: an old folder without one), or ``None`` when
    a live writer holds it, or it is too young to tell (its lock file not yet made)."""
    import fcntl

    try:
        fd = os.open(staging / WRITER_LOCK_NAME, os.O_RDWR)
    except FileNotFoundError:  # made a moment ago (lock not yet created), or by an older writer
        try:
            return -1 if time.time() - staging.stat().st_mtime >= LEFTOVER_AGE else None
        except OSError:
            return None
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:  # a live writer
        os.close(fd)
        return None
    return fd


class StagedFolder:
    """A hidden temporary folder in which a complete set of outputs is written before it replaces the old set.

    ``StagedFolder(parent, prefix)`` makes ``parent/<prefix>XXXX`` (same filesystem as the targets, so every swap is
    a rename). :meth:`swap` replaces each target by its staged counterpart; :meth:`close` removes the staging
    folder and the old outputs moved into it; :meth:`discard` does the same after a failure and removes the parent
    folders that :class:`StagedFolder` created. Used as a context manager, it discards on an exception and closes
    otherwise.

    A swap is journaled: before its first rename, the list of renames is written to ``swap.json`` in the staging
    folder (atomically), and removed after the last. A run killed in between (SIGKILL, power loss) leaves the
    journal; :meth:`recover`, which the next run into ``parent`` calls first, carries out the renames that are left,
    so the targets hold the complete new set; a staging folder without a journal is removed, so they hold the
    complete old one (docs/separation.md, docs/evaluation.md). The writer holds a ``flock`` on the staging folder's
    lock file, so a concurrent :meth:`recover` never touches a live writer's folder.

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
        import fcntl

        parent = Path(parent)
        self.parent = parent
        self._created = [d for d in (parent, *parent.parents) if not os.path.lexists(d)]
        self._fd = -1
        try:
            parent.mkdir(parents=True, exist_ok=True)
            self.path = Path(tempfile.mkdtemp(dir=parent, prefix=prefix))
            self._fd = os.open(self.path / WRITER_LOCK_NAME, os.O_CREAT | os.O_RDWR, 0o644)
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        except OSError as err:
            if self._fd >= 0:
                os.close(self._fd)
            self._remove_created()
            raise write_error(err, parent) from None
        self._keep = False

    @staticmethod
    def recover(parent: str | os.PathLike, prefix: str) -> list[Path]:
        """Finish or remove what killed writers left in ``parent``: each ``<prefix>*`` staging folder not held by a
        live writer is rolled forward when it holds a journal (the targets get the rest of the new set), then
        removed. A folder whose swap could not be undone (it holds the previous outputs) is kept. Returns the
        targets completed.

        Raises:
            WriteError: a rename or removal failed (naming the path).
        """
        parent = Path(parent)
        completed: list[Path] = []
        try:
            entries = sorted(parent.glob(f"{glob.escape(prefix)}*"))
        except OSError:
            return completed
        for staging in entries:
            if staging.is_symlink() or not staging.is_dir() or (staging / KEPT_NAME).exists():
                continue
            if staging.name.endswith(DONE_SUFFIX):  # its writer finished (or failed) and was removing it
                shutil.rmtree(staging, ignore_errors=True)
                continue
            fd = _claim_leftover(staging)
            if fd is None:
                continue
            try:
                journal = staging / JOURNAL_NAME
                if journal.exists():
                    try:
                        steps = json.loads(journal.read_text(encoding="utf-8"))["steps"]
                    except (OSError, ValueError, KeyError, TypeError):
                        continue  # unreadable: written atomically, so never half-written; leave it alone
                    _roll_forward(staging, parent, steps)
                    _settle(parent, steps, journal)
                    completed += [parent / step[0] for step in steps]
                shutil.rmtree(staging, ignore_errors=True)
            finally:
                if fd >= 0:
                    os.close(fd)
        return completed

    def swap(self, pairs: Sequence[tuple[Path, Path | None]]) -> None:
        """For each ``(target, new)``: move the existing ``target`` (if any) into the staging folder, then rename
        ``new`` (a path inside it, or ``None``: the target is only removed) onto ``target``. Renames only, recorded
        in a journal first (see the class); on a failure every rename done is undone, so the targets hold the old
        set again.

        Raises:
            WriteError: a rename failed (naming the target); FolderSwapError when the undo failed too.
        """
        old = Path(tempfile.mkdtemp(dir=self.path, prefix="old-"))
        steps, asides = [], set()
        for i, (target, new) in enumerate(pairs):
            aside = old / target.name
            if aside in asides:  # two targets of one name (in different folders)
                aside = old / f"{target.name}-{i}"
            asides.add(aside)
            present = new is not None and os.path.lexists(new)
            steps.append([os.path.relpath(target, self.parent), os.path.relpath(new, self.path) if present else None,
                          os.path.relpath(aside, self.path)])
        journal = self.path / JOURNAL_NAME
        try:
            write_text(journal, json.dumps({"steps": steps}, indent=1))
        except OSError as err:  # name the outputs' folder, not the journal
            raise write_error(err, self.parent) from None
        done: list[tuple[Path, Path]] = []  # (src, dst) of each rename, to undo in reverse
        try:
            _roll_forward(self.path, self.parent, steps, done)
        except BaseException as err:
            lost = False
            for src, dst in reversed(done):
                try:
                    os.replace(dst, src)
                except OSError:
                    lost = True
            if lost:  # keep the old set where it is rather than remove it with the staging folder
                self._keep = True
                with contextlib.suppress(OSError):
                    write_text(self.path / KEPT_NAME, f"the previous outputs, which could not be put back: {old}\n")
                with contextlib.suppress(OSError):
                    journal.unlink()
                reason = err.strerror if isinstance(err, OSError) else err
                raise FolderSwapError(getattr(err, "errno", None), f"{reason}; the previous outputs could not be "
                                      f"put back: they are in {old}") from None
            with contextlib.suppress(OSError):
                journal.unlink()
            raise
        _settle(self.parent, steps, journal)  # the swap is complete: from here the staging folder is only leftovers

    def close(self) -> None:
        """Remove the staging folder (and the old outputs swapped into it), and release it."""
        if not self._keep:
            done = self.path.with_name(self.path.name + DONE_SUFFIX)
            try:
                os.rename(self.path, done)  # one step: from here on it is leftovers, whoever removes them
            except OSError:
                done = self.path
            shutil.rmtree(done, ignore_errors=True)
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

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
