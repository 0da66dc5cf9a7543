"""Session events: validate, log durably, update the live session state, push to Feast.

Every accepted event is first appended to a durable JSON-lines log (``events/<day>/``, in
the raw ``session_events`` format the nightly ingest reads), so nothing is lost between
sessions and retrains; then the session state in Redis (capped, with a TTL) is updated with
:func:`pipeline.features.session.apply_event`; then the session's features are pushed through
Feast's push source in the background.

An event's ``ts`` must be an ISO 8601 string (a number is refused: the spec says date-time)
between ``FITREC_EVENTS_MAX_AGE_DAYS`` ago and ``FITREC_EVENTS_MAX_FUTURE_SECONDS`` ahead, so
every accepted event lands in a day folder the nightly ingest reads (``events/YYYY-MM-DD/``);
anything else is a 422 naming ``ts``.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, BinaryIO, Literal, Self, cast

import orjson
import redis
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from pipeline.config import Settings
from pipeline.data.contracts import OUTCOME_TYPES, RECOMMENDATION_ID, RETURN_REASONS
from pipeline.features.declarations import SESSION_PUSH, SESSION_TTL, TIMESTAMP
from pipeline.features.session import SessionState, apply_event
from pipeline.privacy import key_id, pseudonymise
from pipeline.redis_url import RedisTarget
from serving.breaker import Breaker, BreakerOpen
from serving.metrics import EventMetrics
from serving.schemas import json_integer

log = logging.getLogger(__name__)

Id = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[\w.\-:]+$")]


def _iso_string(value: object) -> object:
    # pydantic would read a number as seconds since 1970; the spec promises a date-time string.
    if not isinstance(value, str | datetime):
        raise ValueError("ts must be an ISO 8601 date-time string")
    return value


def _in_utc(value: datetime) -> datetime:
    value = value if value.tzinfo else value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00:00+01:00 is before year 1 in UTC
        raise ValueError("ts is outside the representable range") from None


EventTime = Annotated[datetime, BeforeValidator(_iso_string), AfterValidator(_in_utc)]


class EventTimeError(ValueError):
    """An event's time is outside the accepted window (answered as a 422 on ``ts``)."""


def _document_rules(schema: dict[str, Any]) -> None:
    """The rules across fields, in the schema as well as in the validator, so that a client
    (or a fuzzer) reading the OpenAPI document knows them: a return needs ``return_reason``
    and may come without a session (from the warehouse, days later); every other event needs
    ``session_id`` and takes no ``return_reason``."""
    schema["examples"] = [
        {
            "event_id": "e-7f3a2b",
            "session_id": "S0100000042",
            "customer_id": "C0000013",
            "event_type": "view",
            "item_id": "I000020",
            "ts": "2026-12-02T17:30:00Z",
        },
        {
            "customer_id": "C0000013",
            "event_type": "return",
            "item_id": "I000020",
            "order_id": "O-20261202-0042",
            "price": 79.0,
            "return_reason": "too_small",
        },
    ]
    schema["if"] = {"properties": {"event_type": {"const": "return"}}}
    schema["then"] = {
        "required": ["return_reason"],
        "properties": {"return_reason": {"enum": list(RETURN_REASONS)}},
    }
    schema["else"] = {
        "required": ["session_id"],
        "properties": {"session_id": {"type": "string"}, "return_reason": {"type": "null"}},
    }


class SessionEventRequest(BaseModel):
    """One event from the shop front."""

    model_config = ConfigDict(
        extra="forbid",
        str_strip_whitespace=True,
        json_schema_extra=lambda schema, _: _document_rules(schema),
    )

    event_id: Id | None = Field(
        default=None,
        description="The shop front's id of this event (kept in the event log); optional.",
        examples=["e-7f3a2b"],
    )
    session_id: Id | None = Field(
        default=None,
        description=(
            "The session the event belongs to (its live state is keyed by it); required but "
            "for a return, which comes from the warehouse days later."
        ),
        examples=["S0100000042"],
    )
    customer_id: Annotated[str, StringConstraints(min_length=1, max_length=128)] | None = Field(
        default=None,
        description=(
            "The retailer's customer id, if signed in; pseudonymised before it is logged or "
            "stored (the raw id is never written)."
        ),
        examples=["C0000013"],
    )
    event_type: Literal[
        "view", "try_on", "add_to_cart", "remove_from_cart", "purchase", "click", "return"
    ] = Field(
        description=(
            "What the shopper did with the item. A click is a click on a recommended item (a "
            "view of it for the session); click, add_to_cart, purchase and return are outcomes "
            "attributed to the answer that led to them (recommendation_id, or last touch)."
        ),
        examples=["view"],
    )
    item_id: Id = Field(description="The catalogue item's id.", examples=["I000020"])
    recommendation_id: (
        Annotated[str, StringConstraints(pattern=RECOMMENDATION_ID, max_length=34)] | None
    ) = Field(
        default=None,
        description=(
            "The answer (POST /recommendations' recommendation_id) the item was shown in. "
            "Without it, an outcome is attributed to the customer's (or anonymous: the "
            "session's) latest answer showing the item within the experiment's attribution "
            "window: last touch."
        ),
        examples=["r-5f0c6d2a9b8e4f1d8c7b6a5e4d3c2b1a"],
    )
    order_id: Id | None = Field(
        default=None,
        description="A purchase's (or return's) order; items per order counts by it.",
        examples=["O-20261202-0042"],
    )
    quantity: Annotated[int, BeforeValidator(json_integer)] = Field(
        default=1, ge=1, le=1000, description="Units bought or returned (1 to 1000).", examples=[1]
    )
    price: Annotated[float, Field(ge=0, le=100_000, allow_inf_nan=False)] | None = Field(
        default=None,
        description="Unit price paid (purchase) or refunded (return), in the shop's currency.",
        examples=[79.0],
    )
    return_reason: Literal[RETURN_REASONS] | None = Field(  # type: ignore[valid-type]
        default=None,
        description=(
            "Why it came back (returns only, required there): too_small and too_large are "
            "size-related returns."
        ),
        examples=["too_small"],
    )
    ts: EventTime | None = Field(
        default=None,
        description=(
            "When it happened: an ISO 8601 date-time string (no zone: UTC), at most "
            "FITREC_EVENTS_MAX_AGE_DAYS (30) days ago and FITREC_EVENTS_MAX_FUTURE_SECONDS "
            "(86400 s) ahead, else a 422 on ts. Absent: the time it arrives."
        ),
        examples=["2026-12-02T17:30:00Z"],
    )

    @model_validator(mode="after")
    def _coherent(self) -> Self:
        if self.event_type == "return" and self.return_reason is None:
            raise ValueError("return_reason is required for a return")
        if self.event_type != "return" and self.return_reason is not None:
            raise ValueError("return_reason is for returns only")
        if self.event_type != "return" and self.session_id is None:
            raise ValueError("session_id is required (but for a return)")
        return self


class EventLog:
    """Append-only JSON-lines log, one file per day and process: ``<prefix>-<host>-<pid>``;
    the prefix names the curated table the ingest makes of it (``serving`` session events,
    ``outcomes``; ``exposures`` go through :class:`serving.exposures.ExposureLog`).

    Every event is flushed to the OS before :meth:`append` returns (it survives a crash of the
    process); a timer fsyncs it (it survives a crash of the machine) within ``sync_seconds``,
    on a duplicate descriptor outside the lock :meth:`append` takes: a slow disk stalls no
    request."""

    def __init__(self, directory: Path, sync_seconds: float = 0.2, prefix: str = "serving"):
        self.directory = directory
        self.sync_seconds = sync_seconds
        self._lock = threading.Lock()
        self._file: BinaryIO | None = None
        self._day = ""
        self._last_sync = 0.0
        self._dirty = False
        self._syncing = 0
        self.syncs = 0
        self.name = f"{prefix}-{socket.gethostname()}-{os.getpid()}.jsonl"
        self._stop = threading.Event()
        self._timer = threading.Thread(target=self._sync_loop, name="event-log-sync", daemon=True)
        self._timer.start()

    def append(self, record: dict) -> None:
        line = orjson.dumps(record) + b"\n"
        day = record["ts"][:10]
        retired = None
        with self._lock:
            if day != self._day or self._file is None:
                retired, self._file = self._file, None
                folder = self.directory / day
                folder.mkdir(parents=True, exist_ok=True)
                self._file = open(folder / self.name, "ab")  # noqa: SIM115 - kept open
                self._day = day
            file = self._file
            file.write(line)
            file.flush()  # in the OS once this returns: survives a process crash
            self._dirty = True
        if retired is not None:  # the previous day's file: synced and closed, off the lock
            _close_synced(retired)

    def _sync(self) -> None:
        with self._lock:  # only to take a duplicate descriptor: the fsync runs outside
            if self._file is None or not self._dirty:
                return
            fd, self._dirty, self._syncing = os.dup(self._file.fileno()), False, self._syncing + 1
        try:
            os.fsync(fd)
            self.syncs += 1
        except OSError:
            self._dirty = True  # tried again on the next tick
            raise
        finally:
            os.close(fd)
            with self._lock:
                self._syncing, self._last_sync = self._syncing - 1, time.monotonic()

    def _sync_loop(self) -> None:
        while not self._stop.wait(self.sync_seconds / 2):
            if self._dirty and time.monotonic() - self._last_sync >= self.sync_seconds / 2:
                try:
                    self._sync()
                except OSError as exc:  # a full disk: keep serving, say so
                    log.error("event log fsync failed: %s", exc)

    @property
    def unsynced(self) -> bool:
        """Whether some appended event is not fsynced yet."""
        with self._lock:
            return self._dirty or self._syncing > 0

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            file, self._file = self._file, None
            self._dirty = False
        if file is not None:
            _close_synced(file)


def _close_synced(file: BinaryIO) -> None:
    with file:
        file.flush()
        os.fsync(file.fileno())


class SessionStore:
    """Session states in Redis (JSON, TTL), or in this process when there is no Redis."""

    PREFIX = "fitrec:session:"

    def __init__(self, settings: Settings, breaker: Breaker | None = None):
        self.ttl = int(SESSION_TTL.total_seconds())
        self.client: redis.Redis | redis.RedisCluster | None = None
        self.breaker = breaker or Breaker.from_settings(settings)
        self._local: dict[str, SessionState] = {}
        if settings.redis_url:
            self.client = redis_client(settings)

    def key(self, session_id: str) -> str:
        """The Redis key of a session's state."""
        return self.PREFIX + session_id

    def get(self, session_id: str) -> SessionState | None:
        if self.client is None:
            return self._local.get(session_id)
        raw = cast(bytes | None, self.breaker.call(self.client.get, self.key(session_id)))
        return SessionState.from_json(raw) if raw else None

    def put(self, state: SessionState) -> None:
        if self.client is None:
            self._local[state.session_id] = state
            return
        self.breaker.call(self.client.set, self.key(state.session_id), state.to_json(), ex=self.ttl)


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
        outcome_log: EventLog | None = None,
    ):
        self.settings = settings
        self.sessions = sessions
        self.pusher = pusher
        self.log = event_log or EventLog(settings.events_dir, settings.events_sync_seconds)
        self.outcomes = outcome_log or EventLog(
            settings.events_dir, settings.events_sync_seconds, prefix="outcomes"
        )
        self._key = settings.pseudonym_key.get_secret_value()
        self._key_id = key_id(self._key)
        self.accepted = 0
        self.degraded = 0
        self.metrics = EventMetrics()  # exported; the ints above are this process's

    def close(self) -> None:
        """Sync and close both logs."""
        self.log.close()
        self.outcomes.close()

    def event_time(self, event: SessionEventRequest, now: datetime | None = None) -> datetime:
        """The event's time in UTC (now when it has none), checked against the window the
        nightly ingest reads.

        Raises:
            EventTimeError: More than ``events_max_future_seconds`` ahead or more than
                ``events_max_age_days`` ago.
        """
        now = now or datetime.now(UTC)
        if event.ts is None:
            return now
        ts = event.ts if event.ts.tzinfo else event.ts.replace(tzinfo=UTC)
        ahead = timedelta(seconds=self.settings.events_max_future_seconds)
        horizon = timedelta(days=self.settings.events_max_age_days)
        if ts > now + ahead:
            raise EventTimeError(f"ts is more than {ahead} in the future")
        if ts < now - horizon:
            raise EventTimeError(f"ts is more than {horizon.days} days in the past")
        return ts

    def process(self, event: SessionEventRequest) -> tuple[SessionState | None, bool]:
        """Accept one event; returns the new session state (None if Redis failed) and whether
        the state update was degraded. The event is in the durable log either way.

        The time window is not checked here (in-process callers replay history on purpose):
        the HTTP app calls :meth:`event_time` first.
        """
        ts = event.ts or datetime.now(UTC)
        ts = ts if ts.tzinfo else ts.replace(tzinfo=UTC)
        # Pseudonymised at the edge: the log never holds the raw id (ingest takes the
        # pseudonym as it is, re-keying it when it was made under a key rotated out).
        pseudonym = pseudonymise(event.customer_id, self._key) if event.customer_id else None
        event_id = event.event_id or f"srv-{uuid.uuid4().hex}"
        when = ts.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        who = {
            "customer_pseudonym": pseudonym,
            "pseudonym_key_id": self._key_id if pseudonym else None,
        }
        if event.event_type != "return":  # a return is no session event
            # A click on a recommended item is, for the session, a view of it.
            kind = "view" if event.event_type == "click" else event.event_type
            self.log.append(
                {
                    "event_id": event_id,
                    "session_id": event.session_id,
                    **who,
                    "event_type": kind,
                    "item_id": event.item_id,
                    "ts": when,
                }
            )
        if event.event_type in OUTCOME_TYPES:
            self.outcomes.append(
                {
                    "event_id": event_id,
                    "ts": when,
                    "session_id": event.session_id,
                    **who,
                    "event_type": event.event_type,
                    "item_id": event.item_id,
                    "recommendation_id": event.recommendation_id,
                    "order_id": event.order_id,
                    "quantity": event.quantity,
                    "price": event.price,
                    "return_reason": event.return_reason,
                }
            )
        self.accepted += 1
        self.metrics.accepted.inc()
        if event.event_type == "return" or event.session_id is None:  # nothing live to update
            return None, False
        try:
            state = apply_event(
                self.sessions.get(event.session_id),
                event.session_id,
                pseudonym,
                "view" if event.event_type == "click" else event.event_type,
                event.item_id,
                ts.timestamp(),
            )
            self.sessions.put(state)
        except (redis.RedisError, OSError) as exc:
            self.degraded += 1
            self.metrics.degraded.inc()
            if not isinstance(exc, BreakerOpen):  # while open: counted, not logged per event
                log.warning("session not updated (Redis unavailable: %s)", exc)
            return None, True
        if self.pusher is not None:
            self.pusher.submit(state)
        return state, False
