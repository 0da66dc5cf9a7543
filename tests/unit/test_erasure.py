"""Erasure and consent withdrawal, store by store, on a small generated dataset (SQLite
online store; the Redis online store and the model are in tests/integration/test_erasure.py)."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import orjson
import polars as pl
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from pipeline import erasure
from pipeline.config import Settings
from pipeline.data import tombstones
from pipeline.data.contracts import CUSTOMERS
from pipeline.data.curated import current_dimension, partition, scan_curated
from pipeline.data.ingest import ingest_day
from pipeline.features import store
from pipeline.features.build import feature_paths
from pipeline.features.declarations import CUSTOMER_VIEW
from pipeline.privacy import pseudonymise, seal, unseal
from serving.events import EventLog, EventProcessor, SessionEventRequest, SessionStore
from tests.conftest import prepare_days


def _customer_everywhere(settings: Settings) -> tuple[str, str]:
    """A raw id (and its pseudonym) with rows in every curated event table."""
    key = settings.pseudonym_key.get_secret_value()
    common = None
    for table in ("session_events", "try_ons", "purchases"):
        ids = set(
            scan_curated(settings.curated_dir, table)
            .select("customer_id")
            .collect()["customer_id"]
            .drop_nulls()
        )
        common = ids if common is None else common & ids
    customers = pl.concat(
        pl.read_parquet(p, columns=["customer_id", "body_data_consent"])
        for p in sorted(settings.raw_dir.glob("*/customers.parquet"))
    ).drop_nulls()
    for raw, consent in customers.sort("customer_id").iter_rows():
        if consent and pseudonymise(raw, key) in (common or set()):
            return raw, pseudonymise(raw, key)
    raise AssertionError("no customer in every table")


def _serve(settings: Settings, day: date, customer: str, n: int = 4) -> None:
    log = EventLog(settings.events_dir)
    processor = EventProcessor(settings, SessionStore(settings), event_log=log)
    items = sorted(current_dimension(settings.curated_dir, "items", day)["item_id"])
    noon = datetime(day.year, day.month, day.day, 12, tzinfo=UTC)
    try:
        for i in range(n):
            for who in (customer, "C-someone-else"):
                processor.process(
                    SessionEventRequest(
                        session_id=f"live-{who}",
                        customer_id=who,
                        event_type="view",
                        item_id=items[i],
                        ts=noon + timedelta(seconds=i),
                    )
                )
    finally:
        log.close()


def _plant_sealed_quarantine(settings: Settings, day: date, customer: str) -> Path:
    """A malformed line naming the customer, kept sealed (as ingest's quarantine does)."""
    path = partition(settings.quarantine_dir, "session_events", day)
    frame = pl.read_parquet(path)
    key = settings.pseudonym_key.get_secret_value()
    line = '{"customer_id": "' + customer + '", "event_type": "view", "item_id": '
    planted = pl.DataFrame(
        {
            "source_file": ["x/session_events.jsonl"] * 2,
            "line": [10_000, 10_001],
            "reason": ["bad_json"] * 2,
            "raw": ["{******: ******, ...}"] * 2,  # the masked shape ingest shows
            "customer_id": [None, None],  # unparseable: no pseudonym known
            "source_sealed": [seal(line, key), seal('{"customer_id": "C-other", "x": ', key)],
            "day": [day.isoformat()] * 2,
        },
        schema=frame.schema,
    )
    pl.concat([frame, planted]).write_parquet(path)
    return path


@pytest.fixture(scope="module")
def prepared(raw_drops, tmp_path_factory):
    from tests.conftest import Environment

    with Environment(tmp_path_factory.mktemp("erasure") / "var") as settings:
        last = prepare_days(settings, raw_drops)
        raw, pseudonym = _customer_everywhere(settings)
        _serve(settings, last, raw)
        ingest_day(settings.raw_dir / last.isoformat(), last, settings)
        fs = store.feature_store(settings)
        store.apply(fs)
        store.materialize_new(fs, settings.features_dir, settings.feast_dir / "checkpoints")
        _plant_sealed_quarantine(settings, last, raw)
        yield settings, last, raw, pseudonym


def test_before_erasure_the_customer_is_in_every_store(prepared):
    settings, _, raw, pseudonym = prepared
    hits = erasure.find_traces(settings, [raw])
    stores = {h.split("/")[0] for h in hits}
    assert {"raw", "curated", "quarantine", "features", "feast", "events"} <= stores, hits
    assert not [h for h in hits if h.startswith("events/") and raw in h]
    # Serving's log holds the pseudonym, never the raw id.
    for path in settings.events_dir.glob("*/*.jsonl"):
        text = path.read_text()
        assert pseudonym in text and f'"{raw}"' not in text


def test_erasure_leaves_no_trace_and_a_record_without_personal_data(prepared):
    settings, last, raw, pseudonym = prepared
    other = pl.read_parquet(partition(settings.curated_dir, "customers", last))
    before = {
        t: scan_curated(settings.curated_dir, t).select(pl.len()).collect().item()
        for t in ("session_events", "try_ons", "purchases")
    }
    mine = {
        t: scan_curated(settings.curated_dir, t)
        .filter(pl.col("customer_id") == pseudonym)
        .select(pl.len())
        .collect()
        .item()
        for t in before
    }
    record = erasure.erase_customers(settings, [raw])
    assert erasure.find_traces(settings, [raw]) == []
    assert record.leftovers == 0
    for store_name in ("raw", "curated", "quarantine", "features", "online_store", "event_log"):
        assert record.rows.get(store_name, 0) > 0, (store_name, record.rows)
    # Exactly the customer's rows went, nobody else's.
    for table, n in before.items():
        after = scan_curated(settings.curated_dir, table).select(pl.len()).collect().item()
        assert after == n - mine[table], table
    remaining = pl.read_parquet(partition(settings.curated_dir, "customers", last))
    assert remaining.height == other.height - other["customer_id"].is_in([pseudonym]).sum()
    # The sealed line of someone else stays.
    quarantined = pl.read_parquet(partition(settings.quarantine_dir, "session_events", last))
    assert quarantined.filter(pl.col("line") == 10_001).height == 1
    assert quarantined.filter(pl.col("line") == 10_000).height == 0
    # Audit record: counts, no raw id, no pseudonym; the tombstone list: pseudonyms only.
    (text,) = [p.read_text() for p in (settings.privacy_dir / "audit").glob("*.json")]
    assert raw not in text and pseudonym not in text
    assert json.loads(text)["customers"] == 1
    listed = tombstones.tombstone_path(settings).read_text()
    assert pseudonym in listed and raw not in listed
    assert tombstones.is_erased(pseudonym, settings)


def test_a_re_sent_row_of_an_erased_customer_is_not_ingested_again(prepared):
    settings, last, raw, pseudonym = prepared
    if not tombstones.is_erased(pseudonym, settings):
        erasure.erase_customers(settings, [raw])
    drop = settings.raw_dir / last.isoformat()
    items = sorted(current_dimension(settings.curated_dir, "items", last)["item_id"])
    resent = {
        "event_id": "resent-1",
        "session_id": "resent",
        "customer_id": raw,
        "event_type": "view",
        "item_id": items[0],
        "ts": f"{last.isoformat()}T08:00:00Z",
    }
    with (drop / "session_events.jsonl").open("ab") as handle:
        handle.write(orjson.dumps(resent) + b"\n")
    report, skipped = ingest_day(drop, last, settings)
    assert not skipped
    counts = report["tables"]["session_events"]
    assert counts["erased"] == 1
    assert counts["raw"] == (
        counts["curated"] + counts["quarantined"] + counts["exact_duplicates"] + counts["erased"]
    )
    curated = pl.read_parquet(partition(settings.curated_dir, "session_events", last))
    assert pseudonym not in curated["customer_id"].to_list()
    quarantined = pl.read_parquet(partition(settings.quarantine_dir, "session_events", last))
    assert not quarantined["raw"].str.contains(pseudonym, literal=True).any()
    erasure.erase_customers(settings, [raw])  # the re-sent raw line goes too
    assert erasure.find_traces(settings, [raw]) == []


def test_consent_withdrawal_drops_body_data_downstream(prepared):
    settings, last, raw, pseudonym = prepared
    key = settings.pseudonym_key.get_secret_value()
    customers = pl.read_parquet(partition(settings.curated_dir, "customers", last))
    with_body = customers.filter(
        pl.col("body_data_consent")
        & pl.col("height_cm").is_not_null()
        & (pl.col("customer_id") != pseudonym)
    )
    raws = pl.concat(
        pl.read_parquet(p, columns=["customer_id"]) for p in settings.raw_dir.glob("*/c*.parquet")
    )["customer_id"].unique()
    by_pseudonym = {pseudonymise(r, key): r for r in raws}
    target = by_pseudonym[with_body["customer_id"][0]]
    target_p = pseudonymise(target, key)
    rows_before = scan_curated(settings.curated_dir, "session_events").select(pl.len()).collect()
    record = erasure.erase_customers(settings, [target], body_only=True)
    assert record.kind == "withdraw_consent" and record.rows["curated"] > 0
    curated = (
        scan_curated(settings.curated_dir, "customers")
        .filter(pl.col("customer_id") == target_p)
        .collect()
    )
    assert curated.height > 0
    assert curated.select(pl.col(CUSTOMERS.sensitive).is_null().all()).row(0) == tuple(
        [True] * len(CUSTOMERS.sensitive)
    )
    assert not curated["body_data_consent"].any()
    for path in settings.raw_dir.glob("*/customers.parquet"):
        frame = pl.read_parquet(path).filter(pl.col("customer_id") == target)
        assert (
            frame.select(pl.col(CUSTOMERS.sensitive).is_null().all()).row(0)
            == tuple([True] * len(CUSTOMERS.sensitive))
            if frame.height
            else True
        )
    features = pl.read_parquet(feature_paths(settings.features_dir)[CUSTOMER_VIEW]).filter(
        pl.col("customer_id") == target_p
    )
    body = erasure.body_feature_names()
    assert features.height > 0
    assert (features["has_body"] == 0.0).all()
    assert features.select(pl.col([b for b in body if b != "has_body"]).is_null().all()).row(
        0
    ) == tuple([True] * (len(body) - 1))
    online = store.read_customer_features(store.feature_store(settings), [target_p])[0]
    assert all(online[b] is None for b in body), online
    assert any(online[f] is not None for f in online if f not in body)  # the rest is kept
    # Nothing but body data went.
    rows_after = scan_curated(settings.curated_dir, "session_events").select(pl.len()).collect()
    assert rows_after.item() == rows_before.item()
    assert not tombstones.is_erased(target_p, settings)


ID = st.text(alphabet="ABCXYZ019-_", min_size=1, max_size=6)


@given(
    rows=st.lists(st.tuples(ID, st.booleans()), min_size=1, max_size=40),
    erased=st.sets(ID, min_size=1, max_size=5),
    junk=st.lists(st.binary(max_size=30), max_size=5),
)
@hsettings(max_examples=60, deadline=None)
def test_jsonl_rewrite_drops_exactly_the_erased_lines(tmp_path_factory, rows, erased, junk):
    """Hostile ids (prefixes of one another) and junk lines: a parsed line goes iff its id
    is erased; every other line is kept byte for byte."""
    path = tmp_path_factory.mktemp("jsonl") / "x.jsonl"
    lines = [
        orjson.dumps({"customer_id" if raw else "customer_pseudonym": c, "v": i}) + b"\n"
        for i, (c, raw) in enumerate(rows)
    ]
    junk_lines = [j.replace(b"\n", b" ").replace(b"\r", b" ") + b"\n" for j in junk]
    path.write_bytes(b"".join(lines + junk_lines))
    who = erasure.Who(frozenset(erased), frozenset(), ["k"])
    removed = erasure.jsonl_without(path, who)
    kept = path.read_bytes().splitlines(keepends=True)
    expected = [line for line, (c, _) in zip(lines, rows, strict=True) if c not in erased]
    junk_kept = [j for j in junk_lines if not who.in_text(j.decode("utf-8", "replace"))]
    assert [k for k in kept if k in lines] == expected
    assert removed == len(lines) - len(expected) + len(junk_lines) - len(junk_kept)


def test_audit_records_and_ids_file(tmp_path):
    ids = tmp_path / "ids.txt"
    ids.write_text("# erasure requests\nC1\n\n  C2  \n")
    assert erasure.read_ids(ids) == ["C1", "C2"]
    settings = Settings(data_dir=tmp_path / "var")
    record = erasure.erase_customers(settings, [], now=datetime(2024, 1, 1, tzinfo=UTC))
    assert record.customers == 0 and not list(erasure.audit_records(settings))


@given(
    height=st.floats(120, 230),
    other=st.text(alphabet="ABCXYZ019-", min_size=1, max_size=8).filter(lambda s: s != "C-w"),
)
@hsettings(max_examples=20, deadline=None)
def test_quarantine_sealed_and_plain_lines_by_customer(tmp_path_factory, height, other):
    """Sealed lines are opened to find the customer (under any key in use); consent
    withdrawal re-seals them without body data; other customers' lines stay as they were."""
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("q") / "var",
        pseudonym_key="new",
        pseudonym_previous_keys="old",
    )
    mine = json.dumps({"customer_id": "C-w", "height_cm": height, "x": "}"})
    theirs = json.dumps({"customer_id": other, "height_cm": height})
    path = settings.quarantine_dir / "customers" / "date=2024-05-01" / "part-0.parquet"
    path.parent.mkdir(parents=True)
    frame = pl.DataFrame(
        {
            "reason": ["bad_json", "bad_json", "bad_type:height_cm"],
            "raw": [seal(mine, "old"), seal(theirs, "new"), mine.replace("C-w", "c_plain")],
        }
    )
    frame.write_parquet(path)
    who = erasure.Who.of(["C-w"], settings)
    record = erasure.AuditRecord("t", "now", "withdraw_consent", 1)
    erasure.erase_quarantine(settings, who, True, record)
    after = pl.read_parquet(path)
    opened = unseal(after["raw"][0], settings.pseudonym_keys)
    assert "height_cm" not in opened and "C-w" in opened
    assert after["raw"][1] == frame["raw"][1] and after["raw"][2] == frame["raw"][2]
    assert record.rows["quarantine"] == 1
    erasure.erase_quarantine(settings, who, False, record)
    assert pl.read_parquet(path)["raw"].to_list() == frame["raw"].to_list()[1:]
