"""The quarantine table: rejected rows, with where they came from and why, and no raw id.

One partition per table and day, ``quarantine/<table>/date=<day>/part-0.parquet``, with the
columns of :data:`QUARANTINE_SCHEMA`. See :mod:`pipeline.data.ingest` for what is kept
visible and what only sealed; erasure finds a customer's rows by ``customer_id`` (the
pseudonym) and by unsealing ``source_sealed``.
"""

from __future__ import annotations

import json
import re
from datetime import date
from pathlib import Path

import orjson
import polars as pl

from pipeline.data.contracts import CUSTOMERS, Contract
from pipeline.data.rawfiles import BYTES, FILE, LINE, PRE, SOURCE, masked
from pipeline.privacy import seal, without_body

QUARANTINE_SCHEMA = pl.Schema(
    {
        "source_file": pl.String,
        "line": pl.Int64,
        "reason": pl.String,
        "raw": pl.String,
        "customer_id": pl.String,
        "source_sealed": pl.String,
        "day": pl.String,
    }
)


# The value of a customer_id key: a JSON string (escapes allowed) or a bare number.
_CUSTOMER_VALUE = re.compile(r'("customer_id"\s*:\s*)("(?:[^"\\]|\\.)*"|-?\d+)(?=\s*[,}])')


def _with_pseudonym(text: str, raw_id: str, pseudonym: str) -> str | None:
    """``text`` with the value of its ``customer_id`` key replaced by the pseudonym, or None
    when the id is not written there exactly once as plain JSON (then the text is sealed)."""
    found = list(_CUSTOMER_VALUE.finditer(text))
    if len(found) != 1:
        return None
    match = found[0]
    value = match.group(2)
    if value not in (json.dumps(raw_id), json.dumps(raw_id, ensure_ascii=False), raw_id):
        return None  # escapes or spaces: the id is there in another spelling
    replaced = f'{text[: match.start(2)]}"{pseudonym}"{text[match.end(2) :]}'
    if raw_id in replaced.replace(pseudonym, ""):
        return None
    return replaced


def _only_contract_keys(text: str, names: frozenset[str]) -> bool:
    """Whether ``text`` is a JSON object whose keys are all columns of the contract."""
    try:
        record = orjson.loads(text)
    except orjson.JSONDecodeError:
        return False
    return isinstance(record, dict) and record.keys() <= names


def quarantine_rows(
    bad: pl.DataFrame, day: date, contract: Contract, key: str, paths: list[Path]
) -> pl.DataFrame:
    """Rejected rows with where they came from and every reason; no raw customer id (see the
    module docstring for what is kept visible, what only sealed)."""
    sizes = {f"{p.parent.name}/{p.name}": p.stat().st_size for p in paths if p.is_file()}
    has_customer = "__raw_customer" in bad.columns
    has_consent = "body_data_consent" in bad.columns
    names = frozenset(contract.names)
    visible: list[str] = []
    sealed: list[str | None] = []
    customers: list[str | None] = []
    wanted = [SOURCE, PRE, LINE, FILE, BYTES, "__raw_customer", "customer_id", "body_data_consent"]
    # Only these columns go to Python: a time in year 0 is fine in Polars, not in datetime.
    for row in bad.select(c for c in wanted if c in bad.columns).iter_rows(named=True):
        text, pre = row[SOURCE], row[PRE]
        raw_id = row["__raw_customer"] if has_customer else None
        pseudonym = row["customer_id"] if has_customer else None
        if row[LINE] is None:  # a file that gave no rows: it stays in the raw drop
            visible.append(f"<{pre}: {sizes.get(row[FILE], 0)} bytes>")
            sealed.append(None)
            customers.append(None)
            continue
        shown: str | None = text if pre is None else None
        if shown is not None and has_customer and not _only_contract_keys(shown, names):
            shown = None  # a key of its own (a misspelt customer_id, say) may hold an id
        if shown is not None and raw_id and pseudonym:
            shown = _with_pseudonym(shown, raw_id, pseudonym)
        if shown is not None and has_consent and row["body_data_consent"] is not True:
            stripped = without_body(shown, CUSTOMERS.sensitive)
            try:
                shown = stripped if isinstance(orjson.loads(stripped), dict) else None
            except orjson.JSONDecodeError:
                shown = None
        if shown is None:
            original = (
                row[BYTES].decode("utf-8", "surrogateescape") if row[BYTES] is not None else text
            )
            visible.append(masked(text, contract.names))
            sealed.append(seal(original, key))
        else:
            visible.append(shown)
            sealed.append(None)
        customers.append(pseudonym if pre is None else None)
    return pl.DataFrame(
        {
            "source_file": bad.get_column(FILE),
            "line": bad.get_column(LINE),
            "reason": bad.get_column("reason"),
            "raw": pl.Series(visible, dtype=pl.String),
            "customer_id": pl.Series(customers, dtype=pl.String),
            "source_sealed": pl.Series(sealed, dtype=pl.String),
            "day": pl.Series([day.isoformat()] * bad.height, dtype=pl.String),
        },
        schema=QUARANTINE_SCHEMA,
    )
