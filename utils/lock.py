"""One run per experiment directory: an exclusive lock file holding the host and PID of the run that owns it.

The lock is ``fcntl.flock`` on ``train.lock``, held for the whole run: the kernel (and an NFSv4 server) gives it to
one process at a time and drops it when that process dies, so two runs that find the same stale file cannot both
take it over (docs/training.md, "One run per experiment"). The file also records the holder (host, PID, start
time) for the messages. A second run is refused with :class:`LockedError` naming the holder. A file left by a run
that died (same host, process gone or its PID reused) is taken over with a warning; one recording a run on another
host is respected (delete the file when that run is known to be gone); one that cannot be read as a record is
taken over once nobody has touched it for a minute.

Example::

    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> with ExperimentLock(folder) as lock:
    ...     try:
    ...         ExperimentLock(folder).acquire()
    ...     except LockedError as err:
    ...         print(str(err).split(" (")[0])  # doctest: +ELLIPSIS
    experiment directory ... is in use by another run
    >>> lock.path.exists()
    False
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import time
from pathlib import Path

__all__ = ["ExperimentLock", "LockedError", "LOCK_NAME"]

log = logging.getLogger(__name__)

LOCK_NAME = "train.lock"


class LockedError(ValueError):
    """The experiment directory is in use by another run (exit code 2: nothing was done)."""


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), to tell a live run from a reused PID."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    now = _start_time(pid)
    return start is None or now is None or now == start


class ExperimentLock:
    """``<folder>/train.lock``; use as a context manager or with :meth:`acquire` / :meth:`release`."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._owned = False
        self._fd = -1

    def _holder(self) -> dict | None:
        """The lock's content, ``None`` when there is no lock, ``{}`` when it cannot be read as the record this class
        writes (being written, damaged, or JSON of another shape such as ``[1]``, ``5`` or ``null``)."""
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}  # being written, or damaged
        return data if isinstance(data, dict) else {}

    def acquire(self) -> ExperimentLock:
        """Take the lock (creating the folder).

        Raises:
            LockedError: another live run holds it (message names host, PID and start time).
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        me = {"host": socket.gethostname(), "pid": os.getpid(), "start": _start_time(os.getpid()),
              "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        for _ in range(5):
            fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise self._refusal(self._holder() or {}) from None
            except BaseException:
                os.close(fd)
                raise
            try:
                if not self._is_current(fd):  # released (unlinked) between our open and flock: start again
                    os.close(fd)
                    continue
                holder = self._read(fd)
                if holder is not None:  # a record left behind, or written by a run that does not flock
                    if not self._stale(holder, me["host"]):
                        raise self._refusal(holder)
                    log.warning("taking over the lock %s of a run that is gone (host %s, PID %s, since %s)",
                                self.path, holder.get("host"), holder.get("pid"), holder.get("since"))
                data = json.dumps(me).encode()
                os.ftruncate(fd, 0)
                os.pwrite(fd, data, 0)
                os.fsync(fd)
            except BaseException:
                os.close(fd)
                raise
            self._fd = fd
            self._owned = True
            return self
        raise LockedError(f"could not take the lock {self.path} (it keeps changing: another run is starting)")

    def _is_current(self, fd: int) -> bool:
        """Whether ``fd`` is still the file at :attr:`path` (a releasing run unlinks it before closing)."""
        try:
            now, held = os.stat(self.path), os.fstat(fd)
        except FileNotFoundError:
            return False
        return (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino)

    def _read(self, fd: int) -> dict | None:
        """The record in the locked file: ``None`` when it is empty (new), ``{}`` when it is not a record."""
        raw = os.pread(fd, 1 << 16, 0)
        if not raw:
            return None
        try:
            data = json.loads(raw)
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}

    def _refusal(self, holder: dict) -> LockedError:
        return LockedError(f"experiment directory {self.folder} is in use by another run (host "
                           f"{holder.get('host', '?')}, PID {holder.get('pid', '?')}, since "
                           f"{holder.get('since', '?')}); wait for it to end, use another --exp_dir, or delete "
                           f"{self.path} if that run is gone")

    def _stale(self, holder: dict, host: str) -> bool:
        if not holder:  # unreadable: stale only if nobody has touched it for a while
            try:
                return time.time() - self.path.stat().st_mtime > 60
            except OSError:
                return True
        if holder.get("host") != host:
            return False
        pid = holder.get("pid")
        return not isinstance(pid, int) or not _alive(pid, holder.get("start"))

    def release(self) -> None:
        """Remove the lock file and drop the lock, if this object holds it."""
        if self._owned:
            try:
                if self._is_current(self._fd):
                    self.path.unlink(missing_ok=True)  # before the flock is dropped: a waiter then finds a new file
            finally:
                os.close(self._fd)
                self._owned = False

    def __enter__(self) -> ExperimentLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
