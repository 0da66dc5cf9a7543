"""Privacy: customer pseudonyms and the rules for sensitive body data.

Customer ids are replaced at ingest by a keyed hash (HMAC-SHA256), so curated tables, the
feature store, MLflow and logs never see the retailer's own id; serving applies the same
function to the id it is given. Body measurements are used only for customers who consented,
and only as derived features (see :mod:`pipeline.features.build`); rows of customers without
consent lose them at ingest (:func:`redact_without_consent`), quarantined text too
(:func:`without_body`).
"""

from __future__ import annotations

import hmac

import orjson
import polars as pl

from pipeline.data.contracts import CUSTOMERS

PSEUDONYM_PREFIX = "c_"


def pseudonymise(customer_id: str, key: str) -> str:
    """Return the stable pseudonym of one customer id (HMAC-SHA256, 80 bits shown)."""
    return PSEUDONYM_PREFIX + hmac.digest(key.encode(), customer_id.encode(), "sha256").hex()[:20]


# Pseudonyms already computed in this process, per key (most customers come back daily).
_KNOWN: dict[str, pl.DataFrame] = {}
_KNOWN_LIMIT = 5_000_000


def pseudonymise_column(frame: pl.DataFrame, column: str, key: str) -> pl.DataFrame:
    """Replace ``column`` by its pseudonyms (nulls stay null: anonymous sessions)."""
    known = _KNOWN.get(key)
    if known is None or known.height > _KNOWN_LIMIT:
        known = pl.DataFrame(schema={"__id": pl.String, "__pseudonym": pl.String})
    ids = frame.get_column(column).cast(pl.String)
    new = ids.drop_nulls().unique().to_frame("__id").join(known, on="__id", how="anti")
    if new.height:
        fresh = new.with_columns(
            pl.Series("__pseudonym", [pseudonymise(v, key) for v in new["__id"]], pl.String)
        )
        known = pl.concat([known, fresh])
        _KNOWN[key] = known
    return (
        frame.with_columns(ids.alias("__id"))
        .join(known, on="__id", how="left", maintain_order="left")
        .with_columns(pl.col("__pseudonym").alias(column))
        .drop("__id", "__pseudonym")
    )


def redact_without_consent(customers: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    """Drop body measurements of customers who did not consent; returns (frame, rows redacted)."""
    no_consent = ~pl.col("body_data_consent")
    redacted = customers.with_columns(
        pl.when(no_consent).then(None).otherwise(pl.col(c)).alias(c) for c in CUSTOMERS.sensitive
    )
    return redacted, int(customers.select(no_consent.sum()).item())


def without_body(text: str) -> str:
    """A raw customer row (JSON text) without its body measurements; other text unchanged."""
    try:
        record = orjson.loads(text)
    except orjson.JSONDecodeError:
        return text
    if not isinstance(record, dict):
        return text
    return orjson.dumps({k: v for k, v in record.items() if k not in CUSTOMERS.sensitive}).decode()
