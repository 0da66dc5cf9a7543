"""Where a customer still appears: their raw id (as a JSON string) or any of their
pseudonyms, in files under the data dir (Parquet and SQLite by content, other files by bytes,
UTF-8 and NumPy's UTF-32) and in Redis keys and values. Erasure uses it to check its work
and to find the model versions that still hold someone (:mod:`pipeline.erasure`)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from pipeline.config import Settings
from pipeline.privacy import pseudonymise


@dataclass
class Who:
    """Whom to erase: raw ids (only in memory, never written) and their pseudonyms under
    every key in use (current and being rotated out)."""

    raw_ids: frozenset[str]
    pseudonyms: frozenset[str]
    keys: list[str]

    @classmethod
    def of(cls, customer_ids: Iterable[str], settings: Settings) -> Who:
        ids = frozenset(i.strip() for i in customer_ids if i.strip())
        keys = settings.pseudonym_keys
        return cls(ids, frozenset(pseudonymise(i, k) for i in ids for k in keys), keys)

    def all_ids(self) -> list[str]:
        return [*self.raw_ids, *self.pseudonyms]

    def in_text(self, text: str) -> bool:
        """The text names one of them: a pseudonym anywhere, a raw id as a JSON string."""
        return any(p in text for p in self.pseudonyms) or any(
            json.dumps(i) in text for i in self.raw_ids
        )


def encodings(needle: str) -> list[bytes]:
    # NumPy's str arrays (the fast path's vocabularies, .npz) are UTF-32.
    return [needle.encode(), needle.encode("utf-32-le")]


def file_names(path: Path, who: Who) -> bool:
    needles = [
        e for n in [*who.pseudonyms, *(json.dumps(i) for i in who.raw_ids)] for e in encodings(n)
    ]
    return bool(hits_in_file(path, needles, [*who.raw_ids, *who.pseudonyms]))


def hits_in_file(path: Path, needles: list[bytes], values: list[str]) -> int:
    if path.suffix == ".parquet":
        try:
            frame = pl.read_parquet(path)
        except Exception:  # noqa: BLE001 - not Parquet after all: bytes
            frame = None
        if frame is not None:
            hits = 0
            for column, dtype in frame.schema.items():
                series = frame.get_column(column)
                if dtype.is_nested() or dtype in (pl.Object, pl.Binary):
                    texts = [json.dumps(v, default=str) for v in series.to_list()]
                    series = pl.Series(texts, dtype=pl.String)
                else:
                    series = series.cast(pl.String, strict=False)
                hits += int(series.drop_nulls().str.contains_any(values).sum())
            return hits
    if path.suffix in (".db", ".sqlite") and path.stat().st_size:
        try:
            return hits_in_sqlite(path, needles)
        except sqlite3.DatabaseError:
            pass
    data = path.read_bytes()
    return sum(data.count(n) for n in needles)


def hits_in_sqlite(path: Path, needles: list[bytes]) -> int:
    hits = 0
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as connection:
        tables = [
            r[0] for r in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")
        ]
        for table in tables:
            quoted = '"' + table.replace('"', '""') + '"'
            for row in connection.execute(f"SELECT * FROM {quoted}"):  # noqa: S608
                for value in row:
                    raw = value if isinstance(value, bytes) else str(value).encode()
                    hits += sum(raw.count(n) for n in needles)
    return hits


def find_traces(
    settings: Settings,
    customer_ids: Iterable[str],
    pseudonyms: Iterable[str] = (),
    ignore: Iterable[Path] = (),
) -> list[str]:
    """Where the customer's raw id or pseudonym can still be found: files under the data dir
    (Parquet and SQLite by content, other files by bytes, UTF-8 and UTF-32) and Redis keys
    and values. Each hit is ``<store or path>: <count>``; no hit: an empty list."""
    who = Who.of(customer_ids, settings)
    who = Who(who.raw_ids, who.pseudonyms | frozenset(pseudonyms), who.keys)
    values = [*who.raw_ids, *who.pseudonyms]
    needles = [e for v in values for e in encodings(v)]
    found = []
    skip = set(ignore)
    for path in sorted(p for p in settings.data_dir.rglob("*") if p.is_file()):
        if path in skip:
            continue
        hits = hits_in_file(path, needles, values)
        if hits:
            found.append(f"{path.relative_to(settings.data_dir)}: {hits}")
    if settings.redis_url:
        from pipeline.redis_url import RedisTarget

        client: Any = RedisTarget.parse(settings.redis_url).client()
        try:
            hits = 0
            for name in client.scan_iter(count=1000):
                blobs = [name]
                kind = client.type(name)
                if kind == b"hash":
                    for k, v in client.hgetall(name).items():
                        blobs += [k, v]
                elif kind == b"string":
                    blobs.append(client.get(name) or b"")
                hits += sum(b.count(n) for b in blobs for n in needles)
            if hits:
                found.append(f"redis: {hits}")
        finally:
            client.close()
    return found
