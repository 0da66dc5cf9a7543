"""Data contracts of the raw tables: one definition used by ingest, features, Feast and serving.

A :class:`Contract` lists typed columns with their rules. :func:`conform` turns a frame of
raw strings into the typed frame plus one ``reason`` per row (``None`` when the row is valid),
so ingest can split curated rows from quarantine without losing any.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

import polars as pl

from pipeline.data.sizes import parse_size_chart
from pipeline.data.units import PARSERS

# Vocabularies shared by the generator, ingest, features and the model.
# The generator uses the first seven; adapters map real catalogues onto all of them.
CATEGORIES: Final = (
    "dress",
    "top",
    "trousers",
    "skirt",
    "jumpsuit",
    "outerwear",
    "knitwear",
    "shoes",
    "accessories",
    "other",
)
STYLES: Final = ("classic", "minimal", "boho", "romantic", "sporty", "edgy")
COLOURS: Final = ("black", "white", "navy", "red", "green", "beige", "pink", "print")
# Letter sizes of the generated catalogue, smallest first. Real catalogues bring their own
# labels (RentTheRunway's 0..58, ModCloth's 1..38), so size columns take any short label.
SIZES: Final = ("XS", "S", "M", "L", "XL", "XXL")
SIZE_LABEL: Final = r"^[\w./+-]{1,16}$"
AGE_BANDS: Final = ("18-24", "25-34", "35-44", "45-54", "55+")
BODY_TYPES: Final = (
    "hourglass",
    "athletic",
    "pear",
    "petite",
    "straight & narrow",
    "full bust",
    "apple",
)
PREFERRED_FITS: Final = ("slim", "regular", "relaxed")
FIT_FEEDBACK: Final = ("too_small", "fits", "too_large")
RETURN_REASONS: Final = ("too_small", "too_large", "style", "quality", "other")
EVENT_TYPES: Final = ("view", "try_on", "add_to_cart", "remove_from_cart", "purchase")
# Online experiments (issue 16): what POST /events logs as an outcome of an answer served, and
# which return reasons are about size.
OUTCOME_TYPES: Final = ("click", "add_to_cart", "purchase", "return")
SIZE_RETURN_REASONS: Final = ("too_small", "too_large")
RECOMMENDATION_ID: Final = r"^r-[0-9a-f]{32}$"
# A list column is kept as the compact JSON text of an array of strings (conform types only
# scalars): these patterns accept exactly ``[]`` or ``["a","b"]`` with item ids (serving's
# ``[\w.\-:]``, unbounded here: a bounded Unicode class compiles too large) or variant
# names (the experiment config's NAME_PATTERN) as elements.
_ITEM_ID: Final = r'"[\w.\-:]+"'
_VARIANT_NAME: Final = r'"[A-Za-z0-9][A-Za-z0-9._-]*"'
ITEM_LIST: Final = rf"^\[({_ITEM_ID}(,{_ITEM_ID})*)?\]$"
TEAM_LIST: Final = rf"^\[({_VARIANT_NAME}(,{_VARIANT_NAME})*)?\]$"
MAX_LATENCY_MS: Final = 600_000
MAX_QUANTITY: Final = 1000
# Body measurements that fit is judged on; a size chart gives a [min, max) range for each.
CHART_MEASURES: Final = ("bust", "waist", "hips")
# A sizing bias of +-1 means the garment measures this many cm more (+) or less (-) than its
# chart says: about one size step. Negative runs small.
SIZING_BIAS_CM: Final = 4.0


@dataclass(frozen=True)
class Column:
    """One typed column of a contract and the rules a value must meet."""

    name: str
    dtype: pl.DataType
    nullable: bool = False
    min: float | None = None
    max: float | None = None
    allowed: tuple[str, ...] | None = None
    pattern: str | None = None
    unit: str | None = None  # a pipeline.data.units parser: "length", "weight" or "bust"
    # A JSON array in the raw line (rawfiles keeps it as its compact JSON text instead of
    # calling it bad_type); the column is a String, ``pattern`` checks the text.
    json_list: bool = False
    sensitive: bool = False
    description: str = ""


@dataclass(frozen=True)
class Derived:
    """A table built at ingest from another's rows (``item_sizes`` from items): ``build`` gives
    the derived rows and a reason (or null) per source row, which quarantines the row."""

    table: str
    build: Callable[[pl.DataFrame], tuple[pl.DataFrame, pl.Series]]


@dataclass(frozen=True)
class Contract:
    """A raw table: its columns, its key, its event time, and what ingest does beyond the
    columns' rules, so that ingest treats every table alike: ``dimension`` tables are state,
    not events (no future-time check, no re-sent keys); ``starts``: the reason of an event
    timed before the referenced row's ``timestamp``; sensitive columns need consent."""

    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    timestamp: str | None = None
    references: dict[str, str] = field(default_factory=dict)
    # Rules across columns, checked by conform on the typed row: (true when broken, reason).
    checks: tuple[tuple[pl.Expr, str], ...] = field(default=(), compare=False)
    dimension: bool = False
    starts: str | None = None
    derived: Derived | None = field(default=None, compare=False)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def schema(self) -> pl.Schema:
        return pl.Schema({c.name: c.dtype for c in self.columns})

    @property
    def sensitive(self) -> list[str]:
        return [c.name for c in self.columns if c.sensitive]

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)


UTC_TS = pl.Datetime("us", "UTC")
# Times outside these bounds are out_of_range: they are no real event, and Python's datetime
# (years 1..9999) could not even hold some of them.
TS_MIN: Final = datetime(1900, 1, 1, tzinfo=UTC)
TS_MAX: Final = datetime(2200, 1, 1, tzinfo=UTC)
EPOCH_LIMIT: Final = 10**11

CUSTOMERS = Contract(
    name="customers",
    key=("customer_id",),
    timestamp="signup_ts",
    dimension=True,
    columns=(
        Column("customer_id", pl.String(), description="pseudonymised at ingest"),
        Column("signup_ts", UTC_TS),
        Column("age_band", pl.String(), nullable=True, allowed=AGE_BANDS),
        Column("height_cm", pl.Float64(), True, 120, 230, unit="length", sensitive=True),
        Column("weight_kg", pl.Float64(), True, 30, 250, unit="weight", sensitive=True),
        Column("bust_cm", pl.Float64(), True, 60, 170, unit="bust", sensitive=True),
        Column("waist_cm", pl.Float64(), True, 45, 170, unit="length", sensitive=True),
        Column("hips_cm", pl.Float64(), True, 60, 180, unit="length", sensitive=True),
        Column("inseam_cm", pl.Float64(), True, 50, 110, unit="length", sensitive=True),
        Column("shoe_size_eu", pl.Float64(), nullable=True, min=30, max=50, sensitive=True),
        Column("body_type", pl.String(), nullable=True, allowed=BODY_TYPES, sensitive=True),
        Column("preferred_fit", pl.String(), nullable=True, allowed=PREFERRED_FITS),
        Column("body_data_consent", pl.Boolean()),
    ),
)

ITEMS = Contract(
    name="items",
    key=("item_id",),
    timestamp="launch_ts",
    dimension=True,
    starts="before_launch",
    derived=Derived("item_sizes", functools.partial(parse_size_chart, measures=CHART_MEASURES)),
    columns=(
        Column("item_id", pl.String()),
        Column("category", pl.String(), allowed=CATEGORIES),
        Column("brand", pl.String(), nullable=True),
        Column("price", pl.Float64(), nullable=True, min=0.0001, max=100_000),
        Column("colour", pl.String(), nullable=True),
        Column("style", pl.String(), nullable=True),
        Column(
            "size_chart",
            pl.String(),
            nullable=True,
            description="JSON: size -> {measure: [min, max]} cm; null when the retailer has none",
        ),
        Column(
            "sizing_bias",
            pl.Float64(),
            True,
            -1,
            1,
            description="garment vs its chart in units of SIZING_BIAS_CM; <0 runs small",
        ),
        Column("stock", pl.String(), nullable=True, description="JSON: size -> units in stock"),
        Column("launch_ts", UTC_TS),
    ),
)

TRY_ONS = Contract(
    name="try_ons",
    key=("event_id",),
    timestamp="ts",
    references={"item_id": "items", "customer_id": "customers"},
    columns=(
        Column("event_id", pl.String()),
        Column("session_id", pl.String()),
        Column("customer_id", pl.String()),
        Column("item_id", pl.String()),
        Column("size", pl.String(), pattern=SIZE_LABEL),
        Column("fit_feedback", pl.String(), nullable=True, allowed=FIT_FEEDBACK),
        Column("duration_s", pl.Float64(), nullable=True, min=0, max=3600),
        Column("liked", pl.Boolean(), nullable=True),
        Column("added_to_cart", pl.Boolean(), nullable=True),
        Column("ts", UTC_TS),
    ),
)

PURCHASES = Contract(
    name="purchases",
    key=("order_line_id",),
    timestamp="ts",
    references={"item_id": "items", "customer_id": "customers"},
    columns=(
        Column("order_line_id", pl.String()),
        Column("customer_id", pl.String()),
        Column("item_id", pl.String()),
        Column("size", pl.String(), nullable=True, pattern=SIZE_LABEL),
        Column("price", pl.Float64(), nullable=True, min=0, max=100_000),
        Column("ts", UTC_TS),
        Column("returned", pl.Boolean()),
        Column("return_reason", pl.String(), nullable=True, allowed=RETURN_REASONS),
    ),
)

SESSION_EVENTS = Contract(
    name="session_events",
    key=("event_id",),
    timestamp="ts",
    references={"item_id": "items"},
    columns=(
        Column("event_id", pl.String()),
        Column("session_id", pl.String()),
        Column("customer_id", pl.String(), nullable=True, description="null when anonymous"),
        Column("event_type", pl.String(), allowed=EVENT_TYPES),
        Column("item_id", pl.String()),
        Column("ts", UTC_TS),
    ),
)


def json_list_length(column: str) -> pl.Expr:
    """Elements of a list column whose text matches :data:`ITEM_LIST` or :data:`TEAM_LIST`
    (their elements hold no quote, so each has exactly two)."""
    return pl.col(column).str.count_matches('"', literal=True) // 2


EXPOSURES = Contract(
    name="exposures",
    key=("recommendation_id",),
    timestamp="ts",
    columns=(
        Column("recommendation_id", pl.String(), pattern=RECOMMENDATION_ID),
        Column("session_id", pl.String(), nullable=True),
        Column(
            "customer_id",
            pl.String(),
            nullable=True,
            description="serving's customer_pseudonym; null when anonymous",
        ),
        Column("experiment", pl.String(), nullable=True),
        Column("experiment_version", pl.String(), nullable=True),
        Column("variant", pl.String(), nullable=True),
        Column("model_version", pl.String(), nullable=True),
        Column(
            "items",
            pl.String(),
            pattern=ITEM_LIST,
            json_list=True,
            description='JSON text of the answer\'s item ids in rank order: ["I1","I2"]',
        ),
        Column(
            "teams",
            pl.String(),
            nullable=True,
            pattern=TEAM_LIST,
            json_list=True,
            description="JSON text: the variant that placed each item (interleaving), or null",
        ),
        Column("latency_ms", pl.Float64(), min=0, max=MAX_LATENCY_MS),
        Column("degraded", pl.Boolean()),
        Column("fallback", pl.Boolean()),
        Column("ts", UTC_TS),
    ),
    checks=(
        (
            pl.col("teams").is_not_null()
            & (json_list_length("teams") != json_list_length("items")),
            "length_mismatch:teams",
        ),
    ),
)

OUTCOMES = Contract(
    name="outcomes",
    key=("event_id",),
    timestamp="ts",
    references={"item_id": "items"},
    columns=(
        Column("event_id", pl.String()),
        Column("session_id", pl.String(), nullable=True, description="null: a return, say"),
        Column(
            "customer_id",
            pl.String(),
            nullable=True,
            description="serving's customer_pseudonym; null when anonymous",
        ),
        Column("event_type", pl.String(), allowed=OUTCOME_TYPES),
        Column("item_id", pl.String()),
        Column("recommendation_id", pl.String(), nullable=True, pattern=RECOMMENDATION_ID),
        Column("order_id", pl.String(), nullable=True),
        Column("quantity", pl.Int64(), min=1, max=MAX_QUANTITY),
        Column("price", pl.Float64(), nullable=True, min=0, max=100_000, description="unit price"),
        Column("return_reason", pl.String(), nullable=True, allowed=RETURN_REASONS),
        Column("ts", UTC_TS),
    ),
    checks=(
        (
            (pl.col("event_type") == "return") & pl.col("return_reason").is_null(),
            "missing:return_reason",
        ),
        (
            (pl.col("event_type") != "return") & pl.col("return_reason").is_not_null(),
            "unexpected:return_reason",
        ),
    ),
)

CONTRACTS: Final = {
    c.name: c for c in (CUSTOMERS, ITEMS, TRY_ONS, PURCHASES, SESSION_EVENTS, EXPOSURES, OUTCOMES)
}


def parse_timestamp(expr: pl.Expr) -> pl.Expr:
    """Parse ISO 8601 (with or without offset, ``Z``), plain dates and epoch seconds to UTC."""
    text = expr.cast(pl.String).str.strip_chars()
    iso = text.str.replace(r"Z$", "+00:00")
    seconds = text.cast(pl.Int64, strict=False)
    epoch = pl.when(seconds.abs() < EPOCH_LIMIT).then(seconds)
    return pl.coalesce(
        iso.str.to_datetime(
            "%Y-%m-%dT%H:%M:%S%.f%z", strict=False, time_zone="UTC", time_unit="us"
        ),
        iso.str.to_datetime(
            "%Y-%m-%d %H:%M:%S%.f%z", strict=False, time_zone="UTC", time_unit="us"
        ),
        text.str.replace("T", " ")
        .str.to_datetime("%Y-%m-%d %H:%M:%S%.f", strict=False, time_unit="us")
        .dt.replace_time_zone("UTC"),
        text.str.to_datetime("%Y-%m-%d", strict=False, time_unit="us").dt.replace_time_zone("UTC"),
        # Epoch seconds beyond +-EPOCH_LIMIT would wrap around in microseconds: not a time.
        pl.from_epoch(epoch, time_unit="s").dt.cast_time_unit("us").dt.replace_time_zone("UTC"),
    )


def _parse(column: Column) -> pl.Expr:
    raw = pl.col(column.name)
    if column.unit is not None:
        return PARSERS[column.unit](raw)
    if column.dtype == UTC_TS:
        return parse_timestamp(raw)
    if column.dtype == pl.Boolean():
        text = raw.cast(pl.String).str.strip_chars().str.to_lowercase()
        return (
            pl.when(text.is_in(["true", "1", "yes", "y", "t"]))
            .then(True)
            .when(text.is_in(["false", "0", "no", "n", "f"]))
            .then(False)
            .otherwise(None)
        )
    if column.dtype == pl.String():
        text = raw.cast(pl.String).str.strip_chars()
        return pl.when(text == "").then(None).otherwise(text)
    return raw.cast(pl.String).str.strip_chars().cast(column.dtype, strict=False)


def size_value(size: pl.Expr) -> pl.Expr:
    """A size label as a number on its own scale: letter sizes are their rank in :data:`SIZES`
    (XS = 0), numeric labels (RentTheRunway's 0..58, ModCloth's 1..38) their value."""
    letters = size.replace_strict(
        {s: float(i) for i, s in enumerate(SIZES)}, default=None, return_dtype=pl.Float32
    )
    return pl.coalesce(letters, size.cast(pl.Float32, strict=False))


def _fast_parse(column: Column) -> pl.Expr:
    if column.dtype == UTC_TS:
        return (
            pl.col(column.name)
            .str.strip_chars()
            .str.to_datetime("%Y-%m-%dT%H:%M:%SZ", strict=False, time_zone="UTC", time_unit="us")
        )
    return _parse(column)


def conform(raw: pl.DataFrame, contract: Contract) -> pl.DataFrame:
    """Type a raw frame by the contract and attach a ``reason`` per row.

    Missing columns count as nulls. The returned frame has the contract's columns in
    order plus ``reason`` (a ``;``-joined list of every rule the row breaks, or null).
    Raw values that fail to parse keep their row: the reason says ``bad_type:<column>``;
    values that parse but lie outside the type's or the contract's range (NaN, infinity,
    ``1e400``, a year outside :data:`TS_MIN`..:data:`TS_MAX`) say ``out_of_range:<column>``.
    """
    typed, checks = typed_with_checks(raw, contract)
    typed = typed.with_columns(pl.lit(None, pl.String).alias("reason"))
    return add_reasons(typed, checks).select(*contract.names, "reason")


def typed_with_checks(
    raw: pl.DataFrame, contract: Contract
) -> tuple[pl.DataFrame, list[tuple[pl.Expr, str]]]:
    """Typed columns (raw text as ``__raw_<column>``) and :func:`conform`'s checks, not yet
    applied: ingest adds its own and runs all of them in one pass."""
    for name in contract.names:
        if name not in raw.columns:
            raw = raw.with_columns(pl.lit(None, dtype=pl.String).alias(name))
    raw = raw.with_columns(pl.col(n).cast(pl.String) for n in contract.names)
    typed = raw.select(
        *[_fast_parse(c).alias(c.name) for c in contract.columns],
        *[pl.col(c.name).alias(f"__raw_{c.name}") for c in contract.columns],
    )
    # Timestamps: one strict format covers what our own systems write; fall back to every
    # accepted format only when some value did not parse that way.
    for c in contract.columns:
        if c.dtype == UTC_TS:
            failed = typed.select(
                pl.col(c.name).is_null() & pl.col(f"__raw_{c.name}").is_not_null()
            ).to_series()
            if failed.any():
                rows = typed.with_row_index("__row").filter(failed)
                parsed = rows.select("__row", parse_timestamp(pl.col(f"__raw_{c.name}")))
                typed = typed.with_columns(
                    typed.get_column(c.name).scatter(parsed["__row"], parsed.to_series(1))
                )
    checks: list[tuple[pl.Expr, str]] = []
    for c in contract.columns:
        checks.extend(_column_checks(c))
    checks.extend(contract.checks)
    return typed, checks


def _column_checks(c: Column) -> list[tuple[pl.Expr, str]]:
    value, given = pl.col(c.name), pl.col(f"__raw_{c.name}")
    given_nonempty = given.is_not_null() & (given.str.strip_chars() != "")
    checks = [(given_nonempty & value.is_null(), f"bad_type:{c.name}")]
    if not c.nullable:
        checks.append((~given_nonempty, f"missing:{c.name}"))
    if c.dtype.is_float():
        # NaN, inf and what overflows a double (1e400) are no measurement or price.
        checks.append((~value.is_finite(), f"out_of_range:{c.name}"))
    if c.dtype == UTC_TS:
        checks.append(((value < TS_MIN) | (value >= TS_MAX), f"out_of_range:{c.name}"))
    if c.min is not None:
        checks.append((value < c.min, f"out_of_range:{c.name}"))
    if c.max is not None:
        checks.append((value > c.max, f"out_of_range:{c.name}"))
    if c.pattern is not None:
        checks.append((~value.str.contains(c.pattern), f"bad_format:{c.name}"))
    if c.allowed is not None:
        checks.append((~value.is_in(list(c.allowed)), f"not_allowed:{c.name}"))
    return checks


def add_reasons(
    frame: pl.DataFrame, checks: Sequence[tuple[pl.Expr | pl.Series, str]]
) -> pl.DataFrame:
    """Append to ``reason`` the name of every check that is true for a row (nulls are false).

    Checks are evaluated as booleans over all rows; reason strings are built only for the
    few rows that fail one, which keeps validation cheap on clean data.
    """
    if not checks:
        return frame
    flags = frame.select(
        *[cond.fill_null(False).alias(f"__check{i}") for i, (cond, _) in enumerate(checks)]
    )
    failing = flags.select(pl.any_horizontal(pl.all())).to_series()
    if not failing.any():
        return frame
    rows = frame.select("reason").with_row_index("__row").filter(failing)
    names = [pl.when(pl.col(f"__check{i}")).then(pl.lit(n)) for i, (_, n) in enumerate(checks)]
    joined = pl.concat([rows, flags.filter(failing)], how="horizontal").select(
        "__row", pl.concat_str([pl.col("reason"), *names], separator=";", ignore_nulls=True)
    )
    reason = frame.get_column("reason").scatter(
        joined.get_column("__row"), joined.get_column("reason")
    )
    return frame.with_columns(reason.alias("reason"))
