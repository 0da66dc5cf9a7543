"""Unit normalisation for body measurements, as Polars expressions over raw strings.

Contracts are metric (cm, kg, EU shoe sizes). Raw feeds are not: RentTheRunway writes
``5' 8"``, ``137lbs`` and ``34d``; ModCloth ``5ft 6in`` and waist in inches. A bare number
is taken to be already metric. Anything unparseable becomes null, which ingest reports as
``bad_type:<column>`` (the raw string is kept in quarantine).
"""

from __future__ import annotations

import polars as pl

CM_PER_INCH = 2.54
KG_PER_LB = 0.45359237
# Cup letter -> inches of bust over band (US sizing); AA is half an inch.
# Double letters are US (DD = 5); "ddd/e" style labels give the US letters first, and a
# trailing "+" (RentTheRunway's "38d+") means the same cup.
CUP_INCHES = {
    "aa": 0.5,
    "a": 1,
    "b": 2,
    "c": 3,
    "d": 4,
    "dd": 5,
    "e": 5,
    "ddd": 6,
    "f": 6,
    "dddd": 7,
    "g": 7,
    "h": 8,
    "i": 9,
    "j": 10,
    "k": 11,
}
_NUMBER = r"(\d+(?:\.\d+)?)"


def _text(expr: pl.Expr) -> pl.Expr:
    return expr.cast(pl.String).str.strip_chars().str.to_lowercase()


def _num(text: pl.Expr, pattern: str, group: int = 1) -> pl.Expr:
    return text.str.extract(pattern, group).cast(pl.Float64, strict=False)


def length_cm(expr: pl.Expr) -> pl.Expr:
    """Heights and girths: ``5' 8"``, ``5ft 6in``, ``67in``, ``1.70m``, ``170cm``, ``170``."""
    t = _text(expr)
    feet = _num(t, r"^(\d+)\s*(?:'|ft|feet|foot)")
    inches_after_feet = _num(
        t, r"(?:'|ft|feet|foot)\s*(\d+(?:\.\d+)?)\s*(?:\"|''|in|inch|inches)?$"
    )
    inches = _num(t, rf"^{_NUMBER}\s*(?:\"|''|in|inch|inches)$")
    metres = _num(t, rf"^{_NUMBER}\s*m$")
    cm = _num(t, rf"^{_NUMBER}\s*cm$")
    bare = t.cast(pl.Float64, strict=False)
    return (
        pl.when(feet.is_not_null() & (inches_after_feet.fill_null(0) < 12))
        .then((feet * 12 + inches_after_feet.fill_null(0)) * CM_PER_INCH)
        .when(feet.is_not_null())
        .then(None)  # 5' 18" is no height: inches after feet must be under 12
        .when(inches.is_not_null())
        .then(inches * CM_PER_INCH)
        .when(metres.is_not_null())
        .then(metres * 100)
        .when(cm.is_not_null())
        .then(cm)
        .otherwise(bare)
    )


def weight_kg(expr: pl.Expr) -> pl.Expr:
    """``137lbs``, ``137 lb``, ``62kg``, ``62``."""
    t = _text(expr)
    pounds = _num(t, rf"^{_NUMBER}\s*(?:lbs?|pounds?)$")
    kilos = _num(t, rf"^{_NUMBER}\s*(?:kgs?|kilos?)$")
    return (
        pl.when(pounds.is_not_null())
        .then(pounds * KG_PER_LB)
        .when(kilos.is_not_null())
        .then(kilos)
        .otherwise(t.cast(pl.Float64, strict=False))
    )


def bust_cm(expr: pl.Expr) -> pl.Expr:
    """Bra size ``34d`` (band inches + cup) as full bust in cm; anything else as a length."""
    t = _text(expr)
    pattern = r"^(\d{2})\s*([a-k]{1,4})(?:/[a-k]{1,4})?\+?$"
    band = _num(t, pattern)
    cup = t.str.extract(pattern, 2)
    cup_inches = cup.replace_strict(CUP_INCHES, default=None, return_dtype=pl.Float64)
    return (
        pl.when(band.is_not_null() & cup_inches.is_not_null())
        .then((band + cup_inches) * CM_PER_INCH)
        .when(band.is_not_null())
        .then(None)  # a cup we do not know: say so rather than guess
        .otherwise(length_cm(expr))
    )


def us_to_eu_shoe(us: pl.Expr) -> pl.Expr:
    """Women's US shoe size to EU (the common retail table: EU = US + 31, in half sizes)."""
    return ((us.cast(pl.Float64, strict=False) + 31) * 2).round() / 2


PARSERS = {"length": length_cm, "weight": weight_kg, "bust": bust_cm}
