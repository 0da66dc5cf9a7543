"""Experiment metrics from the curated exposures and outcomes (Polars only).

Serving logs one exposure per answer served and one outcome per click, add-to-cart, purchase
or return posted to ``POST /events``; the nightly ingest curates both
(:data:`pipeline.data.contracts.EXPOSURES`, :data:`~pipeline.data.contracts.OUTCOMES`). This
module turns them into:

- :func:`attribute`: each outcome with the answer it is credited to (or none);
- :func:`unit_metrics`: one row per (variant, unit) with the columns of
  :data:`pipeline.experiments.config.UNIT_COLUMNS`, what the analysis reads;
- :func:`pre_period`: the units' purchases before the start (the CUPED covariate);
- :func:`daily_looks`: the per-unit frame as it was known at the end of each day (the
  sequential test's looks);
- :func:`variant_summary`: each metric of :data:`pipeline.experiments.config.METRICS` per
  variant; :func:`operational`: the answers' latency, degraded and fallback counts.

Frames may be the curated tables as they are or anything shaped like them: a missing column
is all nulls, ``items`` may be the curated JSON text (``["I1","I2"]``) or a list of strings
(text that is not such a list counts as no items).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Final

import polars as pl

from pipeline.data.contracts import EXPOSURES, ITEM_LIST, OUTCOMES, SIZE_RETURN_REASONS
from pipeline.experiments.config import METRICS, UNIT_COLUMNS, Experiment

__all__ = [
    "PRE_PERIOD",
    "attribute",
    "daily_looks",
    "operational",
    "pre_period",
    "unit_metrics",
    "variant_summary",
]

# How an outcome was attributed (the ``attribution`` column of :func:`attribute`).
BY_ID: Final = "id"
LAST_TOUCH: Final = "last_touch"
BY_PURCHASE: Final = "purchase"

_COUNTS: Final = ("clicks", "add_to_carts", "orders", "items", "returns", "size_returns")
_ROW = "__row"
PRE_PERIOD: Final = timedelta(days=28)  # CUPED's covariate: the purchases of these days


def _shaped(frame: pl.DataFrame, schema: pl.Schema) -> pl.DataFrame:
    """``frame`` with every column of ``schema`` (missing ones null) cast to its type;
    other columns are kept as they are."""
    frame = frame.with_columns(
        pl.lit(None, dtype).alias(name) for name, dtype in schema.items() if name not in frame
    )
    return frame.with_columns(
        pl.col(name).cast(dtype, strict=False)
        for name, dtype in schema.items()
        if name != "items" or frame.schema[name] == pl.String
    )


def _exposures(exposures: pl.DataFrame) -> pl.DataFrame:
    """Exposures with ``items`` as a list of strings (null when unreadable)."""
    frame = _shaped(exposures, EXPOSURES.schema)
    items = frame.schema["items"]
    if isinstance(items, pl.List):
        return frame.with_columns(pl.col("items").cast(pl.List(pl.String), strict=False))
    if items != pl.String:
        return frame.with_columns(pl.lit(None, pl.List(pl.String)).alias("items"))
    # Only text that is a list of ids reaches the JSON decoder (which raises on bad JSON).
    readable = pl.when(pl.col("items").str.contains(ITEM_LIST)).then(pl.col("items"))
    return frame.with_columns(readable.alias("items")).with_columns(
        pl.col("items").str.json_decode(pl.List(pl.String))
    )


def _outcomes(outcomes: pl.DataFrame) -> pl.DataFrame:
    return _shaped(outcomes, OUTCOMES.schema)


def _touch_key(frame: pl.DataFrame) -> pl.DataFrame:
    """Who an outcome belongs to: the customer when signed in, else the session."""
    signed_in = pl.col("customer_id").is_not_null()
    return frame.with_columns(
        pl.when(signed_in).then(pl.lit("c")).otherwise(pl.lit("s")).alias("__kind"),
        pl.when(signed_in)
        .then(pl.col("customer_id"))
        .otherwise(pl.col("session_id"))
        .alias("__who"),
    )


def _within(window: timedelta, later: str, earlier: str) -> pl.Expr:
    gap = pl.col(later) - pl.col(earlier)
    return (gap >= timedelta(0)) & (gap <= window)


def attribute(
    exposures: pl.DataFrame, outcomes: pl.DataFrame, *, window: timedelta
) -> pl.DataFrame:
    """Credit each outcome to the answer (exposure) that led to it, or to none.

    The rule, in order:

    1. **By id.** An outcome that carries a ``recommendation_id`` is credited to that answer
       when an exposure with that id exists and the outcome is at or after it, at most
       ``window`` later.
    2. **Returns follow their purchase.** A return that carries no ``recommendation_id`` gets
       the attribution (possibly none) of its purchase: the latest purchase of the same
       customer (anonymous: the same session) and item at or before the return, whenever it
       was. A return with no such purchase goes on to rule 3.
    3. **Last touch.** Otherwise the outcome is credited to the latest answer shown to the same
       customer (anonymous: in the same session) at or before the outcome, at most
       ``window`` earlier, whose items contain the outcome's item (ties: the greater
       ``recommendation_id``).
    4. Anything else is **unattributed**: kept, with a null ``recommendation_id``.

    Args:
        exposures: Answers served (the curated ``exposures`` table or shaped like it).
        outcomes: Clicks, add-to-carts, purchases and returns (the curated ``outcomes``).
        window: How long after an answer an outcome may still be credited to it.

    Returns:
        Every outcome, in its order (none dropped, none repeated), with ``recommendation_id``
        the answer it is credited to (null: unattributed) and ``attribution`` how: ``"id"``,
        ``"purchase"``, ``"last_touch"`` or null.
    """
    exp = _exposures(exposures).select(
        "recommendation_id", "customer_id", "session_id", "items", pl.col("ts").alias("__ets")
    )
    out = _touch_key(_outcomes(outcomes).with_row_index(_ROW))
    keys = out.select(
        _ROW,
        "__kind",
        "__who",
        "item_id",
        "event_type",
        pl.col("recommendation_id").is_null().alias("__no_id"),
        pl.col("ts").alias("__ots"),
    )
    first = out.join(_credit_by_id(out, exp, window), on=_ROW, how="left").join(
        _credit_by_last_touch(keys, exp, window), on=_ROW, how="left"
    )
    first = first.with_columns(pl.coalesce("__by_id", "__last_touch").alias("__credit"))
    result = first.join(_credit_by_purchase(first, keys), on=_ROW, how="left").sort(_ROW)
    return _credited(result)


def _credit_by_id(out: pl.DataFrame, exp: pl.DataFrame, window: timedelta) -> pl.DataFrame:
    """Rule 1: per outcome row, the answer its own ``recommendation_id`` names (``__by_id``)."""
    return (
        out.select(_ROW, "recommendation_id", pl.col("ts").alias("__ots"))
        .join(exp.select("recommendation_id", "__ets"), on="recommendation_id", how="inner")
        .filter(_within(window, "__ots", "__ets"))
        .group_by(_ROW)
        .agg(pl.col("recommendation_id").first().alias("__by_id"))
    )


def _credit_by_last_touch(keys: pl.DataFrame, exp: pl.DataFrame, window: timedelta) -> pl.DataFrame:
    """Rule 3: per outcome row, the latest answer to the same customer (or session) within the
    window that showed the outcome's item (``__last_touch``)."""
    touches = pl.concat(
        [
            exp.filter(pl.col(column).is_not_null()).select(
                pl.lit(kind).alias("__kind"),
                pl.col(column).alias("__who"),
                pl.col("items").alias("item_id"),
                "recommendation_id",
                "__ets",
            )
            for kind, column in (("c", "customer_id"), ("s", "session_id"))
        ]
    ).explode("item_id")
    return (
        keys.drop("__no_id")
        .join(touches.drop_nulls("item_id"), on=["__kind", "__who", "item_id"], how="inner")
        .filter(_within(window, "__ots", "__ets") & pl.col("recommendation_id").is_not_null())
        .group_by(_ROW)
        .agg(
            pl.col("recommendation_id")
            .sort_by("__ets", "recommendation_id")
            .last()
            .alias("__last_touch")
        )
    )


def _credit_by_purchase(first: pl.DataFrame, keys: pl.DataFrame) -> pl.DataFrame:
    """Rule 2: per return without an id, the credit (``__by_purchase``, possibly null) of the
    latest purchase of its item by the same customer (or session) at or before it, and
    ``__bought`` where there is one."""
    purchases = first.filter(pl.col("event_type") == "purchase").select(
        "__kind",
        "__who",
        "item_id",
        pl.col("ts").alias("__pts"),
        pl.col(_ROW).alias("__prow"),
        pl.col("__credit").alias("__pcredit"),
    )
    orphan_returns = keys.filter((pl.col("event_type") == "return") & pl.col("__no_id"))
    return (
        orphan_returns.drop("__no_id")
        .join(purchases, on=["__kind", "__who", "item_id"], how="inner")
        .filter(pl.col("__pts") <= pl.col("__ots"))
        .group_by(_ROW)
        .agg(pl.col("__pcredit").sort_by("__pts", "__prow").last().alias("__by_purchase"))
        .with_columns(pl.lit(True).alias("__bought"))
    )


def _credited(result: pl.DataFrame) -> pl.DataFrame:
    """The rules applied in order: ``recommendation_id`` and ``attribution`` from the
    candidates of each rule, the working columns dropped."""
    followed = pl.col("__bought").fill_null(False)
    credit = (
        pl.when(pl.col("__by_id").is_not_null())
        .then(pl.col("__by_id"))
        .when(followed)
        .then(pl.col("__by_purchase"))
        .otherwise(pl.col("__last_touch"))
    )
    how = (
        pl.when(pl.col("__by_id").is_not_null())
        .then(pl.lit(BY_ID))
        .when(followed & pl.col("__by_purchase").is_not_null())
        .then(pl.lit(BY_PURCHASE))
        .when(~followed & pl.col("__last_touch").is_not_null())
        .then(pl.lit(LAST_TOUCH))
        .otherwise(pl.lit(None, pl.String))
    )
    return result.with_columns(credit.alias("recommendation_id"), how.alias("attribution")).select(
        pl.exclude(_ROW, "^__.*$")
    )


def _experiment_exposures(exposures: pl.DataFrame, experiment: Experiment) -> pl.DataFrame:
    """The experiment's exposures within [start, end), one per recommendation_id."""
    frame = _exposures(exposures)
    running = (pl.col("experiment") == experiment.name) & (pl.col("ts") >= experiment.start)
    if experiment.end is not None:
        running &= pl.col("ts") < experiment.end
    return (
        frame.filter(running.fill_null(False) & pl.col("variant").is_not_null())
        .sort("ts", "recommendation_id", nulls_last=True)
        .unique("recommendation_id", keep="first", maintain_order=True)
    )


def _unit_column(experiment: Experiment) -> str:
    return "customer_id" if experiment.unit == "customer" else "session_id"


def _revenue() -> pl.Expr:
    return pl.col("price").fill_null(0.0) * pl.col("quantity").fill_null(0)


def unit_metrics(
    exposures: pl.DataFrame,
    outcomes: pl.DataFrame,
    experiment: Experiment,
    *,
    pre_outcomes: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """One row per (variant, unit) exposed to ``experiment``, with its outcomes.

    Only the experiment's exposures timed in [start, end) with a variant and a unit count (the
    unit: the customer pseudonym for ``unit = "customer"``, the session for ``"session"``;
    exposures without one are skipped). Outcomes are attributed by :func:`attribute` over
    *all* exposures, with the experiment's attribution window, and count for the (variant,
    unit) of the answer they are credited to; a unit appears once per variant it was shown.

    Columns: ``variant``, ``unit``, ``day`` (the date of its first exposure, UTC) and each
    of :data:`~pipeline.experiments.config.UNIT_COLUMNS`: ``exposures``; ``clicks``,
    ``add_to_carts`` (counts); ``orders`` (distinct ``order_id`` of credited purchases, a
    purchase without one is an order of its own); ``converted`` (1 if any order, else 0);
    ``items`` (sum of the purchases' quantity); ``revenue`` (sum of price * quantity, an
    unknown price counting 0); ``returns``, ``size_returns`` (quantity returned, of which for
    too_small or too_large); ``returned_revenue`` (the returns' price * quantity);
    ``net_revenue`` (revenue - returned_revenue); ``pre_revenue`` (the unit's purchase revenue
    in ``pre_outcomes``, whichever period the caller gives, 0 when none).
    """
    unit = _unit_column(experiment)
    served = _experiment_exposures(exposures, experiment).filter(pl.col(unit).is_not_null())
    base = served.group_by("variant", unit).agg(
        pl.len().cast(pl.Int64).alias("exposures"),
        pl.col("ts").min().dt.date().alias("day"),
    )
    window = timedelta(hours=experiment.attribution_window_hours)
    credited = (
        attribute(exposures, outcomes, window=window)
        .with_row_index(_ROW)
        .drop(unit, strict=False)
        .join(served.select("recommendation_id", "variant", unit), on="recommendation_id")
    )
    kind = pl.col("event_type")
    bought, returned = kind == "purchase", kind == "return"
    order = pl.coalesce(pl.col("order_id"), pl.lit("\x00row:") + pl.col(_ROW).cast(pl.String))
    sized = returned & pl.col("return_reason").is_in(list(SIZE_RETURN_REASONS))
    quantity = pl.col("quantity").fill_null(0)
    done = credited.group_by("variant", unit).agg(
        (kind == "click").sum().alias("clicks"),
        (kind == "add_to_cart").sum().alias("add_to_carts"),
        order.filter(bought).n_unique().alias("orders"),
        quantity.filter(bought).sum().alias("items"),
        _revenue().filter(bought).sum().alias("revenue"),
        quantity.filter(returned).sum().alias("returns"),
        quantity.filter(sized).sum().alias("size_returns"),
        _revenue().filter(returned).sum().alias("returned_revenue"),
    )
    if pre_outcomes is not None:
        before = _outcomes(pre_outcomes)
        pre = (
            before.filter((pl.col("event_type") == "purchase") & pl.col(unit).is_not_null())
            .group_by(unit)
            .agg(_revenue().sum().alias("pre_revenue"))
        )
    else:
        pre = pl.DataFrame(schema={unit: pl.String, "pre_revenue": pl.Float64})
    units = (
        base.join(done, on=["variant", unit], how="left")
        .join(pre, on=unit, how="left")
        .with_columns(
            *[pl.col(c).fill_null(0).cast(pl.Int64) for c in _COUNTS],
            *[
                pl.col(c).fill_null(0.0).cast(pl.Float64)
                for c in ("revenue", "returned_revenue", "pre_revenue")
            ],
        )
        .with_columns(
            (pl.col("orders") > 0).cast(pl.Int64).alias("converted"),
            (pl.col("revenue") - pl.col("returned_revenue")).alias("net_revenue"),
        )
        .rename({unit: "unit"})
    )
    return units.select("variant", "unit", "day", *UNIT_COLUMNS).sort("variant", "unit")


def pre_period(
    purchases: pl.DataFrame, experiment: Experiment, period: timedelta = PRE_PERIOD
) -> pl.DataFrame | None:
    """The curated purchases of the ``period`` before the experiment's start as outcomes
    (``pre_outcomes`` of :func:`unit_metrics`: each unit's revenue then is its CUPED
    covariate); None when there are no purchases at all."""
    if purchases.is_empty():
        return None
    since = experiment.start - period
    return purchases.filter((pl.col("ts") >= since) & (pl.col("ts") < experiment.start)).select(
        pl.col("customer_id"),
        pl.lit(None, pl.String).alias("session_id"),
        pl.lit("purchase").alias("event_type"),
        pl.col("price"),
        pl.lit(1, pl.Int64).alias("quantity"),
        pl.col("ts"),
    )


def daily_looks(
    exposures: pl.DataFrame,
    outcomes: pl.DataFrame,
    experiment: Experiment,
    *,
    pre_outcomes: pl.DataFrame | None = None,
) -> dict[date, pl.DataFrame]:
    """Day -> the :func:`unit_metrics` frame of everything known by that day's end (UTC),
    from the first day with a unit to the last: the looks a daily analysis took, exact (an
    early unit's later outcomes are not in an early look). Days without a unit yet are left
    out."""
    units = unit_metrics(exposures, outcomes, experiment, pre_outcomes=pre_outcomes)
    looks: dict[date, pl.DataFrame] = {}
    if units.is_empty():
        return looks
    first, last = units["day"].min(), units["day"].max()
    assert isinstance(first, date) and isinstance(last, date)
    for n in range((last - first).days + 1):
        day = first + timedelta(days=n)
        end = datetime.combine(day + timedelta(days=1), time(), UTC)
        look = unit_metrics(
            exposures.filter(pl.col("ts") < end),
            outcomes.filter(pl.col("ts") < end),
            experiment,
            pre_outcomes=pre_outcomes,
        )
        if not look.is_empty():
            looks[day] = look
    return looks


def operational(exposures: pl.DataFrame, experiment: Experiment) -> pl.DataFrame:
    """Per variant, from the experiment's answers in [start, end): ``answers``,
    ``p99_latency_ms`` (linear interpolation), ``degraded`` and ``errors`` (answers that fell
    back after a model error) as counts, and ``degraded_share`` and ``error_rate`` of
    answers (the guardrails of :data:`~pipeline.experiments.config.GUARDRAILS`)."""
    served = _experiment_exposures(exposures, experiment)
    return (
        served.group_by("variant")
        .agg(
            pl.len().cast(pl.Int64).alias("answers"),
            pl.col("latency_ms").quantile(0.99, "linear").alias("p99_latency_ms"),
            pl.col("degraded").fill_null(False).sum().cast(pl.Int64).alias("degraded"),
            pl.col("fallback").fill_null(False).sum().cast(pl.Int64).alias("errors"),
        )
        .with_columns(
            (pl.col("degraded") / pl.col("answers")).alias("degraded_share"),
            (pl.col("errors") / pl.col("answers")).alias("error_rate"),
        )
        .sort("variant")
    )


def variant_summary(units: pl.DataFrame) -> pl.DataFrame:
    """Per variant: ``units`` and each metric of :data:`~pipeline.experiments.config.METRICS`,
    a ratio of sums over the variant's units (null when the denominator sums to 0) or the mean
    per unit."""
    values = []
    for metric in METRICS.values():
        numerator = pl.col(metric.numerator).cast(pl.Float64)
        if metric.denominator is None:
            values.append(numerator.mean().alias(metric.name))
        else:
            denominator = pl.col(metric.denominator).cast(pl.Float64).sum()
            values.append(
                pl.when(denominator > 0)
                .then(numerator.sum() / denominator)
                .otherwise(None)
                .alias(metric.name)
            )
    return (
        units.group_by("variant")
        .agg(pl.len().cast(pl.Int64).alias("units"), *values)
        .sort("variant")
    )
