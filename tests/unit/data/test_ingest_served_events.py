"""``fitrec ingest`` runs the ingest flow's code: serving's event log goes in, unchanged days
are skipped, and a missing or empty event log is no error."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

import polars as pl
import pytest
from typer.testing import CliRunner

from flows.cli import app
from pipeline.data.curated import drops_up_to, partition
from pipeline.privacy import pseudonymise
from serving.events import EventLog, EventProcessor, SessionEventRequest, SessionStore


def _ingest(*args: str) -> str:
    result = CliRunner().invoke(app, ["ingest", *args])
    assert result.exit_code == 0, result.output
    return result.output


def _raw_events(folder, ids: set[str]) -> list[dict]:
    """The raw session events of a drop whose ids ingest curated (valid items, customers)."""
    lines = (folder / "session_events.jsonl").read_text().splitlines()
    rows = []
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and row.get("event_id") in ids:
            rows.append(row)
    return rows


def _serve(settings, day: date, templates: list[dict]) -> dict[str, str | None]:
    """Accept live events for ``day`` through serving's event path; event id -> customer."""
    event_log = EventLog(settings.events_dir)
    processor = EventProcessor(settings, SessionStore(settings), event_log=event_log)
    noon = datetime(day.year, day.month, day.day, 12, tzinfo=UTC)
    served: dict[str, str | None] = {}
    try:
        for n, row in enumerate(templates):
            customer = None if n % 4 == 3 else row["customer_id"]  # some anonymous sessions
            event = SessionEventRequest(
                event_id=f"live-{n}",
                session_id=f"live-session-{n // 3}",
                customer_id=customer,
                event_type="view",
                item_id=row["item_id"],
                ts=noon + timedelta(seconds=n),
            )
            _, degraded = processor.process(event)
            assert not degraded
            served[f"live-{n}"] = customer
    finally:
        event_log.close()
    return served


def test_fitrec_ingest_keeps_every_event_serving_logged(raw_drops, settings):
    day, folder = drops_up_to(raw_drops, date.max)[-1]
    _ingest("--raw", str(raw_drops))
    curated = pl.read_parquet(partition(settings.curated_dir, "session_events", day))
    known = _raw_events(folder, set(curated["event_id"]))
    templates = [row for row in known if row.get("customer_id")][:12]
    assert len(templates) == 12

    served = _serve(settings, day, templates)
    assert list((settings.events_dir / day.isoformat()).glob("*.jsonl"))
    _ingest("--raw", str(raw_drops), "--date", day.isoformat())

    after = pl.read_parquet(partition(settings.curated_dir, "session_events", day))
    live = after.filter(pl.col("event_id").str.starts_with("live-"))
    assert live.height == len(served)
    assert set(live["event_id"]) == set(served)
    key = settings.pseudonym_key.get_secret_value()
    pseudonyms = dict(zip(live["event_id"], live["customer_id"], strict=True))
    for event_id, customer in served.items():
        assert pseudonyms[event_id] == (pseudonymise(customer, key) if customer else None)
    # Nothing of the drop itself was lost on the way.
    assert set(curated["event_id"]) <= set(after["event_id"])


def test_fitrec_ingest_skips_unchanged_days(raw_drops, settings):
    _ingest("--raw", str(raw_drops))
    day = drops_up_to(raw_drops, date.max)[-1][0]
    written = partition(settings.curated_dir, "session_events", day)
    before = written.stat().st_mtime_ns
    output = _ingest("--raw", str(raw_drops))
    assert written.stat().st_mtime_ns == before
    assert "unchanged" in output


@pytest.mark.parametrize("layout", ["missing", "empty", "junk"])
def test_a_missing_or_empty_event_log_is_no_error(raw_drops, settings, layout):
    day = drops_up_to(raw_drops, date.max)[-1][0]
    if layout != "missing":
        (settings.events_dir / day.isoformat()).mkdir(parents=True)
    if layout == "junk":
        (settings.events_dir / "not-a-day").mkdir()
        (settings.events_dir / day.isoformat() / "empty.jsonl").write_text("")
        (settings.events_dir / day.isoformat() / "folder.jsonl").mkdir()
    _ingest("--raw", str(raw_drops))
    assert partition(settings.curated_dir, "session_events", day).exists()
