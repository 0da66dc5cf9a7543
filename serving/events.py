"""Session events: validate, log durably, update the live session state, push to Feast.

Every accepted event is first appended to a durable JSON-lines log (``events/<day>/``, in
the raw ``session_events`` format the nightly ingest reads), so nothing is lost between
sessions and retrains; then the session state in Redis (capped, with a TTL) is updated with
:func:`pipeline.features.session.apply_event`; then the session's features are pushed through
Feast's push source in the background.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, BinaryIO, Literal, cast

import orjson
import redis
from pydantic import BaseModel, ConfigDict, StringConstraints

from pipeline.config import Settings
from pipeline.features.declarations import SESSION_PUSH, SESSION_TTL, TIMESTAMP
from pipeline.features.online.connection import RedisTarget
from pipeline.features.session import SessionState, apply_event
from pipeline.privacy import key_id, pseudonymise

log = logging.getLogger(__name__)

Id = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[\w.\-:]+$")]


class SessionEventRequest(BaseModel):
    """One event from the shop front."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    event_id: Id | None = None
    session_id: Id
    customer_id: Annotated[str, StringConstraints(min_length=1, max_length=128)] | None = None
    event_type: Literal["view", "try_on", "add_to_cart", "remove_from_cart", "purchase"]
    item_id: Id
    ts: datetime | None = None


class EventLog:
    """Append-only JSON-lines log, one file per day and process; flushed on every event and
    fsynced at least every ``sync_seconds``."""

    def __init__(self, directory: Path, sync_seconds: float = 0.2):
        self.directory = directory
        self.sync_seconds = sync_seconds
        self._lock = threading.Lock()
        self._file: BinaryIO | None = None
        self._day = ""
        self._last_sync = 0.0
        self.name = f"serving-{socket.gethostname()}-{os.getpid()}.jsonl"

    def append(self, record: dict) -> None:
        line = orjson.dumps(record) + b"\n"
        day = record["ts"][:10]
        with self._lock:
            if day != self._day or self._file is None:
                self._close()
                folder = self.directory / day
                folder.mkdir(parents=True, exist_ok=True)
                self._file = open(folder / self.name, "ab")  # noqa: SIM115 - kept open
                self._day = day
            file = self._file
            file.write(line)
            file.flush()  # in the OS once this returns: survives a process crash
            now = time.monotonic()
            if now - self._last_sync >= self.sync_seconds:
                os.fsync(file.fileno())
                self._last_sync = now

    def _close(self) -> None:
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None

    def close(self) -> None:
        with self._lock:
            self._close()


class SessionStore:
    """Session states in Redis (JSON, TTL), or in this process when there is no Redis."""

    PREFIX = "fitrec:session:"

    def __init__(self, settings: Settings):
        self.ttl = int(SESSION_TTL.total_seconds())
        self.client: redis.Redis | redis.RedisCluster | None = None
        self._local: dict[str, SessionState] = {}
        if settings.redis_url:
            self.client = redis_client(settings)

    def key(self, session_id: str) -> str:
        """The Redis key of a session's state."""
        return self.PREFIX + session_id

    def get(self, session_id: str) -> SessionState | None:
        if self.client is None:
            return self._local.get(session_id)
        raw = cast(bytes | None, self.client.get(self.key(session_id)))
        return SessionState.from_json(raw) if raw else None

    def put(self, state: SessionState) -> None:
        if self.client is None:
            self._local[state.session_id] = state
            return
        self.client.set(self.key(state.session_id), state.to_json(), ex=self.ttl)


def redis_client(settings: Settings) -> redis.Redis | redis.RedisCluster:
    """A client for serving's own keys, with short timeouts (fail fast, answer degraded)."""
    target = RedisTarget.parse(settings.redis_url or "")
    # A timeout in the URL is the operator's word for this client; else serving's setting.
    timeout = target.options.get("socket_timeout", settings.redis_timeout_seconds)
    return target.client(socket_timeout=timeout, retries=0)


class FeastPusher:
    """Pushes session features to Feast's push source from a background thread, so a page
    view never waits for it; failures are counted and logged, the event is already safe."""

    def __init__(self, store, maxsize: int = 10_000):
        self.store = store
        self.queue: queue.Queue = queue.Queue(maxsize=maxsize)
        self.pushed = 0
        self.failed = 0
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="feast-push", daemon=True)
        self._thread.start()

    def submit(self, state: SessionState) -> None:
        try:
            self.queue.put_nowait(state)
        except queue.Full:
            self.dropped += 1

    def _run(self) -> None:
        import pandas as pd

        while True:
            batch = [self.queue.get()]
            while len(batch) < 500:
                try:
                    batch.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            latest = {s.session_id: s for s in batch}
            rows = [
                {
                    "session_id": s.session_id,
                    **s.features(),
                    TIMESTAMP: datetime.fromtimestamp(s.last_ts or time.time(), UTC),
                }
                for s in latest.values()
            ]
            try:
                self.store.push(SESSION_PUSH, pd.DataFrame(rows))
                self.pushed += len(rows)
            except Exception as exc:  # noqa: BLE001 - any store failure: count and go on
                self.failed += len(rows)
                log.warning("feast push of %d sessions failed: %s", len(rows), exc)
            finally:
                for _ in batch:
                    self.queue.task_done()


class EventProcessor:
    """Accepts events: durable log first, then session state, then the Feast push."""

    def __init__(
        self,
        settings: Settings,
        sessions: SessionStore,
        pusher: FeastPusher | None = None,
        event_log: EventLog | None = None,
    ):
        self.settings = settings
        self.sessions = sessions
        self.pusher = pusher
        self.log = event_log or EventLog(settings.events_dir)
        self._key = settings.pseudonym_key.get_secret_value()
        self._key_id = key_id(self._key)
        self.accepted = 0
        self.degraded = 0

    def process(self, event: SessionEventRequest) -> tuple[SessionState | None, bool]:
        """Accept one event; returns the new session state (None if Redis failed) and whether
        the state update was degraded. The event is in the durable log either way."""
        ts = event.ts or datetime.now(UTC)
        ts = ts if ts.tzinfo else ts.replace(tzinfo=UTC)
        # Pseudonymised at the edge: the log never holds the raw id (ingest takes the
        # pseudonym as it is, re-keying it when it was made under a key rotated out).
        pseudonym = pseudonymise(event.customer_id, self._key) if event.customer_id else None
        record = {
            "event_id": event.event_id or f"srv-{uuid.uuid4().hex}",
            "session_id": event.session_id,
            "customer_pseudonym": pseudonym,
            "pseudonym_key_id": self._key_id if pseudonym else None,
            "event_type": event.event_type,
            "item_id": event.item_id,
            "ts": ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        self.log.append(record)
        self.accepted += 1
        try:
            state = apply_event(
                self.sessions.get(event.session_id),
                event.session_id,
                pseudonym,
                event.event_type,
                event.item_id,
                ts.timestamp(),
            )
            self.sessions.put(state)
        except (redis.RedisError, OSError) as exc:
            self.degraded += 1
            log.warning("session %s not updated (Redis unavailable: %s)", event.session_id, exc)
            return None, True
        if self.pusher is not None:
            self.pusher.submit(state)
        return state, False
