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
import os
import shutil
import sqlite3
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import polars as pl

from pipeline import traces
from pipeline.config import Settings
from pipeline.data.contracts import CUSTOMERS
from pipeline.data.tombstones import (
    add_tombstones,
    erased_pseudonyms,
    tombstone_path,
    write_atomic,
)
from pipeline.privacy import SEALED_PREFIX, seal, unseal, without_body
from pipeline.traces import Who

log = logging.getLogger(__name__)

CUSTOMER = "customer_id"
SESSION_PREFIX = "fitrec:session:"
# Customer features derived from body measurements (what consent withdrawal removes).
BODY_FEATURES = ("has_body", "shape_bust_hips", "shape_waist_hips")
BODY_FEATURE_SUFFIX = "_z"


def body_feature_names() -> list[str]:
    from pipeline.features.declarations import CUSTOMER_FEATURES

    return [
        f.name
        for f in CUSTOMER_FEATURES
        if f.name in BODY_FEATURES or f.name.endswith(BODY_FEATURE_SUFFIX)
    ]


# --- helpers ----------------------------------------------------------------------------------


def _write_parquet(frame: pl.DataFrame, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    frame.write_parquet(tmp)
    os.replace(tmp, path)


@dataclass
class AuditRecord:
    """What one erasure did, without personal data: no raw id, no pseudonym (a salted hash
    would still link two records of one person), only counts per store."""

    erasure_id: str
    at: str
    kind: str  # "erase" or "withdraw_consent"
    customers: int
    rows: dict[str, int] = field(default_factory=dict)
    files_rewritten: int = 0
    model_versions_deleted: list[str] = field(default_factory=list)
    champion_holds_until_retrain: bool = False
    leftovers: int = 0

    def add(self, store: str, n: int) -> None:
        self.rows[store] = self.rows.get(store, 0) + n


# --- raw drops ------------------------------------------------------------------------------


def _jsonl_without(path: Path, who: Who) -> int:
    """Rewrite a JSON-lines file without the lines of these customers (in place, so that a
    process appending to it, serving's event log, keeps appending to the same file)."""
    with path.open("r+b") as handle:
        data = handle.read()
        kept, removed = [], 0
        for line in data.splitlines(keepends=True):
            if _line_names(line, who):
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


def _line_names(line: bytes, who: Who) -> bool:
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
            _write_parquet(out, path)
    return n


def erase_raw(settings: Settings, who: Who, body_only: bool, record: AuditRecord) -> None:
    """Raw drops: every file of every day folder, rewritten without the customer's rows
    (a changed drop is ingested again by the next run, so its report follows)."""
    for path in sorted(settings.raw_dir.glob("*/*")) if settings.raw_dir.exists() else []:
        if not path.is_file():
            continue
        try:
            if path.suffix == ".jsonl":
                n = 0 if body_only else _jsonl_without(path, who)
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
        _write_parquet(out, path)
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
        n = _jsonl_without(path, who)
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


# --- online store ------------------------------------------------------------------------------


def _entity_key(join_key: str, value: str) -> bytes:
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    key = EntityKey(join_keys=[join_key], entity_values=[Value(string_val=value)])
    return serialize_entity_key(key, entity_key_serialization_version=3)


def _session_ids(settings: Settings, who: Who) -> set[str]:
    """Sessions of the customer (curated events and serving's log), read before erasing."""
    from pipeline.data.curated import scan_curated

    sessions = set(
        scan_curated(settings.curated_dir, "session_events")
        .filter(pl.col(CUSTOMER).is_in(list(who.pseudonyms)))
        .select("session_id")
        .unique()
        .collect()
        .get_column("session_id")
        .to_list()
    )
    for path in settings.events_dir.glob("*/*.jsonl") if settings.events_dir.exists() else []:
        for line in path.read_bytes().splitlines():
            if _line_names(line, who):
                try:
                    session = orjson.loads(line)["session_id"]
                except (orjson.JSONDecodeError, KeyError, TypeError):
                    continue
                if session is not None:  # an exposure or a return may have no session
                    sessions.add(str(session))
    return sessions


def erase_online(
    settings: Settings, who: Who, sessions: set[str], body_only: bool, record: AuditRecord
) -> None:
    """Feast's online store (SQLite or Redis): the customer's entity rows (body features
    only, for a consent withdrawal) and the customer's sessions (Feast rows and serving's
    session state keys)."""
    from pipeline.features.declarations import CUSTOMER_VIEW, SESSION_VIEW

    project = "fitrec"
    customer_keys = [_entity_key(CUSTOMER, p) for p in who.pseudonyms]
    session_keys = [] if body_only else [_entity_key("session_id", s) for s in sessions]
    body = body_feature_names()
    if settings.redis_url:
        from feast.infra.online_stores.helpers import _mmh3

        from pipeline.redis_url import RedisTarget

        client: Any = RedisTarget.parse(settings.redis_url).client()
        try:
            for key in customer_keys:
                name = key + project.encode()
                if body_only:
                    fields = [_mmh3(f"{CUSTOMER_VIEW}:{f}") for f in body]
                    record.add("online_store", int(bool(client.hdel(name, *fields))))
                else:
                    record.add("online_store", int(client.delete(name)))
            for key in session_keys:
                record.add("online_store_sessions", int(client.delete(key + project.encode())))
            if not body_only:
                for session in sessions:
                    record.add("session_keys", int(client.delete(SESSION_PREFIX + session)))
                # Session states hold the customer's pseudonym: any other one that names them.
                for name in client.scan_iter(match=f"{SESSION_PREFIX}*", count=1000):
                    value = client.get(name)
                    if isinstance(value, bytes) and who.in_text(value.decode("utf-8", "replace")):
                        record.add("session_keys", int(client.delete(name)))
        finally:
            client.close()
        return
    db = settings.feast_dir / "online_store.db"
    if not db.exists():
        return
    with sqlite3.connect(db) as connection:
        tables = [
            r[0]
            for r in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")
            if r[0].startswith(f"{project}_")
        ]
        for table in tables:
            quoted = '"' + table.replace('"', '""') + '"'
            if table.endswith(CUSTOMER_VIEW):
                for key in customer_keys:
                    sql = f"DELETE FROM {quoted} WHERE entity_key = ?"  # noqa: S608 - table name
                    args: list[Any] = [key]
                    if body_only:
                        sql += f" AND feature_name IN ({','.join('?' * len(body))})"
                        args += body
                    record.add("online_store", connection.execute(sql, args).rowcount)
            if table.endswith(SESSION_VIEW):
                for key in session_keys:
                    sql = f"DELETE FROM {quoted} WHERE entity_key = ?"  # noqa: S608 - table name
                    record.add("online_store_sessions", connection.execute(sql, [key]).rowcount)
        connection.commit()


# --- models ------------------------------------------------------------------------------------


def purge_models(settings: Settings, pseudonyms: Iterable[str] | None = None) -> dict[str, Any]:
    """Registered model versions whose artifacts hold an erased pseudonym (vocabulary,
    embeddings): every one but the champion is deleted with its run's artifacts; the
    champion is kept until a model trained after the erasure replaces it (the next nightly
    retrain, then this runs again). Returns the versions deleted and whether the champion
    still holds one."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from pipeline.registry import tracking as registry

    needles = frozenset(pseudonyms if pseudonyms is not None else erased_pseudonyms(settings))
    result: dict[str, Any] = {"deleted": [], "champion_holds": False}
    local_db = settings.tracking_uri.removeprefix("sqlite:///")
    if not needles or (
        settings.tracking_uri.startswith("sqlite:///") and not Path(local_db).exists()
    ):
        return result  # nobody erased, or no registry yet (not created just to look)
    client: MlflowClient = registry.configure(settings)
    try:
        versions = client.search_model_versions(f"name='{settings.model_name}'")
    except MlflowException:
        return result
    champion = registry.champion_version(client, settings.model_name)
    who = Who(frozenset(), needles, settings.pseudonym_keys)
    for version in sorted(versions, key=lambda v: int(v.version)):
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(registry.download_bundle(settings, str(version.version), Path(tmp)))
            holds = any(traces.file_names(p, who) for p in local.parent.rglob("*") if p.is_file())
        if not holds:
            continue
        if str(version.version) == champion:
            result["champion_holds"] = True
            continue
        _delete_artifacts(client, version)
        client.delete_model_version(settings.model_name, str(version.version))
        result["deleted"].append(str(version.version))
    return result


def _delete_artifacts(client: Any, version: Any) -> None:
    """Remove a version's files where the artifact store is a local folder (elsewhere the
    run is deleted and ``mlflow gc`` removes its artifacts)."""
    from urllib.parse import urlparse

    uris = [version.source or ""]
    if version.run_id:
        uris.append(client.get_run(version.run_id).info.artifact_uri or "")
    for uri in uris:
        parsed = urlparse(uri)
        if parsed.scheme in ("file", "") and parsed.path and Path(parsed.path).exists():
            shutil.rmtree(parsed.path, ignore_errors=True)
    # MLflow 3: the version's source is its logged model, ``models:/m-...``.
    model_id = getattr(version, "model_id", None)
    source = version.source or ""
    if not model_id and source.startswith("models:/m-"):
        model_id = source.removeprefix("models:/").split("/")[0]
    if model_id:
        try:
            model = client.get_logged_model(model_id)
            parsed = urlparse(model.artifact_location)
            if parsed.scheme in ("file", "") and Path(parsed.path).exists():
                shutil.rmtree(parsed.path, ignore_errors=True)
            client.delete_logged_model(model_id)
        except Exception as exc:  # noqa: BLE001 - older MLflow (no logged models): say so
            log.warning("erasure: logged model of version %s not deleted: %s", version.version, exc)
    if version.run_id:
        client.delete_run(version.run_id)


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
    sessions = set() if body_only else _session_ids(settings, who)
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
