"""The files one raw table of a day is read from: the drop's file and serving's event log.

Every file becomes rows or reasons (:func:`pipeline.data.rawfiles.read_raw`); rows of serving's
log keep the pseudonym serving logged (:data:`SERVED`), re-keyed during a key rotation.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from pipeline.config import Settings
from pipeline.data.contracts import Contract
from pipeline.data.rawfiles import FILE, LINE, PRE, SOURCE, empty_rows, read_raw
from pipeline.privacy import key_id, translation

__all__ = ["SERVED", "Sources", "raw_customer_ids", "read_sources", "served_pseudonyms"]

log = logging.getLogger(__name__)

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


@dataclass
class Sources:
    """The rows of a table's files, and which files were missing or gave no rows."""

    rows: pl.DataFrame
    missing_files: list[str] = field(default_factory=list)
    quarantined_files: dict[str, str] = field(default_factory=dict)


def read_sources(paths: list[Path], contract: Contract, settings: Settings) -> Sources:
    """Every file of one table, one after the other (``__file`` names the file of a row)."""
    frames = []
    sources = Sources(rows=empty_rows(contract))
    for path in paths:
        name = f"{path.parent.name}/{path.name}"
        if not path.is_file():
            log.warning("ingest: feed file %s is missing", name)
            sources.missing_files.append(name)
            continue
        frame = read_raw(path, contract)
        if frame.height == 1 and frame.get_column(LINE).null_count() == 1:
            reason = frame.get_column(PRE).item()
            log.warning("ingest: feed file %s is unreadable (%s), quarantined", name, reason)
            sources.quarantined_files[name] = reason
        frames.append(
            served_pseudonyms(frame.with_columns(pl.lit(name).alias(FILE)), path, settings)
        )
    if not frames:
        sources.rows = sources.rows.with_columns(pl.lit(None, pl.String).alias(FILE))
    elif len(frames) == 1:
        sources.rows = frames[0]
    else:
        sources.rows = pl.concat(frames, how="diagonal_relaxed")
    return sources
