"""The command lines' one error path: a single ``error: ...`` line on stderr and the project's exit codes.

Exit codes, everywhere (train.py, eval.py, separate.py and the ``python -m`` tools):

- ``0``: done;
- ``2`` (:data:`USAGE`): a usage, config or input error -- a bad flag or value, a config that does not check, a file
  that is missing, unreadable or unusable (audio, manifest, checkpoint), an unknown prompt. Nothing was written.
- ``1`` (:data:`RUNTIME`): a failure while working -- a full disk, a permission error, a non-finite training loss
  that would not go away. Files written before the failure are intact (writes are atomic, see
  :mod:`utils.atomic`).

Example::

    >>> import contextlib, io
    >>> err = io.StringIO()
    >>> with contextlib.redirect_stderr(err):
    ...     code = report(ValueError("config key 'batch_size' must be a positive integer, got 'four'\\ndetails"), USAGE)
    >>> code, err.getvalue()
    (2, "error: config key 'batch_size' must be a positive integer, got 'four'\\n")
"""

from __future__ import annotations

import sys
from collections.abc import Callable

__all__ = ["USAGE", "RUNTIME", "UsageError", "first_line", "report", "run_main"]

USAGE = 2
RUNTIME = 1


class UsageError(ValueError):
    """A command-line, config or input problem (exit code 2); the message names the input and what was expected."""


def first_line(err: BaseException | str) -> str:
    """The first non-empty line of an error's message (its class name when it has none).

    An error re-raised from a DataLoader worker (``Caught X in DataLoader worker process 0.`` followed by the
    worker's traceback) gives the original message, the traceback's last line without its ``module.Class:``.
    """
    text = str(err).strip()
    if not text and isinstance(err, BaseException):
        return type(err).__name__
    lines = text.splitlines() if text else ["unknown error"]
    if lines[0].startswith("Caught ") and "Original Traceback" in text:
        last = lines[-1].strip()
        name = type(err).__name__ if isinstance(err, BaseException) else ""
        head, sep, rest = last.partition(": ")
        return rest if sep and head.split(".")[-1] == name else last
    return lines[0]


def report(err: BaseException | str, code: int) -> int:
    """Print ``error: <first line>`` to stderr and return ``code``."""
    print(f"error: {first_line(err)}", file=sys.stderr)
    return code


def run_main(fn: Callable[[], int | None], usage: tuple[type[BaseException], ...] = (ValueError,),
             runtime: tuple[type[BaseException], ...] = (OSError, RuntimeError)) -> int:
    """Call ``fn`` and turn the expected errors into one line and an exit code.

    ``usage`` exceptions (default: ``ValueError``, the base of every input error of the project: ``ConfigError``,
    ``AudioError``, ``CheckpointError``, ``ManifestError``, ``PromptError``…) give :data:`USAGE`; ``runtime`` ones
    (default ``OSError`` -- which includes :class:`utils.atomic.WriteError` -- and ``RuntimeError``) give
    :data:`RUNTIME`. Anything else is a bug and keeps its traceback.
    """
    try:
        return int(fn() or 0)
    except usage as err:
        return report(err, USAGE)
    except runtime as err:
        return report(err, RUNTIME)
