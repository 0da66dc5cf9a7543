"""Flow ``backfill``: ingest, features and materialisation for every day of a range, then one
training and promotion for its last day."""

from __future__ import annotations

from datetime import date, timedelta

from prefect import flow

from flows.features import build_features
from flows.ingest import ingest
from flows.materialize import materialize
from flows.promote import evaluate_and_promote
from flows.train import train
from pipeline.model.config import ModelConfig


@flow(name="backfill")
def backfill(start: date, end: date, train_model: bool = True, cfg: ModelConfig | None = None):
    if end < start:
        raise ValueError(f"backfill end {end} is before its start {start}")
    day = start
    while day <= end:
        ingest(day)
        build_features(day)
        day += timedelta(days=1)
    materialize()
    if not train_model:
        return {"days": (end - start).days + 1}
    return evaluate_and_promote(train(end, cfg))
