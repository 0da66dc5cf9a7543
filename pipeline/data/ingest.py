"""Ingest: validate one day's raw drop into curated Parquet and quarantine, losing nothing.

For every raw table of a drop: read it (JSON lines, CSV or Parquet) as strings, drop exact
duplicate rows (counted), type it by its :mod:`pipeline.data.contracts` contract (with unit
conversion), pseudonymise customer ids, check references, launch dates, future times and
key duplicates, then write ``curated/<table>/date=<day>/part-0.parquet`` and
``quarantine/<table>/date=<day>/part-0.parquet``. Every rejected row keeps its source file,
line and original text, with every reason it broke.

    raw rows = curated + quarantined + exact duplicates dropped      (per table, per day)

Re-running a day rewrites byte-identical files; an unchanged drop is not read twice. One day
is processed at a time, so memory follows the size of a day, not of the history.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import orjson
import polars as pl

from pipeline.config import Settings
from pipeline.data.contracts import (
    CHART_MEASURES,
    CONTRACTS,
    Contract,
    add_reasons,
    conform,
)
from pipeline.data.curated import (
    ITEM_SIZES_SCHEMA,
    partition,
    previous_report,
    report_path,
    serving_logs,
)
from pipeline.erasure import erased_pseudonyms
from pipeline.privacy import (
    key_id,
    pseudonymise_column,
    redact_without_consent,
    translation,
    without_body,
)

log = logging.getLogger(__name__)

# Raw file name per table, in the order tables must be ingested (references first).
RAW_FILES: dict[str, str] = {
    "customers": "customers.parquet",
    "items": "items.csv",
    "session_events": "session_events.jsonl",
    "try_ons": "try_ons.jsonl",
    "purchases": "purchases.jsonl",
}
DIMENSIONS = ("customers", "items")
# Events may arrive late (any time before the drop) but not from after the drop's day.
FUTURE_GRACE = timedelta(hours=1)
# An event key seen on one of this many earlier days is a duplicate (a re-sent event).
DUPLICATE_LOOKBACK_DAYS = 7
SOURCE, LINE, FILE = "__source", "__line", "__file"


@dataclass
class TableReport:
    """One raw table of one drop:
    ``raw == curated + quarantined + exact_duplicates + erased`` (``erased``: rows of erased
    customers, dropped by :func:`pipeline.erasure.erased_pseudonyms`)."""

    raw: int = 0
    curated: int = 0
    quarantined: int = 0
    exact_duplicates: int = 0
    erased: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
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


def _write_atomic(frame: pl.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    frame.write_parquet(tmp)
    os.replace(tmp, path)


# --- reading ------------------------------------------------------------------------------


def _empty(contract: Contract) -> pl.DataFrame:
    return pl.DataFrame(
        schema={**dict.fromkeys(contract.names, pl.String), SOURCE: pl.String, LINE: pl.Int64}
    )


BLANK = " \t\r"  # a line of only these is not a row


def _read_lines(data: bytes) -> pl.DataFrame:
    """Lines of a text file with their 1-based numbers; blank lines are not rows."""
    if b"\x1f" not in data:
        # Polars' CSV reader with a separator the text does not contain: one field a line.
        lines = pl.read_csv(
            data,
            has_header=False,
            separator="\x1f",
            quote_char=None,
            new_columns=[SOURCE],
            schema={SOURCE: pl.String},
            encoding="utf8-lossy",
        )
    else:
        text = data.decode("utf-8", errors="replace")
        lines = pl.Series(SOURCE, [text]).str.split("\n").explode().to_frame()
        if text.endswith("\n"):
            lines = lines.head(-1)
    return (
        lines.with_row_index(LINE, offset=1)
        .with_columns(pl.col(LINE).cast(pl.Int64), pl.col(SOURCE).str.strip_suffix("\r"))
        .filter(pl.col(SOURCE).is_not_null() & (pl.col(SOURCE).str.strip_chars(BLANK) != ""))
    )


def _parse_json_lines(data: bytes, lines: pl.DataFrame, contract: Contract) -> pl.DataFrame:
    """Fields of each line as strings; a line that is not a JSON object gets all nulls."""
    schema = dict.fromkeys(contract.names, pl.String)
    text = lines.get_column(SOURCE)
    try:
        fields = pl.read_ndjson(data, schema=schema)
        if fields.height == lines.height and text.str.starts_with("{").all():
            return pl.concat([fields, lines], how="horizontal")
    except Exception:  # noqa: BLE001 - Polars raises several types for malformed JSON
        pass
    # Slow path, only for files with malformed lines: find them one by one.
    valid = []
    for line in text:
        try:
            valid.append(isinstance(orjson.loads(line), dict))
        except orjson.JSONDecodeError:
            valid.append(False)
    mask = pl.Series(valid, dtype=pl.Boolean)
    good = lines.filter(mask)
    fields = pl.read_ndjson(io.BytesIO("\n".join(good.get_column(SOURCE)).encode()), schema=schema)
    parsed = pl.concat([fields, good], how="horizontal")
    bad = lines.filter(~mask).with_columns(pl.lit(None, pl.String).alias(n) for n in schema)
    return (
        pl.concat([parsed, bad.select(parsed.columns)])
        .sort(LINE)
        .with_columns(pl.col(LINE).is_in(bad.get_column(LINE).implode()).alias("__bad_json"))
    )


def read_raw(path: Path, contract: Contract) -> pl.DataFrame:
    """A raw file as string columns plus ``__source`` (the row as it arrived) and ``__line``.

    JSON lines keep their exact text; CSV and Parquet rows are rendered as JSON objects.
    """
    if not path.exists():
        return _empty(contract)
    if path.suffix == ".jsonl":
        data = path.read_bytes()
        lines = _read_lines(data)
        if lines.is_empty():
            return _empty(contract)
        return _parse_json_lines(data, lines, contract)
    if path.suffix == ".csv":
        frame = pl.read_csv(path, infer_schema=False)
        first_line = 2  # after the header
    else:
        frame = pl.read_parquet(path).with_columns(pl.all().cast(pl.String))
        first_line = 1
    source_columns = frame.columns
    for name in contract.names:
        if name not in frame.columns:
            frame = frame.with_columns(pl.lit(None, pl.String).alias(name))
    return frame.with_columns(
        pl.struct(source_columns).struct.json_encode().alias(SOURCE),
        (pl.int_range(pl.len(), dtype=pl.Int64) + first_line).alias(LINE),
    )


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


def parse_size_chart(items: pl.DataFrame) -> tuple[pl.DataFrame, pl.Series]:
    """Explode ``size_chart`` and ``stock`` JSON into one row per (item, size).

    Items without a chart (real catalogues often have none) get no rows and no reason;
    a chart that does not parse or makes no sense gets ``bad_size_chart``.
    """
    rows: list[dict] = []
    reasons: list[str | None] = []
    for item_id, chart_text, stock_text in items.select("item_id", "size_chart", "stock").rows():
        if chart_text is None:
            reasons.append(None)
            continue
        try:
            chart = json.loads(chart_text)
            stock = json.loads(stock_text) if stock_text else {}
            if not isinstance(chart, dict) or not chart or not isinstance(stock, dict):
                raise ValueError
            sizes = []
            for rank, (size, ranges) in enumerate(chart.items()):
                row = {"item_id": item_id, "size": str(size), "size_rank": rank}
                for m in CHART_MEASURES:
                    low, high = (float(v) for v in ranges[m])
                    if not 0 < low < high < 300:
                        raise ValueError
                    row[f"{m}_min"], row[f"{m}_max"] = low, high
                units = stock.get(size)
                if units is not None and int(units) < 0:
                    raise ValueError
                row["stock"] = None if units is None else int(units)
                sizes.append(row)
            rows.extend(sizes)
            reasons.append(None)
        except (ValueError, TypeError, KeyError, AttributeError, json.JSONDecodeError):
            reasons.append("bad_size_chart")
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
    event log); byte-identical output for the same inputs."""
    extra = extra or {}
    report = IngestReport(day=day.isoformat(), fingerprint=drop_fingerprint(drop, extra))
    key = settings.pseudonym_key.get_secret_value()
    cutoff = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1) + FUTURE_GRACE
    curated_here: dict[str, pl.DataFrame] = {}
    references: dict[str, pl.DataFrame] = {}
    for table, filename in RAW_FILES.items():
        paths = [drop / filename, *extra.get(table, [])]
        good, bad, table_report = _ingest_table(
            paths, table, day, settings, key, cutoff, curated_here, references
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
    path = report_path(settings.curated_dir, day)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report.as_dict(), indent=2, sort_keys=True))
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
    extra = serving_logs(settings.events_dir, day)
    previous = previous_report(settings.curated_dir, day)
    if previous and previous.get("fingerprint") == drop_fingerprint(drop, extra):
        return previous, True
    return ingest_drop(drop, day, settings, extra).as_dict(), False


def _ingest_table(
    paths: list[Path],
    table: str,
    day: date,
    settings: Settings,
    key: str,
    cutoff: datetime,
    curated_here: dict[str, pl.DataFrame],
    references: dict[str, pl.DataFrame],
) -> tuple[pl.DataFrame, pl.DataFrame, TableReport]:
    contract = CONTRACTS[table]
    raw = pl.concat(
        [
            served_pseudonyms(
                read_raw(path, contract).with_columns(
                    pl.lit(f"{path.parent.name}/{path.name}").alias(FILE)
                ),
                path,
                settings,
            )
            for path in paths
        ],
        how="diagonal_relaxed",
    )
    if "__bad_json" in raw.columns:
        raw = raw.with_columns(pl.col("__bad_json").fill_null(False))
    rows_in = raw.height
    # Exact duplicates (the same row sent twice) are dropped and counted, not quarantined.
    raw = raw.filter(pl.col(SOURCE).is_first_distinct())
    exact_duplicates = rows_in - raw.height

    kept = [SOURCE, LINE, FILE, *([SERVED] if SERVED in raw.columns else [])]
    frame = pl.concat([conform(raw, contract), raw.select(kept)], how="horizontal")
    checks: list[tuple[pl.Expr | pl.Series, str]] = []
    if "__bad_json" in raw.columns:
        frame = frame.with_columns(raw.get_column("__bad_json"))
        checks.append((pl.col("__bad_json"), "bad_json"))
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
        frame = frame.with_columns(chart_reason.is_not_null().alias("__bad_chart"))
        checks.append((pl.col("__bad_chart"), "bad_size_chart"))
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
    # Key duplicates with different content: a valid row whose key an earlier valid row of
    # this drop already has.
    valid = pl.col("reason").is_null()
    first = pl.struct(*contract.key, valid).is_first_distinct()
    frame = add_reasons(frame, [(valid & ~first, "duplicate_key")])

    good = frame.filter(pl.col("reason").is_null()).select(contract.names)
    bad = _quarantine_rows(frame.filter(pl.col("reason").is_not_null()), day)
    report = TableReport(
        raw=rows_in,
        curated=good.height,
        quarantined=bad.height,
        exact_duplicates=exact_duplicates,
        erased=erased,
    )
    report.reasons = dict(
        sorted(bad.get_column("reason").str.split(";").explode().value_counts().iter_rows())
    )
    if table == "customers":
        good, report.redacted_body = redact_without_consent(good)
    report.null_rates, report.ranges = _quality(good, contract)
    if sizes is not None:
        sizes = sizes.filter(pl.col("item_id").is_in(good.get_column("item_id").implode()))
        _write_atomic(sizes, partition(settings.curated_dir, "item_sizes", day))
    _write_atomic(good, partition(settings.curated_dir, table, day))
    _write_atomic(bad, partition(settings.quarantine_dir, table, day))
    return good, bad, report


def _quarantine_rows(bad: pl.DataFrame, day: date) -> pl.DataFrame:
    """Rejected rows as they arrived, with where they came from and every reason.

    The one change to the original text: a customer id is replaced by its pseudonym, and
    body values of customers who did not consent are removed.
    """
    source = bad.get_column(SOURCE).to_list()
    if "__raw_customer" in bad.columns:
        raw_ids = bad.get_column("__raw_customer").to_list()
        pseudonyms = bad.get_column("customer_id").to_list()
        source = [
            text.replace(json.dumps(raw)[1:-1], pseudo) if raw and pseudo else text
            for text, raw, pseudo in zip(source, raw_ids, pseudonyms, strict=True)
        ]
    if "body_data_consent" in bad.columns:
        consent = bad.get_column("body_data_consent").to_list()
        source = [
            text if agreed else without_body(text)
            for text, agreed in zip(source, consent, strict=True)
        ]
    return pl.DataFrame(
        {
            "source_file": bad.get_column(FILE),
            "line": bad.get_column(LINE),
            "reason": bad.get_column("reason"),
            "raw": pl.Series(source, dtype=pl.String),
            "day": day.isoformat(),
        },
        schema={
            "source_file": pl.String,
            "line": pl.Int64,
            "reason": pl.String,
            "raw": pl.String,
            "day": pl.String,
        },
    )
