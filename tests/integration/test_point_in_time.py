"""Training data is point-in-time correct: our Polars as-of join equals Feast's historical
retrieval row by row, and rows from the future never leak."""

from __future__ import annotations

from datetime import timedelta

import polars as pl
import pytest

from pipeline.features import store
from pipeline.features.build import feature_paths
from pipeline.features.declarations import CUSTOMER_ENTITY, CUSTOMER_VIEW, TIMESTAMP
from pipeline.model.examples import CUSTOMER_NUMERIC, point_in_time, session_examples
from tests.conftest import Environment, prepare_days


@pytest.fixture(scope="module")
def prepared(raw_drops, tmp_path_factory):
    with Environment(tmp_path_factory.mktemp("pit")) as settings:
        yield settings, prepare_days(settings, raw_drops)


def _feast_join(settings, entity_df: pl.DataFrame) -> pl.DataFrame:
    fs = store.feature_store(settings)
    store.apply(fs)
    job = fs.get_historical_features(
        entity_df=entity_df.select(
            CUSTOMER_ENTITY, pl.col("ts").alias(TIMESTAMP), "row"
        ).to_pandas(),
        features=[f"{CUSTOMER_VIEW}:{name}" for name in CUSTOMER_NUMERIC],
    )
    return pl.from_pandas(job.to_df()).sort("row")


def test_polars_as_of_join_equals_feast_and_nothing_leaks(prepared):
    settings, last = prepared
    path = feature_paths(settings.features_dir)[CUSTOMER_VIEW]
    examples = (
        session_examples(settings.curated_dir, last, 10)
        .filter(pl.col(CUSTOMER_ENTITY) != "")
        .sample(300, seed=3)
        .with_row_index("row")
    )
    # Plant one snapshot a second after three examples (must never be used) and one a
    # second before three others (must be used): the test can fail both ways.
    snapshots = pl.read_parquet(path)
    future, past = examples.head(3), examples.slice(3, 3)
    template = snapshots.head(1)

    def planted(rows: pl.DataFrame, offset: timedelta, value: float) -> pl.DataFrame:
        return pl.concat(
            [
                template.with_columns(
                    pl.lit(r[CUSTOMER_ENTITY]).alias(CUSTOMER_ENTITY),
                    pl.lit(r["ts"] + offset).cast(template.schema[TIMESTAMP]).alias(TIMESTAMP),
                    pl.lit(value, pl.Float32).alias("purchases_log"),
                )
                for r in rows.iter_rows(named=True)
            ]
        )

    snapshots = pl.concat(
        [
            snapshots,
            planted(future, timedelta(seconds=1), 999.0),
            planted(past, -timedelta(seconds=1), 555.0),
        ]
    )
    snapshots.write_parquet(path)

    ours = point_in_time(examples, snapshots).sort("row")
    theirs = _feast_join(settings, examples)
    # Feast's file (dask) store drops an entity row whose customer has snapshots, but only
    # later ones; ours keeps it with nulls (a left join). Those must be the only difference.
    unmatched = ours.filter(pl.col("purchases_log").is_null())["row"]
    assert set(ours["row"]) - set(theirs["row"]) <= set(unmatched)
    assert theirs.height > 250
    ours = ours.filter(pl.col("row").is_in(theirs["row"].implode()))
    for name in CUSTOMER_NUMERIC:
        a, b = ours[name].to_list(), theirs[name].to_list()
        for x, y in zip(a, b, strict=True):
            assert (x is None and (y is None or y != y)) or x == pytest.approx(y, rel=1e-6), name

    def planted_rows(frame: pl.DataFrame, rows: pl.DataFrame) -> list:
        return frame.filter(pl.col("row").is_in(rows["row"].implode()))["purchases_log"].to_list()

    # The row planted one second after an example is never that example's feature...
    assert 999.0 not in planted_rows(ours, future) + planted_rows(theirs, future)
    # ...while the one planted a second before is (so the check can fail).
    assert planted_rows(ours, past) == planted_rows(theirs, past) == [555.0] * 3
    # And no example anywhere sees a snapshot from after its own time.
    full = point_in_time(examples, snapshots).drop_nulls("features_as_of")
    assert (full["features_as_of"] <= full["ts"]).all()
