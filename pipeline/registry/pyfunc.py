"""The recommender's MLflow pyfunc flavour: rows of (customer id, session items, customer
features) in, top-k out, with its signature and input example.

The registered model ``fitrec-recommender`` wraps the exported bundle, so
``mlflow.pyfunc.load_model("models:/fitrec-recommender@champion")`` works in a clean process;
serving reaches the same :class:`~pipeline.model.scoring.Scorer` through
``unwrap_python_model()``. MLflow loads it from code (:mod:`pipeline.registry.pyfunc_entry`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.models import ModelSignature
from mlflow.pyfunc import PythonModel, PythonModelContext
from mlflow.types.schema import Array, ColSpec, ParamSchema, ParamSpec, Schema


class FitrecPyfunc(PythonModel):
    """pyfunc flavour: rows of (customer_id, session_items, customer features) -> top-k."""

    def load_context(self, context: PythonModelContext) -> None:
        from pipeline.model.scoring import Scorer

        self.scorer = Scorer(Path(context.artifacts["bundle"]))

    def predict(
        self,
        context: PythonModelContext,
        model_input: pd.DataFrame,
        params: dict[str, Any] | None = None,
    ) -> pd.DataFrame:
        k = int((params or {}).get("k", 10))
        names = self.scorer.customer_features
        rows: list[dict[str, Any] | None] = [
            {n: record.get(n) for n in names if n in record}
            for record in model_input.to_dict("records")
        ]
        sessions = [_as_list(v) for v in model_input.get("session_items", [[]] * len(rows))]
        events = (
            [_as_list(v) for v in model_input["session_events"]]
            if "session_events" in model_input
            else None
        )
        customers = [str(v or "") for v in model_input.get("customer_id", [""] * len(rows))]
        scored = self.scorer.recommend(customers, rows, sessions, k=k, events=events)
        return pd.DataFrame(
            {"item_ids": [s.item_ids for s in scored], "scores": [s.scores for s in scored]}
        )


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [v for v in value.split(",") if v]
    return [str(v) for v in value]


def input_example(customer_features: list[str], session_items: list[str]) -> pd.DataFrame:
    """A neutral example row: no real customer, default features."""
    row: dict[str, Any] = {
        "customer_id": "",
        "session_items": [session_items],
        "session_events": [["view"] * len(session_items)],
    }
    row |= {name: [0.0] for name in customer_features}
    return pd.DataFrame(row)


def signature(customer_features: list[str]) -> ModelSignature:
    """Inputs: optional customer id, session item ids and customer features (missing ->
    defaults, so an anonymous row with an empty session is valid); output: top-k ids, scores."""
    inputs = Schema(
        [
            ColSpec("string", "customer_id", required=False),
            ColSpec(Array("string"), "session_items", required=False),
            ColSpec(Array("string"), "session_events", required=False),
            *[ColSpec("double", name, required=False) for name in customer_features],
        ]
    )
    outputs = Schema([ColSpec(Array("string"), "item_ids"), ColSpec(Array("double"), "scores")])
    return ModelSignature(inputs, outputs, ParamSchema([ParamSpec("k", "long", 10)]))
