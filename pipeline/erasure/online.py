"""Erasure in Feast's online store (SQLite or Redis) and serving's session state."""

from __future__ import annotations

import sqlite3
from typing import Any

import orjson
import polars as pl

from pipeline.config import Settings
from pipeline.erasure.files import line_names
from pipeline.erasure.record import CUSTOMER, SESSION_PREFIX, AuditRecord, body_feature_names
from pipeline.traces import Who

# --- online store ------------------------------------------------------------------------------


def _entity_key(join_key: str, value: str) -> bytes:
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    key = EntityKey(join_keys=[join_key], entity_values=[Value(string_val=value)])
    return serialize_entity_key(key, entity_key_serialization_version=3)


def session_ids(settings: Settings, who: Who) -> set[str]:
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
            if line_names(line, who):
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
