"""Every adapter on its committed sample, through the real ingest."""

from datetime import date
from pathlib import Path

import polars as pl
import pytest

from pipeline.data import adapters
from pipeline.data.ingest import ingest_drop

FIXTURES = Path(__file__).parents[2] / "fixtures"


def _ingest(source, tmp_path, settings):
    folder = adapters.write_drop(source, tmp_path / "raw")
    report = ingest_drop(folder, date.fromisoformat(folder.name), settings)
    for counts in report.tables.values():
        assert counts.raw == counts.curated + counts.quarantined + counts.exact_duplicates
    return report


def _curated(settings, table):
    return pl.read_parquet(settings.curated_dir / table / "*" / "*.parquet")


def test_rent_the_runway_raw(tmp_path, settings):
    source = adapters.rent_the_runway_raw(FIXTURES / "rtr_raw_sample.jsonl")
    assert source.rows() == {"customers": 100, "items": 92, "try_ons": 100}
    report = _ingest(source, tmp_path, settings)
    assert report.tables["try_ons"].curated == 100 and report.tables["customers"].quarantined == 0
    tries = _curated(settings, "try_ons")
    assert tries["fit_feedback"].value_counts().sort("fit_feedback").rows() == [
        ("fits", 79),
        ("too_large", 11),
        ("too_small", 10),
    ]
    first = _curated(settings, "customers").sort("height_cm").row(-1, named=True)
    assert first["height_cm"] > 150 and first["customer_id"].startswith("c_")
    # "5' 8\"", "137lbs", "34d" of the first raw row, in metric:
    key = settings.pseudonym_key.get_secret_value()
    from pipeline.privacy import pseudonymise

    row = (
        _curated(settings, "customers")
        .filter(pl.col("customer_id") == pseudonymise("420272", key))
        .row(0, named=True)
    )
    assert row["height_cm"] == pytest.approx(172.72)
    assert row["weight_kg"] == pytest.approx(137 * 0.45359237)
    assert row["bust_cm"] == pytest.approx(38 * 2.54)
    assert row["body_type"] == "hourglass" and row["age_band"] == "25-34"


def test_rent_the_runway_clean(tmp_path, settings):
    source = adapters.rent_the_runway_clean(FIXTURES / "rtr_clean_sample.parquet")
    report = _ingest(source, tmp_path, settings)
    assert report.tables["try_ons"].curated == 201
    heights = _curated(settings, "customers")["height_cm"].drop_nulls()
    assert 150 < heights.mean() < 180


def test_modcloth(tmp_path, settings):
    source = adapters.modcloth_raw(FIXTURES / "modcloth_raw_sample.jsonl")
    report = _ingest(source, tmp_path, settings)
    assert report.tables["try_ons"].curated == 100
    mix = dict(_curated(settings, "try_ons")["fit_feedback"].value_counts().rows())
    assert mix == {"fits": 56, "too_small": 32, "too_large": 12}
    customers = _curated(settings, "customers")
    assert customers["waist_cm"].drop_nulls().min() > 55  # inches became cm
    assert customers["shoe_size_eu"].drop_nulls().min() >= 35  # US became EU


def test_hm(tmp_path, settings):
    source = adapters.hm(
        FIXTURES / "hm_articles_sample.csv",
        FIXTURES / "hm_customers_sample.csv",
        FIXTURES / "hm_transactions_sample.csv",
    )
    report = _ingest(source, tmp_path, settings)
    assert report.tables["purchases"].curated == 300
    items = _curated(settings, "items")
    assert (
        items["category"]
        .is_in(
            [
                "top",
                "trousers",
                "dress",
                "skirt",
                "jumpsuit",
                "knitwear",
                "outerwear",
                "shoes",
                "accessories",
                "other",
            ]
        )
        .all()
    )
    assert (_curated(settings, "purchases")["price"] > 0).all()


def test_yoochoose(tmp_path, settings):
    report = _ingest(adapters.yoochoose(FIXTURES / "yoochoose_sample.tsv"), tmp_path, settings)
    assert report.tables["session_events"].curated == 300
    events = _curated(settings, "session_events")
    assert events["customer_id"].null_count() == 300  # anonymous click stream
    first = events.filter((pl.col("session_id") == "3") & (pl.col("item_id") == "214716935"))
    first = first.row(0, named=True)
    # "3	214716935	1396437466.94" -> 2014-04-02 11:17:46 UTC
    assert first["ts"].isoformat() == "2014-04-02T11:17:46+00:00"


def test_diginetica(tmp_path, settings):
    report = _ingest(adapters.diginetica(FIXTURES / "diginetica_sample.csv"), tmp_path, settings)
    assert report.tables["session_events"].curated == 300
    events = _curated(settings, "session_events")
    first = events.filter((pl.col("session_id") == "1") & (pl.col("item_id") == "81766")).row(
        0, named=True
    )
    # "1;NA;81766;526309;2016-05-09": anonymous, 526.309 s after the day's start
    assert first["customer_id"] is None and first["item_id"] == "81766"
    assert first["ts"].isoformat() == "2016-05-09T00:08:46+00:00"
