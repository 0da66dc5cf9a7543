"""HR@20 / MRR@20 of VS-KNN, STAN, V-STAN and SR (default and tuned) against fitrec's own.

The click-stream protocol: sessions starting in the last ``--test-days`` are the test; every
click after the first of a test session is a query (its earlier clicks are the history, its
click time the query time), targets among items seen in training. Tuning holds out the
latest ``--test-days`` of *training* only. ``--rtr`` instead times fit + recommend on the
RentTheRunway table, customers' timelines as sessions (the last quarter of rows as queries).

    PYTHONPATH=. python benchmarks/reference/session_rec/compare.py yoochoose \\
        /work/shared/data/yoochoose_rsc15/yoochoose-clicks-100k_train_full.txt --test-days 1
    PYTHONPATH=. python benchmarks/reference/session_rec/compare.py diginetica \\
        /work/shared/data/diginetica/sample_train-item-views.csv --test-days 7
    PYTHONPATH=. python benchmarks/reference/session_rec/compare.py rtr \\
        /work/shared/data/renttherunway/rtr_before_2017-07.parquet

Times are of one run each, on whatever else the machine is doing.
"""

from __future__ import annotations

import argparse
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import polars as pl

from pipeline.data import adapters
from pipeline.evaluation.baselines import Baseline, LastItemSuccessor, SessionKNN
from pipeline.evaluation.baselines.sequential_rules import SequentialRules
from pipeline.evaluation.baselines.session_neighbours import STAN, VSKNN, VSTAN
from pipeline.evaluation.baselines.tuning import GRIDS, Tuned
from pipeline.model.metrics import hit_rate_at_k, mrr_at_k

K = 20


def click_events(dataset: str, path: Path) -> pl.DataFrame:
    """session_id, customer_id, item_id, ts (datetime) of a public click or rental log."""
    if dataset == "rtr":
        table = adapters.rent_the_runway_clean(path).tables["try_ons"]
        # Each customer's rentals form one long session.
        table = table.with_columns(pl.col("customer_id").alias("session_id"))
    else:
        loader = {"yoochoose": adapters.yoochoose, "diginetica": adapters.diginetica}[dataset]
        table = loader(path).tables["session_events"]
    return table.select(
        "session_id",
        "customer_id",
        "item_id",
        pl.col("ts").str.to_datetime(time_unit="us", time_zone="UTC"),
    ).with_row_index("order")


def split(
    events: pl.DataFrame, test_days: float | None, random: bool = False
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Train events and test queries (history, target, time)."""
    events = events.sort("session_id", "ts", "order")
    if random:  # a random quarter of the rows are queries, the rest train
        held = np.random.default_rng(7).random(events.height) < 0.25
        events = events.with_columns(pl.Series("held", held))
        train = events.filter(~pl.col("held"))
        test_sessions = events.filter(
            pl.col("session_id").is_in(events.filter("held").get_column("session_id").implode())
        )
        is_query = pl.col("held")
    elif test_days is None:  # rental timelines: the last quarter of rows are the queries
        cut = events.get_column("ts").quantile(0.75)
        train = events.filter(pl.col("ts") < cut)
        test_rows = events.filter(pl.col("ts") >= cut)
        test_sessions = events.filter(
            pl.col("session_id").is_in(test_rows.get_column("session_id").implode())
        )
        is_query = pl.col("ts") >= cut
    else:
        start = pl.col("ts").min().over("session_id")
        cut = events.get_column("ts").max() - timedelta(days=test_days)  # type: ignore[operator]
        train = events.filter(start < cut)
        test_sessions = events.filter(start >= cut)
        is_query = pl.int_range(pl.len()).over("session_id") > 0
    seen = train.get_column("item_id").unique().implode()
    queries = (
        test_sessions.with_columns(
            pl.col("item_id").cum_count().over("session_id").alias("n"),
            is_query.alias("query"),
        )
        .with_columns(
            pl.col("item_id").implode().over("session_id").alias("all"),
        )
        .filter(pl.col("query") & pl.col("item_id").is_in(seen))
        .filter(pl.col("n") > 1)
        .select(
            pl.col("all").list.head(pl.col("n") - 1).alias("history"),
            pl.col("item_id").alias("target"),
            "ts",
        )
    )
    return train.drop("order", "held", strict=False), queries


def candidates(horizon: timedelta) -> list[Baseline]:
    """The four, default and tuned, and fitrec's two session baselines."""
    out: list[Baseline] = [
        SessionKNN(repeat_weight=1.0),
        LastItemSuccessor(),
    ]
    for cls in (VSKNN, STAN, VSTAN, SequentialRules):
        out.append(cls())
        out.append(Tuned(cls, GRIDS[cls.name], horizon, f"{cls.name}_tuned"))
    return out


def main() -> None:
    """Fit, recommend and score each baseline; print one row per baseline."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("dataset", choices=["yoochoose", "diginetica", "rtr"])
    parser.add_argument("path", type=Path)
    parser.add_argument("--test-days", type=float, default=None)
    parser.add_argument("--only", nargs="*", default=None, help="baseline names to run")
    parser.add_argument("--random", action="store_true", help="random row split (rtr)")
    parser.add_argument("--pad-catalogue", type=int, default=0, help="catalogue size for timing")
    args = parser.parse_args()
    events = click_events(args.dataset, args.path)
    test_days = None if args.dataset == "rtr" else (args.test_days or 1.0)
    train, queries = split(events, test_days, args.random)
    items = sorted(train.get_column("item_id").unique().to_list())
    # Never-seen ids only widen the catalogue (the dense score batches), for timing.
    items += [f"pad-{i}" for i in range(max(0, args.pad_catalogue - len(items)))]
    index = {item: i for i, item in enumerate(items)}
    targets = np.array([index[t] for t in queries.get_column("target")])
    histories = queries.get_column("history").to_list()
    print(
        f"{args.dataset}: {train.height} training events, {len(items)} items, "
        f"{len(histories)} queries"
    )
    horizon = timedelta(days=test_days if test_days is not None else 90)
    results = []
    for baseline in candidates(horizon):
        if args.only and baseline.name not in args.only:
            continue
        began = time.perf_counter()
        baseline.fit(train, items)
        ranked = baseline.recommend(histories, None, K, times=queries.get_column("ts"))
        seconds = time.perf_counter() - began
        hr, mrr = hit_rate_at_k(ranked, targets, K), mrr_at_k(ranked, targets, K)
        best = getattr(getattr(baseline, "tuning", None), "best", "")
        results.append((baseline.name, hr, mrr, seconds))
        print(f"{baseline.name:22s} HR@20 {hr:.4f}  MRR@20 {mrr:.4f}  {seconds:6.1f} s  {best}")
    top = max(results, key=lambda r: r[2])
    print(f"summary {args.dataset}: best MRR@20 {top[0]} {top[2]:.4f} (HR@20 {top[1]:.4f})")


if __name__ == "__main__":
    main()
