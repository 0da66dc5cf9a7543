"""Adapters from public fashion datasets into fitrec's raw drop format.

Each adapter maps a source onto the raw tables of :mod:`pipeline.data.contracts` *as strings, units
and all* (``5' 8"``, ``137lbs``, ``34d``), and :func:`write_drop` writes them as a drop folder,
so real data goes through exactly the same ingest (unit conversion, validation, quarantine)
as the retailer's own feeds. Sources (see ``../shared/data/README.md``):

* RentTheRunway raw JSON lines and the cleaned Parquet: customers, items, fit feedback;
* ModCloth raw JSON lines: customers (inches, bra sizes, US shoe sizes), items, fit feedback;
* H&M CSVs: customers (age), articles, transactions;
* YooChoose (``SessionId<TAB>ItemId<TAB>Time``) and Diginetica (``;``-separated) click streams.

A dataset without a time (ModCloth) is stamped with ``default_day``; customers and items get
their first event's time as sign-up and launch time. Public data carries no consent flag:
body fields its authors published are treated as consented.

Ids never come from a row's position: an event id is a digest of the row's own content (its
source fields, with an occurrence number for rows that repeat exactly), so the same click or
rental has the same id in any file it is cut into, and two different files cannot share ids
by accident. Session ids are the source's own, optionally under a ``namespace`` the caller
gives (a file, or ``train`` / ``test``), so sessions of two files never merge. A customer's
profile (body measurements, age) is the one on their *first* row of the source: what the
retailer knew when they first appeared, never a later review.

:meth:`RawTables.cut` splits a source at a time the way two exported files would be: each side
is rebuilt by the same adapter from its own rows, so ``--train A --test B`` on a file cut in
two and the internal time split at that cut-off see exactly the same tables.
"""

from __future__ import annotations

from pipeline.data.adapters.base import ISO, RawTables, content_ids, write_drop
from pipeline.data.adapters.clicks import click_tables, diginetica, yoochoose
from pipeline.data.adapters.fit import (
    FIT,
    MODCLOTH_CATEGORY,
    RTR_CATEGORY,
    modcloth_raw,
    rent_the_runway_clean,
    rent_the_runway_raw,
)
from pipeline.data.adapters.hm import HM_GROUP, HM_TYPE, hm

__all__ = [
    "ADAPTERS",
    "FIT",
    "HM_GROUP",
    "HM_TYPE",
    "ISO",
    "MODCLOTH_CATEGORY",
    "RTR_CATEGORY",
    "RawTables",
    "click_tables",
    "content_ids",
    "diginetica",
    "hm",
    "modcloth_raw",
    "rent_the_runway_clean",
    "rent_the_runway_raw",
    "write_drop",
    "yoochoose",
]

ADAPTERS = {
    "rtr": rent_the_runway_raw,
    "rtr-clean": rent_the_runway_clean,
    "modcloth": modcloth_raw,
    "yoochoose": yoochoose,
    "diginetica": diginetica,
}
