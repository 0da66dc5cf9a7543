"""Evaluation: next-item recall@k of the model and of baselines on the same test examples."""

from __future__ import annotations

import numpy as np
import polars as pl

from pipeline.features import ITEM_ENTITY
from pipeline.scoring import Scorer
from pipeline.train import popularity, query_arrays

KS = (10, 20, 50)


def ranks_from_scores(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """0-based rank of each row's target among all columns (ties count against the target)."""
    target_scores = scores[np.arange(len(targets)), targets]
    return (scores > target_scores[:, None]).sum(axis=1) + (
        (scores == target_scores[:, None]).sum(axis=1) - 1
    )


def recall_at(ranks: np.ndarray, ks: tuple[int, ...] = KS) -> dict[str, float]:
    """Share of examples whose target ranks in the top k (one target each: recall = HR)."""
    out = {f"recall_at_{k}": float(np.mean(ranks < k)) if len(ranks) else 0.0 for k in ks}
    out["mrr_at_20"] = float(np.mean(np.where(ranks < 20, 1.0 / (ranks + 1), 0.0)))
    return out


def model_ranks(scorer: Scorer, test: pl.DataFrame, batch: int = 2048) -> np.ndarray:
    """Rank of each test target under the model."""
    arrays = query_arrays(test)
    targets = np.array([scorer.item_index[i] for i in test.get_column(ITEM_ENTITY).to_list()])
    ranks = []
    for start in range(0, len(test), batch):
        end = start + batch
        queries = scorer.encode(
            arrays["customer_id"][start:end],
            arrays["customer_features"][start:end],
            arrays["session_items"][start:end],
        )
        ranks.append(ranks_from_scores(scorer.scores(queries), targets[start:end]))
    return np.concatenate(ranks) if ranks else np.array([], dtype=int)


def popularity_ranks(train: pl.DataFrame, test: pl.DataFrame, items: list[str]) -> np.ndarray:
    """Rank of each test target when everyone gets the training popularity order."""
    position = {item: i for i, item in enumerate(popularity(train))}
    # Items never seen in training tie at the bottom (counted pessimistically).
    return np.array([position.get(i, len(items) - 1) for i in test.get_column(ITEM_ENTITY)])


def evaluate(scorer: Scorer, train: pl.DataFrame, test: pl.DataFrame) -> dict[str, float]:
    """Model and popularity-baseline metrics, flat (``model_recall_at_20``, ...)."""
    items = scorer.item_ids.tolist()
    metrics = {f"model_{k}": v for k, v in recall_at(model_ranks(scorer, test)).items()}
    metrics |= {
        f"popularity_{k}": v for k, v in recall_at(popularity_ranks(train, test, items)).items()
    }
    metrics["test_examples"] = float(len(test))
    metrics["train_examples"] = float(len(train))
    return metrics
