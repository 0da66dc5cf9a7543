"""The model's hyper-parameters and constants, importable without TensorFlow.

Flows, the CLI and the registry need :class:`ModelConfig`, :data:`PAD` and
:data:`FIT_CLASSES`; importing them from here keeps TensorFlow out of every process that does
not train or score.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

PAD = ""  # session padding and "no customer"
FIT_CLASSES = ("too_small", "fits", "too_large")


@dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters and loss weights; frozen, logged to MLflow as params."""

    embedding_dim: int = 64
    session_len: int = 10
    epochs: int = 10
    batch_size: int = 256
    learning_rate: float = 0.003
    customer_dropout: float = 0.5
    customer_l2: float = 1e-5
    min_customer_examples: int = 20
    dropout: float = 0.1
    softmax: Literal["auto", "full", "sampled"] = "auto"
    full_softmax_max_items: int = 60_000
    temperature: float = 0.1
    retrieval_weight: float = 1.0
    purchase_weight: float = 0.3
    keep_weight: float = 0.3
    fit_weight: float = 1.0
    memory_top_m: int = 50
    memory_decay: float = 0.7
    # Trend prior: each item's time-decayed share of interactions (one per half-life) as of
    # the example's time, with learned weights; serving uses the shares as of the cut-off.
    trend_half_lives_days: tuple[float, ...] = (1.0, 7.0, 30.0)
    trend_buckets: int = 256
    neural_weight: float = 0.0
    validation_share: float = 0.1
    # Large days are trained on a fresh random subset each epoch (the memory still counts
    # every example): keeps a nightly retrain on 100k customers inside its time budget.
    max_examples_per_epoch: int = 400_000
    max_validation_examples: int = 50_000
    # Wall-clock budget of the training loop: no epoch starts that would end past it (the
    # best epoch so far is kept), so a nightly retrain fits its window whatever the volume.
    max_train_seconds: float = 600.0
    seed: int = 42

    def as_params(self) -> dict[str, object]:
        return dataclasses.asdict(self)

    def full_softmax(self, n_items: int) -> bool:
        if self.softmax == "auto":
            return n_items <= self.full_softmax_max_items
        return self.softmax == "full"
