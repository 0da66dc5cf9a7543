"""Sealed text: only the pseudonym key (current or being rotated out) opens it."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.privacy import SEALED_PREFIX, seal, unseal

pytestmark = pytest.mark.unit


@given(st.text())
def test_round_trip_and_deterministic(text):
    token = seal(text, "k1")
    assert token.startswith(SEALED_PREFIX)
    assert token == seal(text, "k1")
    assert unseal(token, ["k1"]) == text
    assert unseal(token, ["k0", "k1"]) == text


def test_wrong_key_and_garbage_refused():
    token = seal('{"customer_id": "C-42"', "k1")
    assert "C-42" not in token
    with pytest.raises(ValueError):
        unseal(token, ["other"])
    with pytest.raises(ValueError):
        unseal("plain text", ["k1"])
