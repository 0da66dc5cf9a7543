"""Privacy: customer pseudonyms and the rules for sensitive body data.

Customer ids are replaced at ingest by a keyed hash (HMAC-SHA256), so curated tables, the
feature store, MLflow and logs never see the retailer's own id; serving applies the same
function to the id it is given. Body measurements are used only for customers who consented,
and only as derived features (see :mod:`pipeline.features`).
"""

from __future__ import annotations

import hashlib
import hmac

import polars as pl

PSEUDONYM_PREFIX = "c_"


def pseudonymise(customer_id: str, key: str) -> str:
    """Return the stable pseudonym of one customer id."""
    digest = hmac.new(key.encode(), customer_id.encode(), hashlib.sha256).hexdigest()
    return PSEUDONYM_PREFIX + digest[:20]


def pseudonymise_column(frame: pl.DataFrame, column: str, key: str) -> pl.DataFrame:
    """Replace ``column`` by its pseudonyms (nulls stay null: anonymous sessions)."""
    ids = frame.get_column(column)
    uniques = ids.drop_nulls().unique()
    mapping = pl.DataFrame(
        {
            column: uniques,
            "__pseudonym": [pseudonymise(v, key) for v in uniques.to_list()],
        },
        schema={column: ids.dtype, "__pseudonym": pl.String},
    )
    return (
        frame.join(mapping, on=column, how="left", maintain_order="left")
        .with_columns(pl.col("__pseudonym").alias(column))
        .drop("__pseudonym")
    )
