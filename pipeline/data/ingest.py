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

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path

import polars as pl

from pipeline.config import Settings
from pipeline.data.contracts import CONTRACTS
from pipeline.data.curated import (
    LOG_PREFIXES,
    partition,
    previous_report,
    report_path,
    serving_logs,
)
from pipeline.data.quarantine import quarantine_rows
from pipeline.data.rawfiles import read_raw
from pipeline.data.sources import read_sources
from pipeline.data.staging import DayWriter, recover
from pipeline.data.validate import Known, TableReport, quality, validate_table
from pipeline.privacy import redact_without_consent

__all__ = [
    "LOG_ONLY",
    "RAW_FILES",
    "TABLES",
    "IngestReport",
    "TableReport",
    "drop_fingerprint",
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


def ingest_drop(
    drop: Path, day: date, settings: Settings, extra: dict[str, list[Path]] | None = None
) -> IngestReport:
    """Ingest one day's raw drop folder, plus ``extra`` source files per table (serving's
    event log); byte-identical output for the same inputs, written all at once."""
    recover(settings.data_dir)
    extra = extra or {}
    report = IngestReport(day=day.isoformat(), fingerprint=drop_fingerprint(drop, extra))
    known = Known(settings.curated_dir, day)
    writer = DayWriter(settings.data_dir, f"ingest-{day.isoformat()}")
    try:
        for table in TABLES:
            dropped = [drop / RAW_FILES[table]] if table in RAW_FILES else []
            paths = [*dropped, *extra.get(table, [])]
            good, table_report = _ingest_table(paths, table, day, settings, known, writer)
            known.add(table, good)
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


def _ingest_table(
    paths: list[Path], table: str, day: date, settings: Settings, known: Known, writer: DayWriter
) -> tuple[pl.DataFrame, TableReport]:
    """Read, validate and stage one table of the day; every table goes the same way, what
    differs is declared on its contract."""
    contract = CONTRACTS[table]
    sources = read_sources(paths, contract, settings)
    report = TableReport(
        missing_files=sources.missing_files, quarantined_files=sources.quarantined_files
    )
    rows_in = sources.rows.height
    checked = validate_table(sources.rows, contract, day, settings, known)
    del sources
    frame, key = checked.frame, settings.pseudonym_key.get_secret_value()
    valid = pl.col("reason").is_null()
    good = frame.filter(valid).select(contract.names)
    bad = quarantine_rows(frame.filter(~valid), day, contract, key, paths)
    del frame, checked.frame
    report.raw, report.curated, report.quarantined = rows_in, good.height, bad.height
    report.exact_duplicates, report.erased = checked.exact_duplicates, checked.erased
    counted = good.height + bad.height + checked.exact_duplicates + checked.erased
    report.reconciled = rows_in == counted
    report.reasons = dict(
        sorted(bad.get_column("reason").str.split(";").explode().value_counts().iter_rows())
    )
    if contract.sensitive:
        good, report.redacted_body = redact_without_consent(good, contract.sensitive)
    report.null_rates, report.ranges = quality(good, contract)
    if contract.derived is not None and checked.derived is not None:
        derived = checked.derived.filter(
            pl.col(contract.key[0]).is_in(good.get_column(contract.key[0]).implode())
        )
        writer.parquet(derived, partition(settings.curated_dir, contract.derived.table, day))
    writer.parquet(good, partition(settings.curated_dir, table, day))
    writer.parquet(bad, partition(settings.quarantine_dir, table, day))
    return good, report
