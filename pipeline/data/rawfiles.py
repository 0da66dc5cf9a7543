"""Reading raw files that may be hostile: every byte becomes a row or a reason, nothing raises.

:func:`read_raw` turns one raw file (JSON lines, CSV or Parquet) into string columns of the
contract plus bookkeeping columns:

- ``__source``: the row as it arrived (JSON lines keep their exact text; CSV and Parquet
  rows are rendered as JSON objects; a CSV record that could not be split keeps its text);
- ``__line``: 1-based line (CSV: the record's first line; Parquet: the row number), null for
  a file that gave no rows;
- ``__pre``: a *line-level* reason when the row's fields could not be read at all
  (``bad_json``, ``bad_encoding``, ``duplicate_json_key``, ``bad_csv_row``, ``bad_header``) or
  a *file-level* one (``empty_file``, ``corrupt_file``, ``bad_column_type:<column>``); such a
  row gets that one reason and no other;
- ``__bytes``: the line's exact bytes when they are not UTF-8 (never replaced by U+FFFD);
- ``__nested``: value-level reasons found while reading (``bad_type:<column>`` for a JSON
  array or object where the contract wants a scalar). A column declared ``json_list`` takes a
  JSON array: it is kept as its compact JSON text (``["I1","I2"]``) for the contract's
  pattern to check; Parquet list columns stay ``bad_column_type`` (serving writes JSON lines).

Clean JSON lines take Polars' reader; only suspicious lines (not one object, escapes,
nested values, a contract key twice) go through Python's JSON parser one by one.
"""

from __future__ import annotations

import codecs
import csv
import json
import re
from collections.abc import Iterator
from pathlib import Path

import orjson
import polars as pl
import pyarrow.parquet as pq
from polars.exceptions import PanicException

from pipeline.data.contracts import Contract
from pipeline.data.jsontext import DuplicateKeyError, strict_json

SOURCE, LINE, FILE = "__source", "__line", "__file"
PRE, BYTES, NESTED = "__pre", "__bytes", "__nested"
BLANK = " \t\r"  # a line of only these is not a row


def _schema(contract: Contract) -> dict[str, pl.DataType]:
    return {
        **dict.fromkeys(contract.names, pl.String()),
        SOURCE: pl.String(),
        LINE: pl.Int64(),
        PRE: pl.String(),
        BYTES: pl.Binary(),
        NESTED: pl.String(),
    }


def _frame(rows: list[dict], contract: Contract) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=_schema(contract)) if rows else empty_rows(contract)


def empty_rows(contract: Contract) -> pl.DataFrame:
    """No rows, with the columns :func:`read_raw` gives."""
    return pl.DataFrame(schema=_schema(contract))


def unreadable(contract: Contract, reason: str) -> pl.DataFrame:
    """The one row standing for a file that gave no rows: no line, only its reason."""
    return pl.DataFrame([{PRE: reason, SOURCE: ""}], schema=_schema(contract))


def _scalar(value: object) -> str | None:
    if value is None:
        return None
    if value is True or value is False:
        return "true" if value else "false"
    return str(value)


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _line_row(text: str, number: int, contract: Contract) -> dict:
    """One JSON line through Python's parser: fields, or the line-level reason."""
    row: dict = {SOURCE: text, LINE: number}
    try:
        record = strict_json(text)
    except DuplicateKeyError:
        return {**row, PRE: "duplicate_json_key"}
    except (ValueError, RecursionError):
        return {**row, PRE: "bad_json"}
    if not isinstance(record, dict):
        return {**row, PRE: "bad_json"}
    nested = []
    lists = {c.name for c in contract.columns if c.json_list}
    for name in contract.names:
        value = record.get(name)
        if name in lists and isinstance(value, list):
            # Kept as compact JSON text (the contract's pattern checks it); the values as
            # JSON has them (strict_json keeps floats as text, which must not pass as ids).
            try:
                row[name] = orjson.dumps(orjson.loads(text).get(name)).decode()
            except (orjson.JSONDecodeError, orjson.JSONEncodeError):  # 1e400, a 2**64 int
                nested.append(f"bad_type:{name}")
                row[name] = json.dumps(value)
        elif isinstance(value, dict | list):
            nested.append(f"bad_type:{name}")
            row[name] = json.dumps(value)
        elif isinstance(value, str) and _has_surrogate(value):
            return {SOURCE: text, LINE: number, PRE: "bad_encoding"}
        else:
            row[name] = _scalar(value)
    row[NESTED] = ";".join(nested) or None
    return row


def _split_lines(data: bytes) -> Iterator[tuple[int, bytes]]:
    lines = data.split(b"\n")
    if data.endswith(b"\n"):
        lines.pop()
    for number, line in enumerate(lines, start=1):
        line = line.removesuffix(b"\r")
        if line.strip(BLANK.encode()):
            yield number, line


def _utf8(data: bytes) -> str | None:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def read_json_lines(data: bytes, contract: Contract) -> pl.DataFrame:
    """JSON lines: clean lines through Polars, suspicious ones one by one (see module)."""
    if b"\x1f" in data or b"\x00" in data:
        return _slow_lines(data, contract)
    split = _physical_lines(data)  # None for bytes that are not UTF-8, as Polars checks them
    if split is None:
        return _slow_lines(data, contract)
    lines, edges = split
    if lines.is_empty():
        return empty_rows(contract)
    lists = [c.name for c in contract.columns if c.json_list]
    text = pl.col(SOURCE).str.strip_chars(BLANK) if edges else pl.col(SOURCE)
    flagged = _flagged(lines, text, data, contract, lists)
    clean = flagged.filter(~pl.col("__slow")) if flagged.get_column("__slow").any() else flagged
    try:
        fields = None
        if clean.height == lines.height and not lists:  # the usual case: the file as it is
            fields = pl.read_ndjson(data, schema=dict.fromkeys(contract.names, pl.String))
        if fields is None or fields.height != clean.height:
            plain = pl.col("__plain") if lists else pl.col(SOURCE).str.strip_chars(BLANK)
            body = clean.select(plain.str.join("\n")).item().encode()
            fields = pl.read_ndjson(body, schema=dict.fromkeys(contract.names, pl.String))
        if fields.height != clean.height:
            raise ValueError("line count changed")
    except (Exception, PanicException):  # noqa: BLE001 - Polars raises several types
        return _slow_lines(data, contract)
    fields = fields.with_columns(
        pl.coalesce(clean.get_column(f"__array_{name}"), pl.col(name)).alias(name) for name in lists
    )
    fast = pl.concat([fields, clean.select(SOURCE, LINE)], how="horizontal").with_columns(
        pl.lit(None, pl.String).alias(PRE),
        pl.lit(None, pl.Binary).alias(BYTES),
        pl.lit(None, pl.String).alias(NESTED),
    )
    if clean.height == flagged.height:
        return fast.select(_schema(contract).keys())
    slow = _frame(
        [
            _line_row(t, n, contract)
            for t, n in flagged.filter(pl.col("__slow")).select(SOURCE, LINE).iter_rows()
        ],
        contract,
    )
    return pl.concat([fast.select(_schema(contract).keys()), slow]).sort(LINE)


def _physical_lines(data: bytes) -> tuple[pl.DataFrame, bool] | None:
    """The non-blank lines of ``data`` as ``__source`` with their 1-based ``__line``, and
    whether any has blank edges (None when Polars cannot split them, bytes that are not
    UTF-8 among them: Polars' reader is strict, so no decoded copy is made to check; the
    slow path reads any bytes)."""
    try:
        lines = pl.read_csv(
            data,
            has_header=False,
            separator="\x1f",
            quote_char=None,
            new_columns=[SOURCE],
            schema={SOURCE: pl.String},
        )
    except (Exception, PanicException):  # noqa: BLE001 - the slow path reads any bytes
        return None
    lines = lines.with_row_index(LINE, offset=1).with_columns(pl.col(LINE).cast(pl.Int64))
    if b"\r" in data:
        lines = lines.with_columns(pl.col(SOURCE).str.strip_suffix("\r"))
    text, edges = pl.col(SOURCE), _blank_edges(lines)
    blank = text.str.strip_chars(BLANK) == "" if edges else text.str.len_bytes() == 0
    kept = lines.select(text.is_not_null() & ~blank).to_series()
    return (lines if kept.all() else lines.filter(kept)), edges


def _blank_edges(lines: pl.DataFrame) -> bool:
    """Whether any line starts or ends with a blank: if none does, stripping changes nothing
    and is skipped (it would copy every line)."""
    text = pl.col(SOURCE)
    edges = [text.str.starts_with(c) | text.str.ends_with(c) for c in BLANK]
    return bool(lines.select(pl.any_horizontal(edges).any()).item())


def _flagged(lines: pl.DataFrame, text: pl.Expr, data: bytes, contract: Contract, lists: list[str]):
    """``lines`` (``text``: a line stripped) with ``__slow`` (not one flat object, escapes,
    nested values, a contract key twice), ``__plain`` (with json_list columns: the text
    with each array as null) and
    ``__array_<name>`` (that array's text without whitespace).

    A check that cannot be true anywhere in the file (no ``\\u`` in it; no line with a key
    twice, found for all keys in one parallel pass) is not added to the per-line flags."""
    # A json_list column's array of plain strings stays on the fast path: Polars reads the
    # line with the array as null, the column takes the array's text, whitespace removed.
    plain = text
    for name in lists:
        plain = plain.str.replace_all(_array_value(name), f'"{name}":null')
    suspicious = ~text.str.starts_with("{") | ~text.str.ends_with("}")
    if b"\\u" in data:
        suspicious |= text.str.contains("\\u", literal=True)
    if b"[" in data:
        suspicious |= plain.str.contains("[", literal=True)
    needles = ["{", *(f'"{name}"' for name in contract.names)]
    twice = lines.select(
        (pl.col(SOURCE).str.count_matches(n, literal=True) > 1).any().alias(n) for n in needles
    ).row(0, named=True)
    for needle in needles:
        if twice[needle]:
            suspicious |= text.str.count_matches(needle, literal=True) > 1
    return lines.with_columns(
        suspicious.alias("__slow"),
        *([plain.alias("__plain")] if lists else []),
        *[
            text.str.extract(_array_value(name, capture=True), 1)
            .str.replace_all(r"\s", "")
            .alias(f"__array_{name}")
            for name in lists
        ],
    )


def _array_value(name: str, capture: bool = False) -> str:
    """A regex of ``"name": [...]`` with an array of strings without escapes or quotes."""
    element = r'"[^"\\\s,\[\]]*"'
    array = rf"\[\s*(?:{element}\s*(?:,\s*{element}\s*)*)?\]"
    return rf'"{name}"\s*:\s*' + (f"({array})" if capture else array)


def _slow_lines(data: bytes, contract: Contract) -> pl.DataFrame:
    rows = []
    for number, line in _split_lines(data):
        text = _utf8(line)
        if text is None or "\x00" in text:
            shown = line.decode("utf-8", "replace").replace("\x00", "\ufffd")
            rows.append({SOURCE: shown, LINE: number, PRE: "bad_encoding", BYTES: line})
        else:
            rows.append(_line_row(text, number, contract))
    return _frame(rows, contract)


def read_csv_records(data: bytes, contract: Contract) -> pl.DataFrame:
    """CSV with a header: one row per record; a record with another number of fields than
    the header is ``bad_csv_row``, one with undecodable bytes ``bad_encoding``."""
    text = data.decode("utf-8", "surrogateescape")
    physical = text.split("\n")
    lines = [line + "\n" for line in physical[:-1]] + ([physical[-1]] if physical[-1] else [])
    reader = csv.reader(iter(lines), strict=False)
    header: list[str] | None = None
    header_reason: str | None = None
    rows: list[dict] = []
    consumed = 0
    while True:
        start = consumed + 1
        try:
            fields = next(reader)
            error = None
        except StopIteration:
            break
        except csv.Error:
            fields, error = [], "bad_csv_row"
        consumed = reader.line_num
        record = "".join(lines[start - 1 : consumed]).rstrip("\r\n")
        if consumed < start:
            break
        if header is None:
            header = fields
            if error or any(_has_surrogate(f) for f in fields):
                header_reason = "bad_header"
            elif len(set(fields)) != len(fields) or not all(f.strip() for f in fields):
                header_reason = "bad_header"
            continue
        if not record.strip(BLANK) and not error:
            continue
        row: dict = {LINE: start, SOURCE: record}
        raw_bytes = record.encode("utf-8", "surrogateescape")
        if _has_surrogate(record) or "\x00" in record:
            row.update(
                {
                    PRE: "bad_encoding",
                    BYTES: raw_bytes,
                    SOURCE: raw_bytes.decode("utf-8", "replace").replace("\x00", "\ufffd"),
                }
            )
        elif header_reason or error:
            row[PRE] = header_reason or error
        elif len(fields) != len(header):
            row[PRE] = "bad_csv_row"
        else:
            values = dict(zip(header, fields, strict=True))
            row[SOURCE] = orjson.dumps(values).decode()
            row.update({n: values.get(n) for n in contract.names})
        rows.append(row)
    if header is None:
        return unreadable(contract, "empty_file")
    if header_reason and not rows:  # a header that is garbage, and nothing else
        return unreadable(contract, header_reason)
    return _frame(rows, contract)


_SCALAR_TYPES = (pl.String, pl.Categorical, pl.Enum, pl.Boolean, pl.Date, pl.Datetime, pl.Null)


def read_parquet_rows(path: Path, contract: Contract) -> pl.DataFrame:
    """Parquet rows as strings; a file that cannot be read, or whose contract column is not a
    scalar (a List, a Struct, bytes), is one ``corrupt_file`` or ``bad_column_type`` row."""
    # pyarrow checks a file before decoding it; Polars' own reader can panic (a
    # BaseException) on a corrupt page. One file needs no dataset (pq.read_table's dataset
    # layer would import pandas: a second and tens of MB for nothing).
    try:
        frame = pl.from_arrow(pq.ParquetFile(path).read())
    except (Exception, PanicException):  # noqa: BLE001 - many types for bad files
        return unreadable(contract, "corrupt_file")
    if not isinstance(frame, pl.DataFrame):
        return unreadable(contract, "corrupt_file")
    for name in contract.names:
        if name in frame.columns:
            dtype = frame.schema[name]
            if not (dtype.is_numeric() or isinstance(dtype, _SCALAR_TYPES)):
                return unreadable(contract, f"bad_column_type:{name}")
    try:
        source = frame.select(pl.struct(pl.all()).struct.json_encode()).to_series()
        strings = frame.select(
            pl.col(n).cast(pl.String) if n in frame.columns else pl.lit(None, pl.String).alias(n)
            for n in contract.names
        )
    except (Exception, PanicException):  # noqa: BLE001 - a type Polars cannot render
        return unreadable(contract, "corrupt_file")
    return strings.with_columns(
        source.alias(SOURCE),
        pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias(LINE),
        pl.lit(None, pl.String).alias(PRE),
        pl.lit(None, pl.Binary).alias(BYTES),
        pl.lit(None, pl.String).alias(NESTED),
    ).select(_schema(contract).keys())


def read_raw(path: Path, contract: Contract) -> pl.DataFrame:
    """A raw file as string columns plus the bookkeeping columns of this module.

    A missing file gives no rows (ingest reports it as ``missing_file``); an empty CSV or
    Parquet file gives one ``empty_file`` row (an empty JSON lines file is a day without
    events). Never raises on the file's content.
    """
    if not path.is_file():
        return empty_rows(contract)
    try:
        data = path.read_bytes()
    except OSError:
        return unreadable(contract, "corrupt_file")
    data = data.removeprefix(codecs.BOM_UTF8)
    if path.suffix == ".jsonl":
        return read_json_lines(data, contract)
    if not data.strip():
        return unreadable(contract, "empty_file")
    if path.suffix == ".csv":
        return read_csv_records(data, contract)
    return read_parquet_rows(path, contract)


_KEYS_CACHE: dict[tuple[str, ...], re.Pattern[str]] = {}


def masked(text: str, names: list[str]) -> str:
    """Text with every letter and digit replaced by ``*``, except the contract's column
    names where they appear as quoted keys: the shape of a broken line, none of its values."""
    key = tuple(names)
    pattern = _KEYS_CACHE.get(key)
    if pattern is None:
        alternatives = "|".join(re.escape(f'"{n}"') for n in sorted(names, key=len, reverse=True))
        pattern = _KEYS_CACHE[key] = re.compile(f"({alternatives})|[^\\W_]")
    return pattern.sub(lambda m: m.group(1) or "*", text)
