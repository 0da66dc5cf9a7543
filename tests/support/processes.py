"""One way to run a server process in a test: start it, wait until it is ready, stop it cleanly.

:func:`server_process` replaces the start / poll / stop loops the test modules each had: it
logs to a file, fails early with the log's tail when the process dies before it is ready (or
the readiness check times out), and stops it on the way out (SIGTERM, then SIGKILL), its
whole process group when it forks workers (gunicorn, uvicorn ``--workers``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx


def log_tail(log: Path, chars: int = 3000) -> str:
    """The end of a process's log (empty when there is none yet)."""
    return log.read_text(errors="replace")[-chars:] if log.exists() else ""


def http_ok(url: str, timeout: float = 2) -> Callable[[], bool]:
    """A readiness check: ``url`` answers 200."""

    def check() -> bool:
        try:
            return httpx.get(url, timeout=timeout).status_code == 200
        except httpx.HTTPError:
            return False

    return check


def wait_until(
    ready: Callable[[], bool],
    process: subprocess.Popen,
    log: Path,
    timeout: float,
    interval: float = 0.5,
    what: str = "server",
) -> None:
    """Poll ``ready`` until true; fail with the log's tail if ``process`` exits first or
    ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(
                f"{what} exited with {process.returncode} before it was ready:\n{log_tail(log)}"
            )
        if ready():
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not ready after {timeout:.0f}s:\n{log_tail(log)}")
        time.sleep(interval)


def stop(process: subprocess.Popen, timeout: float = 30, group: bool = False) -> None:
    """SIGTERM, then SIGKILL after ``timeout`` seconds; the process group with ``group``."""
    if process.poll() is not None:
        return

    def send(sig: signal.Signals) -> None:
        try:
            if group:
                os.killpg(process.pid, sig)
            else:
                process.send_signal(sig)
        except ProcessLookupError:
            pass

    send(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        send(signal.SIGKILL)
        process.wait(timeout=timeout)


@contextmanager
def server_process(
    args: Sequence[str],
    log: Path,
    *,
    ready: Callable[[], bool] | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 300,
    interval: float = 0.5,
    group: bool = False,
    stop_timeout: float = 30,
) -> Iterator[subprocess.Popen]:
    """Run ``args`` with its output in ``log``; yields the process once ``ready()`` is true
    (at once without a check), stops it on exit.

    Args:
        args: The command.
        log: File for its stdout and stderr (appended to).
        ready: Readiness check, polled every ``interval`` seconds up to ``timeout``.
        env: Its environment (default: this process's).
        cwd: Its working directory.
        group: Start it in a session of its own and signal the whole group when stopping,
            for servers that fork workers.
        stop_timeout: Seconds between SIGTERM and SIGKILL.

    Raises:
        RuntimeError: It exited or was not ready in time (the message quotes its log).
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        process = subprocess.Popen(
            list(args),
            env=dict(env) if env is not None else None,
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=group,
        )
    try:
        if ready is not None:
            wait_until(ready, process, log, timeout, interval, what=Path(args[0]).name)
        yield process
    finally:
        stop(process, stop_timeout, group)
