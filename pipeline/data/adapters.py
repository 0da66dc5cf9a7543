"""Adapters from public fashion datasets into fitrec's raw drop format.

Each adapter maps a source onto the raw tables of :mod:`pipeline.data.contracts` *as strings, units
and all* (``5' 8"``, ``137lbs``, ``34d``), and :func:`write_drop` writes them as a drop folder,
so real data goes through exactly the same ingest (unit conversion, validation, quarantine)
as the retailer's own feeds. Sources (see ``../shared/data/README.md``):

* RentTheRunway raw JSON lines and the cleaned Parquet: customers, items, fit feedback;
* ModCloth raw JSON lines: customers (inches, bra sizes, US shoe sizes), items, fit feedback;
* H&M CSVs: customers (age), articles, transactions;
* YooChoose (``SessionId<TAB>ItemId<TAB>Time``) and Diginetica (``;``-separated) click streams.

A dataset without a time (ModCloth) is stamped with ``default_day``; customers and items get
their first event's time as sign-up and launch time. Public data carries no consent flag:
body fields its authors published are treated as consented.

Ids never come from a row's position: an event id is a digest of the row's own content (its
source fields, with an occurrence number for rows that repeat exactly), so the same click or
rental has the same id in any file it is cut into, and two different files cannot share ids
by accident. Session ids are the source's own, optionally under a ``namespace`` the caller
gives (a file, or ``train`` / ``test``), so sessions of two files never merge. A customer's
profile (body measurements, age) is the one on their *first* row of the source: what the
retailer knew when they first appeared, never a later review.

:meth:`RawTables.cut` splits a source at a time the way two exported files would be: each side
is rebuilt by the same adapter from its own rows, so ``--train A --test B`` on a file cut in
two and the internal time split at that cut-off see exactly the same tables.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import cast

import polars as pl

from pipeline.data.contracts import CONTRACTS
from pipeline.data.units import us_to_eu_shoe

ISO = "%Y-%m-%dT%H:%M:%SZ"
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


@dataclass
class RawTables:
    """The raw tables of one source, as string columns named by the contracts.

    Attributes:
        name: The source's name (``rtr``, ``yoochoose``, ...).
        tables: Raw table name -> string columns.
        source_rows: The adapter's normalised source rows (with a ``ts`` datetime column and,
            for click streams, ``session_id``), kept so :meth:`cut` can rebuild each side.
        rebuild: The adapter's table builder for a subset of ``source_rows``.
    """

    name: str
    tables: dict[str, pl.DataFrame] = field(default_factory=dict)
    source_rows: pl.DataFrame | None = None
    rebuild: Callable[[pl.DataFrame], RawTables] | None = None

    def rows(self) -> dict[str, int]:
        return {k: v.height for k, v in self.tables.items()}

    def cut(self, at: datetime) -> tuple[RawTables, RawTables]:
        """The source as two files cut at ``at``: rows (for click streams, whole sessions, by
        their first click) before ``at`` and from ``at`` on, each side rebuilt by the adapter.

        Raises:
            ValueError: the adapter cannot rebuild (no source rows kept), or one side is empty.
        """
        if self.source_rows is None or self.rebuild is None:
            raise ValueError(f"{self.name}: this source cannot be cut by time")
        rows = self.source_rows
        start = (
            pl.col("ts").min().over("session_id") if "session_id" in rows.columns else pl.col("ts")
        )
        at = at.replace(tzinfo=None)
        before = rows.filter(start < at)
        after = rows.filter(start >= at)
        if before.is_empty() or after.is_empty():
            raise ValueError(
                f"{self.name}: cutting at {at:%Y-%m-%d %H:%M:%S} leaves {before.height} rows "
                f"before and {after.height} after; both sides need rows"
            )
        return self.rebuild(before), self.rebuild(after)


def content_ids(frame: pl.DataFrame, columns: Sequence[str], prefix: str) -> pl.Series:
    """Ids from each row's content: ``<prefix>-<16 hex digits>``, ``-<n>`` for the n-th exact
    repeat of a row in ``frame`` (n >= 1), so every row keeps its own id.

    The digest is BLAKE2b over the columns' string values (null distinct from empty), stable
    across runs, machines and library versions. Rows that are identical in ``columns`` get
    their occurrence number in frame order, so a file cut in two (repeats fall on one side:
    they share their time) numbers them as the whole file does.

    Args:
        frame: Source rows.
        columns: The fields that make a row what it is (ids, item, time, values).
        prefix: Put before the digest (the dataset's name).
    """
    keys = frame.select(
        pl.concat_str(
            [pl.col(c).cast(pl.String).fill_null("\x00") for c in columns], separator="\x1f"
        ).alias("key")
    ).to_series()
    digests = pl.Series(
        "digest",
        [hashlib.blake2b(k.encode(), digest_size=8).hexdigest() for k in keys.to_list()],
        dtype=pl.String,
    )
    occurrence = (
        pl.DataFrame({"digest": digests})
        .select(pl.int_range(pl.len()).over("digest").alias("n"))
        .to_series()
    )
    ids = pl.DataFrame({"digest": digests, "n": occurrence}).select(
        pl.when(pl.col("n") == 0)
        .then(pl.format("{}-{}", pl.lit(prefix), pl.col("digest")))
        .otherwise(pl.format("{}-{}-{}", pl.lit(prefix), pl.col("digest"), pl.col("n")))
    )
    return ids.to_series().alias("event_id")


def _strings(frame: pl.DataFrame, table: str) -> pl.DataFrame:
    """Contract columns in order, as strings (missing ones null)."""
    names = CONTRACTS[table].names
    return frame.select(
        pl.col(n).cast(pl.String) if n in frame.columns else pl.lit(None, pl.String).alias(n)
        for n in names
    )


def _age_band(age: pl.Expr) -> pl.Expr:
    a = age.cast(pl.Float64, strict=False)
    return (
        pl.when(a < 18)
        .then(None)
        .when(a < 25)
        .then(pl.lit("18-24"))
        .when(a < 35)
        .then(pl.lit("25-34"))
        .when(a < 45)
        .then(pl.lit("35-44"))
        .when(a < 55)
        .then(pl.lit("45-54"))
        .when(a.is_not_null())
        .then(pl.lit("55+"))
    )


def _category(source: pl.Expr, mapping: dict[str, str]) -> pl.Expr:
    return source.str.to_lowercase().replace_strict(mapping, default="other")


def _first_seen(events: pl.DataFrame, key: str, ts: str = "ts") -> pl.DataFrame:
    return events.group_by(key).agg(pl.col(ts).min().alias("first_ts"))


def _fit_tables(name: str, frame: pl.DataFrame) -> RawTables:
    """Common shape of RentTheRunway and ModCloth: one row = one customer's fit feedback.

    ``frame`` has customer_id, item_id, size, fit, liked, ts (datetime), category, and the
    raw body columns (height_cm, weight_kg, bust_cm, waist_cm, hips_cm, shoe_size_eu,
    body_type, age).
    """
    frame = frame.with_columns(pl.col("ts").dt.replace_time_zone(None))
    frame = frame.with_columns(content_ids(frame, frame.columns, name))
    first_customer = _first_seen(frame, "customer_id")
    customers = (
        # The profile as first seen: what was known when the customer first appeared.
        frame.sort("ts", "event_id")
        .group_by("customer_id", maintain_order=True)
        .first()
        .join(first_customer, on="customer_id")
        .with_columns(
            pl.col("first_ts").dt.strftime(ISO).alias("signup_ts"),
            _age_band(pl.col("age")).alias("age_band") if "age" in frame.columns else pl.lit(None),
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
            "customers": _strings(customers, "customers"),
            "items": _strings(items, "items"),
            "try_ons": _strings(try_ons, "try_ons"),
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
        pl.col("category").cast(pl.String).pipe(_category, RTR_CATEGORY).alias("category"),
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
        pl.col("category").pipe(_category, RTR_CATEGORY).alias("category"),
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
        pl.col("category").cast(pl.String).pipe(_category, MODCLOTH_CATEGORY).alias("category"),
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
    first_purchase = _first_seen(tx, "customer_id")
    listed = people.join(first_purchase, on="customer_id", how="left").with_columns(
        pl.col("first_ts").fill_null(pl.col("first_ts").min())
    )
    unlisted = first_purchase.join(people, on="customer_id", how="anti")
    customer_rows = pl.concat(
        [
            listed.select("customer_id", "first_ts", _age_band(pl.col("age")).alias("age_band")),
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
            "customers": _strings(customer_rows.sort("customer_id"), "customers"),
            "items": _strings(items.sort("item_id"), "items"),
            "purchases": _strings(purchases, "purchases"),
        },
    )


def _click_tables(name: str, clicks: pl.DataFrame, namespace: str | None = None) -> RawTables:
    """session_id, customer_id (maybe null), item_id, ts (datetime) -> views and items.

    Event ids are digests of the source session, item and time (the same click has the same
    id in any file); session ids get ``<namespace>:`` in front when a namespace is given.
    """
    clicks = clicks.with_columns(
        content_ids(clicks, ["session_id", "customer_id", "item_id", "ts"], name)
    )
    items = (
        _first_seen(clicks, "item_id")
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
        {"items": _strings(items, "items"), "session_events": _strings(events, "session_events")},
        source_rows=clicks.drop("event_id"),
        rebuild=lambda rows: _click_tables(name, rows, namespace),
    )


def yoochoose(path: Path, namespace: str | None = None) -> RawTables:
    """YooChoose clicks as prepared by session-rec: ``SessionId<TAB>ItemId<TAB>Time``.

    ``namespace`` goes in front of the session ids (see :func:`_click_tables`)."""
    raw = pl.read_csv(path, separator="\t", infer_schema=False)
    clicks = raw.select(
        pl.col("SessionId").alias("session_id"),
        pl.lit(None, pl.String).alias("customer_id"),
        pl.col("ItemId").alias("item_id"),
        pl.from_epoch(
            (pl.col("Time").cast(pl.Float64) * 1000).cast(pl.Int64), time_unit="ms"
        ).alias("ts"),
    )
    return _click_tables("yoochoose", clicks, namespace)


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
    return _click_tables("diginetica", clicks, namespace)


def write_drop(source: RawTables, out: Path, day: date | None = None) -> Path:
    """Write the tables as one raw drop folder ``out/<day>`` (default: the latest event day).

    Earlier events arrive as late events of that drop, which ingest accepts.
    """
    stamps = [
        frame.get_column(column).str.to_datetime(ISO, strict=False).max()
        for table, frame in source.tables.items()
        for column in (CONTRACTS[table].timestamp,)
        if column and frame.height
    ]
    latest = max((cast(datetime, s) for s in stamps if s is not None), default=None)
    day = day or (latest.date() if latest else date.today())
    folder = out / day.isoformat()
    folder.mkdir(parents=True, exist_ok=True)
    for table, frame in source.tables.items():
        if table == "customers":
            frame.write_parquet(folder / "customers.parquet")
        elif table == "items":
            frame.write_csv(folder / "items.csv")
        else:
            frame.write_ndjson(folder / f"{table}.jsonl")
    return folder


ADAPTERS = {
    "rtr": rent_the_runway_raw,
    "rtr-clean": rent_the_runway_clean,
    "modcloth": modcloth_raw,
    "yoochoose": yoochoose,
    "diginetica": diginetica,
}
