"""Erasure (GDPR Art. 17) and consent withdrawal: forget one customer in every store.

A customer is spread, in data-flow order, over::

    raw drops ─► curated tables ─► features ─► online store ─► model (vocabulary, embeddings)
        │           quarantine         │        session keys        training outputs
        └─ serving's event log ────────┘

:func:`erase_customers` rewrites each of them without the customer's rows (consent
withdrawal, ``body_only``: only the body data, as ingest treats a customer without consent),
adds the customer's pseudonyms to the tombstone list that ingest consults
(:func:`pipeline.data.tombstones.erased_pseudonyms`: a re-sent row is dropped and counted as
``erased``), and writes an audit record with counts only. Model versions are handled by
:func:`purge_models`: the champion keeps the pseudonym in its vocabulary until a model
trained after the erasure is promoted (the next nightly retrain); every other registered
version that holds a tombstoned pseudonym is deleted with its artifacts. :func:`find_traces`
searches the whole data dir (Parquet contents, SQLite, Redis, NumPy's UTF-32 text included)
for what should be gone.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from pipeline import traces
from pipeline.config import Settings
from pipeline.data.contracts import CUSTOMERS
from pipeline.data.tombstones import add_tombstones, tombstone_path, write_atomic
from pipeline.erasure.files import (
    erase_event_log,
    erase_quarantine,
    erase_raw,
    erase_tables,
    erase_training,
    jsonl_without,
)
from pipeline.erasure.models import purge_models
from pipeline.erasure.online import erase_online, session_ids
from pipeline.erasure.record import (
    BODY_FEATURE_SUFFIX,
    BODY_FEATURES,
    CUSTOMER,
    SESSION_PREFIX,
    AuditRecord,
    body_feature_names,
)
from pipeline.traces import Who

__all__ = [
    "BODY_FEATURES",
    "BODY_FEATURE_SUFFIX",
    "CUSTOMER",
    "SESSION_PREFIX",
    "AuditRecord",
    "Who",
    "audit_records",
    "body_feature_names",
    "erase_customers",
    "erase_event_log",
    "erase_online",
    "erase_quarantine",
    "erase_raw",
    "erase_tables",
    "erase_training",
    "find_traces",
    "jsonl_without",
    "purge_models",
    "read_ids",
    "write_audit",
]

log = logging.getLogger(__name__)


# --- finding traces ----------------------------------------------------------------------------


def find_traces(
    settings: Settings, customer_ids: Iterable[str], pseudonyms: Iterable[str] = ()
) -> list[str]:
    """:func:`pipeline.traces.find_traces`, the tombstone list aside (it holds pseudonyms by
    design)."""
    return traces.find_traces(settings, customer_ids, pseudonyms, ignore=[tombstone_path(settings)])


# --- the erasure ------------------------------------------------------------------------------


def erase_customers(
    settings: Settings,
    customer_ids: Iterable[str],
    *,
    body_only: bool = False,
    purge: bool = True,
    now: datetime | None = None,
) -> AuditRecord:
    """Erase these customers everywhere (or, ``body_only``, withdraw their consent to body
    data), tombstone their pseudonyms, delete superseded model versions that hold them, and
    write the audit record (``privacy/audit/<erasure id>.json``, counts only)."""
    who = Who.of(customer_ids, settings)
    at = (now or datetime.now(UTC)).astimezone(UTC)
    record = AuditRecord(
        erasure_id=f"{at.strftime('%Y%m%dT%H%M%SZ')}-{uuid.uuid4().hex[:8]}",
        at=at.isoformat(timespec="seconds"),
        kind="withdraw_consent" if body_only else "erase",
        customers=len(who.raw_ids),
    )
    if not who.raw_ids:
        return record
    if not body_only:
        # First, so that an ingest running meanwhile already drops re-sent rows.
        add_tombstones(settings, who.pseudonyms)
    sessions = set() if body_only else session_ids(settings, who)
    erase_raw(settings, who, body_only, record)
    erase_tables(settings.curated_dir, "curated", who, body_only, CUSTOMERS.sensitive, record)
    erase_quarantine(settings, who, body_only, record)
    erase_tables(settings.features_dir, "features", who, body_only, body_feature_names(), record)
    erase_online(settings, who, sessions, body_only, record)
    erase_event_log(settings, who, body_only, record)
    erase_training(settings, who, body_only, record)
    if purge and not body_only:
        models = purge_models(settings, who.pseudonyms)
        record.model_versions_deleted = models["deleted"]
        record.champion_holds_until_retrain = models["champion_holds"]
    if not body_only:
        record.leftovers = sum(
            int(hit.rsplit(": ", 1)[1])
            for hit in find_traces(settings, who.raw_ids)
            if not _in_model_store(hit, settings)
        )
    write_audit(settings, record)
    log.info(
        "erasure %s: %d customers, rows %s, leftovers %d",
        record.erasure_id,
        record.customers,
        record.rows,
        record.leftovers,
    )
    return record


def _in_model_store(hit: str, settings: Settings) -> bool:
    """The champion's artifacts (kept until the next retrain is promoted) and the tracking
    database are the model store's: counted by :func:`purge_models`, not as leftovers."""
    return hit.startswith(("mlartifacts/", "mlflow.db"))


def write_audit(settings: Settings, record: AuditRecord) -> Path:
    folder = settings.privacy_dir / "audit"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{record.erasure_id}.json"
    write_atomic(path, json.dumps(asdict(record), indent=2, sort_keys=True).encode())
    return path


def audit_records(settings: Settings) -> Iterator[dict]:
    for path in sorted((settings.privacy_dir / "audit").glob("*.json")):
        yield json.loads(path.read_text())


def read_ids(path: Path) -> list[str]:
    """Customer ids from a file, one a line (blank lines and ``#`` comments ignored)."""
    return [
        line.strip()
        for line in path.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
