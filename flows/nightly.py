"""Flow ``nightly``: ingest, features, materialise, train, as subflows for one date."""

from __future__ import annotations

from datetime import date

from prefect import flow

from flows.features import build_features
from flows.ingest import ingest
from flows.materialize import materialize
from flows.train import train
from pipeline.model import ModelConfig


@flow(name="nightly")
def nightly(run_date: date, cfg: ModelConfig | None = None) -> dict:
    ingest(run_date)
    build_features(run_date)
    materialize()
    return train(run_date, cfg)
