"""A given test file is exactly that: a file cut in two at a date gives the examples of the
later half, the same as the internal time split at that date, and overlapping files are
refused."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from pathlib import Path

import polars as pl
import pytest

from pipeline.evaluation import public
from pipeline.model.config import ModelConfig

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
TIMELINE = FIXTURES / "rtr_clean_timeline_sample.parquet"
CUT = datetime(2017, 5, 1)


@pytest.fixture(scope="module")
def halves(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("halves")
    raw = pl.read_parquet(TIMELINE)
    raw.filter(pl.col("review_date") < CUT).write_parquet(folder / "before.parquet")
    raw.filter(pl.col("review_date") >= CUT).write_parquet(folder / "after.parquet")
    return folder / "before.parquet", folder / "after.parquet"


def _given(halves, workdir, dataset="rtr"):
    before, after = halves
    return public.prepare(
        public.load(dataset, before, "train"),
        public.SPECS[dataset],
        workdir,
        ModelConfig(),
        public.load(dataset, after, "test"),
    )


def test_rtr_halves_give_every_later_rental_and_the_internal_split(halves, tmp_path):
    given = _given(halves, tmp_path / "given")
    spec = dataclasses.replace(public.SPECS["rtr"], split_at=CUT)
    internal = public.prepare(
        public.load("rtr", TIMELINE), spec, tmp_path / "internal", ModelConfig()
    )

    before, after = (pl.read_parquet(p) for p in halves)
    new_items = after.filter(~pl.col("item_id").is_in(before["item_id"].implode()))
    assert new_items.height > 10  # items launched after the cut are in the catalogue too
    # Every rental of the later half is a test example; nothing else is.
    assert given.data.test.height == after.height
    assert given.test_events == {"examples": after.height, "unknown_item": 0, "not_predicted": 0}
    assert given.data.train.height == before.height
    assert given.rows["test"]["try_ons"]["file"] == after.height
    assert given.rows["train"]["try_ons"]["curated"] == before.height
    # ... and exactly what the internal time split at the same date builds.
    assert given.data.train.equals(internal.data.train)
    assert given.data.test.equals(internal.data.test)
    assert given.rows == internal.rows


def test_unseen_customers_carry_their_own_profile(halves, tmp_path):
    data = _given(halves, tmp_path).data
    seen = set(data.train["customer_id"])
    unseen = data.test.filter(~pl.col("customer_id").is_in(list(seen)))
    assert unseen.height > 20
    # Their body data comes from the profile they signed up with, not from defaults.
    assert unseen["has_body"].mean() > 0.9


def test_the_same_file_as_train_and_test_is_refused(tmp_path):
    with pytest.raises(ValueError, match="also in the training data"):
        public.prepare(
            public.load("rtr", TIMELINE),
            public.SPECS["rtr"],
            tmp_path,
            ModelConfig(),
            public.load("rtr", TIMELINE),
        )


def test_click_stream_halves_predict_every_later_click_after_the_first(tmp_path):
    raw = pl.read_csv(FIXTURES / "yoochoose_sample.tsv", separator="\t", infer_schema=False)
    times = raw["Time"].cast(pl.Float64)
    # Cut inside a long session of the later part of the day, as a date cut would.
    late = raw.filter(times >= times.quantile(0.6))
    longest = late.group_by("SessionId").len().sort("len", "SessionId", descending=True)
    clicks = late.filter(pl.col("SessionId") == longest["SessionId"][0])["Time"].cast(pl.Float64)
    cut = float(clicks.sort()[clicks.len() // 2])
    before, after = raw.filter(times < cut), raw.filter(times >= cut)
    before.write_csv(tmp_path / "a.tsv", separator="\t")
    after.write_csv(tmp_path / "b.tsv", separator="\t")
    straddling = set(before["SessionId"]) & set(after["SessionId"])
    assert straddling  # the cut splits sessions: the later part must not merge into them
    prepared = _given((tmp_path / "a.tsv", tmp_path / "b.tsv"), tmp_path / "work", "yoochoose")

    seen = set(before["ItemId"])
    later = after.with_columns(
        pl.int_range(pl.len())
        .over("SessionId", order_by=pl.col("Time").cast(pl.Float64))
        .alias("step")
    )
    expected = later.filter((pl.col("step") > 0) & pl.col("ItemId").is_in(list(seen)))
    assert prepared.data.test.height == expected.height
    assert prepared.data.test["session_id"].str.starts_with("test:").all()
    assert prepared.data.train.height == before.height


def test_benchmark_metrics_equal_on_halves_and_internal_split(halves, tmp_path):
    cfg = ModelConfig(epochs=1)
    before, after = halves
    given = public.run(
        public.load("rtr", before, "train"),
        public.SPECS["rtr"],
        tmp_path / "given",
        cfg,
        public.load("rtr", after, "test"),
    )
    spec = dataclasses.replace(public.SPECS["rtr"], split_at=CUT)
    internal = public.run(public.load("rtr", TIMELINE), spec, tmp_path / "internal", cfg)
    assert given.pop("split") == "given test file" and internal.pop("split") == "time"
    given.pop("examples_per_s"), internal.pop("examples_per_s")
    assert given == internal


def test_a_test_horizon_keeps_only_the_rentals_before_its_end(tmp_path):
    end = datetime(2017, 6, 1)
    spec = dataclasses.replace(public.SPECS["rtr"], split_at=CUT, test_until=end)
    source = public.load("rtr", TIMELINE)
    bounded = public.prepare(source, spec, tmp_path / "b", ModelConfig())
    raw = pl.read_parquet(TIMELINE)
    in_window = raw.filter((pl.col("review_date") >= CUT) & (pl.col("review_date") < end))
    # Every rental of May is a test example; June's are left out, and training is unchanged.
    assert bounded.data.test.height == in_window.height
    assert bounded.data.train.height == raw.filter(pl.col("review_date") < CUT).height
    cutoff = public.time_cutoff(source, spec)
    # A horizon past the data's end is the data's end: the same as none.
    late = dataclasses.replace(spec, test_until=datetime(2030, 1, 1))
    assert public.within_horizon(source, cutoff, late).rows() == source.rows()
    with pytest.raises(ValueError, match="not after the cut-off"):
        public.within_horizon(source, cutoff, dataclasses.replace(spec, test_until=CUT))


def test_the_six_month_horizon_is_declared_as_the_issue_states():
    spec = public.SPECS["rtr-6m"]
    assert (spec.split_at, spec.test_until) == (datetime(2017, 1, 1), datetime(2017, 7, 1))
