"""Prefect's ephemeral API starts every time, on a busy machine too: flows.runtime starts it
with a generous timeout and one retry on a fresh server, while busy loops hold the cores."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# A flow run by hand on Prefect's ephemeral API, the way `fitrec run` runs one; the
# arguments, if any, are the start-up timeouts to try.
SCRIPT = """
import sys

from prefect import flow

from flows.runtime import start_prefect_api

timeouts = tuple(int(t) for t in sys.argv[1:])
url = start_prefect_api(timeouts) if timeouts else start_prefect_api()
assert url, "no ephemeral API was started"


@flow
def add(a: int, b: int) -> int:
    return a + b


assert add(2, 3) == 5
print(url)
"""


@pytest.fixture
def busy_machine() -> Iterator[None]:
    """Busy loops on every core (at least two, at most four) for the test's duration."""
    count = max(2, min(4, os.cpu_count() or 2))
    loops = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield
    finally:
        for loop in loops:
            loop.kill()
            loop.wait()


def _run_flow(tmp_path: Path, *timeouts: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env |= {"PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_SERVER_EPHEMERAL_ENABLED": "true"}
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, *timeouts],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_the_ephemeral_api_starts_on_a_busy_machine(busy_machine, tmp_path):
    done = _run_flow(tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().startswith("http://127.0.0.1:")


def test_a_start_that_times_out_is_retried_on_a_fresh_server(busy_machine, tmp_path):
    # One second is too short for the server's imports and migrations: the retry must win.
    done = _run_flow(tmp_path, "1", "240")
    assert done.returncode == 0, done.stderr
    assert "did not answer in 1 s (attempt 1 of 2), starting it again" in done.stderr
