"""Erasure reaches serving's exposures and outcomes: the log lines and the curated rows of
the customer go, nobody else's; a re-sent line is dropped as erased on the next ingest."""

from __future__ import annotations

import json

import polars as pl
import pytest

from pipeline import erasure
from pipeline.data.curated import partition
from pipeline.data.ingest import ingest_day
from pipeline.privacy import key_id, pseudonymise
from tests.unit.data.test_ingest_experiment_logs import _day, exposure, outcome, rec
from tests.unit.data.test_ingest_reasons import DAY

pytestmark = pytest.mark.unit

TABLES = ("exposures", "outcomes")
# A realistic id: a one-letter raw id would be "found" in every sealed (base64) text.
CUSTOMER = "C0000042"


def _rows(settings, table: str) -> pl.DataFrame:
    return pl.read_parquet(partition(settings.curated_dir, table, DAY))


def test_a_customers_exposures_and_outcomes_are_erased(settings):
    drop = _day(
        settings, settings.data_dir, CUSTOMER
    )  # the drop at <data_dir>/raw/<day>: erasure sees it
    assert drop.parent == settings.raw_dir
    key = settings.pseudonym_key.get_secret_value()
    pseudonym = pseudonymise(CUSTOMER, key)
    signed = {"customer_pseudonym": pseudonym, "pseudonym_key_id": key_id(key)}
    folder = settings.events_dir / DAY.isoformat()
    with (folder / "exposures-host-2.jsonl").open("w") as handle:
        handle.write(json.dumps(exposure(rec(40), **signed)) + "\n")
        handle.write(json.dumps(exposure(rec(41), customer_pseudonym="someone")) + "\n")
    with (folder / "outcomes-host-2.jsonl").open("w") as handle:
        handle.write(json.dumps(outcome("a-1", event_type="purchase", **signed)) + "\n")
        handle.write(
            json.dumps(
                outcome("a-2", event_type="return", return_reason="style", price=None, **signed)
            )
            + "\n"
        )
        handle.write(json.dumps(outcome("x-1", customer_pseudonym="someone")) + "\n")
    ingest_day(drop, DAY, settings)
    before = {t: _rows(settings, t) for t in TABLES}
    mine = {t: before[t].filter(pl.col("customer_id") == pseudonym).height for t in TABLES}
    assert mine == {"exposures": 2, "outcomes": 3}

    record = erasure.erase_customers(settings, [CUSTOMER], purge=False)
    assert record.rows.get("event_log", 0) >= 5
    for path in folder.glob("*.jsonl"):
        assert pseudonym not in path.read_text(), path.name
    for table in TABLES:
        after = _rows(settings, table)
        assert pseudonym not in after["customer_id"].to_list()
        assert after.height == before[table].height - mine[table]
        quarantined = pl.read_parquet(partition(settings.quarantine_dir, table, DAY))
        assert pseudonym not in quarantined["customer_id"].to_list()
    assert set(_rows(settings, "exposures")["recommendation_id"]) >= {rec(41)}
    assert "x-1" in _rows(settings, "outcomes")["event_id"].to_list()
    assert erasure.find_traces(settings, [CUSTOMER]) == []

    # Serving's log still holding a line of the customer (a process that had it buffered):
    # the next ingest drops it and counts it as erased.
    with (folder / "outcomes-host-2.jsonl").open("a") as handle:
        handle.write(json.dumps(outcome("a-3", **signed)) + "\n")
    report, skipped = ingest_day(drop, DAY, settings)
    assert not skipped
    counts = report["tables"]["outcomes"]
    assert counts["erased"] == 1 and counts["reconciled"]
    assert pseudonym not in _rows(settings, "outcomes")["customer_id"].to_list()
