"""Erasure tombstones: the pseudonyms of erased customers, which ingest drops on sight.

They sit with the data they guard, below both ingest (which reads them) and
:mod:`pipeline.erasure` (which adds to them), so neither imports the other.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable
from pathlib import Path

from pipeline.config import Settings

__all__ = ["add_tombstones", "erased_pseudonyms", "is_erased", "tombstone_path", "write_atomic"]


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file beside it: a reader sees the old
    bytes or the new, never half."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def tombstone_path(settings: Settings) -> Path:
    return settings.privacy_dir / "tombstones.txt"


def erased_pseudonyms(settings: Settings) -> frozenset[str]:
    """Pseudonyms of erased customers (never raw ids): ingest drops their rows, the nightly
    retrain never sees them. Empty when nobody was erased."""
    path = tombstone_path(settings)
    if not path.exists():
        return frozenset()
    return frozenset(line for line in path.read_text().split("\n") if line)


def is_erased(pseudonym: str, settings: Settings) -> bool:
    return pseudonym in erased_pseudonyms(settings)


def add_tombstones(settings: Settings, pseudonyms: Iterable[str]) -> None:
    """Add ``pseudonyms`` to the list (sorted, one a line, written atomically)."""
    path = tombstone_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    known = sorted(erased_pseudonyms(settings) | set(pseudonyms))
    write_atomic(path, "".join(f"{p}\n" for p in known).encode())
