"""Validating one raw table of a day: the rows of its files in, every row out with a reason
(null when valid), so that ingest can split curated rows from quarantine without losing any.

What a table needs beyond its columns' rules is read from its contract
(:class:`pipeline.data.contracts.Contract`): customer ids are pseudonymised wherever a table
has them, references are checked against what is known of the referenced tables, events
(tables that are not ``dimension``) must not be timed after the drop's day nor re-send a key
curated on an earlier day, and a ``derived`` table is built from the rows. Every check runs
in one Polars pass (:func:`reasons`); reason strings are built only for the rows that fail.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl

from pipeline.config import Settings
from pipeline.data.contracts import CONTRACTS, Contract, typed_with_checks
from pipeline.data.rawfiles import BYTES, FILE, LINE, NESTED, PRE, SOURCE
from pipeline.data.sources import SERVED
from pipeline.data.tombstones import erased_pseudonyms
from pipeline.privacy import pseudonymise_column

__all__ = [
    "DUPLICATE_LOOKBACK_DAYS",
    "FUTURE_GRACE",
    "Check",
    "Known",
    "TableReport",
    "Validated",
    "quality",
    "reasons",
    "validate_table",
]

# Events may arrive late (any time before the drop) but not from after the drop's day.
FUTURE_GRACE = timedelta(hours=1)
# An event key seen on one of this many earlier days is a duplicate (a re-sent event).
DUPLICATE_LOOKBACK_DAYS = 7

Check = tuple[pl.Expr | pl.Series, str]
"""A condition (true when the row breaks the rule) and the reason it gives."""


@dataclass
class TableReport:
    """One raw table of one drop:
    ``raw == curated + quarantined + exact_duplicates + erased`` (``erased``: rows of erased
    customers, dropped by :func:`pipeline.data.tombstones.erased_pseudonyms`)."""

    raw: int = 0
    curated: int = 0
    quarantined: int = 0
    exact_duplicates: int = 0
    erased: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    missing_files: list[str] = field(default_factory=list)
    quarantined_files: dict[str, str] = field(default_factory=dict)
    reconciled: bool = True
    redacted_body: int = 0
    null_rates: dict[str, float] = field(default_factory=dict)
    ranges: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class Validated:
    """A table's rows, each with its ``reason`` (null: curated), and what was dropped."""

    frame: pl.DataFrame
    derived: pl.DataFrame | None
    exact_duplicates: int
    erased: int


def _partitions(root: Path, table: str, before: date, days: int | None = None) -> list[Path]:
    paths = sorted((root / table).glob("date=*/part-0.parquet"))
    earliest = (before - timedelta(days=days)).isoformat() if days else ""
    return [
        p for p in paths if earliest <= p.parent.name.removeprefix("date=") < before.isoformat()
    ]


class Known:
    """Keys (and start times, for a contract with ``starts``) of the rows a reference may
    name: those curated before the day and those of the day's own tables ingested so far."""

    def __init__(self, curated_dir: Path, day: date):
        self.curated_dir, self.day = curated_dir, day
        self._today: dict[str, pl.DataFrame] = {}
        self._known: dict[str, pl.DataFrame] = {}

    @staticmethod
    def columns(table: str) -> list[str]:
        contract = CONTRACTS[table]
        start = [contract.timestamp] if contract.starts and contract.timestamp else []
        return [contract.key[0], *start]

    def add(self, table: str, good: pl.DataFrame) -> None:
        """Keep what references need of a table's curated rows (its key, its start)."""
        if any(table in c.references.values() for c in CONTRACTS.values()):
            self._today[table] = good.select(self.columns(table))

    def of(self, table: str) -> pl.DataFrame:
        known = self._known.get(table)
        if known is None:
            columns = self.columns(table)
            paths = _partitions(self.curated_dir, table, self.day)
            earlier = (
                pl.scan_parquet(paths).select(columns).unique(subset=columns[0], keep="last")
                if paths
                else pl.LazyFrame(schema={c: CONTRACTS[table].schema[c] for c in columns})
            )
            known = self._known[table] = pl.concat([earlier.collect(), self._today[table]]).unique(
                subset=columns[0], keep="last"
            )
        return known


def _seen_before(frame: pl.DataFrame, contract: Contract, day: date, settings: Settings):
    """Event keys already curated on one of the previous days (re-sent events).

    Only events timed before this drop's day (late or re-sent) can have been curated before,
    so only their keys are looked up, and only in partitions of the lookback window.
    """
    key, ts = contract.key[0], contract.timestamp or ""
    day_start = datetime(day.year, day.month, day.day, tzinfo=UTC) + FUTURE_GRACE
    early = (frame.get_column(ts) < day_start).fill_null(False)
    result = pl.repeat(False, frame.height, dtype=pl.Boolean, eager=True)
    if not early.any():
        return result
    candidates = frame.filter(early).get_column(key)
    paths = _partitions(settings.curated_dir, contract.name, day, DUPLICATE_LOOKBACK_DAYS)
    if not paths:
        return result
    seen = (
        pl.scan_parquet(paths)
        .select(key)
        .filter(pl.col(key).is_in(candidates.implode()))
        .collect()
        .get_column(key)
    )
    return frame.get_column(key).is_in(seen.implode()) & early


def _references(frame: pl.DataFrame, contract: Contract, known: Known):
    """Checks that each reference names a known row (and an event does not precede it)."""
    checks: list[Check] = []
    for column, target in contract.references.items():
        target_key, *start = Known.columns(target)
        keys = known.of(target)
        name = f"unknown_{target.removesuffix('s')}"
        checks.append(
            (pl.col(column).is_not_null() & ~pl.col(column).is_in(keys[target_key].implode()), name)
        )
        if start and contract.timestamp:
            # Only the key column is joined: the frame (raw text and all) is not copied.
            started = (
                frame.select(column)
                .join(
                    keys.rename({target_key: column}), on=column, how="left", maintain_order="left"
                )
                .get_column(start[0])
            )
            frame = frame.with_columns(started.alias(f"__start_{target}"))
            before = pl.col(contract.timestamp) < pl.col(f"__start_{target}")
            checks.append((before, CONTRACTS[target].starts or "before_start"))
    return frame, checks


def reasons(frame: pl.DataFrame, checks: Sequence[Check], key: Sequence[str]) -> pl.Series:
    """Every row's ``reason`` from all checks in one pass: null for a valid row; a row whose
    fields could not be read (``__pre``) has exactly that one reason; value-level reasons
    found while reading (``__nested``) add to the others; a valid row whose key an earlier
    valid row of the frame has is a ``duplicate_key``. Strings are built for failing rows
    only, each reason once, in the order of ``checks``."""
    flags = [f"__check{i}" for i in range(len(checks))]
    broken = pl.any_horizontal(flags) if flags else pl.lit(False)
    valid = (~broken & pl.col(PRE).is_null() & pl.col(NESTED).is_null()).alias("__valid")
    parts: list[pl.Expr] = [
        pl.when(pl.col(f)).then(pl.lit(name)) for f, (_, name) in zip(flags, checks, strict=True)
    ]
    parts += [pl.col(NESTED), pl.when(pl.col("__dup")).then(pl.lit("duplicate_key"))]
    joined = pl.concat_str(parts, separator=";", ignore_nulls=True)
    failing = (
        frame.lazy()
        .select(
            *key,
            PRE,
            NESTED,
            *[
                pl.lit(c).fill_null(False).alias(f)
                if isinstance(c, pl.Series)
                else c.fill_null(False).alias(f)
                for f, (c, _) in zip(flags, checks, strict=True)
            ],
        )
        .with_columns(valid)
        .with_columns(
            (pl.col("__valid") & ~pl.struct(*key, "__valid").is_first_distinct()).alias("__dup")
        )
        .with_row_index("__row")
        .filter(~pl.col("__valid") | pl.col("__dup"))
        .select(
            "__row",
            pl.when(pl.col(PRE).is_not_null())
            .then(pl.col(PRE))
            .otherwise(joined)
            .str.split(";")
            .list.unique(maintain_order=True)
            .list.join(";")
            .alias("reason"),
        )
        .collect()
    )
    none = pl.repeat(None, frame.height, dtype=pl.String, eager=True).alias("reason")
    return none.scatter(failing.get_column("__row"), failing.get_column("reason"))


def validate_table(
    raw: pl.DataFrame, contract: Contract, day: date, settings: Settings, known: Known
) -> Validated:
    """The rows of one table's files (:func:`pipeline.data.sources.read_sources`), typed by the
    contract, each with its reason; exact duplicates and erased customers' rows dropped."""
    rows_in = raw.height
    # Exact duplicates (the same row sent twice) are dropped and counted, not quarantined; a
    # file that gave no rows is never a duplicate of another.
    # Lines read as text have no bytes: their text alone tells them apart (a cheaper hash).
    row = (
        pl.col(SOURCE)
        if raw.get_column(BYTES).null_count() == raw.height
        else pl.struct(SOURCE, BYTES)
    )
    first = raw.select(pl.col(LINE).is_null() | row.is_first_distinct())
    if not first.to_series().all():
        raw = raw.filter(first.to_series())
    exact_duplicates = rows_in - raw.height
    kept = [SOURCE, LINE, FILE, PRE, BYTES, NESTED, *([SERVED] if SERVED in raw.columns else [])]
    typed, checks = typed_with_checks(raw, contract)
    frame = pl.concat([typed, raw.select(kept)], how="horizontal")
    frame, erased = _pseudonymised(frame, contract, settings)
    if contract.timestamp and not contract.dimension:
        cutoff = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)
        checks.append((pl.col(contract.timestamp) > cutoff + FUTURE_GRACE, "future_timestamp"))
    derived = None
    if contract.derived is not None:
        derived, derived_reason = contract.derived.build(frame)
        frame = frame.with_columns(derived_reason.alias("__derived"))
        for reason in sorted(set(derived_reason.drop_nulls().str.split(";").explode())):
            checks.append((pl.col("__derived").str.split(";").list.contains(reason), reason))
    frame, referenced = _references(frame, contract, known)
    checks += referenced
    if not contract.dimension:
        checks.append((_seen_before(frame, contract, day, settings), "duplicate_key"))
    frame = frame.with_columns(reasons(frame, checks, contract.key))
    return Validated(frame, derived, exact_duplicates, erased)


def _pseudonymised(frame: pl.DataFrame, contract: Contract, settings: Settings):
    """Customer ids replaced by their pseudonyms (the raw id kept in ``__raw_customer`` for
    the quarantine to hide); rows of erased customers (GDPR Art. 17) dropped and counted."""
    if "customer_id" not in contract.names:
        return frame, 0
    key = settings.pseudonym_key.get_secret_value()
    frame = pseudonymise_column(
        frame.with_columns(pl.col("customer_id").alias("__raw_customer")), "customer_id", key
    )
    if SERVED in frame.columns:  # serving logged the pseudonym itself: never hashed twice
        frame = frame.with_columns(pl.coalesce(SERVED, "customer_id").alias("customer_id"))
    erased_ids = erased_pseudonyms(settings)
    if not erased_ids:
        return frame, 0
    tombstoned = pl.col("customer_id").is_in(list(erased_ids)).fill_null(False)
    erased = int(frame.select(tombstoned.sum()).item())
    return (frame.filter(~tombstoned) if erased else frame), erased


def quality(good: pl.DataFrame, contract: Contract) -> tuple[dict, dict]:
    """Null rate of every column; min and max of non-sensitive numbers and times (one pass)."""
    if good.is_empty():
        return {}, {}
    ranged = [
        c.name
        for c in contract.columns
        if not c.sensitive and (c.dtype.is_numeric() or c.dtype.is_temporal())
    ]
    row = good.select(
        *[(pl.col(c).null_count() / pl.len()).alias(f"n:{c}") for c in good.columns],
        *[pl.col(c).min().alias(f"lo:{c}") for c in ranged],
        *[pl.col(c).max().alias(f"hi:{c}") for c in ranged],
    ).row(0, named=True)
    nulls = {c: round(row[f"n:{c}"], 6) for c in good.columns}
    return nulls, {c: [str(row[f"lo:{c}"]), str(row[f"hi:{c}"])] for c in ranged}
