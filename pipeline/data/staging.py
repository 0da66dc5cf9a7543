"""Writing one ingested day all at once: every table and the report, or nothing.

A :class:`DayWriter` writes each file of the day under ``<data_dir>/_staging/<day>/`` at the
path it will have relative to the data dir. :meth:`DayWriter.commit` syncs them, writes a
``COMMIT`` journal naming them (itself renamed into place, so it is all there or absent),
renames every file into place with the report last, and removes the staging folder.

:func:`recover` runs before every ingest: a staging folder without a journal (a run killed
while writing) is deleted, so the previous state stands; one with a journal (a run killed
while renaming) is finished. Readers never see the staging folder: it is outside
``curated/`` and ``quarantine/``, whose readers glob ``<table>/date=*/part-0.parquet``.

A write the operating system refuses (a full disk, a read-only data folder, a missing
permission) raises :class:`~pipeline.errors.StorageError` naming the day and the path, after
dropping what was staged: the previous state stands and a re-run is a clean run.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
from pathlib import Path

import polars as pl

from pipeline.errors import storage_errors

log = logging.getLogger(__name__)

STAGING = "_staging"
JOURNAL = "COMMIT"


def staging_root(data_dir: Path) -> Path:
    return data_dir / STAGING


def write_parquet(frame: pl.DataFrame, path: Path) -> None:
    """Write ``frame`` as Parquet at ``path`` through Python's file I/O.

    Polars writing to a path reports a full disk as a ComputeError that may not say so
    ("Invalid thrift: transport error"); the same bytes written by Python raise the
    OSError (ENOSPC, EROFS, EACCES) that :func:`~pipeline.errors.storage_errors` names.
    """
    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    path.write_bytes(buffer.getbuffer())


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _apply(folder: Path, data_dir: Path) -> None:
    names = json.loads((folder / JOURNAL).read_text())
    for name in names:
        staged, target = folder / name, data_dir / name
        if staged.exists():  # absent when an earlier attempt already moved it
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staged, target)
    shutil.rmtree(folder)


def recover(data_dir: Path) -> None:
    """Finish a committed day a killed run left half-renamed; drop an uncommitted one."""
    root = staging_root(data_dir)
    if not root.is_dir():
        return
    for folder in sorted(root.iterdir()):
        if (folder / JOURNAL).is_file():
            log.warning("ingest: finishing the commit of %s left by a killed run", folder.name)
            _apply(folder, data_dir)
        else:
            log.warning("ingest: removing %s, left uncommitted by a killed run", folder.name)
            shutil.rmtree(folder) if folder.is_dir() else folder.unlink()


class DayWriter:
    """Stage a day's files, then move them into place together (see the module)."""

    def __init__(self, data_dir: Path, name: str):
        self.data_dir = data_dir
        self.folder = staging_root(data_dir) / name
        # "ingest-2026-03-02" -> "ingest of 2026-03-02", for the message of a refused write.
        kind, _, day = name.partition("-")
        self.action = f"{kind} of {day}" if day else name
        self.names: list[str] = []
        with storage_errors(self.action, self.folder):
            if self.folder.exists():
                shutil.rmtree(self.folder)
            self.folder.mkdir(parents=True)

    def _staged(self, target: Path) -> Path:
        name = target.relative_to(self.data_dir).as_posix()
        self.names.append(name)
        path = self.folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def parquet(self, frame: pl.DataFrame, target: Path) -> None:
        with storage_errors(self.action, target):
            write_parquet(frame, self._staged(target))

    def text(self, text: str, target: Path) -> None:
        with storage_errors(self.action, target):
            self._staged(target).write_text(text)

    def commit(self) -> None:
        """Make the staged files the day's files: all of them, in the order staged."""
        with storage_errors(self.action, self.folder):
            for name in self.names:
                _fsync(self.folder / name)
            journal = self.folder / f"{JOURNAL}.tmp"
            journal.write_text(json.dumps(self.names))
            _fsync(journal)
            os.replace(journal, self.folder / JOURNAL)
            _apply(self.folder, self.data_dir)

    def abandon(self) -> None:
        """Drop what was staged, unless it is committed: then :func:`recover` finishes it."""
        if not (self.folder / JOURNAL).is_file():
            shutil.rmtree(self.folder, ignore_errors=True)
