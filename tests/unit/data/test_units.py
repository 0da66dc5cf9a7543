import polars as pl
import pytest

from pipeline.data.units import bust_cm, length_cm, us_to_eu_shoe, weight_kg


def _convert(fn, values):
    return (
        pl.DataFrame({"v": values}, schema={"v": pl.String}).select(fn(pl.col("v")))["v"].to_list()
    )


def test_lengths():
    got = _convert(
        length_cm,
        ["5' 8\"", "5ft 6in", "5'4", "67in", '67"', "1.70m", "170cm", "170", "5'", "tall", None],
    )
    expected = [172.72, 167.64, 162.56, 170.18, 170.18, 170.0, 170.0, 170.0, 152.4, None, None]
    assert got == [pytest.approx(e) if e is not None else None for e in expected]


def test_weights():
    got = _convert(weight_kg, ["137lbs", "140 lb", "62kg", "62", "heavy"])
    assert got[0] == pytest.approx(137 * 0.45359237)
    assert got[1:4] == [pytest.approx(140 * 0.45359237), 62.0, 62.0]
    assert got[4] is None


def test_bra_sizes_become_bust_girth():
    got = _convert(bust_cm, ["34d", "34dd/e", "38d+", "36dddd/g", "32aa", "92cm", "34z", "36"])
    assert got[:5] == [
        pytest.approx((34 + 4) * 2.54),
        pytest.approx((34 + 5) * 2.54),
        pytest.approx((38 + 4) * 2.54),
        pytest.approx((36 + 7) * 2.54),
        pytest.approx((32 + 0.5) * 2.54),
    ]
    assert got[5] == 92.0
    assert got[6] is None  # unknown cup: no guess
    assert got[7] == 36.0  # a bare number is taken as cm; range checks reject it later


def test_us_shoe_sizes():
    got = (
        pl.DataFrame({"v": ["9.00", "7.5", None]}).select(us_to_eu_shoe(pl.col("v")))["v"].to_list()
    )
    assert got == [40.0, 38.5, None]
