"""Every quarantine reason, each triggered by a crafted bad row; and random rows never vanish."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from pipeline.data.contracts import CONTRACTS
from pipeline.data.ingest import LOG_ONLY, ingest_drop

DAY = date(2026, 3, 10)
CHART = json.dumps({"S": {"bust": [80, 86], "waist": [60, 66], "hips": [88, 94]}})


def customer(cid="A", **over):
    row = {
        "customer_id": cid,
        "signup_ts": "2026-01-01T00:00:00Z",
        "age_band": "25-34",
        "height_cm": "5' 6\"",
        "weight_kg": "130lbs",
        "bust_cm": "34b",
        "waist_cm": "70",
        "hips_cm": "96",
        "inseam_cm": None,
        "shoe_size_eu": "39",
        "body_type": "pear",
        "preferred_fit": "regular",
        "body_data_consent": "true",
    }
    return {**row, **over}


def item(iid="I1", **over):
    row = {
        "item_id": iid,
        "category": "dress",
        "brand": "b",
        "price": "50",
        "colour": "red",
        "style": "boho",
        "size_chart": CHART,
        "sizing_bias": "0.1",
        "stock": '{"S": 2}',
        "launch_ts": "2026-03-01T00:00:00Z",
    }
    return {**row, **over}


def event(eid, **over):
    row = {
        "event_id": eid,
        "session_id": "s1",
        "customer_id": "A",
        "event_type": "view",
        "item_id": "I1",
        "ts": "2026-03-10T10:00:00Z",
    }
    return {**row, **over}


def try_on(eid, **over):
    row = {
        "event_id": eid,
        "session_id": "s1",
        "customer_id": "A",
        "item_id": "I1",
        "size": "S",
        "fit_feedback": "fits",
        "duration_s": "30",
        "liked": "true",
        "added_to_cart": "false",
        "ts": "2026-03-10T10:00:00Z",
    }
    return {**row, **over}


def purchase(oid, **over):
    row = {
        "order_line_id": oid,
        "customer_id": "A",
        "item_id": "I1",
        "size": "S",
        "price": "50",
        "ts": "2026-03-10T10:00:00Z",
        "returned": "false",
        "return_reason": None,
    }
    return {**row, **over}


def write(folder: Path, tables: dict[str, list]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for table, rows in tables.items():
        names = CONTRACTS[table].names
        if table == "customers":
            pl.DataFrame(rows, schema=dict.fromkeys(names, pl.String)).write_parquet(
                folder / "customers.parquet"
            )
        elif table == "items":
            frame = pl.DataFrame(rows, schema=dict.fromkeys(names, pl.String))
            frame.write_csv(folder / "items.csv")
        else:
            lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
            (folder / f"{table}.jsonl").write_text("\n".join(lines) + "\n")


CASES = {
    "customers": [
        (customer(customer_id=None), "missing:customer_id"),
        (customer("B", signup_ts="last tuesday"), "bad_type:signup_ts"),
        (customer("C", height_cm="999"), "out_of_range:height_cm"),
        (customer("D", body_type="banana"), "not_allowed:body_type"),
        (customer("E", bust_cm="34z"), "bad_type:bust_cm"),
        (customer("F", body_data_consent=None), "missing:body_data_consent"),
        (customer("A", age_band="35-44"), "duplicate_key"),  # same id, other content
    ],
    "items": [
        (item("X1", category="spaceship"), "not_allowed:category"),
        (item("X2", size_chart='{"S": {"bust": [90, 80]}}'), "bad_size_chart"),
        (item("X3", sizing_bias="3"), "out_of_range:sizing_bias"),
        (item("X4", price="-5"), "out_of_range:price"),
        (item("X5", launch_ts=None), "missing:launch_ts"),
    ],
    "session_events": [
        ("{this is not json", "bad_json"),
        (event("e1", event_type="teleport"), "not_allowed:event_type"),
        (event("e2", item_id="NOPE"), "unknown_item"),
        (event("e3", ts="2026-03-12T10:00:00Z"), "future_timestamp"),
        (event("e4", ts="2026-02-01T10:00:00Z"), "before_launch"),
        (event("e5", session_id=None), "missing:session_id"),
        (event("e6", ts="noon"), "bad_type:ts"),
        (event("ok1", event_type="purchase"), "duplicate_key"),  # ok1 arrives valid below first
    ],
    "try_ons": [
        (try_on("t1", customer_id="ghost"), "unknown_customer"),
        (try_on("t2", size="a very long size label"), "bad_format:size"),
        (try_on("t3", duration_s="99999"), "out_of_range:duration_s"),
        (try_on("t4", liked="maybe"), "bad_type:liked"),
        (try_on("t5", fit_feedback="meh"), "not_allowed:fit_feedback"),
    ],
    "purchases": [
        (purchase("o1", returned="true", return_reason="bored"), "not_allowed:return_reason"),
        (purchase("o2", price="-1"), "out_of_range:price"),
    ],
}


@pytest.fixture
def crafted(tmp_path, settings):
    good = {
        "customers": [customer("A")],
        "items": [item("I1")],
        "session_events": [event("ok1"), event("ok2"), event("ok2")],  # ok2 sent twice
        "try_ons": [try_on("ok")],
        "purchases": [purchase("ok")],
    }
    tables = {t: good[t] + [row for row, _ in CASES[t]] for t in good}
    write(tmp_path / "drop", tables)
    return ingest_drop(tmp_path / "drop", DAY, settings), settings


@pytest.mark.parametrize(
    ("table", "index"), [(t, i) for t, cases in CASES.items() for i in range(len(cases))]
)
def test_each_crafted_row_lands_in_quarantine_with_its_reason(crafted, table, index):
    report, settings = crafted
    _, reason = CASES[table][index]
    quarantine = pl.read_parquet(settings.quarantine_dir / table / "*" / "*.parquet")
    good_rows = 3 if table == "session_events" else 1
    line = good_rows + index + (2 if table == "items" else 1)
    row = quarantine.filter(pl.col("line") == line)
    assert row.height == 1, (table, index, quarantine.select("line", "reason").rows())
    assert reason in row["reason"][0].split(";")


def test_crafted_drop_reconciles(crafted):
    report, _ = crafted
    for table, counts in report.tables.items():
        assert counts.raw == counts.curated + counts.quarantined + counts.exact_duplicates
        if table in LOG_ONLY:  # only serving's event log feeds them: none here
            assert counts.raw == 0
            continue
        assert counts.curated == 1 + (table == "session_events")
        assert counts.quarantined == len(CASES[table])
    assert report.tables["session_events"].exact_duplicates == 1


def test_a_resent_event_on_a_later_day_is_a_duplicate(tmp_path, settings):
    write(
        tmp_path / "d1",
        {"customers": [customer("A")], "items": [item("I1")], "session_events": [event("e1")]},
    )
    ingest_drop(tmp_path / "d1", DAY, settings)
    write(
        tmp_path / "d2", {"session_events": [event("e1"), event("e2", ts="2026-03-11T09:00:00Z")]}
    )
    counts = ingest_drop(tmp_path / "d2", date(2026, 3, 11), settings).tables["session_events"]
    assert counts.reasons == {"duplicate_key": 1} and counts.curated == 1


field_values = st.one_of(
    st.none(),
    st.text(max_size=12),
    st.integers(-(10**6), 10**6).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.sampled_from(["view", "I1", "A", "2026-03-10T10:00:00Z", "true", "", " "]),
)
random_events = st.lists(
    st.one_of(
        st.fixed_dictionaries(dict.fromkeys(CONTRACTS["session_events"].names, field_values)),
        st.text(max_size=30).filter(lambda s: "\n" not in s),
    ),
    min_size=1,
    max_size=25,
)


@hsettings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rows=random_events)
def test_random_rows_never_crash_and_never_vanish(tmp_path_factory, rows):
    from tests.conftest import Environment

    base = tmp_path_factory.mktemp("prop")
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    nonblank = [line for line in lines if line.strip(" \t\r")]
    with Environment(base / "var") as env:
        write(
            base / "drop",
            {"customers": [customer("A")], "items": [item("I1")], "session_events": rows},
        )
        counts = ingest_drop(base / "drop", DAY, env).tables["session_events"]
    assert counts.raw == len(nonblank)
    assert counts.raw == counts.curated + counts.quarantined + counts.exact_duplicates
