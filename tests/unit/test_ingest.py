import json
import shutil
from datetime import date

import polars as pl
import pytest

from pipeline.contracts import SESSION_EVENTS
from pipeline.ingest import drops_up_to, ingest_drop, partition, read_raw


@pytest.fixture
def ingested(raw_drops, settings):
    reports = [
        ingest_drop(folder, day, settings) for day, folder in drops_up_to(raw_drops, date.max)
    ]
    return settings, reports


def test_counts_reconcile_exactly(ingested):
    settings, reports = ingested
    for report in reports:
        for table, counts in report.tables.items():
            day = date.fromisoformat(report.day)
            curated = pl.read_parquet(partition(settings.curated_dir, table, day)).height
            quarantined = pl.read_parquet(partition(settings.quarantine_dir, table, day)).height
            assert counts.raw == counts.curated + counts.quarantined
            assert (counts.curated, counts.quarantined) == (curated, quarantined)


def test_planted_faults_are_quarantined_with_reasons(ingested):
    settings, reports = ingested
    reasons = {}
    for report in reports:
        for counts in report.tables.values():
            for reason, n in counts.reasons.items():
                reasons[reason] = reasons.get(reason, 0) + n
    assert reasons["duplicate_key"] > 0
    assert reasons["unknown_item"] > 0
    assert reasons["bad_type:ts"] > 0
    assert reasons["out_of_range:height_cm"] > 0
    q = pl.read_parquet(settings.quarantine_dir / "session_events" / "*" / "*.parquet")
    assert q["reason"].null_count() == 0


def test_rerunning_a_day_changes_nothing(raw_drops, ingested):
    settings, reports = ingested
    day, folder = drops_up_to(raw_drops, date.max)[-1]
    before = {
        p: p.read_bytes() for p in settings.data_dir.rglob("*.parquet") if day.isoformat() in str(p)
    }
    again = ingest_drop(folder, day, settings)
    after = {p: p.read_bytes() for p in before}
    assert before == after
    assert again.as_dict() == reports[-1].as_dict()


def test_customer_ids_are_pseudonymised_and_consent_honoured(ingested):
    settings, _ = ingested
    customers = pl.read_parquet(settings.curated_dir / "customers" / "*" / "*.parquet")
    events = pl.read_parquet(settings.curated_dir / "session_events" / "*" / "*.parquet")
    for ids in (customers["customer_id"], events["customer_id"].drop_nulls()):
        assert ids.str.starts_with("c_").all()
        assert not ids.str.starts_with("C0").any()
    no_consent = customers.filter(~pl.col("body_data_consent"))
    assert no_consent.height > 0
    assert (
        no_consent.select("height_cm", "weight_kg", "bust_cm").null_count().row(0)
        == (no_consent.height,) * 3
    )


def test_bad_json_lines_and_late_future_events(tmp_path, raw_drops, settings):
    day, folder = drops_up_to(raw_drops, date.max)[0]
    drop = tmp_path / "drop"
    shutil.copytree(folder, drop)
    good = json.loads((drop / "session_events.jsonl").read_text().splitlines()[0])
    future = dict(good, event_id="future-1", ts="2099-01-01T00:00:00Z")
    with (drop / "session_events.jsonl").open("a") as f:
        f.write("{not json\n")
        f.write(json.dumps(future) + "\n")
    report = ingest_drop(drop, day, settings)
    counts = report.tables["session_events"]
    assert counts.reasons.get("bad_json") == 1
    assert counts.reasons.get("future_timestamp") == 1
    raw = read_raw(drop / "session_events.jsonl", SESSION_EVENTS)
    assert counts.raw == raw.height == counts.curated + counts.quarantined
