"""Erasure in the files: raw drops, curated and feature tables, the quarantine, serving's
event log and training outputs."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import orjson
import polars as pl

from pipeline import traces
from pipeline.config import Settings
from pipeline.data.contracts import CUSTOMERS
from pipeline.erasure.record import CUSTOMER, AuditRecord, body_feature_names, write_parquet_atomic
from pipeline.privacy import SEALED_PREFIX, seal, unseal, without_body
from pipeline.traces import Who

log = logging.getLogger(__name__)

# --- raw drops ------------------------------------------------------------------------------


def jsonl_without(path: Path, who: Who) -> int:
    """Rewrite a JSON-lines file without the lines of these customers (in place, so that a
    process appending to it, serving's event log, keeps appending to the same file)."""
    with path.open("r+b") as handle:
        data = handle.read()
        kept, removed = [], 0
        for line in data.splitlines(keepends=True):
            if line_names(line, who):
                removed += 1
            else:
                kept.append(line)
        if removed:
            handle.seek(0)
            handle.write(b"".join(kept))
            handle.truncate()
            handle.flush()
            os.fsync(handle.fileno())
    return removed


def line_names(line: bytes, who: Who) -> bool:
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        record = None
    if isinstance(record, dict):
        values = {record.get(CUSTOMER), record.get("customer_pseudonym")}
        if values & (who.raw_ids | who.pseudonyms):
            return True
    # Unparseable (or oddly shaped): any mention is enough.
    return who.in_text(line.decode("utf-8", "replace"))


def _frame_without(frame: pl.DataFrame, who: Who) -> tuple[pl.DataFrame, int]:
    if CUSTOMER not in frame.columns:
        return frame, 0
    hit = pl.col(CUSTOMER).cast(pl.String).is_in(who.all_ids()).fill_null(False)
    kept = frame.filter(~hit)
    return kept, frame.height - kept.height


def _body_nulled(frame: pl.DataFrame, who: Who, columns: list[str]) -> tuple[pl.DataFrame, int]:
    present = [c for c in columns if c in frame.columns]
    if CUSTOMER not in frame.columns or not present:
        return frame, 0
    hit = pl.col(CUSTOMER).cast(pl.String).is_in(who.all_ids()).fill_null(False)
    n = int(frame.select(hit.sum()).item())
    if not n:
        return frame, 0
    updates = [
        pl.when(hit).then(None).otherwise(pl.col(c)).alias(c) for c in present if c != "has_body"
    ]
    if "body_data_consent" in frame.columns:
        updates.append(
            pl.when(hit)
            .then(False)
            .otherwise(pl.col("body_data_consent"))
            .alias("body_data_consent")
        )
    if "has_body" in frame.columns:
        updates.append(pl.when(hit).then(0.0).otherwise(pl.col("has_body")).alias("has_body"))
    return frame.with_columns(updates), n


def _rewrite_table(path: Path, who: Who, body_only: bool, body: list[str]) -> int:
    if path.suffix == ".csv":
        frame = pl.read_csv(path, infer_schema=False)
    else:
        frame = pl.read_parquet(path)
    out, n = _body_nulled(frame, who, body) if body_only else _frame_without(frame, who)
    if n:
        if path.suffix == ".csv":
            tmp = path.with_name(f".{path.name}.tmp")
            out.write_csv(tmp)
            os.replace(tmp, path)
        else:
            write_parquet_atomic(out, path)
    return n


def erase_raw(settings: Settings, who: Who, body_only: bool, record: AuditRecord) -> None:
    """Raw drops: every file of every day folder, rewritten without the customer's rows
    (a changed drop is ingested again by the next run, so its report follows)."""
    for path in sorted(settings.raw_dir.glob("*/*")) if settings.raw_dir.exists() else []:
        if not path.is_file():
            continue
        try:
            if path.suffix == ".jsonl":
                n = 0 if body_only else jsonl_without(path, who)
            elif path.suffix in (".parquet", ".csv"):
                n = _rewrite_table(path, who, body_only, CUSTOMERS.sensitive)
            else:
                continue
        except (pl.exceptions.PolarsError, OSError) as exc:  # an unreadable file: say so
            log.warning("erasure: could not rewrite raw file %s: %s", path.name, exc)
            record.add("raw_unreadable_files", 1)
            continue
        record.add("raw", n)
        record.files_rewritten += bool(n)


def erase_tables(
    root: Path, store: str, who: Who, body_only: bool, body: list[str], record: AuditRecord
) -> None:
    """Curated tables or feature snapshots: every Parquet file under ``root``."""
    for path in sorted(root.rglob("*.parquet")) if root.exists() else []:
        n = _rewrite_table(path, who, body_only, body)
        record.add(store, n)
        record.files_rewritten += bool(n)


def erase_quarantine(settings: Settings, who: Who, body_only: bool, record: AuditRecord) -> None:
    """Quarantined rows name the customer by pseudonym (in a pseudonym column or in the kept
    text) or, for lines that could not be parsed, inside sealed text: unsealed to look. Every
    text column is looked at (the kept line, a sealed column, whatever ingest adds)."""
    root = settings.quarantine_dir
    for path in sorted(root.rglob("*.parquet")) if root.exists() else []:
        frame = pl.read_parquet(path)
        texts = {
            c: frame.get_column(c).to_list() for c, t in frame.schema.items() if t == pl.String
        }
        names = [False] * frame.height
        for values in texts.values():
            names = [n or _text_names(v, who) for n, v in zip(names, values, strict=True)]
        for column in ("customer_pseudonym", CUSTOMER):
            if column in frame.columns:
                ids = frame.get_column(column).cast(pl.String).to_list()
                names = [n or (v in who.pseudonyms) for n, v in zip(names, ids, strict=True)]
        n = sum(names)
        if not n:
            continue
        if body_only:
            out = frame.with_columns(
                pl.Series(
                    column,
                    [
                        _strip_body(v, who) if hit and v is not None else v
                        for v, hit in zip(values, names, strict=True)
                    ],
                    pl.String,
                )
                for column, values in texts.items()
            )
        else:
            out = frame.filter(~pl.Series(names, dtype=pl.Boolean))
        write_parquet_atomic(out, path)
        record.add("quarantine", n)
        record.files_rewritten += 1


def _text_names(text: str | None, who: Who) -> bool:
    if text is None:
        return False
    if text.startswith(SEALED_PREFIX):
        try:
            return who.in_text(unseal(text, who.keys))
        except ValueError:
            return False
    return who.in_text(text)


def _strip_body(text: str, who: Who) -> str:
    if text.startswith(SEALED_PREFIX):
        try:
            return seal(without_body(unseal(text, who.keys), CUSTOMERS.sensitive), who.keys[0])
        except ValueError:  # sealed under a key no longer held: nobody can read it anyway
            return text
    return without_body(text, CUSTOMERS.sensitive)


def erase_event_log(settings: Settings, who: Who, body_only: bool, record: AuditRecord) -> None:
    """Serving's event log (pseudonyms since the edge pseudonymises; raw ids in logs written
    by older versions), rewritten in place."""
    root = settings.events_dir
    if body_only or not root.exists():
        return
    for path in sorted(root.glob("*/*.jsonl")):
        n = jsonl_without(path, who)
        record.add("event_log", n)
        record.files_rewritten += bool(n)


def erase_training(settings: Settings, who: Who, body_only: bool, record: AuditRecord) -> None:
    """Training outputs (``training/<day>/``): test Parquet files lose the rows; any other
    file that names the customer (a bundle's vocabulary, a report) is deleted, a bundle as a
    whole (it is in MLflow; :func:`purge_models` handles the registered copies)."""
    root = settings.data_dir / "training"
    if not root.exists():
        return
    for path in sorted(root.rglob("*.parquet")):
        n = _rewrite_table(path, who, body_only, body_feature_names())
        record.add("training", n)
        record.files_rewritten += bool(n)
    if body_only:
        return
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if path.exists() and traces.file_names(path, who):
            bundle = next((p for p in path.parents if p.name == "bundle"), None)
            target = bundle if bundle is not None and root in bundle.parents else path
            if target.is_dir():
                shutil.rmtree(target)
            else:
                target.unlink()
            record.add("training_files_deleted", 1)
