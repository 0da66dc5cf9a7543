"""What every erasure step shares: the audit record, the names of body features, and an
atomic Parquet write."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

CUSTOMER = "customer_id"
SESSION_PREFIX = "fitrec:session:"
# Customer features derived from body measurements (what consent withdrawal removes).
BODY_FEATURES = ("has_body", "shape_bust_hips", "shape_waist_hips")
BODY_FEATURE_SUFFIX = "_z"


def body_feature_names() -> list[str]:
    from pipeline.features.declarations import CUSTOMER_FEATURES

    return [
        f.name
        for f in CUSTOMER_FEATURES
        if f.name in BODY_FEATURES or f.name.endswith(BODY_FEATURE_SUFFIX)
    ]


# --- helpers ----------------------------------------------------------------------------------


def write_parquet_atomic(frame: pl.DataFrame, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    frame.write_parquet(tmp)
    os.replace(tmp, path)


@dataclass
class AuditRecord:
    """What one erasure did, without personal data: no raw id, no pseudonym (a salted hash
    would still link two records of one person), only counts per store."""

    erasure_id: str
    at: str
    kind: str  # "erase" or "withdraw_consent"
    customers: int
    rows: dict[str, int] = field(default_factory=dict)
    files_rewritten: int = 0
    model_versions_deleted: list[str] = field(default_factory=list)
    champion_holds_until_retrain: bool = False
    leftovers: int = 0

    def add(self, store: str, n: int) -> None:
        self.rows[store] = self.rows.get(store, 0) + n
