"""Serving's exposures and outcomes logs are ingested like every other event: good rows
curated, bad rows quarantined with their reasons, every row reconciled, re-runs unchanged."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest

from pipeline.data.contracts import EXPOSURES, OUTCOMES
from pipeline.data.curated import days_to_ingest, partition, report_path, serving_logs
from pipeline.data.ingest import ingest_day
from pipeline.data.rawfiles import read_raw
from pipeline.privacy import key_id, pseudonymise
from tests.unit.data.test_ingest_reasons import DAY, customer, event, item, write

pytestmark = pytest.mark.unit

REC = "r-" + "a" * 32


def exposure(rid: str = REC, **over) -> dict:
    row = {
        "recommendation_id": rid,
        "ts": "2026-03-10T10:00:00.123Z",
        "session_id": "s1",
        "customer_pseudonym": None,
        "pseudonym_key_id": None,
        "experiment": "ranker-v7",
        "experiment_version": "0123456789ab",
        "variant": "control",
        "model_version": "3",
        "items": ["I1", "I2"],
        "teams": None,
        "latency_ms": 12.5,
        "degraded": False,
        "fallback": False,
    }
    return {**row, **over}


def outcome(eid: str, **over) -> dict:
    row = {
        "event_id": eid,
        "ts": "2026-03-10T10:05:00Z",
        "session_id": "s1",
        "customer_pseudonym": None,
        "pseudonym_key_id": None,
        "event_type": "click",
        "item_id": "I1",
        "recommendation_id": REC,
        "order_id": None,
        "quantity": 1,
        "price": None,
        "return_reason": None,
    }
    return {**row, **over}


def rec(n: int) -> str:
    return f"r-{n:032x}"


def _log(settings, name: str, rows: list) -> Path:
    folder = settings.events_dir / DAY.isoformat()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


GOOD_EXPOSURES = [
    exposure(rec(1)),
    exposure(rec(2), teams=["control", "treatment"], variant=None),
    exposure(rec(3), session_id=None, experiment=None, variant=None, items=[]),
]
BAD_EXPOSURES = [
    (exposure("rec-1"), "bad_format:recommendation_id"),
    (exposure(rec(10), latency_ms=700_000), "out_of_range:latency_ms"),
    (exposure(rec(11), latency_ms=-1), "out_of_range:latency_ms"),
    (exposure(rec(12), items=[1, 2]), "bad_format:items"),
    (exposure(rec(13), items={"a": 1}), "bad_type:items"),
    (exposure(rec(14), items=None), "missing:items"),
    (exposure(rec(15), teams=["control"]), "length_mismatch:teams"),
    (exposure(rec(16), degraded="maybe"), "bad_type:degraded"),
    (exposure(rec(17), ts="yesterday"), "bad_type:ts"),
    (exposure(rec(18), items=["I 1"]), "bad_format:items"),
    (exposure(rec(1), latency_ms=99.0), "duplicate_key"),  # same id, other content
]
GOOD_OUTCOMES = [
    outcome("o1"),
    outcome("o2", event_type="add_to_cart", recommendation_id=None),
    outcome("o3", event_type="purchase", order_id="ord1", quantity=2, price=49.5),
    outcome("o4", event_type="return", return_reason="too_small", price=49.5, session_id=None),
]
BAD_OUTCOMES = [
    (outcome("b1", event_type="view"), "not_allowed:event_type"),
    (outcome("b2", event_type="return"), "missing:return_reason"),
    (outcome("b3", event_type="return", return_reason="ugly"), "not_allowed:return_reason"),
    (outcome("b4", return_reason="style"), "unexpected:return_reason"),
    (outcome("b5", quantity=0), "out_of_range:quantity"),
    (outcome("b6", quantity=1001), "out_of_range:quantity"),
    (outcome("b7", quantity=1.5), "bad_type:quantity"),
    (outcome("b8", price=-1), "out_of_range:price"),
    (outcome("b9", item_id="NOPE"), "unknown_item"),
    (outcome("b10", recommendation_id="x"), "bad_format:recommendation_id"),
    (outcome("b11", event_type="click", quantity=None), "missing:quantity"),
    (outcome("o1", event_type="purchase"), "duplicate_key"),
]


def _day(settings, tmp_path: Path, customer_id: str = "A") -> Path:
    drop = tmp_path / "raw" / DAY.isoformat()
    write(
        drop,
        {
            "customers": [customer(customer_id)],
            "items": [item("I1"), item("I2")],
            "session_events": [event("e1", customer_id=customer_id)],
        },
    )
    key = settings.pseudonym_key.get_secret_value()
    pseudonym = pseudonymise(customer_id, key)
    signed_in = {"customer_pseudonym": pseudonym, "pseudonym_key_id": key_id(key)}
    rows = [*GOOD_EXPOSURES, exposure(rec(4), **signed_in), *(r for r, _ in BAD_EXPOSURES)]
    _log(settings, "exposures-host-1.jsonl", [*rows, rows[0], "{broken"])
    outcomes = [*GOOD_OUTCOMES, outcome("o5", **signed_in), *(r for r, _ in BAD_OUTCOMES)]
    _log(settings, "outcomes-host-1.jsonl", [*outcomes, outcomes[0]])
    _log(settings, "serving-host-1.jsonl", [event("live-1", customer_id=None)])
    return drop


def test_serving_logs_are_routed_by_file_name(settings, tmp_path):
    drop = _day(settings, tmp_path)
    logs = serving_logs(settings.events_dir, DAY)
    assert {t: [p.name for p in ps] for t, ps in logs.items()} == {
        "session_events": ["serving-host-1.jsonl"],
        "exposures": ["exposures-host-1.jsonl"],
        "outcomes": ["outcomes-host-1.jsonl"],
    }
    assert days_to_ingest(drop.parent, settings.events_dir, DAY) == [(DAY, drop)]


def test_exposures_and_outcomes_are_curated_quarantined_and_reconciled(settings, tmp_path):
    drop = _day(settings, tmp_path)
    report, skipped = ingest_day(drop, DAY, settings)
    assert not skipped
    tables = report["tables"]
    for name in ("exposures", "outcomes", "session_events"):
        counts = tables[name]
        assert counts["reconciled"], name
        assert counts["raw"] == (
            counts["curated"]
            + counts["quarantined"]
            + counts["exact_duplicates"]
            + counts["erased"]
        )
        assert counts["missing_files"] == []

    exposures = pl.read_parquet(partition(settings.curated_dir, "exposures", DAY))
    assert exposures.schema == EXPOSURES.schema
    assert sorted(exposures["recommendation_id"]) == [rec(1), rec(2), rec(3), rec(4)]
    first = exposures.filter(pl.col("recommendation_id") == rec(1)).row(0, named=True)
    assert first["items"] == '["I1","I2"]' and first["teams"] is None
    assert first["latency_ms"] == 12.5 and first["degraded"] is False
    mixed = exposures.filter(pl.col("recommendation_id") == rec(2))
    assert json.loads(mixed["teams"].item()) == ["control", "treatment"]
    key = settings.pseudonym_key.get_secret_value()
    signed = exposures.filter(pl.col("recommendation_id") == rec(4))
    assert signed["customer_id"].item() == pseudonymise("A", key)  # serving's, not re-hashed
    assert tables["exposures"]["exact_duplicates"] == 1
    expected = {reason for _, reason in BAD_EXPOSURES} | {"bad_json"}
    assert set(tables["exposures"]["reasons"]) == expected
    quarantine = pl.read_parquet(partition(settings.quarantine_dir, "exposures", DAY))
    assert quarantine.height == len(BAD_EXPOSURES) + 1

    outcomes = pl.read_parquet(partition(settings.curated_dir, "outcomes", DAY))
    assert outcomes.schema == OUTCOMES.schema
    assert sorted(outcomes["event_id"]) == ["o1", "o2", "o3", "o4", "o5"]
    bought = outcomes.filter(pl.col("event_id") == "o3").row(0, named=True)
    assert (bought["quantity"], bought["price"], bought["order_id"]) == (2, 49.5, "ord1")
    assert outcomes.filter(pl.col("event_id") == "o5")["customer_id"].item() == pseudonymise(
        "A", key
    )
    assert set(tables["outcomes"]["reasons"]) == {reason for _, reason in BAD_OUTCOMES}
    assert tables["outcomes"]["exact_duplicates"] == 1
    # Each bad row is quarantined for its own reason.
    reasons = pl.read_parquet(partition(settings.quarantine_dir, "outcomes", DAY))["reason"]
    assert sorted(reasons) == sorted(reason for _, reason in BAD_OUTCOMES)

    # Serving's session events still go where they went.
    events = pl.read_parquet(partition(settings.curated_dir, "session_events", DAY))
    assert set(events["event_id"]) == {"e1", "live-1"}


def test_rerunning_changes_nothing(settings, tmp_path):
    drop = _day(settings, tmp_path)
    ingest_day(drop, DAY, settings)
    files = {
        (root, t): partition(root, t, DAY).read_bytes()
        for t in ("exposures", "outcomes")
        for root in (settings.curated_dir, settings.quarantine_dir)
    }
    report = report_path(settings.curated_dir, DAY).read_bytes()
    _, skipped = ingest_day(drop, DAY, settings)
    assert skipped
    # Forced: the same inputs give byte-identical files.
    report_path(settings.curated_dir, DAY).unlink()
    _, skipped = ingest_day(drop, DAY, settings)
    assert not skipped
    for table in ("exposures", "outcomes"):
        for root in (settings.curated_dir, settings.quarantine_dir):
            assert partition(root, table, DAY).read_bytes() == files[root, table], table
    assert report_path(settings.curated_dir, DAY).read_bytes() == report


def test_a_day_without_experiment_logs_writes_empty_tables(settings, tmp_path):
    drop = tmp_path / "raw" / DAY.isoformat()
    write(drop, {"customers": [customer("A")], "items": [item("I1")], "session_events": []})
    report, _ = ingest_day(drop, DAY, settings)
    for table in ("exposures", "outcomes"):
        assert report["tables"][table]["raw"] == 0
        assert report["tables"][table]["missing_files"] == []
        assert pl.read_parquet(partition(settings.curated_dir, table, DAY)).is_empty()


def test_lists_are_read_as_compact_json_text(tmp_path):
    path = tmp_path / "exposures-h-1.jsonl"
    path.write_text(
        json.dumps(exposure(items=["I1", "I2"], teams=["a", "b"]))
        + "\n"
        + json.dumps(exposure(items=[1.5]))
        + "\n"
        + '{"recommendation_id": "r", "items": [1e400]}\n'
    )
    frame = read_raw(path, EXPOSURES)
    assert frame["items"].to_list()[:2] == ['["I1","I2"]', "[1.5]"]
    assert frame["teams"][0] == '["a","b"]'
    assert frame["__nested"].to_list() == [None, None, "bad_type:items"]


def test_the_fast_and_the_slow_reader_agree(tmp_path):
    rows = [
        exposure(rec(1)),
        exposure(rec(2), items=[], teams=["a"]),
        exposure(rec(3), items=["I1", 2]),
        exposure(rec(4), items="not a list"),
        exposure(rec(5), items=None, teams=["b", "c"]),
    ]
    spaced = json.dumps(exposure(rec(6)), indent=None).replace('["I1", "I2"]', '[ "I1" ,"I2" ]')
    text = "".join(json.dumps(r) + "\n" for r in rows) + spaced + "\n"
    path = tmp_path / "exposures-h-1.jsonl"
    path.write_text(text)
    fast = read_raw(path, EXPOSURES)
    path.write_text(text + "\x00\n")  # a NUL byte sends the whole file down the slow path
    slow = read_raw(path, EXPOSURES).head(len(rows) + 1)
    assert fast.drop("__source").equals(slow.drop("__source"))
    assert fast["items"].to_list() == [
        '["I1","I2"]',
        "[]",
        '["I1",2]',
        "not a list",
        None,
        '["I1","I2"]',
    ]


def test_a_line_re_sent_on_a_later_day_is_a_duplicate(settings, tmp_path):
    drop = _day(settings, tmp_path)
    ingest_day(drop, DAY, settings)
    later = DAY + timedelta(days=1)
    folder = settings.events_dir / later.isoformat()
    folder.mkdir(parents=True)
    (folder / "exposures-host-1.jsonl").write_text(json.dumps(exposure(rec(1))) + "\n")
    (folder / "outcomes-host-1.jsonl").write_text(json.dumps(outcome("o1")) + "\n")
    report, _ = ingest_day(tmp_path / "raw" / later.isoformat(), later, settings)
    for table in ("exposures", "outcomes"):
        assert report["tables"][table]["reasons"] == {"duplicate_key": 1}, table
        assert report["tables"][table]["reconciled"]
