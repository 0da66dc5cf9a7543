"""Event times, the event log's idle fsync, and every accepted event reaching the ingest."""

from __future__ import annotations

import time
from datetime import UTC, date, datetime, timedelta

import orjson
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from pydantic import ValidationError

from pipeline.data.curated import days_to_ingest, serving_logs
from pipeline.data.ingest import ingest_day
from serving.events import (
    EventLog,
    EventProcessor,
    EventTimeError,
    SessionEventRequest,
    SessionStore,
)

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)


def event(ts: object, **extra: object) -> SessionEventRequest:
    return SessionEventRequest.model_validate(
        {"session_id": "s1", "event_type": "view", "item_id": "I000001", "ts": ts, **extra}
    )


@pytest.mark.parametrize("ts", [0, 1.5, "0001-01-01T00:00:00+01:00", True, [], {"a": 1}], ids=repr)
def test_ts_must_be_a_representable_date_time_string(ts):
    with pytest.raises(ValidationError) as error:
        event(ts)
    assert [e["loc"] for e in error.value.errors()] == [("ts",)]


EVENT_TYPES = ["view", "try_on", "add_to_cart", "remove_from_cart", "purchase", "click", "return"]
ABSENT = object()


@hsettings(max_examples=300, derandomize=True)
@given(
    event_type=st.sampled_from([*EVENT_TYPES, "refund"]),
    session_id=st.sampled_from([ABSENT, None, "s1", ""]),
    return_reason=st.sampled_from([ABSENT, None, "too_small", "style", "ugly"]),
    quantity=st.sampled_from([ABSENT, -1, 0, 1, 1000, 1001]),
)
def test_the_schema_states_the_rules_the_validator_applies(
    event_type, session_id, return_reason, quantity
):
    """A body is valid by the published JSON schema exactly when the model accepts it: the
    rules across fields (a return needs a reason and no session; any other event a session and
    no reason) are in the OpenAPI document, so a schema-valid request is never refused."""
    from jsonschema import Draft202012Validator

    body: dict[str, object] = {"event_type": event_type, "item_id": "I000001"}
    for name, value in (
        ("session_id", session_id),
        ("return_reason", return_reason),
        ("quantity", quantity),
    ):
        if value is not ABSENT:
            body[name] = value
    by_schema = Draft202012Validator(SessionEventRequest.model_json_schema()).is_valid(body)
    try:
        SessionEventRequest.model_validate(body)
        by_model = True
    except ValidationError:
        by_model = False
    assert by_schema == by_model, body


@hsettings(max_examples=150, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(
    ts=st.datetimes(
        min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
    )
)
def test_event_time_window(tmp_path_factory, ts):
    from pipeline.config import Settings

    settings = Settings(data_dir=tmp_path_factory.mktemp("ev"))
    processor = EventProcessor(settings, SessionStore(settings))
    try:
        inside = NOW - timedelta(days=30) <= ts <= NOW + timedelta(days=1)
        if inside:
            assert processor.event_time(event(ts.isoformat()), NOW) == ts
        else:
            with pytest.raises(EventTimeError):
                processor.event_time(event(ts.isoformat()), NOW)
    finally:
        processor.close()


def test_event_log_is_synced_when_idle(tmp_path):
    log = EventLog(tmp_path, sync_seconds=0.2)
    try:
        log.append({"ts": "2026-06-15T12:00:00Z", "event_id": "e1"})
        log._last_sync = time.monotonic()  # as if the last fsync had just run: no write comes
        log.append({"ts": "2026-06-15T12:00:01Z", "event_id": "e2"})
        assert log.unsynced
        syncs = log.syncs
        deadline = time.monotonic() + 60  # generous: a loaded machine
        while log.unsynced and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not log.unsynced and log.syncs == syncs + 1
    finally:
        log.close()


@hsettings(
    max_examples=15,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(offsets=st.lists(st.integers(-30 * 86400 + 60, 86400 - 60), min_size=1, max_size=12))
def test_every_accepted_event_reaches_the_ingest(tmp_path_factory, offsets):
    from pipeline.config import Settings

    settings = Settings(data_dir=tmp_path_factory.mktemp("ev"))
    now = datetime.now(UTC)
    processor = EventProcessor(settings, SessionStore(settings))
    accepted: dict[date, list[str]] = {}
    for n, offset in enumerate(offsets):
        ts = now + timedelta(seconds=offset)
        processor.process(event(ts.isoformat(), event_id=f"e{n}"))
        accepted.setdefault(ts.date(), []).append(f"e{n}")
    processor.close()
    days = dict(days_to_ingest(settings.raw_dir, settings.events_dir, max(accepted)))
    assert set(days) == set(accepted)
    for day, ids in accepted.items():
        logged = [
            orjson.loads(line)["event_id"]
            for path in serving_logs(settings.events_dir, day)["session_events"]
            for line in path.read_bytes().splitlines()
        ]
        assert sorted(logged) == sorted(ids)
        report, _ = ingest_day(days[day], day, settings)
        assert report["tables"]["session_events"]["raw"] == len(ids)
