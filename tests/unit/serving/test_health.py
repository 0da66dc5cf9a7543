"""The rolling share of known customers without features (serving/health.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from serving.health import MissingShare


@given(
    window=st.integers(min_value=1, max_value=50),
    data=st.data(),
    seen=st.lists(st.booleans(), max_size=200),
)
def test_share_is_over_the_last_window_once_there_are_enough(
    window: int, data: st.DataObject, seen: list[bool]
) -> None:
    minimum = data.draw(st.integers(min_value=1, max_value=window))
    share = MissingShare(window, minimum)
    for missing in seen:
        share.record(missing)
    recent = seen[-window:] if seen else []
    got, n = share.share()
    assert n == len(recent)
    if len(recent) < minimum:
        assert got is None
    else:
        assert got == sum(recent) / len(recent)


@pytest.mark.parametrize(("window", "minimum"), [(0, 1), (5, 0), (5, 6), (-1, -1)])
def test_bad_windows_are_refused(window: int, minimum: int) -> None:
    with pytest.raises(ValueError):
        MissingShare(window, minimum)
