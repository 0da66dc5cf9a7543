"""The CLI's root group prints a FitrecError or an OSError as one line with its exit code;
``FITREC_DEBUG=1`` lets the traceback through."""

from __future__ import annotations

import errno
import io
import logging
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from flows.cli.faults import FaultGroup
from pipeline.errors import EX_IOERR, EX_NOINPUT, EX_NOPERM, EX_UNAVAILABLE, StorageError

app = typer.Typer(cls=FaultGroup)


@app.command()
def full() -> None:
    error = OSError(errno.ENOSPC, "No space left on device")
    raise StorageError("ingest of 2026-03-02", Path("/data/curated/x.parquet"), error)


@app.command()
def logged() -> None:
    # What Prefect does when a task fails: an ERROR record with the exception's traceback.
    error = OSError(errno.EROFS, "Read-only file system")
    try:
        raise StorageError("ingest of 2026-03-02", Path("/data/_staging"), error)
    except StorageError as exc:
        logging.getLogger("prefect.task_runs").error("Task run failed: %r", exc, exc_info=True)
        raise


@app.command()
def refused() -> None:
    raise PermissionError(errno.EACCES, "Permission denied", "/data/features")


@app.command()
def missing() -> None:
    raise FileNotFoundError("no raw drops on or before 2026-03-02 in /data/raw")


@app.command()
def down() -> None:
    raise ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")


def _run(*args: str):
    return CliRunner().invoke(app, list(args))


def test_a_storage_error_is_one_line_naming_the_day_and_the_path(monkeypatch):
    monkeypatch.delenv("FITREC_DEBUG", raising=False)
    result = _run("full")
    assert result.exit_code == EX_IOERR
    assert result.stderr == (
        "fitrec: ingest of 2026-03-02 failed: no space left on the device at "
        "/data/curated/x.parquet; nothing was written, free space and run it again\n"
    )


def test_an_unexpected_os_error_is_one_line_too(monkeypatch):
    monkeypatch.delenv("FITREC_DEBUG", raising=False)
    result = _run("refused")
    assert result.exit_code == EX_NOPERM
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("fitrec refused: permission denied at /data/features;")
    assert _run("down").exit_code == EX_UNAVAILABLE
    result = _run("missing")
    assert result.exit_code == EX_NOINPUT
    assert result.stderr.startswith("fitrec missing: no raw drops on or before 2026-03-02 in")


def test_fitrec_debug_lets_the_traceback_through(monkeypatch):
    monkeypatch.setenv("FITREC_DEBUG", "1")
    result = _run("full")
    assert isinstance(result.exception, StorageError)
    with pytest.raises(StorageError):
        CliRunner().invoke(app, ["full"], catch_exceptions=False)


def test_a_logged_fitrec_error_keeps_its_message_and_loses_its_traceback(monkeypatch):
    monkeypatch.delenv("FITREC_DEBUG", raising=False)
    logs = io.StringIO()
    handler = logging.StreamHandler(logs)
    logger = logging.getLogger("prefect.task_runs")
    logger.addHandler(handler)
    try:
        result = _run("logged")
        assert result.exit_code == EX_NOPERM
        assert "Task run failed: StorageError('ingest of 2026-03-02" in logs.getvalue()
        assert "Traceback" not in logs.getvalue()
        monkeypatch.setenv("FITREC_DEBUG", "1")
        _run("logged")
        assert "Traceback" in logs.getvalue()
    finally:
        logger.removeHandler(handler)
