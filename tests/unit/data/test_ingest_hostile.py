"""Property: a valid generated drop, mutated in hostile ways, never makes ingest raise.

Mutations work on the bytes and on the values: bad bytes and encodings, truncation, empty
and corrupt files, missing and extra columns (List-typed Parquet columns too), values of the
wrong type or beyond the type's range (int overflows, NaN, Infinity, ``1e400``), duplicate
JSON keys and duplicated lines. For every drop: no exception escapes, every table reconciles
(with the files on disk), every quarantined row has a reason, no raw customer id reaches the
quarantine, and a re-run writes byte-identical files. A fixed seed set keeps CI stable.
"""

from __future__ import annotations

import json
import shutil
from datetime import date
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.data.contracts import CONTRACTS
from pipeline.data.curated import partition, report_path
from pipeline.data.generate import GeneratorConfig, write_drops
from pipeline.data.ingest import RAW_FILES, ingest_drop
from pipeline.data.staging import staging_root
from tests.conftest import Environment

TABLE_OF = {filename: table for table, filename in RAW_FILES.items()}
HOSTILE_VALUES = [
    None,
    "",
    " ",
    True,
    0,
    -1,
    1.5,
    2**31,
    2**63,
    99999999999999999999,
    "99999999999999999999",
    "1e400",
    "NaN",
    "Infinity",
    "-Infinity",
    "0001-01-01T00:00:00+01:00",
    "9999-12-31T23:59:59-14:00",
    "5' 18\"",
    "x" * 300,
    "caf\u00e9",
    "\u0000",
    [1, 2],
    {"a": 1},
]
# Raw JSON tokens json.dumps will not write but a hostile feed may.
RAW_TOKENS = ["1e400", "NaN", "Infinity", "-1e400", "99999999999999999999", "[]", "{}"]


@pytest.fixture(scope="module")
def base_drop(tmp_path_factory) -> tuple[Path, date]:
    out = tmp_path_factory.mktemp("hostile-base")
    write_drops(GeneratorConfig(customers=30, days=1, items=20, seed=3, dirty=0.05), out)
    (folder,) = sorted(p for p in out.iterdir() if p.is_dir())
    return folder, date.fromisoformat(folder.name)


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().split(b"\n")


def _set_json_value(line: bytes, column: str, value, raw_token: str | None) -> bytes:
    try:
        record = json.loads(line)
    except ValueError:
        return line
    if not isinstance(record, dict):
        return line
    record[column] = "__TOKEN__" if raw_token else value
    text = json.dumps(record, ensure_ascii=False)
    if raw_token:
        text = text.replace('"__TOKEN__"', raw_token)
    return text.encode("utf-8", "surrogatepass")


KINDS = (
    "bytes",
    "latin1",
    "utf16",
    "truncate",
    "empty",
    "delete",
    "value",
    "raw_token",
    "duplicate_key",
    "duplicate_line",
    "drop_column",
    "extra_column",
    "list_column",
    "corrupt",
)


def mutation(kinds: tuple[str, ...] = KINDS) -> st.SearchStrategy[dict]:
    return st.fixed_dictionaries(
        {
            "file": st.sampled_from(sorted(RAW_FILES.values())),
            "kind": st.sampled_from(kinds),
            "at": st.floats(0, 1),
            "column": st.integers(0, 20),
            "value": st.sampled_from(HOSTILE_VALUES),
            "token": st.sampled_from(RAW_TOKENS),
            "junk": st.binary(min_size=1, max_size=8),
        }
    )


def mutate_parquet(path: Path, m: dict, column: str, kind: str) -> None:
    frame = pl.from_arrow(pq.read_table(path))
    assert isinstance(frame, pl.DataFrame)
    if kind == "drop_column" and column in frame.columns:
        frame = frame.drop(column)
    elif kind == "list_column" and column in frame.columns:
        frame = frame.with_columns(pl.concat_list(pl.col(column).cast(pl.String)).alias(column))
    elif kind == "extra_column":
        frame = frame.with_columns(pl.lit([1, 2]).alias("surplus"))
    elif kind in ("value", "raw_token") and frame.height:
        row = int(m["at"] * (frame.height - 1))
        value = m["token"] if kind == "raw_token" else m["value"]
        text = None if value is None else json.dumps(value) if not isinstance(value, str) else value
        frame = frame.with_columns(
            pl.when(pl.int_range(pl.len()) == row)
            .then(pl.lit(text, pl.String))
            .otherwise(pl.col(column).cast(pl.String))
            .alias(column)
        )
    elif kind == "duplicate_line" and frame.height:
        frame = pl.concat([frame, frame.head(1)])
    frame.write_parquet(path)


def mutate(folder: Path, m: dict) -> None:
    path = folder / m["file"]
    if not path.exists():
        return
    table = TABLE_OF[m["file"]]
    names = CONTRACTS[table].names
    column = names[m["column"] % len(names)]
    data = path.read_bytes()
    at = int(m["at"] * len(data))
    kind = m["kind"]
    if kind == "delete":
        path.unlink()
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncate":
        path.write_bytes(data[:at])
    elif kind in ("bytes", "corrupt"):
        path.write_bytes(
            data[:at] + m["junk"] + data[at + (len(m["junk"]) if kind == "corrupt" else 0) :]
        )
    elif kind == "utf16":
        path.write_bytes(data.decode("utf-8", "replace").encode("utf-16"))
    elif kind == "latin1":
        path.write_bytes(data[:at] + "\u00e9\u00ff".encode("latin-1") + data[at:])
    elif path.suffix == ".parquet":
        try:
            mutate_parquet(path, m, column, kind)
        except Exception:  # noqa: BLE001 - an earlier mutation broke the file: leave it so
            return
    else:
        lines = _lines(path)
        index = (
            1 + int(m["at"] * max(0, len(lines) - 2))
            if path.suffix == ".csv"
            else int(m["at"] * max(0, len(lines) - 1))
        )
        index = min(index, len(lines) - 1)
        if path.suffix == ".jsonl" and kind in ("value", "raw_token"):
            token = m["token"] if kind == "raw_token" else None
            lines[index] = _set_json_value(lines[index], column, m["value"], token)
        elif path.suffix == ".jsonl" and kind == "duplicate_key" and lines[index].endswith(b"}"):
            lines[index] = lines[index][:-1] + f', "{column}": "other"}}'.encode()
        elif kind == "duplicate_line":
            lines.insert(index, lines[index])
        elif path.suffix == ".csv" and kind in ("extra_column", "value", "raw_token"):
            lines[index] = (
                lines[index] + b"," + (m["token"].encode() if kind == "raw_token" else b"x")
            )
        elif path.suffix == ".csv" and kind == "drop_column" and index > 0:
            lines[index] = lines[index].rsplit(b",", 1)[0]
        path.write_bytes(b"\n".join(lines))


def day_files(var: Path, day: date) -> dict[str, bytes]:
    files = {}
    for root in ("curated", "quarantine"):
        for table in [*RAW_FILES, *(["item_sizes"] if root == "curated" else [])]:
            path = partition(var / root, table, day)
            files[f"{root}/{table}"] = path.read_bytes()
    files["report"] = report_path(var / "curated", day).read_bytes()
    return files


def check_day(env, report, day: date, raw_ids: set[str]) -> None:
    for table, counts in report.tables.items():
        assert counts.reconciled, table
        assert counts.raw == counts.curated + counts.quarantined + counts.exact_duplicates
        good = pl.read_parquet(partition(env.curated_dir, table, day))
        bad = pl.read_parquet(partition(env.quarantine_dir, table, day))
        assert (good.height, bad.height) == (counts.curated, counts.quarantined), table
        assert bad["reason"].null_count() == 0 and (bad["reason"].str.len_chars() > 0).all()
        assert sum(counts.reasons.values()) >= counts.quarantined
        for column in ("raw", "customer_id"):
            text = bad[column].drop_nulls()
            assert not any(text.str.contains(i, literal=True).any() for i in raw_ids), table
        if "customer_id" in good.columns:
            assert good["customer_id"].drop_nulls().str.starts_with("c_").all()
    assert not any(staging_root(env.data_dir).glob("*"))


# Every kind of mutation leads at least a few examples (derandomised examples alone start
# from the simplest ones and would leave most kinds untried), then random others follow.
@pytest.mark.parametrize("kind", KINDS)
@settings(
    max_examples=5,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(first=mutation(), more=st.lists(mutation(), max_size=3))
def test_mutated_drops_never_crash_reconcile_and_rerun_identically(
    tmp_path_factory, base_drop, kind, first, more
):
    mutations = [{**first, "kind": kind}, *more]
    base, day = base_drop
    work = tmp_path_factory.mktemp("hostile")
    drop = work / base.name
    shutil.copytree(base, drop)
    raw_ids = set(pl.read_parquet(base / "customers.parquet")["customer_id"].drop_nulls())
    for m in mutations:
        mutate(drop, m)
    with Environment(work / "var") as env:
        report = ingest_drop(drop, day, env)
        check_day(env, report, day, raw_ids)
        written = day_files(env.data_dir, day)
        again = ingest_drop(drop, day, env)
        assert day_files(env.data_dir, day) == written
        assert again.as_dict() == report.as_dict()
