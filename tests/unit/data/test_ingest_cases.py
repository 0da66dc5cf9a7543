"""Each hostile-input case of issue 13, one test each: no traceback, the exact reason, the rest
of the day ingested, counts reconciled, and no raw customer id in the quarantine."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import polars as pl
import pytest

from pipeline.data.curated import partition, report_path
from pipeline.data.ingest import ingest_drop, trust_case
from pipeline.privacy import pseudonymise, unseal
from tests.unit.data.test_ingest_reasons import (
    CHART,
    DAY,
    customer,
    event,
    item,
    try_on,
    write,
)

GOOD = {
    "customers": [customer("A"), customer("B")],
    "items": [item("I1"), item("I2")],
    "session_events": [event("e1"), event("e2", item_id="I2")],
    "try_ons": [try_on("t1")],
}


def drop_with(tmp_path: Path, **tables: list) -> Path:
    folder = tmp_path / "drop"
    write(folder, {**GOOD, **tables})
    return folder


def quarantine(settings, table: str) -> pl.DataFrame:
    return pl.read_parquet(partition(settings.quarantine_dir, table, DAY))


def curated(settings, table: str) -> pl.DataFrame:
    return pl.read_parquet(partition(settings.curated_dir, table, DAY))


def assert_whole_day(report, settings) -> None:
    """Every table written and reconciled, and the report on disk."""
    assert report_path(settings.curated_dir, DAY).is_file()
    for table, counts in report.tables.items():
        assert counts.reconciled, table
        assert counts.raw == counts.curated + counts.quarantined + counts.exact_duplicates
        assert partition(settings.curated_dir, table, DAY).is_file()
        assert partition(settings.quarantine_dir, table, DAY).is_file()


def reasons_of(settings, table: str) -> list[str]:
    return quarantine(settings, table).get_column("reason").to_list()


def test_stock_1e400_is_out_of_range(tmp_path, settings):
    drop = drop_with(tmp_path, items=[item("I1"), item("I2", stock='{"S": 1e400}')])
    report = ingest_drop(drop, DAY, settings)
    assert reasons_of(settings, "items") == ["out_of_range:stock"]
    assert_whole_day(report, settings)


def test_stock_beyond_int32_is_out_of_range(tmp_path, settings):
    drop = drop_with(tmp_path, items=[item("I1"), item("I2", stock='{"S": 99999999999999999999}')])
    report = ingest_drop(drop, DAY, settings)
    assert reasons_of(settings, "items") == ["out_of_range:stock"]
    assert_whole_day(report, settings)


def test_size_chart_with_more_sizes_than_an_int8_rank_is_out_of_range(tmp_path, settings):
    ranges = json.loads(CHART)["S"]
    big = json.dumps({f"S{i}": ranges for i in range(129)})
    most = json.dumps({f"S{i}": ranges for i in range(128)})
    drop = drop_with(tmp_path, items=[item("I1", size_chart=most), item("I2", size_chart=big)])
    report = ingest_drop(drop, DAY, settings)
    assert reasons_of(settings, "items") == ["out_of_range:size_chart"]
    assert curated(settings, "item_sizes").height == 128  # 128 sizes (ranks 0..127) still fit
    assert_whole_day(report, settings)


def test_csv_row_with_more_fields_than_the_header_is_quarantined(tmp_path, settings):
    drop = drop_with(tmp_path)
    with (drop / "items.csv").open("a") as handle:
        handle.write("I3,dress,b,50,red,boho,,0.1,,2026-03-01T00:00:00Z,surplus\n")
    report = ingest_drop(drop, DAY, settings)
    assert reasons_of(settings, "items") == ["bad_csv_row"]
    assert curated(settings, "items").height == 2
    assert_whole_day(report, settings)


def test_latin1_byte_in_items_csv_is_bad_encoding(tmp_path, settings):
    drop = drop_with(tmp_path)
    line = "I3,dress,Caf\xe9,50,red,boho,,0.1,,2026-03-01T00:00:00Z\n".encode("latin-1")
    with (drop / "items.csv").open("ab") as handle:
        handle.write(line)
    report = ingest_drop(drop, DAY, settings)
    q = quarantine(settings, "items")
    assert q.get_column("reason").to_list() == ["bad_encoding"]
    key = settings.pseudonym_key.get_secret_value()
    recovered = unseal(q.get_column("source_sealed").item(), [key])
    assert recovered.encode("utf-8", "surrogateescape") == line.rstrip(b"\n")
    assert curated(settings, "items").height == 2
    assert_whole_day(report, settings)


def test_empty_items_csv_is_a_quarantined_file(tmp_path, settings):
    drop = drop_with(tmp_path)
    (drop / "items.csv").write_bytes(b"")
    report = ingest_drop(drop, DAY, settings)
    counts = report.tables["items"]
    assert counts.quarantined_files == {"drop/items.csv": "empty_file"}
    assert (counts.raw, counts.quarantined) == (1, 1)
    assert quarantine(settings, "items").get_column("line").to_list() == [None]
    # Events of items known only from that file are now unknown, not lost.
    assert report.tables["session_events"].reasons == {"unknown_item": 2}
    assert_whole_day(report, settings)


def test_empty_customers_parquet_is_a_quarantined_file(tmp_path, settings):
    drop = drop_with(tmp_path)
    (drop / "customers.parquet").write_bytes(b"")
    report = ingest_drop(drop, DAY, settings)
    assert report.tables["customers"].quarantined_files == {"drop/customers.parquet": "empty_file"}
    assert report.tables["try_ons"].reasons == {"unknown_customer": 1}
    assert_whole_day(report, settings)


def test_corrupt_customers_parquet_is_a_quarantined_file(tmp_path, settings):
    drop = drop_with(tmp_path)
    data = (drop / "customers.parquet").read_bytes()
    (drop / "customers.parquet").write_bytes(data[: len(data) // 2])
    report = ingest_drop(drop, DAY, settings)
    counts = report.tables["customers"]
    assert counts.quarantined_files == {"drop/customers.parquet": "corrupt_file"}
    assert (counts.raw, counts.curated, counts.quarantined) == (1, 0, 1)
    assert_whole_day(report, settings)


def test_list_typed_parquet_column_is_a_quarantined_file(tmp_path, settings):
    drop = drop_with(tmp_path)
    frame = pl.read_parquet(drop / "customers.parquet").with_columns(
        pl.concat_list(pl.col("height_cm"), pl.col("waist_cm")).alias("height_cm")
    )
    frame.write_parquet(drop / "customers.parquet")
    report = ingest_drop(drop, DAY, settings)
    assert report.tables["customers"].quarantined_files == {
        "drop/customers.parquet": "bad_column_type:height_cm"
    }
    assert_whole_day(report, settings)


def test_latin1_bytes_in_json_lines_are_bad_encoding_not_replaced(tmp_path, settings):
    drop = drop_with(tmp_path)
    bad = json.dumps(event("e3", customer_id="Z\x00")).replace("\\u0000", "\xe9").encode("latin-1")
    also = json.dumps(event("e4", customer_id="Z\x00")).replace("\\u0000", "\xe8").encode("latin-1")
    with (drop / "session_events.jsonl").open("ab") as handle:
        handle.write(bad + b"\n" + also + b"\n")
    report = ingest_drop(drop, DAY, settings)
    q = quarantine(settings, "session_events")
    assert q.get_column("reason").to_list() == ["bad_encoding", "bad_encoding"]
    assert "\ufffd" not in "".join(curated(settings, "session_events")["customer_id"].drop_nulls())
    key = settings.pseudonym_key.get_secret_value()
    recovered = [unseal(t, [key]).encode("utf-8", "surrogateescape") for t in q["source_sealed"]]
    assert recovered == [bad, also]
    assert not q.get_column("raw").str.contains("Z").any()  # the id is not visible
    assert_whole_day(report, settings)


def test_five_feet_eighteen_inches_is_rejected(tmp_path, settings):
    drop = drop_with(tmp_path, customers=[customer("A"), customer("B", height_cm="5' 18\"")])
    report = ingest_drop(drop, DAY, settings)
    assert reasons_of(settings, "customers") == ["bad_type:height_cm"]
    assert_whole_day(report, settings)


def test_fractional_stock_is_bad_stock(tmp_path, settings):
    drop = drop_with(
        tmp_path, items=[item("I1", stock='{"S": 2.0}'), item("I2", stock='{"S": 1.5}')]
    )
    report = ingest_drop(drop, DAY, settings)
    assert reasons_of(settings, "items") == ["bad_stock"]
    assert curated(settings, "item_sizes").get_column("stock").to_list() == [2]
    assert_whole_day(report, settings)


def test_duplicate_json_keys_are_quarantined(tmp_path, settings):
    line = json.dumps(event("e3"))[:-1] + ', "customer_id": "B"}'
    drop = drop_with(tmp_path, session_events=[event("e1"), line])
    report = ingest_drop(drop, DAY, settings)
    q = quarantine(settings, "session_events")
    assert q.get_column("reason").to_list() == ["duplicate_json_key"]
    assert q.get_column("source_sealed").null_count() == 0
    assert_whole_day(report, settings)


def test_bad_stock_json_is_bad_stock_not_bad_size_chart(tmp_path, settings):
    drop = drop_with(tmp_path, items=[item("I1"), item("I2", stock='{"S": 2')])
    report = ingest_drop(drop, DAY, settings)
    assert reasons_of(settings, "items") == ["bad_stock"]
    assert_whole_day(report, settings)


def test_malformed_line_has_exactly_one_reason(tmp_path, settings):
    drop = drop_with(tmp_path, try_ons=[try_on("t1"), '{"event_id": "t2", "customer_id": "A"'])
    report = ingest_drop(drop, DAY, settings)
    q = quarantine(settings, "try_ons")
    assert q.get_column("reason").to_list() == ["bad_json"]
    assert report.tables["try_ons"].reasons == {"bad_json": 1}
    # Kept sealed, shown masked: the shape and the column names, no value.
    key = settings.pseudonym_key.get_secret_value()
    assert unseal(q["source_sealed"].item(), [key]) == '{"event_id": "t2", "customer_id": "A"'
    assert q["raw"].item() == '{"event_id": "**", "customer_id": "*"'
    assert q["customer_id"].item() is None
    assert_whole_day(report, settings)


def test_missing_feed_file_is_warned_and_reported(tmp_path, settings, caplog):
    drop = drop_with(tmp_path)
    (drop / "purchases.jsonl").unlink(missing_ok=True)
    with caplog.at_level(logging.WARNING, logger="pipeline.data.ingest"):
        report = ingest_drop(drop, DAY, settings)
    assert report.tables["purchases"].missing_files == ["drop/purchases.jsonl"]
    assert report.tables["items"].missing_files == []
    assert any("drop/purchases.jsonl" in r.getMessage() for r in caplog.records)
    written = json.loads(report_path(settings.curated_dir, DAY).read_text())
    assert written["tables"]["purchases"]["missing_files"] == ["drop/purchases.jsonl"]
    assert_whole_day(report, settings)


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_non_finite_numbers_are_out_of_range(tmp_path, settings, value):
    drop = drop_with(tmp_path, items=[item("I1"), item("I2", price=value)])
    report = ingest_drop(drop, DAY, settings)
    assert reasons_of(settings, "items") == ["out_of_range:price"]
    assert_whole_day(report, settings)


@pytest.mark.parametrize(
    "ts", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-14:00", "9223372036854775807"]
)
def test_times_beyond_the_bounds_are_rejected(tmp_path, settings, ts):
    drop = drop_with(tmp_path, session_events=[event("e1"), event("e2", ts=ts)])
    report = ingest_drop(drop, DAY, settings)
    (reason,) = reasons_of(settings, "session_events")
    assert reason.split(";")[0] in {"out_of_range:ts", "bad_type:ts"}
    assert_whole_day(report, settings)


def test_quarantine_holds_no_raw_customer_id(tmp_path, settings):
    raw_id = "CUST-12345"
    drop = drop_with(
        tmp_path,
        customers=[customer("A"), customer(raw_id, body_type="banana", body_data_consent="no")],
        try_ons=[
            try_on("t1"),
            try_on("t2", customer_id=raw_id, size="a very long size label"),
            json.dumps(try_on("t3", customer_id=raw_id, liked="maybe")).replace(
                "CUST", "\\u0043UST"
            ),
            '{"customer_id": "' + raw_id + '", oops}',
        ],
    )
    report = ingest_drop(drop, DAY, settings)
    key = settings.pseudonym_key.get_secret_value()
    pseudonym = pseudonymise(raw_id, key)
    for table in ("customers", "try_ons"):
        q = quarantine(settings, table)
        for column in q.columns:
            assert not q[column].cast(pl.String).str.contains(raw_id, literal=True).any()
        bytes_on_disk = partition(settings.quarantine_dir, table, DAY).read_bytes()
        assert raw_id.encode() not in bytes_on_disk
    customers_q = quarantine(settings, "customers")
    assert customers_q["customer_id"].to_list() == [pseudonym]
    assert "height_cm" not in json.loads(customers_q["raw"].item())  # no consent: no body
    try_ons_q = quarantine(settings, "try_ons").sort("line")
    # Parsed rows name the pseudonym; the escaped id and the broken line are sealed only.
    assert try_ons_q["customer_id"].to_list() == [pseudonym, pseudonym, None]
    assert try_ons_q["source_sealed"].is_null().to_list() == [True, False, False]
    assert raw_id in unseal(try_ons_q["source_sealed"][2], [key])
    assert_whole_day(report, settings)


def test_trust_case_reports_crash_and_reconciliation(tmp_path, settings):
    drop = drop_with(tmp_path)
    (drop / "items.csv").write_bytes(b"\x00\xff garbage")
    case = trust_case(drop, DAY, settings)
    assert case["crashed"] is False and case["error"] is None
    assert set(case["reconciled"]) == {
        "customers",
        "items",
        "session_events",
        "try_ons",
        "purchases",
        "exposures",
        "outcomes",
    }
    assert all(case["reconciled"].values())
    assert case["report"]["tables"]["items"]["quarantined"] >= 1


def test_the_days_after_a_hostile_day_go_on(tmp_path, settings):
    drop = drop_with(tmp_path)
    (drop / "items.csv").write_bytes(b"")
    (drop / "customers.parquet").write_bytes(b"PAR1 not really")
    ingest_drop(drop, DAY, settings)
    later = DAY.replace(day=DAY.day + 1)
    write(
        tmp_path / "next",
        {
            "customers": [customer("A")],
            "items": [item("I1")],
            "session_events": [event("n1", ts="2026-03-11T10:00:00Z")],
        },
    )
    report = ingest_drop(tmp_path / "next", later, settings)
    assert {t: c.curated for t, c in report.tables.items() if c.curated} == {
        "customers": 1,
        "items": 1,
        "session_events": 1,
    }
    assert all(c.reconciled for c in report.tables.values())


def test_a_misspelt_customer_key_is_sealed_not_shown(tmp_path, settings):
    raw_id = "CUST-777"
    line = json.dumps(event("e3", customer_id=None, event_type="teleport") | {"customr_id": raw_id})
    drop = drop_with(tmp_path, session_events=[event("e1"), line])
    ingest_drop(drop, DAY, settings)
    q = quarantine(settings, "session_events")
    assert q["reason"].to_list() == ["not_allowed:event_type"]
    assert raw_id not in q["raw"].item() and q["customer_id"].item() is None
    key = settings.pseudonym_key.get_secret_value()
    assert json.loads(unseal(q["source_sealed"].item(), [key]))["customr_id"] == raw_id
