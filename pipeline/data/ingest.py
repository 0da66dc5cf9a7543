"""Ingest: validate one day's raw drop into curated Parquet and quarantine, losing nothing.

For every raw table of a drop: read it (JSON lines, CSV or Parquet; :mod:`pipeline.data.rawfiles`
turns any bytes into rows or reasons), drop exact duplicate rows (counted), type it by its
:mod:`pipeline.data.contracts` contract (with unit conversion), pseudonymise customer ids,
check references, launch dates, future times and key duplicates, then write
``curated/<table>/date=<day>/part-0.parquet`` and ``quarantine/<table>/date=<day>/part-0.parquet``.

    raw rows = curated + quarantined + exact duplicates dropped      (per table, per day)

Serving's event log for the day (:func:`pipeline.data.curated.serving_logs`) joins the drop:
its session events go with the drop's ``session_events``; its exposures (one per answer
served) and outcomes (clicks, add-to-carts, purchases, returns) are the tables
:data:`LOG_ONLY`, which only the log feeds, ingested the same way after the drop's tables.

No input makes ingest raise. A row whose fields cannot be read gets exactly one line-level
reason (``bad_json``, ``bad_encoding``, ``duplicate_json_key``, ``bad_csv_row``,
``bad_header``); a file that gives no rows at all (an empty or corrupt Parquet file, an empty
CSV, a contract column of a List type) is one quarantine row without a line
(``empty_file``, ``corrupt_file``, ``bad_column_type:<column>``) and counts as one raw row, so
the equation above holds for every input. A missing feed file is logged as a warning and
listed under ``missing_files`` in the table's report.

A day is written all at once (:mod:`pipeline.data.staging`): every table and the report, or,
if the run dies, nothing (a leftover staging folder is cleaned up or finished by the next
run). Re-running a day rewrites byte-identical files; an unchanged drop is not read twice.
One day is processed at a time, so memory follows the size of a day, not of the history.

Quarantine and privacy: the quarantine never holds a raw customer id. Its columns are
``source_file``, ``line``, ``reason`` (``;``-joined), ``raw`` (the visible text),
``customer_id`` (the pseudonym when the row's id could be read, else null), ``source_sealed``
(null, or the whole original line sealed with :func:`pipeline.privacy.seal`) and ``day``.

- A row whose fields were read keeps its original text in ``raw`` with the customer id
  replaced by its pseudonym (and, for customers who did not consent, without body values).
- A row whose text cannot be rewritten that way (an unparseable line, undecodable bytes, an
  id written with escapes, a key outside the contract in a table with customer ids, where it
  may hold an id, a customer row that cannot be stripped of body values) is kept only
  sealed in ``source_sealed`` (AES-256-GCM under a key derived from the pseudonym key,
  deterministic so re-runs are byte-identical; undecodable bytes are sealed as
  surrogate-escaped text, so ``unseal(...).encode("utf-8", "surrogateescape")`` gives back
  the exact bytes); ``raw`` then shows only its shape: every letter and digit is ``*``
  except the contract's column names (:func:`pipeline.data.rawfiles.masked`).
- A file that gave no rows is not copied (it stays in the raw drop): ``raw`` says its size.

Sealed text is the line as it arrived, body values included: only the holder of the
pseudonym key can read it. Erasure finds a customer's quarantine rows by ``customer_id`` and
by unsealing ``source_sealed`` (:mod:`pipeline.data.quarantine` holds the schema).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import polars as pl

from pipeline.config import Settings
from pipeline.data.contracts import (
    CHART_MEASURES,
    CONTRACTS,
    CUSTOMERS,
    Contract,
    add_reasons,
    conform,
)
from pipeline.data.curated import (
    ITEM_SIZES_SCHEMA,
    LOG_PREFIXES,
    partition,
    previous_report,
    report_path,
    serving_logs,
)
from pipeline.data.quarantine import quarantine_rows
from pipeline.data.rawfiles import (
    BYTES,
    FILE,
    LINE,
    NESTED,
    PRE,
    SOURCE,
    empty_rows,
    read_raw,
    strict_json,
)
from pipeline.data.staging import DayWriter, recover
from pipeline.data.tombstones import erased_pseudonyms
from pipeline.privacy import key_id, pseudonymise_column, redact_without_consent, translation

__all__ = [
    "TABLES",
    "IngestReport",
    "TableReport",
    "ingest_day",
    "ingest_drop",
    "read_raw",
    "trust_case",
]

log = logging.getLogger(__name__)

# Raw file name per table, in the order tables must be ingested (references first).
RAW_FILES: dict[str, str] = {
    "customers": "customers.parquet",
    "items": "items.csv",
    "session_events": "session_events.jsonl",
    "try_ons": "try_ons.jsonl",
    "purchases": "purchases.jsonl",
}
# Tables only serving's event log feeds (no raw drop file), ingested after the drop's.
LOG_ONLY = tuple(LOG_PREFIXES.values())
TABLES = (*RAW_FILES, *LOG_ONLY)
DIMENSIONS = ("customers", "items")
# Events may arrive late (any time before the drop) but not from after the drop's day.
FUTURE_GRACE = timedelta(hours=1)
# An event key seen on one of this many earlier days is a duplicate (a re-sent event).
DUPLICATE_LOOKBACK_DAYS = 7
# The item_sizes table types a size's rank as Int8 and its stock as Int32.
MAX_SIZES = 128
MAX_STOCK = 2**31 - 1


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
class IngestReport:
    """Per-table counts and data quality for one drop."""

    day: str
    fingerprint: str = ""
    tables: dict[str, TableReport] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "day": self.day,
            "fingerprint": self.fingerprint,
            "tables": {k: asdict(v) for k, v in self.tables.items()},
        }


def drop_fingerprint(drop: Path, extra: dict[str, list[Path]] | None = None) -> str:
    """Content hash of a raw drop folder (and extra sources): a changed drop is ingested
    again, an unchanged one not."""
    digest = hashlib.sha256()
    paths = [drop / name for name in sorted(RAW_FILES.values())]
    sources = extra or {}
    paths += [p for table in sorted(sources) for p in sorted(sources[table])]
    for path in paths:
        digest.update(str(path.relative_to(path.parent.parent)).encode())
        if path.is_file():
            with path.open("rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(chunk)
    return digest.hexdigest()


SERVED = "__served_pseudonym"


def served_pseudonyms(frame: pl.DataFrame, path: Path, settings: Settings) -> pl.DataFrame:
    """Rows of serving's event log carry ``customer_pseudonym`` (pseudonymised at the edge,
    under the key named by ``pseudonym_key_id``), never a raw id: keep it in ``SERVED``,
    re-keyed to the current key when it was made under one being rotated out."""
    if not path.is_relative_to(settings.events_dir) or frame.is_empty():
        return frame
    text = frame.get_column(SOURCE)  # a malformed line gives nulls (and is bad_json)
    pseudonym = text.str.json_path_match("$.customer_pseudonym")
    made_by = text.str.json_path_match("$.pseudonym_key_id")
    current, *previous = settings.pseudonym_keys
    for old in previous:
        mask = made_by == key_id(old)
        if mask.any():
            mapping = translation(raw_customer_ids(settings.raw_dir), old, current)
            pseudonym = pl.select(
                pl.when(mask).then(pseudonym.replace(mapping)).otherwise(pseudonym)
            ).to_series()
    return frame.with_columns(pseudonym.alias(SERVED))


def raw_customer_ids(raw_dir: Path) -> set[str]:
    """Every customer id of the raw drops (for re-keying pseudonyms after a key rotation)."""
    ids: set[str] = set()
    for path in sorted(raw_dir.glob("????-??-??/customers.parquet")):
        try:
            column = pl.read_parquet(path, columns=["customer_id"]).get_column("customer_id")
        except Exception:  # noqa: BLE001 - an unreadable drop is ingest's to report
            continue
        ids.update(column.cast(pl.String).drop_nulls().to_list())
    return ids


# --- checks -------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def _chart_reason(chart_text: str) -> tuple[list[tuple[str, dict]], str | None]:
    """Sizes of a size chart with their ranges, or the reason it is rejected (cached: many
    items of a catalogue share one chart; callers copy, never change, what it returns)."""
    try:
        chart = strict_json(chart_text)
    except (ValueError, RecursionError):
        return [], "bad_size_chart"
    if not isinstance(chart, dict) or not chart:
        return [], "bad_size_chart"
    if len(chart) > MAX_SIZES:
        return [], "out_of_range:size_chart"
    sizes = []
    for size, ranges in chart.items():
        if not isinstance(ranges, dict):
            return [], "bad_size_chart"
        row: dict = {}
        for m in CHART_MEASURES:
            bounds = ranges.get(m)
            if not isinstance(bounds, list) or len(bounds) != 2:
                return [], "bad_size_chart"
            if not all(isinstance(v, str | int) and not isinstance(v, bool) for v in bounds):
                return [], "bad_size_chart"
            try:
                low, high = (float(v) for v in bounds)
            except (ValueError, OverflowError):
                return [], "bad_size_chart"
            if not 0 < low < high < 300:
                return [], "bad_size_chart"
            row[f"{m}_min"], row[f"{m}_max"] = low, high
        sizes.append((size, row))
    return sizes, None


def _stock_units(stock_text: str | None) -> tuple[dict[str, int], str | None]:
    """Units in stock per size (JSON integers from 0 to the Int32 maximum), or the reason."""
    if stock_text is None:
        return {}, None
    try:
        stock = strict_json(stock_text)
    except (ValueError, RecursionError):
        return {}, "bad_stock"
    if not isinstance(stock, dict):
        return {}, "bad_stock"
    units: dict[str, int] = {}
    for size, value in stock.items():
        if isinstance(value, bool) or not isinstance(value, int | str):
            return {}, "bad_stock"
        if isinstance(value, int):
            number = value
        else:  # a JSON float, as its text: 2.0 is 2 units, 1.5 is no number of units
            try:
                as_float = float(value)
            except ValueError:
                return {}, "bad_stock"
            if not abs(as_float) <= MAX_STOCK:  # also inf and nan (1e400)
                return {}, "out_of_range:stock"
            if not as_float.is_integer():
                return {}, "bad_stock"
            number = int(as_float)
        if not 0 <= number <= MAX_STOCK:
            return {}, "out_of_range:stock"
        units[size] = number
    return units, None


def parse_size_chart(items: pl.DataFrame) -> tuple[pl.DataFrame, pl.Series]:
    """Explode ``size_chart`` and ``stock`` JSON into one row per (item, size).

    Items without a chart (real catalogues often have none) get no rows and no reason; a
    chart that does not parse or makes no sense gets ``bad_size_chart`` (more sizes than
    an Int8 rank holds: ``out_of_range:size_chart``); stock that is not an object of whole
    units gets ``bad_stock`` (below zero or beyond Int32: ``out_of_range:stock``). Several
    reasons are ``;``-joined.
    """
    rows: list[dict] = []
    reasons: list[str | None] = []
    for item_id, chart_text, stock_text in items.select("item_id", "size_chart", "stock").rows():
        stock, stock_reason = _stock_units(stock_text)
        sizes, chart_reason = _chart_reason(chart_text) if chart_text is not None else ([], None)
        reason = ";".join(r for r in (chart_reason, stock_reason) if r) or None
        reasons.append(reason)
        if reason is None:
            rows.extend(
                {
                    "item_id": item_id,
                    "size": str(size),
                    "size_rank": rank,
                    **ranges,
                    "stock": stock.get(size),
                }
                for rank, (size, ranges) in enumerate(sizes)
            )
    return (
        pl.DataFrame(rows, schema=ITEM_SIZES_SCHEMA),
        pl.Series("reason", reasons, dtype=pl.String),
    )


def _partitions(root: Path, table: str, before: date, days: int | None = None) -> list[Path]:
    paths = sorted((root / table).glob("date=*/part-0.parquet"))
    earliest = (before - timedelta(days=days)).isoformat() if days else ""
    return [
        p for p in paths if earliest <= p.parent.name.removeprefix("date=") < before.isoformat()
    ]


def _known(root: Path, table: str, columns: list[str], before: date, days: int | None = None):
    paths = _partitions(root, table, before, days)
    if not paths:
        return pl.DataFrame(schema={c: CONTRACTS[table].schema[c] for c in columns})
    return pl.scan_parquet(paths).select(columns).unique(subset=columns[0], keep="last").collect()


def _seen_before(frame: pl.DataFrame, table: str, day: date, settings: Settings) -> pl.Series:
    """Event keys already curated on one of the previous days (re-sent events).

    Only events timed before this drop's day (late or re-sent) can have been curated before,
    so only their keys are looked up, and only in partitions of the lookback window.
    """
    key = CONTRACTS[table].key[0]
    day_start = datetime(day.year, day.month, day.day, tzinfo=UTC) + FUTURE_GRACE
    early = frame.get_column("ts") < day_start
    result = pl.Series([False] * frame.height, dtype=pl.Boolean)
    if not early.fill_null(False).any():
        return result
    candidates = frame.filter(early.fill_null(False)).get_column(key)
    paths = _partitions(settings.curated_dir, table, day, DUPLICATE_LOOKBACK_DAYS)
    if not paths:
        return result
    seen = (
        pl.scan_parquet(paths)
        .select(key)
        .filter(pl.col(key).is_in(candidates.implode()))
        .collect()
        .get_column(key)
    )
    return frame.get_column(key).is_in(seen.implode()) & early.fill_null(False)


def _quality(good: pl.DataFrame, contract: Contract) -> tuple[dict, dict]:
    """Null rate of every column; min and max of non-sensitive numbers and times."""
    if good.is_empty():
        return {}, {}
    nulls = good.select(pl.all().null_count() / pl.len()).row(0, named=True)
    ranged = [
        c.name
        for c in contract.columns
        if not c.sensitive and (c.dtype.is_numeric() or c.dtype.is_temporal())
    ]
    lows = good.select(pl.col(ranged).min()).row(0, named=True)
    highs = good.select(pl.col(ranged).max()).row(0, named=True)
    ranges = {c: [str(lows[c]), str(highs[c])] for c in ranged}
    return {k: round(v, 6) for k, v in nulls.items()}, ranges


# --- the drop -----------------------------------------------------------------------------


def ingest_drop(
    drop: Path, day: date, settings: Settings, extra: dict[str, list[Path]] | None = None
) -> IngestReport:
    """Ingest one day's raw drop folder, plus ``extra`` source files per table (serving's
    event log); byte-identical output for the same inputs, written all at once."""
    recover(settings.data_dir)
    extra = extra or {}
    report = IngestReport(day=day.isoformat(), fingerprint=drop_fingerprint(drop, extra))
    key = settings.pseudonym_key.get_secret_value()
    cutoff = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1) + FUTURE_GRACE
    curated_here: dict[str, pl.DataFrame] = {}
    references: dict[str, pl.DataFrame] = {}
    writer = DayWriter(settings.data_dir, f"ingest-{day.isoformat()}")
    try:
        for table in TABLES:
            dropped = [drop / RAW_FILES[table]] if table in RAW_FILES else []
            paths = [*dropped, *extra.get(table, [])]
            good, table_report = _ingest_table(
                paths, table, day, settings, key, cutoff, curated_here, references, writer
            )
            curated_here[table] = good
            report.tables[table] = table_report
            log.info(
                "ingest %s %s: raw=%d curated=%d quarantined=%d duplicates=%d",
                day,
                table,
                table_report.raw,
                table_report.curated,
                table_report.quarantined,
                table_report.exact_duplicates,
            )
        text = json.dumps(report.as_dict(), indent=2, sort_keys=True)
        writer.text(text, report_path(settings.curated_dir, day))
        writer.commit()
    except BaseException:
        writer.abandon()
        raise
    return report


def ingest_day(drop: Path, day: date, settings: Settings) -> tuple[dict, bool]:
    """Ingest one day: its raw drop together with serving's event log for that day.

    This is the one way a day is ingested (the ``ingest`` flow and ``fitrec ingest`` both call
    it), so a day's curated session events always include what serving accepted that day. A
    day whose files are exactly those of its last ingest is not read again.

    Args:
        drop: The day's raw drop folder (it may be missing when only serving logged events).
        day: The day being ingested.
        settings: Where curated, quarantine and the event log live; the pseudonym key.

    Returns:
        The day's report (as :meth:`IngestReport.as_dict`) and whether it was skipped as
        unchanged (then the report is the previous one).
    """
    recover(settings.data_dir)
    extra = serving_logs(settings.events_dir, day)
    previous = previous_report(settings.curated_dir, day)
    if previous and previous.get("fingerprint") == drop_fingerprint(drop, extra):
        return previous, True
    return ingest_drop(drop, day, settings, extra).as_dict(), False


def trust_case(drop: Path, day: date, settings: Settings) -> dict:
    """One hostile-input case for the trust benchmark: ingest ``drop`` as ``day`` and say
    whether ingest crashed and whether every table reconciles.

    Returns:
        ``{"crashed": bool, "error": str | None, "reconciled": {table: bool}, "report": dict
        | None}``; ``error`` names the exception type only (never its text, which may hold
        input values).
    """
    try:
        report = ingest_drop(drop, day, settings, serving_logs(settings.events_dir, day))
    except Exception as error:  # noqa: BLE001 - the benchmark counts crashes, it must not stop
        return {"crashed": True, "error": type(error).__name__, "reconciled": {}, "report": None}
    return {
        "crashed": False,
        "error": None,
        "reconciled": {t: r.reconciled for t, r in report.tables.items()},
        "report": report.as_dict(),
    }


def _read_sources(
    paths: list[Path], contract: Contract, report: TableReport, settings: Settings
) -> pl.DataFrame:
    frames = []
    for path in paths:
        name = f"{path.parent.name}/{path.name}"
        if not path.is_file():
            log.warning("ingest: feed file %s is missing", name)
            report.missing_files.append(name)
            continue
        frame = read_raw(path, contract)
        if frame.height == 1 and frame.get_column(LINE).null_count() == 1:
            reason = frame.get_column(PRE).item()
            log.warning("ingest: feed file %s is unreadable (%s), quarantined", name, reason)
            report.quarantined_files[name] = reason
        frames.append(
            served_pseudonyms(frame.with_columns(pl.lit(name).alias(FILE)), path, settings)
        )
    if not frames:
        return empty_rows(contract).with_columns(pl.lit(None, pl.String).alias(FILE))
    return pl.concat(frames, how="diagonal_relaxed")


def _ingest_table(
    paths: list[Path],
    table: str,
    day: date,
    settings: Settings,
    key: str,
    cutoff: datetime,
    curated_here: dict[str, pl.DataFrame],
    references: dict[str, pl.DataFrame],
    writer: DayWriter,
) -> tuple[pl.DataFrame, TableReport]:
    contract = CONTRACTS[table]
    report = TableReport()
    raw = _read_sources(paths, contract, report, settings)
    rows_in = raw.height
    # Exact duplicates (the same row sent twice) are dropped and counted, not quarantined; a
    # file that gave no rows is never a duplicate of another.
    raw = raw.filter(pl.col(LINE).is_null() | pl.struct(SOURCE, BYTES).is_first_distinct())
    exact_duplicates = rows_in - raw.height

    kept = [SOURCE, LINE, FILE, PRE, BYTES, NESTED, *([SERVED] if SERVED in raw.columns else [])]
    frame = pl.concat([conform(raw, contract), raw.select(kept)], how="horizontal")
    checks: list[tuple[pl.Expr | pl.Series, str]] = []
    if "customer_id" in contract.names:
        frame = pseudonymise_column(
            frame.with_columns(pl.col("customer_id").alias("__raw_customer")), "customer_id", key
        )
        if SERVED in frame.columns:  # serving logged the pseudonym itself: never hashed twice
            frame = frame.with_columns(pl.coalesce(SERVED, "customer_id").alias("customer_id"))
        # Erased customers (GDPR Art. 17) are not ingested again: dropped, counted, no trace.
        tombstoned = pl.col("customer_id").is_in(list(erased_pseudonyms(settings)))
        erased = int(frame.select(tombstoned.sum()).item())
        frame = frame.filter(~tombstoned.fill_null(False))
    else:
        erased = 0
    if contract.timestamp and table not in DIMENSIONS:
        checks.append((pl.col(contract.timestamp) > cutoff, "future_timestamp"))
    sizes: pl.DataFrame | None = None
    if table == "items":
        sizes, chart_reason = parse_size_chart(frame)
        frame = frame.with_columns(chart_reason.alias("__chart"))
        for reason in sorted(set(chart_reason.drop_nulls().str.split(";").explode())):
            checks.append((pl.col("__chart").str.split(";").list.contains(reason), reason))
    for column, target in contract.references.items():
        target_key = CONTRACTS[target].key[0]
        extra = ["launch_ts"] if target == "items" else []
        known = references.get(target)
        if known is None:
            known = references[target] = pl.concat(
                [
                    _known(settings.curated_dir, target, [target_key, *extra], day),
                    curated_here[target].select(target_key, *extra),
                ]
            ).unique(subset=target_key, keep="last")
        flag = f"__known_{target}"
        frame = frame.join(
            known.with_columns(pl.lit(True).alias(flag)).rename(
                {target_key: column, **({"launch_ts": "__launch"} if extra else {})}
            ),
            on=column,
            how="left",
            maintain_order="left",
        )
        checks.append(
            (
                pl.col(column).is_not_null() & pl.col(flag).is_null(),
                f"unknown_{target.removesuffix('s')}",
            )
        )
        if extra:
            checks.append((pl.col("ts") < pl.col("__launch"), "before_launch"))
    if table not in DIMENSIONS:
        checks.append((_seen_before(frame, table, day, settings), "duplicate_key"))
    frame = add_reasons(frame, checks)
    # Reasons found while reading: nested values add to the others; a row whose fields could
    # not be read at all has exactly its one reason (the others would be noise).
    frame = frame.with_columns(
        pl.when(pl.col(PRE).is_not_null())
        .then(pl.col(PRE))
        .when(pl.col(NESTED).is_not_null() & pl.col("reason").is_not_null())
        .then(pl.concat_str([pl.col("reason"), pl.col(NESTED)], separator=";"))
        .otherwise(pl.coalesce("reason", NESTED))
        .alias("reason")
    )
    # Key duplicates with different content: a valid row whose key an earlier valid row of
    # this drop already has.
    valid = pl.col("reason").is_null()
    first = pl.struct(*contract.key, valid).is_first_distinct()
    frame = add_reasons(frame, [(valid & ~first, "duplicate_key")])
    frame = frame.with_columns(
        pl.col("reason").str.split(";").list.unique(maintain_order=True).list.join(";")
    )

    good = frame.filter(pl.col("reason").is_null()).select(contract.names)
    bad = quarantine_rows(frame.filter(pl.col("reason").is_not_null()), day, contract, key, paths)
    report.raw, report.curated, report.quarantined = rows_in, good.height, bad.height
    report.exact_duplicates, report.erased = exact_duplicates, erased
    report.reconciled = rows_in == good.height + bad.height + exact_duplicates + erased
    report.reasons = dict(
        sorted(bad.get_column("reason").str.split(";").explode().value_counts().iter_rows())
    )
    if table == "customers":
        good, report.redacted_body = redact_without_consent(good, CUSTOMERS.sensitive)
    report.null_rates, report.ranges = _quality(good, contract)
    if sizes is not None:
        sizes = sizes.filter(pl.col("item_id").is_in(good.get_column("item_id").implode()))
        writer.parquet(sizes, partition(settings.curated_dir, "item_sizes", day))
    writer.parquet(good, partition(settings.curated_dir, table, day))
    writer.parquet(bad, partition(settings.quarantine_dir, table, day))
    return good, report
