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
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

from pipeline.config import Settings
from pipeline.data import adapters
from pipeline.data.contracts import CONTRACTS, size_value
from pipeline.data.ingest import IngestReport, ingest_drop
from pipeline.evaluation.candidate import TrainedCandidate, train_and_evaluate_candidate
from pipeline.evaluation.evaluate import evaluation_units, fit_probabilities
from pipeline.evaluation.metrics import fit_auc
from pipeline.evaluation.significance import interval_of
from pipeline.evaluation.splits import (
    EVENT_TABLES,
    Spec,
    random_split,
    split_by_time,
    time_cutoff,
    time_range,
    within_horizon,
)
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


SPECS = {
    "rtr": Spec("rtr", split="time", test_days=60, snapshot_every=timedelta(days=30)),
    # A retailer's horizon: six months after a cut-off, with many new items and customers.
    "rtr-6m": Spec(
        "rtr",
        split="time",
        test_days=60,
        snapshot_every=timedelta(days=30),
        split_at=datetime(2017, 1, 1),
        test_until=datetime(2017, 7, 1),
    ),
    "rtr-random": Spec("rtr", split="random", test_days=60, snapshot_every=timedelta(days=30)),
    "yoochoose": Spec("yoochoose", test_days=1, collapse_repeats=False),
    "diginetica": Spec("diginetica", test_days=7, collapse_repeats=False),
}


@dataclass
class Prepared:
    """A benchmark's examples and where every row of its input went.

    Attributes:
        data: Train and test examples and the catalogue.
        rows: ``{"train" | "test": {table: {"file": n, "curated": n, "quarantined": n,
            "exact_duplicates": n, "erased": n}}}``; ``file`` is what the adapter produced
            from the file, and the other four add up to it.
        test_events: Test events by the fate of their example: ``examples``, ``unknown_item``
            (the item has no feature snapshot at the cut-off), ``not_predicted`` (protocol:
            the first click of a session, or an item never seen in training).
    """

    data: Dataset
    rows: dict[str, dict[str, dict[str, int]]]
    test_events: dict[str, int]


def event_ids(source: adapters.RawTables) -> set[str]:
    """Every event id of a source's event tables."""
    return {
        v
        for t in EVENT_TABLES
        if t in source.tables
        for v in source.tables[t].get_column(CONTRACTS[t].key[0]).to_list()
    }


def check_disjoint(train: adapters.RawTables, test: adapters.RawTables) -> set[str]:
    """The test side's event ids, after checking that none is also a training event.

    Raises:
        ValueError: the two sides share events (the same file twice, overlapping exports).
    """
    train_ids, test_ids = event_ids(train), event_ids(test)
    shared = train_ids & test_ids
    if shared:
        raise ValueError(
            f"{len(shared):,} of the {len(test_ids):,} test events are also in the training "
            f"data (e.g. {sorted(shared)[:3]}): the train and test files overlap; give files "
            "that share no rows (for a file cut at a date, each row on one side)"
        )
    return test_ids


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


def _known_at_cutoff(settings: Settings, day: date, cutoff: datetime) -> None:
    """Redo the snapshots at the cut-off with what the test side's files say of customers and
    items.

    Behaviour still counts only events before the cut-off; body measurements and age come
    from the profiles known then, including those of customers who first appear in the test
    period (they sign up with their measurements, never from a later review), and items
    launched in the test period join the catalogue with their attributes and no history.
    """
    paths = feature_paths(settings.features_dir)
    for view, build in ((CUSTOMER_VIEW, customer_features), (ITEM_VIEW, item_features)):
        at_cutoff = build(settings.curated_dir, day, as_of=cutoff)
        if at_cutoff.is_empty():  # e.g. no customers in an anonymous click stream
            continue
        snapshots = pl.read_parquet(paths[view])
        stamp = at_cutoff.get_column(TIMESTAMP).first()
        earlier = snapshots.filter(pl.col(TIMESTAMP) != stamp)
        pl.concat([earlier, at_cutoff.select(earlier.columns)]).write_parquet(paths[view])


def _accounts(raw: adapters.RawTables, report: IngestReport) -> dict[str, dict[str, int]]:
    """Where each table's rows went; raises if ingest did not account for every row."""
    out = {}
    for table, frame in raw.tables.items():
        t = report.tables[table]
        counts = {
            "file": frame.height,
            "curated": t.curated,
            "quarantined": t.quarantined,
            "exact_duplicates": t.exact_duplicates,
            "erased": t.erased,
        }
        accounted = t.curated + t.quarantined + t.exact_duplicates + t.erased
        if t.raw != frame.height or accounted != frame.height:
            raise ValueError(
                f"{raw.name} {table}: {frame.height} rows given, ingest read {t.raw} and "
                f"accounted for {accounted} ({counts})"
            )
        out[table] = counts
    return out


def prepare(
    source: adapters.RawTables,
    spec: Spec,
    workdir: Path,
    cfg: ModelConfig,
    test_source: adapters.RawTables | None = None,
) -> Prepared:
    """Ingest, snapshot and split a public dataset into train and test examples.

    With ``test_source`` (a given test file) the two are the training and test sides as they
    are; else a time split cuts ``source`` into two such sides (:meth:`RawTables.cut`), and a
    random split draws test rows (:func:`random_split`). Feature snapshots see the training
    side only, except that the snapshot at the cut-off carries the test side's customer
    profiles and items (:func:`_known_at_cutoff`).

    Raises:
        ValueError: the train and test sides share events, or ingest lost rows.
    """
    settings = Settings(data_dir=workdir)
    by_time = test_source is not None or spec.split == "time"
    if test_source is not None:
        train_source, rest = source, test_source
    elif spec.split == "time":
        train_source, rest = split_by_time(source, spec)
    else:
        train_source, test_ids = random_split(source, spec)
        rest = adapters.RawTables(
            source.name,
            {
                t: source.tables[t].filter(pl.col(CONTRACTS[t].key[0]).is_in(list(test_ids)))
                for t in EVENT_TABLES
                if t in source.tables
            },
        )
    if by_time:
        test_ids = check_disjoint(train_source, rest)
    train_day = _latest_day(train_source)
    test_day = max(_latest_day(rest), train_day) + timedelta(days=1)
    first, last = time_range(train_source)
    cutoff = last + timedelta(seconds=1)
    rows = {}
    for side, raw, day in (("train", train_source, train_day), ("test", rest, test_day)):
        folder = adapters.write_drop(raw, settings.raw_dir, day)
        report = ingest_drop(folder, day, settings)
        rows[side] = _accounts(raw, report)
        log.info("%s %s %s: %s", source.name, side, day, rows[side])
        if side == "train":
            # Features only ever see the training part: no test label can leak into them.
            _snapshots(
                settings, train_day, first + spec.snapshot_every, cutoff, spec.snapshot_every
            )
        elif by_time:
            _known_at_cutoff(settings, test_day, cutoff)
    examples = session_examples(
        settings.curated_dir, test_day, cfg.session_len, spec.collapse_repeats
    )
    paths = feature_paths(settings.features_dir)
    examples = attach_customer_features(examples, pl.read_parquet(paths[CUSTOMER_VIEW]))
    items = item_table(pl.read_parquet(paths[ITEM_VIEW]), None)
    is_test = pl.col("event_id").is_in(list(test_ids))
    known = pl.col(ITEM_ENTITY).is_in(items.get_column(ITEM_ENTITY).implode())
    unknown_item = examples.filter(is_test & ~known).height
    examples = finish(examples.filter(known).sort("session_id", "step"), items)
    train, test = examples.filter(~is_test), examples.filter(is_test)
    scored = test.height
    if not spec.collapse_repeats:
        # Click-stream protocol (GRU4Rec, SR-GNN): predict every click after the first of a
        # test session, among items seen in training.
        seen = train.get_column(ITEM_ENTITY).unique().implode()
        test = test.filter((pl.col("step") > 0) & pl.col(ITEM_ENTITY).is_in(seen))
    test_events = {
        "examples": test.height,
        "unknown_item": unknown_item,
        "not_predicted": scored - test.height,
    }
    data = Dataset(
        train=train, test=test, items=items, cutoff=cutoff, item_sizes=observed_sizes(train)
    )
    return Prepared(data=data, rows=rows, test_events=test_events)


def observed_sizes(train: pl.DataFrame) -> pl.DataFrame | None:
    """The sizes each item was rented or tried in during training, in size order, as the
    item's size list (public data has no size charts; in stock: all of them), so the fit
    head can recommend one of them. None when training rows carry no sizes."""
    if "size" not in train.columns:
        return None
    sized = train.filter(pl.col("size").is_not_null()).select(ITEM_ENTITY, "size").unique()
    if sized.is_empty():
        return None
    return (
        sized.with_columns(size_value(pl.col("size")).alias("__value"))
        .drop_nulls("__value")
        .sort(ITEM_ENTITY, "__value", "size")
        .with_columns(
            pl.int_range(pl.len()).over(ITEM_ENTITY).cast(pl.Int32).alias("size_rank"),
            pl.lit(1, pl.Int32).alias("stock"),
        )
        .drop("__value")
    )


def _latest_day(source: adapters.RawTables) -> date:
    return time_range(source)[1].date()


def gbdt_fit_probabilities(data: Dataset, seed: int = 7) -> np.ndarray | None:
    """P(small, fits, large) on the labelled test rows from a gradient-boosting classifier
    on the same fit inputs and customer features (a strong tabular baseline for the fit
    head); None when there is too little to fit or score."""
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
    return model.predict_proba(x_test)


COUNTS = ("test_examples", "fit_examples", "fit_examples_seen", "fit_examples_unseen")
"""Counts among the evaluation's numbers: reported as they are, without an interval."""


def _with_intervals(values: dict[str, float], intervals: dict[str, tuple[float, float]]) -> dict:
    """``{metric: {"value", "ci_low", "ci_high"}}`` from flat values (a metric's interval
    from ``intervals`` or from its ``<metric>_ci_low`` / ``_ci_high`` entries); counts stay
    plain numbers."""
    out: dict[str, object] = {}
    for name, value in values.items():
        if name.endswith(("_ci_low", "_ci_high")):
            continue
        if name in COUNTS or name.endswith("_examples"):
            out[name] = int(value)
            continue
        low, high = intervals.get(
            name, (values.get(f"{name}_ci_low"), values.get(f"{name}_ci_high"))
        )
        out[name] = {"value": value, "ci_low": low, "ci_high": high}
    return out


def _fit_comparison(data: Dataset, trained: TrainedCandidate) -> dict[str, object] | None:
    """GBDT's fit AUC with its interval, and the model minus GBDT paired on the same rows."""
    gbdt = gbdt_fit_probabilities(data)
    if gbdt is None:
        return None
    labelled = data.test.filter(pl.col("fit_label") >= 0)
    y = labelled.get_column("fit_label").to_numpy()
    model = fit_probabilities(trained.scorer, labelled)
    units = evaluation_units(labelled)
    auc = interval_of(lambda rows: fit_auc(y[rows], gbdt[rows]), units)
    diff = interval_of(
        lambda rows: fit_auc(y[rows], model[rows]) - fit_auc(y[rows], gbdt[rows]), units
    )
    return {
        "gbdt_fit": {"fit_auc": {"value": auc.estimate, "ci_low": auc.low, "ci_high": auc.high}},
        "vs_gbdt": {
            "fit_auc": {
                "baseline": "gbdt_fit",
                "difference": diff.estimate,
                "ci_low": diff.low,
                "ci_high": diff.high,
                "verdict": diff.verdict,
            }
        },
    }


def run(
    source: adapters.RawTables,
    spec: Spec,
    workdir: Path,
    cfg: ModelConfig | None = None,
    test_source: adapters.RawTables | None = None,
) -> dict[str, object]:
    """Train and evaluate; returns one JSON-ready dict.

    Besides the split's counts, one entry per method maps each metric to its ``value`` and
    95% interval (``ci_low``, ``ci_high``; bootstrap over test customers, or sessions where
    anonymous); the model's entry also holds ``vs_best``: per ranking metric, its paired
    difference to the strongest baseline on that metric, with the interval and the verdict
    (``ahead`` / ``tied`` / ``behind``: where the interval lies against zero), and
    ``vs_gbdt`` for the fit AUC where the data has fit labels.
    """
    cfg = cfg or ModelConfig()
    prepared = prepare(source, spec, workdir, cfg, test_source)
    data = prepared.data
    from pipeline.evaluation.baselines import all_baselines, session_baselines

    # On raw click streams a quarter of next clicks repeat the last one; let item-KNN vote
    # for repeats there (its authors' setting for such data), not on collapsed steps.
    knn = {"repeat_weight": 1.0} if not spec.collapse_repeats else {}
    # The session-neighbour heuristics twice: with session-rec's defaults, and tuned on the
    # training sessions of the last test-period's length (never on test rows).
    baselines = all_baselines(session_knn=knn) + session_baselines(
        tune_horizon=timedelta(days=spec.test_days)
    )
    # The same train, export, score and evaluate sequence as a retrain.
    trained = train_and_evaluate_candidate(data, cfg, workdir / "bundle", baselines)
    losses, evaluation = trained.losses, trained.evaluation
    methods = {
        method: _with_intervals(values, evaluation.intervals.get(method, {}))
        for method, values in evaluation.metrics.items()
    }
    model = methods["model"]
    model["vs_best"] = {
        metric: {
            "baseline": c.baseline,
            "difference": c.difference,
            "ci_low": c.low,
            "ci_high": c.high,
            "verdict": c.verdict,
        }
        for metric, c in evaluation.comparisons.items()
    }
    result: dict[str, object] = {
        "dataset": spec.name,
        "split": spec.split if test_source is None else "given test file",
        "cutoff": data.cutoff.isoformat() if data.cutoff else None,
        "test_until": spec.test_until.isoformat()
        if spec.test_until is not None and test_source is None
        else None,
        "train_examples": data.train.height,
        "test_examples": data.test.height,
        "items": data.items.height,
        "examples_per_s": round(losses["examples_per_s"][0], 1),
        "rows": prepared.rows,
        "test_events": prepared.test_events,
        **methods,
    }
    if evaluation.fit:
        model |= _with_intervals(evaluation.fit, {})
        fit = _fit_comparison(data, trained)
        if fit is not None:
            model["vs_gbdt"] = fit["vs_gbdt"]
            result["gbdt_fit"] = fit["gbdt_fit"]
    return result


def load(dataset: str, path: Path, namespace: str | None = None) -> adapters.RawTables:
    """The adapter for a benchmark dataset file; ``namespace`` prefixes click-stream session
    ids (``train`` / ``test`` for two given files, so their sessions never merge)."""
    if dataset in ("rtr", "rtr-random"):
        if path.suffix == ".parquet":
            return adapters.rent_the_runway_clean(path)
        return adapters.rent_the_runway_raw(path)
    if dataset == "yoochoose":
        return adapters.yoochoose(path, namespace)
    if dataset == "diginetica":
        return adapters.diginetica(path, namespace)
    raise ValueError(f"unknown benchmark dataset {dataset!r}")


__all__ = [
    "SPECS",
    "TIMESTAMP",
    "Prepared",
    "Spec",
    "load",
    "prepare",
    "run",
    "time_cutoff",
    "within_horizon",
]
