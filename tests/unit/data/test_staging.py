"""A day is written all at once: a run that dies leaves the previous state, and the next run
cleans up (or finishes) what it left."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.data import staging
from pipeline.data.curated import partition, report_path
from pipeline.data.ingest import RAW_FILES, ingest_day, ingest_drop
from pipeline.data.staging import JOURNAL, staging_root
from tests.unit.data.test_ingest_reasons import DAY, customer, event, item, try_on, write

TABLES = [*RAW_FILES, "item_sizes"]


def day_state(var: Path) -> dict[str, bytes | None]:
    """Every file of DAY (curated, quarantine, report), None where absent."""
    paths = [partition(var / "curated", t, DAY) for t in TABLES]
    paths += [partition(var / "quarantine", t, DAY) for t in RAW_FILES]
    paths.append(report_path(var / "curated", DAY))
    return {str(p.relative_to(var)): p.read_bytes() if p.exists() else None for p in paths}


def make_drop(folder: Path, events: int) -> Path:
    write(
        folder,
        {
            "customers": [customer("A")],
            "items": [item("I1")],
            "session_events": [event(f"e{i}") for i in range(events)] + ["{broken"],
            "try_ons": [try_on("t1")],
        },
    )
    return folder


class Boom(RuntimeError):
    pass


def fail_on_call(monkeypatch, number: int) -> None:
    """Make the ``number``-th os.replace inside staging raise."""
    calls = {"n": 0}
    real = os.replace

    def replace(src, dst):
        calls["n"] += 1
        if calls["n"] == number:
            raise Boom("disk gone")
        return real(src, dst)

    monkeypatch.setattr(staging.os, "replace", replace)


def test_a_crash_before_the_commit_leaves_the_previous_day(tmp_path, settings, monkeypatch):
    ingest_drop(make_drop(tmp_path / "v1", 2), DAY, settings)
    before = day_state(settings.data_dir)
    assert all(v is not None for v in before.values())
    # The first os.replace is the journal's: nothing is committed yet.
    fail_on_call(monkeypatch, 1)
    with pytest.raises(Boom):
        ingest_drop(make_drop(tmp_path / "v2", 5), DAY, settings)
    assert day_state(settings.data_dir) == before
    assert not any(staging_root(settings.data_dir).glob("*"))


def test_a_first_ingest_that_dies_writes_nothing(tmp_path, settings, monkeypatch):
    fail_on_call(monkeypatch, 1)
    with pytest.raises(Boom):
        ingest_drop(make_drop(tmp_path / "v1", 2), DAY, settings)
    assert all(v is None for v in day_state(settings.data_dir).values())


def test_a_run_killed_while_writing_leaves_a_folder_the_next_run_removes(tmp_path, settings):
    ingest_drop(make_drop(tmp_path / "v1", 2), DAY, settings)
    before = day_state(settings.data_dir)
    # What a killed run leaves: staged files and no journal.
    leftover = staging_root(settings.data_dir) / f"ingest-{DAY.isoformat()}"
    stray = leftover / partition(Path("curated"), "session_events", DAY)
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"half a parquet file")
    report, skipped = ingest_day(tmp_path / "v1", DAY, settings)
    assert skipped  # the same drop: nothing to redo, and the leftover is gone
    assert not leftover.exists()
    assert day_state(settings.data_dir) == before


def test_a_run_killed_while_renaming_is_finished_by_the_next(tmp_path, settings, monkeypatch):
    ingest_drop(make_drop(tmp_path / "v1", 2), DAY, settings)
    fail_on_call(monkeypatch, 4)  # the journal, then two files moved, then the crash
    with pytest.raises(Boom):
        ingest_drop(make_drop(tmp_path / "v2", 5), DAY, settings)
    assert (staging_root(settings.data_dir) / f"ingest-{DAY.isoformat()}" / JOURNAL).is_file()
    monkeypatch.undo()
    # The next run finishes the commit before anything else: the new day, whole.
    staging.recover(settings.data_dir)
    finished = day_state(settings.data_dir)
    fresh = tmp_path / "fresh"
    with_fresh = type(settings)(data_dir=fresh, pseudonym_key=settings.pseudonym_key)
    ingest_drop(make_drop(tmp_path / "v2", 5), DAY, with_fresh)
    assert finished == day_state(fresh)
    assert not any(staging_root(settings.data_dir).glob("*"))
