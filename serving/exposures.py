"""The exposure log: one line per answer served, written in batches by a writer thread.

A page view only hands its exposure record to a bounded queue (no file, no lock held across
any I/O, no serialisation); the writer thread serialises what gathered, writes it with one
``write`` per day file, and fsyncs at most every ``sync_seconds``, all off the request path.
The files are the :class:`serving.events.EventLog` layout (``<day>/exposures-<host>-<pid>.jsonl``),
so the nightly ingest reads them alike.

The most a crash can lose:

* The process (killed, aborted): the exposures handed in during the last ``batch_seconds``
  (50 ms by default) before it, and never more than ``max_pending`` lines (10,000); every
  line written is whole, and the lines on disk are a prefix of those handed in.
* The machine: in addition, what was written but not yet fsynced, at most the last
  ``sync_seconds`` (0.2 s by default).
* A full queue (a stalled disk) drops the new exposure rather than making the page view wait;
  every line dropped or not written is counted (``on_lost``: serving's
  ``fitrec_exposures_unlogged``). Closing the log writes and fsyncs everything handed in.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import orjson

log = logging.getLogger(__name__)

BATCH_SECONDS = 0.05
"""Longest a handed-in exposure waits for the writer (the process-crash loss window)."""

MAX_PENDING = 10_000
"""Exposures waiting for the writer at most; a new one beyond is dropped and counted."""

_STOP = object()


class ExposureLog:
    """Append-only JSON lines, handed to a writer thread (see the module's docstring).

    Args:
        directory: The events folder (``<day>/`` folders are made in it).
        sync_seconds: Longest a written line waits for its fsync.
        prefix: The file name's first part (the curated table the ingest makes of it).
        batch_seconds: Longest a handed-in line waits to be written.
        max_pending: Lines waiting at most; more are dropped.
        on_lost: Told how many lines were dropped or could not be written.
    """

    def __init__(
        self,
        directory: Path,
        sync_seconds: float = 0.2,
        prefix: str = "exposures",
        batch_seconds: float = BATCH_SECONDS,
        max_pending: int = MAX_PENDING,
        on_lost: Callable[[int], None] | None = None,
    ):
        self.directory = directory
        self.sync_seconds = sync_seconds
        self.batch_seconds = batch_seconds
        self.name = f"{prefix}-{socket.gethostname()}-{os.getpid()}.jsonl"
        self.written = 0
        self.lost = 0
        self.syncs = 0
        self._on_lost = on_lost
        self._queue: queue.Queue = queue.Queue(maxsize=max_pending)
        self._fd: int | None = None
        self._day = ""
        self._dirty = False
        self._last_sync = time.monotonic()
        self._closed = False
        self._writer = threading.Thread(target=self._run, name="exposure-writer", daemon=True)
        self._writer.start()

    def append(self, record: dict) -> None:
        """Hand one record (with an ISO ``ts``) to the writer; never blocks, never raises."""
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            self._lose(1, "exposure queue full (disk stalled?): exposure dropped")

    def close(self) -> None:
        """Write and fsync everything handed in, then stop the writer."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)  # waits for room: everything before it is written
        self._writer.join()

    def _run(self) -> None:
        while True:
            try:
                first = self._queue.get(timeout=self.sync_seconds)
            except queue.Empty:  # idle: the last lines written get their fsync
                self._sync()
                continue
            stop = first is _STOP
            if not stop:
                time.sleep(self.batch_seconds)  # let a batch gather
            batch = [] if stop else [first]
            while not stop:
                try:
                    record = self._queue.get_nowait()
                except queue.Empty:
                    break
                stop = record is _STOP
                if not stop:
                    batch.append(record)
            self._write(batch)
            if stop or time.monotonic() - self._last_sync >= self.sync_seconds:
                self._sync()
            if stop:
                self._close_file()
                return

    def _write(self, batch: list[dict]) -> None:
        by_day: dict[str, list[bytes]] = {}
        for record in batch:
            by_day.setdefault(record["ts"][:10], []).append(orjson.dumps(record) + b"\n")
        for day, lines in by_day.items():
            try:
                self._write_day(day, b"".join(lines))
                self.written += len(lines)
            except OSError as exc:  # a full disk: the answers were served, the miss counted
                self._lose(len(lines), f"exposures not logged: {exc}")

    def _write_day(self, day: str, data: bytes) -> None:
        if day != self._day or self._fd is None:
            self._close_file()
            folder = self.directory / day
            folder.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(folder / self.name, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            self._day = day
        view = memoryview(data)
        while view:  # one write for the batch; the loop only for a short write
            view = view[os.write(self._fd, view) :]
        self._dirty = True

    def _sync(self) -> None:
        if self._fd is not None and self._dirty:
            try:
                os.fsync(self._fd)
                self.syncs += 1
            except OSError as exc:
                log.error("exposure log fsync failed: %s", exc)
        self._dirty = False
        self._last_sync = time.monotonic()

    def _close_file(self) -> None:
        if self._fd is not None:
            self._sync()
            os.close(self._fd)
            self._fd = None

    def _lose(self, lines: int, why: str) -> None:
        self.lost += lines
        log.error(why)
        if self._on_lost is not None:
            self._on_lost(lines)
