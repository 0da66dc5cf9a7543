import copy
import json
import shutil
from datetime import date

import polars as pl
import pytest

from pipeline.data.contracts import SESSION_EVENTS
from pipeline.data.curated import drops_up_to, partition
from pipeline.data.ingest import ingest_drop, read_raw
from tests.conftest import ingested_template


@pytest.fixture
def ingested(raw_drops, settings):
    """Every day ingested: the session's ingested window copied in (a fresh ingest of the same
    drops writes the same bytes, ``test_the_ingested_template_is_a_fresh_ingest``)."""
    root, _, reports = ingested_template(settings, raw_drops)
    shutil.copytree(root, settings.data_dir, dirs_exist_ok=True)
    return settings, copy.deepcopy(reports)


def test_the_ingested_template_is_a_fresh_ingest(raw_drops, settings):
    root, _, reports = ingested_template(settings, raw_drops)
    drops = drops_up_to(raw_drops, date.max)
    fresh = [ingest_drop(folder, day, settings) for day, folder in drops]
    assert [r.as_dict() for r in fresh] == [r.as_dict() for r in reports]
    for folder in ("curated", "quarantine"):
        here, there = settings.data_dir, root
        ours = {p.relative_to(here): p for p in (here / folder).rglob("*")}
        theirs = {p.relative_to(there): p for p in (there / folder).rglob("*")}
        assert sorted(ours) == sorted(theirs)
        for name, path in ours.items():
            if path.is_file():
                assert path.read_bytes() == theirs[name].read_bytes(), name


def test_counts_reconcile_exactly(ingested):
    settings, reports = ingested
    for report in reports:
        day = date.fromisoformat(report.day)
        for table, counts in report.tables.items():
            curated = pl.read_parquet(partition(settings.curated_dir, table, day)).height
            quarantined = pl.read_parquet(partition(settings.quarantine_dir, table, day)).height
            assert counts.raw == counts.curated + counts.quarantined + counts.exact_duplicates
            assert (counts.curated, counts.quarantined) == (curated, quarantined)


def test_planted_faults_are_caught(ingested):
    settings, reports = ingested
    reasons: dict[str, int] = {}
    duplicates = 0
    for report in reports:
        for counts in report.tables.values():
            duplicates += counts.exact_duplicates
            for reason, n in counts.reasons.items():
                reasons[reason] = reasons.get(reason, 0) + n
    assert duplicates > 0
    assert reasons["unknown_item"] > 0
    assert reasons["bad_type:ts"] > 0
    assert reasons["out_of_range:height_cm"] > 0
    q = pl.read_parquet(settings.quarantine_dir / "session_events" / "*" / "*.parquet")
    assert q["reason"].null_count() == 0
    assert q["source_file"].str.ends_with("session_events.jsonl").all()


def test_quarantine_keeps_the_original_line(ingested, raw_drops):
    settings, _ = ingested
    q = pl.read_parquet(settings.quarantine_dir / "try_ons" / "*" / "*.parquet")
    for row in q.head(5).iter_rows(named=True):
        lines = (raw_drops / row["source_file"]).read_text().splitlines()
        original = json.loads(lines[row["line"] - 1])
        kept = json.loads(row["raw"])
        # Identical except the customer id, which quarantine holds only as its pseudonym.
        assert {k: v for k, v in original.items() if k != "customer_id"} == {
            k: v for k, v in kept.items() if k != "customer_id"
        }
        assert kept["customer_id"].startswith("c_")


def test_rerunning_a_day_changes_nothing(raw_drops, ingested):
    settings, reports = ingested
    day, folder = drops_up_to(raw_drops, date.max)[-1]
    written = [p for p in settings.data_dir.rglob("*.parquet") if day.isoformat() in str(p)]
    before = {p: p.read_bytes() for p in written}
    again = ingest_drop(folder, day, settings)
    assert {p: p.read_bytes() for p in written} == before
    assert again.as_dict() == reports[-1].as_dict()


def test_a_later_day_appends_a_partition(raw_drops, settings):
    drops = drops_up_to(raw_drops, date.max)
    ingest_drop(drops[0][1], drops[0][0], settings)
    first = partition(settings.curated_dir, "session_events", drops[0][0]).read_bytes()
    ingest_drop(drops[1][1], drops[1][0], settings)
    assert partition(settings.curated_dir, "session_events", drops[0][0]).read_bytes() == first
    assert partition(settings.curated_dir, "session_events", drops[1][0]).exists()


def test_customer_ids_are_pseudonymised_and_consent_honoured(ingested):
    settings, _ = ingested
    customers = pl.read_parquet(settings.curated_dir / "customers" / "*" / "*.parquet")
    events = pl.read_parquet(settings.curated_dir / "session_events" / "*" / "*.parquet")
    for ids in (customers["customer_id"], events["customer_id"].drop_nulls()):
        assert ids.str.starts_with("c_").all()
        assert not ids.str.starts_with("C0").any()
    no_consent = customers.filter(~pl.col("body_data_consent"))
    assert no_consent.height > 0
    body = no_consent.select("height_cm", "weight_kg", "bust_cm")
    assert body.null_count().row(0) == (no_consent.height,) * 3


def test_data_quality_summary(ingested):
    settings, reports = ingested
    summary = json.loads(
        (settings.curated_dir / "_reports" / f"{reports[-1].day}.json").read_text()
    )
    events = summary["tables"]["session_events"]
    assert 0 < events["null_rates"]["customer_id"] < 0.3  # anonymous sessions
    assert set(events["ranges"]) == {"ts"}
    customers = summary["tables"]["customers"]
    # Sensitive columns get null rates, never value ranges.
    assert "height_cm" in customers["null_rates"] and "height_cm" not in customers["ranges"]


def test_bad_json_and_future_events(tmp_path, raw_drops, settings):
    day, folder = drops_up_to(raw_drops, date.max)[0]
    drop = tmp_path / "drop"
    shutil.copytree(folder, drop)
    good = json.loads((drop / "session_events.jsonl").read_text().splitlines()[0])
    future = dict(good, event_id="future-1", ts="2099-01-01T00:00:00Z")
    with (drop / "session_events.jsonl").open("a") as f:
        f.write("{not json\n")
        f.write("[1, 2]\n")
        f.write(json.dumps(future) + "\n")
    counts = ingest_drop(drop, day, settings).tables["session_events"]
    assert counts.reasons.get("bad_json") == 2
    assert counts.reasons.get("future_timestamp") == 1
    raw = read_raw(drop / "session_events.jsonl", SESSION_EVENTS)
    assert counts.raw == raw.height == counts.curated + counts.quarantined + counts.exact_duplicates


def test_serving_event_log_is_ingested_with_the_day(tmp_path, raw_drops, settings):
    from pipeline.data.curated import days_to_ingest, serving_logs

    day, folder = drops_up_to(raw_drops, date.max)[0]
    logs = settings.events_dir / day.isoformat()
    logs.mkdir(parents=True)
    first = json.loads((folder / "session_events.jsonl").read_text().splitlines()[0])
    served = [dict(first, event_id=f"srv-{n}", customer_id=first["customer_id"]) for n in range(3)]
    (logs / "serving-host-1.jsonl").write_text("".join(json.dumps(e) + "\n" for e in served))
    (logs / "serving-host-2.jsonl").write_text('{"event_id": "srv-bad"}\n')
    assert days_to_ingest(raw_drops, settings.events_dir, day) == [(day, folder)]
    report = ingest_drop(folder, day, settings, serving_logs(settings.events_dir, day))
    counts = report.tables["session_events"]
    curated = pl.read_parquet(partition(settings.curated_dir, "session_events", day))
    assert {"srv-0", "srv-1", "srv-2"} <= set(curated["event_id"])
    quarantine = pl.read_parquet(partition(settings.quarantine_dir, "session_events", day))
    bad = quarantine.filter(pl.col("source_file").str.ends_with("serving-host-2.jsonl"))
    assert bad.height == 1 and "missing:session_id" in bad["reason"][0]
    assert counts.raw == counts.curated + counts.quarantined + counts.exact_duplicates
