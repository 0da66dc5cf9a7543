"""Serving pseudonymises at the edge: its event log never holds a raw customer id, and the
ingest takes the logged pseudonym as it is (re-keyed after a key rotation)."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta

import orjson
import polars as pl
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from pydantic import SecretStr

from pipeline.config import Settings
from pipeline.data.curated import current_dimension, partition
from pipeline.data.ingest import ingest_day
from pipeline.privacy import key_id, pseudonymise
from serving.events import EventLog, EventProcessor, SessionEventRequest, SessionStore
from tests.conftest import prepare_days

CUSTOMER = st.text(
    alphabet=st.characters(codec="utf-8", blacklist_categories=("Cs",)), min_size=1, max_size=64
).filter(lambda s: s.strip() == s and s.isprintable())


@given(customers=st.lists(CUSTOMER, min_size=1, max_size=8))
@hsettings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
def test_no_raw_id_in_any_line_of_the_event_log_or_python_logs(tmp_path, caplog, customers):
    folder = tmp_path / f"events-{uuid.uuid4().hex}"
    settings = Settings(data_dir=tmp_path / "var", pseudonym_key="k-test")
    log = EventLog(folder)
    processor = EventProcessor(settings, SessionStore(settings), event_log=log)
    with caplog.at_level(logging.DEBUG):
        try:
            for n, customer in enumerate(customers):
                processor.process(
                    SessionEventRequest(
                        session_id=f"s{n}",
                        customer_id=customer,
                        event_type="view",
                        item_id="I1",
                        ts=datetime(2024, 5, 1, tzinfo=UTC) + timedelta(seconds=n),
                    )
                )
        finally:
            log.close()
    lines = [orjson.loads(x) for p in folder.glob("*/*.jsonl") for x in p.read_bytes().splitlines()]
    assert len(lines) == len(customers)
    for line, customer in zip(lines, customers, strict=True):
        stripped = customer
        assert "customer_id" not in line
        assert line["customer_pseudonym"] == pseudonymise(stripped, "k-test")
        assert line["pseudonym_key_id"] == key_id("k-test")
    text = b"".join(p.read_bytes() for p in folder.glob("*/*.jsonl")).decode()
    logged = "\n".join(r.getMessage() for r in caplog.records)
    # What the log holds besides the pseudonyms (field names, session ids, times, ...): an id
    # that is part of that text ("session_id", "view") proves nothing either way.
    others = " ".join(
        f"{k} {v}" for line in lines for k, v in line.items() if k != "customer_pseudonym"
    )
    for customer in customers:
        stripped = customer
        if len(stripped) >= 4 and stripped not in others:  # short ones occur in hex by chance
            assert orjson.dumps(stripped).decode() not in text
            assert stripped not in logged


def test_served_pseudonyms_are_not_hashed_twice_and_are_re_keyed_after_rotation(
    raw_drops, tmp_path, monkeypatch
):
    monkeypatch.setenv("FITREC_PSEUDONYM_KEY", "new-key")
    monkeypatch.setenv("FITREC_PSEUDONYM_PREVIOUS_KEYS", "old-key")
    from tests.conftest import Environment

    with Environment(tmp_path / "var") as settings:
        assert settings.pseudonym_keys == ["new-key", "old-key"]
        last = prepare_days(settings, raw_drops)
        raw = sorted(
            pl.read_parquet(next(settings.raw_dir.glob("*/customers.parquet")))["customer_id"]
        )[0]
        items = sorted(current_dimension(settings.curated_dir, "items", last)["item_id"])
        noon = datetime(last.year, last.month, last.day, 12, tzinfo=UTC)
        for n, key in enumerate(["old-key", "new-key"]):
            served = settings.model_copy(update={"pseudonym_key": SecretStr(key)})
            log = EventLog(settings.events_dir)
            log.name = f"serving-{key}.jsonl"
            processor = EventProcessor(served, SessionStore(served), event_log=log)
            processor.process(
                SessionEventRequest(
                    event_id=f"live-{key}",
                    session_id="s",
                    customer_id=raw,
                    event_type="view",
                    item_id=items[n],
                    ts=noon + timedelta(seconds=n),
                )
            )
            log.close()
        report, _ = ingest_day(settings.raw_dir / last.isoformat(), last, settings)
        curated = pl.read_parquet(partition(settings.curated_dir, "session_events", last))
        live = curated.filter(pl.col("event_id").str.starts_with("live-"))
        assert live.height == 2, report["tables"]["session_events"]
        assert set(live["customer_id"]) == {pseudonymise(raw, "new-key")}
