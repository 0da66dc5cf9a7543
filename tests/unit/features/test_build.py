import json
import math
from datetime import date

import polars as pl
import pytest

from pipeline.data.ingest import ingest_drop
from pipeline.features.build import customer_features, item_features, session_features
from pipeline.features.declarations import (
    BODY_REFERENCE,
    CUSTOMER_FEATURES,
    ITEM_FEATURES,
    VIEW_FEATURES,
)
from pipeline.privacy import pseudonymise

DAY = date(2026, 10, 5)
CHART = {
    s: {
        "bust": [80 + 6 * i, 86 + 6 * i],
        "waist": [60 + 6 * i, 66 + 6 * i],
        "hips": [88 + 6 * i, 94 + 6 * i],
    }
    for i, s in enumerate(["S", "M", "L"])
}


def _write_drop(folder):
    folder.mkdir(parents=True)
    pl.DataFrame(
        {
            "customer_id": ["A", "B"],
            "signup_ts": ["2026-01-01T00:00:00Z"] * 2,
            "age_band": ["25-34", "35-44"],
            "height_cm": [172.7, 160.0],
            "weight_kg": [62.2, 70.0],
            "bust_cm": [88.0, 95.0],
            "waist_cm": [71.0, 80.0],
            "hips_cm": [98.0, 100.0],
            "inseam_cm": [80.0, 75.0],
            "shoe_size_eu": [39.0, 38.0],
            "body_type": ["hourglass", "pear"],
            "preferred_fit": ["regular", "slim"],
            "body_data_consent": [True, False],
        }
    ).write_parquet(folder / "customers.parquet")
    pl.DataFrame(
        {
            "item_id": ["I1", "I2"],
            "category": ["dress", "top"],
            "brand": ["b", "b"],
            "price": [99.0, 19.0],
            "colour": ["red", "black"],
            "style": ["boho", "classic"],
            "size_chart": [json.dumps(CHART)] * 2,
            "sizing_bias": [-0.5, 0.0],
            "stock": [json.dumps({"S": 1, "M": 0, "L": 2}), json.dumps({"S": 0, "M": 0, "L": 0})],
            "launch_ts": ["2026-01-01T00:00:00Z"] * 2,
        }
    ).write_csv(folder / "items.csv")
    ts = "2026-10-05T12:00:0{}Z"
    events = [
        ("e1", "s1", "A", "view", "I1"),
        ("e2", "s1", "A", "try_on", "I1"),
        ("e3", "s1", "A", "view", "I2"),
        ("e4", "s2", "B", "view", "I1"),
        ("e5", "s3", None, "view", "I1"),
    ]
    with (folder / "session_events.jsonl").open("w") as f:
        for i, (eid, sid, cid, kind, item) in enumerate(events):
            f.write(
                json.dumps(
                    {
                        "event_id": eid,
                        "session_id": sid,
                        "customer_id": cid,
                        "event_type": kind,
                        "item_id": item,
                        "ts": ts.format(i),
                    }
                )
                + "\n"
            )
    tries = [("t1", "A", "I1", "M", "too_small"), ("t2", "A", "I2", "M", "fits")]
    with (folder / "try_ons.jsonl").open("w") as f:
        for eid, cid, item, size, fb in tries:
            f.write(
                json.dumps(
                    {
                        "event_id": eid,
                        "session_id": "s1",
                        "customer_id": cid,
                        "item_id": item,
                        "size": size,
                        "fit_feedback": fb,
                        "duration_s": 30,
                        "liked": True,
                        "added_to_cart": False,
                        "ts": ts.format(1),
                    }
                )
                + "\n"
            )
    buys = [("o1", "A", "I1", "L", True, "too_small"), ("o2", "A", "I2", "M", False, None)]
    with (folder / "purchases.jsonl").open("w") as f:
        for oid, cid, item, size, ret, why in buys:
            f.write(
                json.dumps(
                    {
                        "order_line_id": oid,
                        "customer_id": cid,
                        "item_id": item,
                        "size": size,
                        "price": 10,
                        "returned": ret,
                        "return_reason": why,
                        "ts": ts.format(2),
                    }
                )
                + "\n"
            )


@pytest.fixture
def curated(tmp_path, settings):
    _write_drop(tmp_path / "drop")
    report = ingest_drop(tmp_path / "drop", DAY, settings)
    assert all(t.quarantined == 0 for t in report.tables.values()), report
    return settings


def test_customer_features_by_hand(curated):
    feats = customer_features(curated.curated_dir, DAY)
    key = curated.pseudonym_key.get_secret_value()
    a = feats.filter(pl.col("customer_id") == pseudonymise("A", key)).row(0, named=True)
    b = feats.filter(pl.col("customer_id") == pseudonymise("B", key)).row(0, named=True)
    assert list(feats.columns[1:-1]) == [f.name for f in CUSTOMER_FEATURES]
    mean, sd = BODY_REFERENCE["height_cm"]
    assert a["height_z"] == pytest.approx(round((172.7 - mean) / sd / 0.25) * 0.25)  # 1.0
    assert a["weight_z"] == 0.0 and a["has_body"] == 1.0
    # B did not consent: no body features at all.
    assert b["has_body"] == 0.0 and b["height_z"] is None and b["shape_bust_hips"] is None
    assert a["purchases_log"] == pytest.approx(math.log1p(2))
    assert a["return_rate"] == pytest.approx((1 + 0.15 * 5) / (2 + 5))
    assert a["tryon_small_rate"] == pytest.approx((1 + 0.13 * 5) / (2 + 5))
    assert a["tryon_to_purchase"] == pytest.approx((2 + 0.2 * 5) / (2 + 5))
    # Fit evidence (XS=0 ... XL=4): M too small -> L (3); M fits -> M (2);
    # L returned too small -> XL (4); M kept -> M (2).
    assert a["fit_size_rank"] == pytest.approx((3 + 2 + 4 + 2) / 4)
    assert a["fit_size_dress"] == pytest.approx(3.5)  # I1 is a dress
    assert a["fit_size_top"] == pytest.approx(2.0)  # I2 is a top
    assert a["fit_size_skirt"] is None  # no evidence: unknown (the model fills -1)
    assert a["spend_90d_log"] == pytest.approx(math.log1p(10))  # the kept order line only
    assert a["sessions_30d_log"] == pytest.approx(math.log1p(1))
    assert a["browse_30d_log"] == pytest.approx(math.log1p(2))
    assert (a["affinity_dress"], a["affinity_top"], a["affinity_skirt"]) == (0.5, 0.5, 0.0)
    assert (a["style_boho"], a["style_classic"]) == (0.5, 0.5)


def test_item_features_by_hand(curated):
    feats = item_features(curated.curated_dir, DAY)
    assert list(feats.columns[1:-1]) == [f.name for f in ITEM_FEATURES]
    i1 = feats.filter(pl.col("item_id") == "I1").row(0, named=True)
    i2 = feats.filter(pl.col("item_id") == "I2").row(0, named=True)
    assert i1["views_1d_log"] == i1["views_7d_log"] == pytest.approx(math.log1p(3))
    assert i1["fit_skew"] == pytest.approx(1 / (1 + 5))
    assert i1["sizes_in_stock"] == 2.0 and i2["sizes_in_stock"] == 0.0
    assert i1["item_return_rate"] == pytest.approx((1 + 0.15 * 5) / (1 + 5))
    assert i1["conversion_rate"] == pytest.approx((1 + 0.05 * 5) / (3 + 5))
    assert i1["category"] == "dress" and i1["sizing_bias"] == pytest.approx(-0.5)
    # Chart S/M/L with bust 80-86, 86-92, 92-98: centres 83, 89, 95.
    assert (i1["n_sizes"], i1["chart_bust_lo"], i1["chart_bust_step"]) == (3.0, 83.0, 6.0)
    assert (i1["chart_waist_lo"], i1["chart_hips_lo"]) == (63.0, 91.0)


def test_session_state_by_hand(curated):
    sessions = session_features(curated.curated_dir, DAY)
    s1 = sessions.filter(pl.col("session_id") == "s1").row(0, named=True)
    assert s1["session_items"] == ["I1", "I1", "I2"]
    assert s1["session_event_types"] == ["view", "try_on", "view"]
    assert s1["engagement"] == pytest.approx(math.log1p(1 + 3 + 1))
    assert (s1["session_events"], s1["session_age_s"]) == (3.0, 2.0)
    assert s1["event_timestamp"].isoformat() == "2026-10-05T12:00:02+00:00"
    anonymous = sessions.filter(pl.col("session_id") == "s3").row(0, named=True)
    assert anonymous["customer_id"] is None


def test_feature_names_are_unique_across_views():
    names = [f.name for view in VIEW_FEATURES.values() for f in view]
    assert len(names) == len(set(names))


def test_snapshot_only_sees_the_past(curated, tmp_path):
    later = tmp_path / "later"
    later.mkdir()
    buy = {
        "order_line_id": "o3",
        "customer_id": "A",
        "item_id": "I2",
        "size": "M",
        "price": 10,
        "returned": False,
        "return_reason": None,
        "ts": "2026-10-06T09:00:00Z",
    }
    (later / "purchases.jsonl").write_text(json.dumps(buy) + "\n")
    ingest_drop(later, date(2026, 10, 6), curated)
    key = curated.pseudonym_key.get_secret_value()
    a = pl.col("customer_id") == pseudonymise("A", key)
    before = customer_features(curated.curated_dir, DAY).filter(a)
    after = customer_features(curated.curated_dir, date(2026, 10, 6)).filter(a)
    assert before["purchases_log"][0] == pytest.approx(math.log1p(2))
    assert after["purchases_log"][0] == pytest.approx(math.log1p(3))
    assert before["event_timestamp"][0].isoformat() == "2026-10-06T00:00:00+00:00"


def test_building_a_day_keeps_the_other_days(curated, tmp_path):
    from pipeline.features.build import build_features, feature_paths

    out = tmp_path / "features"
    build_features(curated.curated_dir, out, DAY)
    build_features(curated.curated_dir, out, date(2026, 10, 6))
    before = pl.read_parquet(feature_paths(out)["customer_features"])
    build_features(curated.curated_dir, out, DAY)  # again: idempotent
    after = pl.read_parquet(feature_paths(out)["customer_features"])
    assert before.equals(after)
    assert sorted({t.isoformat() for t in after["event_timestamp"]}) == [
        "2026-10-06T00:00:00+00:00",
        "2026-10-07T00:00:00+00:00",
    ]
    sessions = pl.read_parquet(feature_paths(out)["session_features"])
    assert sessions["session_id"].is_unique().all() and sessions.height == 3
