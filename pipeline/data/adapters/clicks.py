"""Click streams: YooChoose (``SessionId<TAB>ItemId<TAB>Time``) and Diginetica
(``;``-separated item views)."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from pipeline.data.adapters.base import ISO, RawTables, content_ids, contract_strings, first_seen


def click_tables(name: str, clicks: pl.DataFrame, namespace: str | None = None) -> RawTables:
    """session_id, customer_id (maybe null), item_id, ts (datetime) -> views and items.

    Event ids are digests of the source session, item and time (the same click has the same
    id in any file); session ids get ``<namespace>:`` in front when a namespace is given.
    """
    clicks = clicks.with_columns(
        content_ids(clicks, ["session_id", "customer_id", "item_id", "ts"], name)
    )
    items = (
        first_seen(clicks, "item_id")
        .select(
            "item_id",
            pl.lit("other").alias("category"),
            pl.col("first_ts").dt.strftime(ISO).alias("launch_ts"),
        )
        .sort("item_id")
    )
    session = pl.col("session_id")
    events = clicks.select(
        "event_id",
        pl.format("{}:{}", pl.lit(namespace), session).alias("session_id")
        if namespace
        else session,
        "customer_id",
        pl.lit("view").alias("event_type"),
        "item_id",
        pl.col("ts").dt.strftime(ISO).alias("ts"),
    )
    return RawTables(
        name,
        {
            "items": contract_strings(items, "items"),
            "session_events": contract_strings(events, "session_events"),
        },
        source_rows=clicks.drop("event_id"),
        rebuild=lambda rows: click_tables(name, rows, namespace),
    )


def yoochoose(path: Path, namespace: str | None = None) -> RawTables:
    """YooChoose clicks as prepared by session-rec: ``SessionId<TAB>ItemId<TAB>Time``.

    ``namespace`` goes in front of the session ids (see :func:`click_tables`)."""
    raw = pl.read_csv(path, separator="\t", infer_schema=False)
    clicks = raw.select(
        pl.col("SessionId").alias("session_id"),
        pl.lit(None, pl.String).alias("customer_id"),
        pl.col("ItemId").alias("item_id"),
        pl.from_epoch(
            (pl.col("Time").cast(pl.Float64) * 1000).cast(pl.Int64), time_unit="ms"
        ).alias("ts"),
    )
    return click_tables("yoochoose", clicks, namespace)


def diginetica(path: Path, namespace: str | None = None) -> RawTables:
    """Diginetica item views: ``session_id;user_id;item_id;timeframe;eventdate``.

    ``timeframe`` is milliseconds since the session's first event; it orders the views.
    """
    raw = pl.read_csv(path, separator=";", infer_schema=False)
    clicks = raw.select(
        pl.col("session_id"),
        pl.when(pl.col("user_id") == "NA")
        .then(None)
        .otherwise(pl.col("user_id"))
        .alias("customer_id"),
        pl.col("item_id"),
        (
            pl.col("eventdate").str.to_datetime("%Y-%m-%d")
            + pl.duration(milliseconds=pl.col("timeframe").cast(pl.Int64))
        ).alias("ts"),
    )
    return click_tables("diginetica", clicks, namespace)
