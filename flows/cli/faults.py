"""Faults a user can act on, printed as one line instead of a traceback.

Any :class:`~pipeline.errors.FitrecError` (a full disk, a read-only data folder, a missing
permission, each naming the day and the path) and any other ``OSError`` a command lets
through is printed to stderr as one ``fitrec: ...`` line, and the command exits with the
error's code (the README lists them under "Exit codes"). Flows run through Prefect log a
failed task's traceback; for a FitrecError those log records keep their message (the run's
logs still say what failed, where) but lose the traceback. ``FITREC_DEBUG=1`` keeps every
traceback instead.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import Any

import click
import typer
from typer.core import TyperGroup

from pipeline.errors import FitrecError, describe_os_error

DEBUG_ENV = "FITREC_DEBUG"


def one_line(error: FitrecError | OSError, command: str) -> tuple[str, int]:
    """The line to print for ``error`` (what, where, what to do) and the exit code."""
    if isinstance(error, FitrecError):
        return f"fitrec: {error}", error.exit_code
    what, hint, code = describe_os_error(error)
    where = f" at {error.filename}" if error.filename else ""
    line = f"fitrec {command}: {what}{where}; {hint} and run it again ({DEBUG_ENV}=1: traceback)"
    return line, code


def _debug() -> bool:
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


@contextlib.contextmanager
def _no_tracebacks_of_fitrec_errors() -> Iterator[None]:
    """Log records (Prefect's "Task run failed", "Encountered exception") that carry a
    FitrecError keep their message and drop the traceback, while the block runs."""
    make_record = logging.getLogRecordFactory()

    def record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        made = make_record(*args, **kwargs)
        if made.exc_info and isinstance(made.exc_info[1], FitrecError):
            made.exc_info = None
            made.exc_text = None
        return made

    logging.setLogRecordFactory(record)
    try:
        yield
    finally:
        logging.setLogRecordFactory(make_record)


class FaultGroup(TyperGroup):
    """The root command group: every command and sub-group runs inside :meth:`invoke`."""

    def invoke(self, ctx: click.Context) -> Any:
        if _debug():
            return super().invoke(ctx)
        try:
            with _no_tracebacks_of_fitrec_errors():
                return super().invoke(ctx)
        except (FitrecError, OSError) as error:
            line, code = one_line(error, ctx.invoked_subcommand or "")
            typer.echo(" ".join(line.split()), err=True)  # one line, whatever the message holds
            raise typer.Exit(code) from None
