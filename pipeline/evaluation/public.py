"""Public benchmarks through the real pipeline: adapters, ingest, features, model, evaluation.

``run`` takes a public dataset (RentTheRunway for fit, YooChoose / Diginetica for sessions),
splits it (by time, or at random for RentTheRunway's published 80/10/10 protocol, or by a
given test file), ingests the training part, builds point-in-time feature snapshots from the
training part only, ingests the test part, trains the model on the training examples and
evaluates it and every baseline on exactly the test examples.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import cast

import numpy as np
import polars as pl

from pipeline.config import Settings
from pipeline.data import adapters
from pipeline.data.contracts import CONTRACTS
from pipeline.data.ingest import ingest_drop
from pipeline.evaluation.candidate import train_and_evaluate_candidate
from pipeline.evaluation.metrics import fit_auc
from pipeline.features.build import customer_features, feature_paths, item_features
from pipeline.features.declarations import CUSTOMER_VIEW, ITEM_ENTITY, ITEM_VIEW, TIMESTAMP
from pipeline.model.config import ModelConfig
from pipeline.model.examples import (
    CUSTOMER_NUMERIC,
    Dataset,
    attach_customer_features,
    finish,
    item_table,
    session_examples,
)
from pipeline.model.inputs import fit_feature_matrix

log = logging.getLogger(__name__)
EVENT_TABLES = ("session_events", "try_ons", "purchases")


@dataclass(frozen=True)
class Spec:
    """How a dataset is split and modelled."""

    name: str
    split: str = "time"  # "time" or "random"
    test_days: float = 1.0  # time split: the last days are the test set
    snapshot_every: timedelta = timedelta(days=1)
    collapse_repeats: bool = True
    seed: int = 7


SPECS = {
    "rtr": Spec("rtr", split="time", test_days=60, snapshot_every=timedelta(days=30)),
    "rtr-random": Spec("rtr", split="random", snapshot_every=timedelta(days=30)),
    "yoochoose": Spec("yoochoose", test_days=1, collapse_repeats=False),
    "diginetica": Spec("diginetica", test_days=7, collapse_repeats=False),
}


def _event_time(table: str, frame: pl.DataFrame) -> pl.Series:
    column = CONTRACTS[table].timestamp
    if column is None:
        raise ValueError(f"table {table!r} has no event time")
    return frame.get_column(column).str.to_datetime("%Y-%m-%dT%H:%M:%SZ", strict=False)


def split_source(source: adapters.RawTables, spec: Spec) -> tuple[adapters.RawTables, set[str]]:
    """Mark test rows; returns the training-only tables and the test event ids.

    Time split: sessions (or, without sessions, rows) starting in the last ``test_days``.
    Random split: rows, 80% train / 10% validation (unused) / 10% test.
    """
    test_ids: set[str] = set()
    train_tables = dict(source.tables)
    for table in EVENT_TABLES:
        frame = source.tables.get(table)
        if frame is None or frame.is_empty():
            continue
        key = CONTRACTS[table].key[0]
        if spec.split == "random":
            u = np.random.default_rng(spec.seed).random(frame.height)
            is_test = pl.Series(u >= 0.9)
        else:
            ts = _event_time(table, frame)
            cutoff = cast(datetime, ts.max()) - timedelta(days=spec.test_days)
            if "session_id" in frame.columns and table == "session_events":
                starts = (
                    frame.with_columns(ts.alias("__ts"))
                    .group_by("session_id")
                    .agg(pl.col("__ts").min().alias("__start"))
                )
                start = frame.join(starts, on="session_id", how="left", maintain_order="left")
                is_test = start.get_column("__start") >= cutoff
            else:
                is_test = ts >= cutoff
        test_ids |= set(frame.filter(is_test).get_column(key).to_list())
        train_tables[table] = frame.filter(~is_test)
    return adapters.RawTables(source.name, train_tables), test_ids


def _snapshots(settings: Settings, day: date, start: datetime, end: datetime, every: timedelta):
    """Customer and item snapshots from ``start`` to ``end`` every ``every`` (and at ``end``)."""
    times = []
    t = start
    while t < end:
        times.append(t)
        t += every
    times.append(end)
    paths = feature_paths(settings.features_dir)
    for view, build in ((CUSTOMER_VIEW, customer_features), (ITEM_VIEW, item_features)):
        frames = [build(settings.curated_dir, day, as_of=t) for t in times]
        paths[view].parent.mkdir(parents=True, exist_ok=True)
        pl.concat(frames).write_parquet(paths[view])


def prepare(
    source: adapters.RawTables,
    spec: Spec,
    workdir: Path,
    cfg: ModelConfig,
    test_source: adapters.RawTables | None = None,
) -> Dataset:
    """Ingest, snapshot and split a public dataset into train and test examples."""
    settings = Settings(data_dir=workdir)
    if test_source is None:
        train_source, test_ids = split_source(source, spec)
        rest = adapters.RawTables(
            source.name,
            {
                t: source.tables[t].filter(pl.col(CONTRACTS[t].key[0]).is_in(list(test_ids)))
                for t in EVENT_TABLES
                if t in source.tables
            },
        )
    else:
        train_source, rest = source, test_source
        test_ids = {
            v
            for t in EVENT_TABLES
            if t in test_source.tables
            for v in test_source.tables[t].get_column(CONTRACTS[t].key[0]).to_list()
        }
        rest = adapters.RawTables(test_source.name, {**test_source.tables})
    train_day = _latest_day(train_source)
    test_day = max(_latest_day(rest), train_day) + timedelta(days=1)
    for raw, day in ((train_source, train_day), (rest, test_day)):
        folder = adapters.write_drop(raw, settings.raw_dir, day)
        report = ingest_drop(folder, day, settings)
        log.info("%s %s: %s", source.name, day, {k: v.curated for k, v in report.tables.items()})
        if raw is train_source:
            # Features only ever see the training part: no test label can leak into them.
            first, last = _time_range(train_source)
            cutoff = last + timedelta(seconds=1)
            _snapshots(
                settings, train_day, first + spec.snapshot_every, cutoff, spec.snapshot_every
            )
    examples = session_examples(
        settings.curated_dir, test_day, cfg.session_len, spec.collapse_repeats
    )
    paths = feature_paths(settings.features_dir)
    examples = attach_customer_features(examples, pl.read_parquet(paths[CUSTOMER_VIEW]))
    items = item_table(pl.read_parquet(paths[ITEM_VIEW]), None)
    examples = examples.filter(
        pl.col(ITEM_ENTITY).is_in(items.get_column(ITEM_ENTITY).implode())
    ).sort("session_id", "step")
    examples = finish(examples, items)
    is_test = pl.col("event_id").is_in(list(test_ids))
    train, test = examples.filter(~is_test), examples.filter(is_test)
    if not spec.collapse_repeats:
        # Click-stream protocol (GRU4Rec, SR-GNN): predict every click after the first of a
        # test session, among items seen in training.
        seen = train.get_column(ITEM_ENTITY).unique().implode()
        test = test.filter((pl.col("step") > 0) & pl.col(ITEM_ENTITY).is_in(seen))
    return Dataset(train=train, test=test, items=items, cutoff=cutoff)


def _latest_day(source: adapters.RawTables) -> date:
    return _time_range(source)[1].date()


def _time_range(source: adapters.RawTables) -> tuple[datetime, datetime]:
    stamps = [_event_time(t, f) for t, f in source.tables.items() if t in EVENT_TABLES and f.height]
    if not stamps:
        raise ValueError(f"{source.name}: no events to split")
    joined = pl.concat(stamps)
    first, last = cast(datetime, joined.min()), cast(datetime, joined.max())
    return first.replace(tzinfo=UTC), last.replace(tzinfo=UTC)


def gbdt_fit_auc(data: Dataset, seed: int = 7) -> float | None:
    """Fit AUC of a gradient-boosting classifier on the same fit inputs and customer and
    item features (a strong tabular baseline for the fit head)."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    def table(frame: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        rows = frame.filter(pl.col("fit_label") >= 0)
        x = np.hstack([fit_feature_matrix(rows), rows.select(CUSTOMER_NUMERIC).to_numpy()])
        return x, rows.get_column("fit_label").to_numpy()

    x_train, y_train = table(data.train)
    x_test, y_test = table(data.test)
    if len(np.unique(y_train)) < 3 or len(y_test) < 10:
        return None
    model = HistGradientBoostingClassifier(max_iter=300, learning_rate=0.05, random_state=seed)
    model.fit(x_train, y_train)
    return fit_auc(y_test, model.predict_proba(x_test))


def run(
    source: adapters.RawTables,
    spec: Spec,
    workdir: Path,
    cfg: ModelConfig | None = None,
    test_source: adapters.RawTables | None = None,
) -> dict[str, object]:
    """Train and evaluate; returns one JSON-ready dict of metrics per method."""
    cfg = cfg or ModelConfig()
    data = prepare(source, spec, workdir, cfg, test_source)
    from pipeline.evaluation.baselines import all_baselines

    # On raw click streams a quarter of next clicks repeat the last one; let item-KNN vote
    # for repeats there (its authors' setting for such data), not on collapsed steps.
    knn = {"repeat_weight": 1.0} if not spec.collapse_repeats else {}
    # The same train, export, score and evaluate sequence as a retrain.
    trained = train_and_evaluate_candidate(
        data, cfg, workdir / "bundle", all_baselines(session_knn=knn)
    )
    losses, evaluation = trained.losses, trained.evaluation
    result: dict[str, object] = {
        "dataset": spec.name,
        "split": spec.split if test_source is None else "given test file",
        "train_examples": data.train.height,
        "test_examples": data.test.height,
        "items": data.items.height,
        "examples_per_s": round(losses["examples_per_s"][0], 1),
        **evaluation.metrics,
    }
    if evaluation.fit:
        result["model"] = {**result["model"], **evaluation.fit}  # type: ignore[dict-item]
        gbdt = gbdt_fit_auc(data)
        if gbdt is not None:
            result["gbdt_fit"] = {"fit_auc": gbdt}
    return result


def load(dataset: str, path: Path) -> adapters.RawTables:
    """The adapter for a benchmark dataset file."""
    if dataset in ("rtr", "rtr-random"):
        if path.suffix == ".parquet":
            return adapters.rent_the_runway_clean(path)
        return adapters.rent_the_runway_raw(path)
    if dataset == "yoochoose":
        return adapters.yoochoose(path)
    if dataset == "diginetica":
        return adapters.diginetica(path)
    raise ValueError(f"unknown benchmark dataset {dataset!r}")


__all__ = ["SPECS", "TIMESTAMP", "Spec", "load", "run"]
