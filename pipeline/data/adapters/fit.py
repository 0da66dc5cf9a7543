"""Fit-feedback sources: RentTheRunway (raw JSON lines and the cleaned Parquet) and ModCloth
(raw JSON lines): one row is one customer's fit feedback on a rented or bought item."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path

import polars as pl

from pipeline.data.adapters.base import (
    ISO,
    RawTables,
    age_band,
    category_of,
    content_ids,
    contract_strings,
    first_seen,
)
from pipeline.data.units import us_to_eu_shoe

FIT = {"fit": "fits", "small": "too_small", "large": "too_large"}
RTR_CATEGORY = {
    **dict.fromkeys(
        [
            "dress",
            "gown",
            "sheath",
            "shift",
            "maxi",
            "mini",
            "midi",
            "shirtdress",
            "ballgown",
            "caftan",
            "kaftan",
            "frock",
            "print",
            "kimono",
            "cape",
            "overalls",
        ],
        "dress",
    ),
    **dict.fromkeys(["romper", "jumpsuit", "overall"], "jumpsuit"),
    **dict.fromkeys(
        [
            "top",
            "blouse",
            "shirt",
            "tee",
            "t-shirt",
            "tank",
            "cami",
            "blouson",
            "tunic",
            "bodysuit",
            "henley",
            "buttondown",
            "crewneck",
            "turtleneck",
            "polo",
        ],
        "top",
    ),
    **dict.fromkeys(["skirt", "skirts"], "skirt"),
    **dict.fromkeys(
        [
            "pants",
            "pant",
            "jeans",
            "leggings",
            "trousers",
            "culottes",
            "culotte",
            "trouser",
            "legging",
            "jogger",
            "sweatpants",
            "shorts",
            "skort",
        ],
        "trousers",
    ),
    **dict.fromkeys(
        [
            "coat",
            "jacket",
            "blazer",
            "trench",
            "parka",
            "peacoat",
            "vest",
            "bomber",
            "down",
            "duster",
            "poncho",
            "suit",
        ],
        "outerwear",
    ),
    **dict.fromkeys(
        ["sweater", "cardigan", "pullover", "knit", "sweatshirt", "hoodie", "sweatershirt"],
        "knitwear",
    ),
}
MODCLOTH_CATEGORY = {
    "dresses": "dress",
    "wedding": "dress",
    "tops": "top",
    "bottoms": "trousers",
    "outerwear": "outerwear",
}


def _fit_tables(name: str, frame: pl.DataFrame) -> RawTables:
    """Common shape of RentTheRunway and ModCloth: one row = one customer's fit feedback.

    ``frame`` has customer_id, item_id, size, fit, liked, ts (datetime), category, and the
    raw body columns (height_cm, weight_kg, bust_cm, waist_cm, hips_cm, shoe_size_eu,
    body_type, age).
    """
    frame = frame.with_columns(pl.col("ts").dt.replace_time_zone(None))
    frame = frame.with_columns(content_ids(frame, frame.columns, name))
    first_customer = first_seen(frame, "customer_id")
    customers = (
        # The profile as first seen: what was known when the customer first appeared.
        frame.sort("ts", "event_id")
        .group_by("customer_id", maintain_order=True)
        .first()
        .join(first_customer, on="customer_id")
        .with_columns(
            pl.col("first_ts").dt.strftime(ISO).alias("signup_ts"),
            age_band(pl.col("age")).alias("age_band") if "age" in frame.columns else pl.lit(None),
            pl.lit("true").alias("body_data_consent"),
        )
        .sort("customer_id")
    )
    items = (
        frame.group_by("item_id")
        .agg(pl.col("category").mode().first(), pl.col("ts").min().alias("first_ts"))
        .with_columns(pl.col("first_ts").dt.strftime(ISO).alias("launch_ts"))
        .sort("item_id")
    )
    try_ons = frame.select(
        "event_id",
        pl.col("event_id").alias("session_id"),
        "customer_id",
        "item_id",
        pl.col("size").cast(pl.String),
        pl.col("fit").replace_strict(FIT, default=None).alias("fit_feedback"),
        pl.col("liked"),
        pl.col("ts").dt.strftime(ISO).alias("ts"),
    )
    return RawTables(
        name,
        {
            "customers": contract_strings(customers, "customers"),
            "items": contract_strings(items, "items"),
            "try_ons": contract_strings(try_ons, "try_ons"),
        },
        source_rows=frame.drop("event_id"),
        rebuild=lambda rows: _fit_tables(name, rows),
    )


def rent_the_runway_raw(path: Path) -> RawTables:
    """RentTheRunway raw JSON lines (``renttherunway_final_data.json``; keys with spaces)."""
    raw = pl.read_ndjson(path, infer_schema_length=None).rename(lambda c: c.replace(" ", "_"))
    frame = raw.select(
        pl.col("user_id").cast(pl.String).alias("customer_id"),
        pl.col("item_id").cast(pl.String),
        pl.col("size").cast(pl.String),
        pl.col("fit"),
        (pl.col("rating").cast(pl.Float64, strict=False) >= 8).cast(pl.String).alias("liked"),
        pl.col("review_date").str.to_datetime("%B %d, %Y", strict=False).alias("ts"),
        pl.col("category").cast(pl.String).pipe(category_of, RTR_CATEGORY).alias("category"),
        pl.col("height").alias("height_cm"),
        pl.col("weight").alias("weight_kg"),
        pl.col("bust_size").alias("bust_cm"),
        pl.col("body_type"),
        pl.col("age"),
    )
    return _fit_tables("rtr", frame.filter(pl.col("ts").is_not_null()))


def rent_the_runway_clean(path: Path) -> RawTables:
    """The cleaned RentTheRunway Parquet (numeric height in inches, weight in lbs)."""
    raw = pl.read_parquet(path)
    frame = raw.select(
        pl.col("user_id").cast(pl.String).alias("customer_id"),
        pl.col("item_id").cast(pl.String),
        pl.col("size").cast(pl.String),
        pl.col("fit").cast(pl.String),
        (pl.col("rating") >= 8).cast(pl.String).alias("liked"),
        pl.col("review_date").alias("ts"),
        pl.col("category").pipe(category_of, RTR_CATEGORY).alias("category"),
        pl.format("{}in", pl.col("height_in")).alias("height_cm"),
        pl.format("{}lbs", pl.col("weight_lbs")).alias("weight_kg"),
        pl.format(
            "{}{}",
            pl.col("bust_size_num").cast(pl.Int64),
            pl.col("bust_size_letter").cast(pl.String),
        ).alias("bust_cm"),
        pl.col("body_type").cast(pl.String),
        pl.col("age"),
    )
    return _fit_tables("rtr", frame)


def modcloth_raw(path: Path, default_day: date = date(2017, 1, 1)) -> RawTables:
    """ModCloth raw JSON lines: girths in inches, bra size + cup, US shoe sizes, no times."""
    raw = pl.read_ndjson(path, infer_schema_length=None).rename(lambda c: c.replace(" ", "_"))
    for column in ("waist", "hips", "bust", "bra_size", "cup_size", "height", "shoe_size"):
        if column not in raw.columns:
            raw = raw.with_columns(pl.lit(None, pl.String).alias(column))
    inches = lambda c: pl.when(pl.col(c).is_not_null()).then(pl.format("{}in", pl.col(c)))  # noqa: E731
    frame = raw.select(
        pl.col("user_id").cast(pl.String).alias("customer_id"),
        pl.col("item_id").cast(pl.String),
        pl.col("size").cast(pl.String),
        pl.col("fit"),
        (pl.col("quality").cast(pl.Float64, strict=False) >= 4).cast(pl.String).alias("liked"),
        pl.lit(datetime(default_day.year, default_day.month, default_day.day)).alias("ts"),
        pl.col("category").cast(pl.String).pipe(category_of, MODCLOTH_CATEGORY).alias("category"),
        pl.col("height").cast(pl.String).alias("height_cm"),
        inches("waist").alias("waist_cm"),
        inches("hips").alias("hips_cm"),
        pl.when(pl.col("bra_size").is_not_null() & pl.col("cup_size").is_not_null())
        .then(pl.format("{}{}", pl.col("bra_size"), pl.col("cup_size")))
        .otherwise(inches("bust"))
        .alias("bust_cm"),
        us_to_eu_shoe(pl.col("shoe_size")).cast(pl.String).alias("shoe_size_eu"),
    )
    return _fit_tables("modcloth", frame)
