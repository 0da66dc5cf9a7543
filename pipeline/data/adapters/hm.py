"""H&M (Kaggle 2022): articles, customers (age only) and transactions."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from pipeline.data.adapters.base import (
    ISO,
    RawTables,
    age_band,
    content_ids,
    contract_strings,
    first_seen,
)

HM_GROUP = {
    "Garment Upper body": "top",
    "Garment Lower body": "trousers",
    "Garment Full body": "dress",
    "Shoes": "shoes",
    "Accessories": "accessories",
    "Bags": "accessories",
    "Items": "accessories",
}
HM_TYPE = {
    "Skirt": "skirt",
    "Jumpsuit/Playsuit": "jumpsuit",
    "Sweater": "knitwear",
    "Cardigan": "knitwear",
    "Jacket": "outerwear",
    "Coat": "outerwear",
    "Blazer": "outerwear",
}


def hm(articles: Path, customers: Path, transactions: Path) -> RawTables:
    """H&M articles, customers and transactions (Kaggle 2022 layout).

    The published slice has only some transaction customers in ``customers.csv``; the
    others get id-only customer rows (no body data, no consent) so their purchases are
    kept rather than quarantined as unknown customers.
    """
    tx = pl.read_csv(transactions, infer_schema=False)
    tx = tx.with_columns(
        pl.col("t_dat").str.to_datetime("%Y-%m-%d").alias("ts"),
        content_ids(tx, tx.columns, "hm").alias("order_line_id"),
    )
    art = pl.read_csv(articles, infer_schema=False)
    people = pl.read_csv(customers, infer_schema=False)
    first_purchase = first_seen(tx, "customer_id")
    listed = people.join(first_purchase, on="customer_id", how="left").with_columns(
        pl.col("first_ts").fill_null(pl.col("first_ts").min())
    )
    unlisted = first_purchase.join(people, on="customer_id", how="anti")
    customer_rows = pl.concat(
        [
            listed.select("customer_id", "first_ts", age_band(pl.col("age")).alias("age_band")),
            unlisted.select("customer_id", "first_ts", pl.lit(None, pl.String).alias("age_band")),
        ]
    ).with_columns(
        pl.col("first_ts").fill_null(tx.get_column("ts").min()).dt.strftime(ISO).alias("signup_ts"),
        pl.lit("false").alias("body_data_consent"),
    )
    prices = tx.group_by("article_id").agg(
        pl.col("price").cast(pl.Float64).mean(), pl.col("ts").min().alias("first_ts")
    )
    items = art.join(prices, on="article_id", how="left").select(
        pl.col("article_id").alias("item_id"),
        pl.coalesce(
            pl.col("product_type_name").replace_strict(HM_TYPE, default=None),
            pl.col("product_group_name").replace_strict(HM_GROUP, default="other"),
        ).alias("category"),
        pl.lit("H&M").alias("brand"),
        pl.col("price"),
        pl.col("colour_group_name").str.to_lowercase().alias("colour"),
        pl.col("graphical_appearance_name").str.to_lowercase().alias("style"),
        pl.col("first_ts").fill_null(tx.get_column("ts").min()).dt.strftime(ISO).alias("launch_ts"),
    )
    purchases = tx.select(
        "order_line_id",
        "customer_id",
        pl.col("article_id").alias("item_id"),
        "price",
        pl.col("ts").dt.strftime(ISO).alias("ts"),
        pl.lit("false").alias("returned"),
    )
    return RawTables(
        "hm",
        {
            "customers": contract_strings(customer_rows.sort("customer_id"), "customers"),
            "items": contract_strings(items.sort("item_id"), "items"),
            "purchases": contract_strings(purchases, "purchases"),
        },
    )
