"""Errors a user can act on: one line that says what happened, where, and what to do.

The CLI prints ``fitrec: <message>`` for any :class:`FitrecError` (no traceback) and exits
with its :attr:`~FitrecError.exit_code`; the codes follow BSD's ``sysexits.h`` so scripts and
schedulers can tell a full disk from a bad argument (the README lists them).
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterator
from pathlib import Path

EX_USAGE = 64  # a bad argument or input the user gave
EX_DATAERR = 65  # input that cannot be used as it is
EX_NOINPUT = 66  # an input file or folder does not exist
EX_UNAVAILABLE = 69  # a service the command needs did not answer
EX_SOFTWARE = 70  # a bug: please report it
EX_CANTCREAT = 73  # an output file or folder could not be created
EX_IOERR = 74  # the disk failed or is full
EX_NOPERM = 77  # the process may not write or read where it must


class FitrecError(Exception):
    """An error with a one-line message for people and an exit code for scripts."""

    exit_code: int = EX_SOFTWARE


def describe_os_error(error: OSError) -> tuple[str, str, int]:
    """What the operating system refused, what to do about it, and the exit code for it.

    Returns:
        ``(what, hint, exit_code)``, e.g. ``("no space left on the device", "free space", 74)``.
    """
    code = error.errno
    if code in (errno.ENOSPC, errno.EDQUOT):
        return "no space left on the device", "free space", EX_IOERR
    if code == errno.EROFS:
        return "the file system is read-only", "mount it read-write", EX_NOPERM
    if code in (errno.EACCES, errno.EPERM):
        return "permission denied", "give this user write access", EX_NOPERM
    if isinstance(error, FileNotFoundError):
        return error.strerror or str(error), "check the path", EX_NOINPUT
    if isinstance(error, ConnectionError):
        return error.strerror or str(error), "start the service", EX_UNAVAILABLE
    return error.strerror or str(error), "fix the cause", EX_IOERR


class StorageError(FitrecError):
    """Writing (or reading) fitrec's own files failed: a full disk, a read-only folder, a
    missing permission. Nothing was half-written (the writer's promise), so fixing the cause
    and running the same command again is safe.

    Args:
        action: What was being done, for the message ("ingest of 2026-03-02").
        path: The file or folder the operating system refused.
        error: The operating system's error.
    """

    def __init__(self, action: str, path: Path | str, error: OSError):
        self.action = action
        self.path = Path(path)
        self.errno = error.errno
        what, hint, self.exit_code = describe_os_error(error)
        super().__init__(
            f"{action} failed: {what} at {self.path}; nothing was written, {hint} and run it again"
        )


@contextlib.contextmanager
def storage_errors(action: str, path: Path | str) -> Iterator[None]:
    """Turn the operating system refusing a read or write inside the block into a
    :class:`StorageError` for ``action`` at ``path`` (or the path the error names).

    The writer inside must keep the promise the message makes: nothing half-written. Polars
    reports a refused write as a ComputeError that may not say why ("Invalid thrift:
    transport error"), so writers hand Python the bytes, whose OSError does (see
    ``pipeline.data.staging.write_parquet``).
    """
    try:
        yield
    except OSError as error:
        raise StorageError(action, error.filename or path, error) from error
