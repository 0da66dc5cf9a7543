"""The Redis circuit breaker against a reference model of its states, on a hand-driven clock."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from serving.breaker import CLOSED, HALF_OPEN, OPEN, Breaker, BreakerOpen


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def fail() -> None:
    raise ConnectionError("Redis read failed: timed out")


def ok() -> str:
    return "ok"


def test_opens_after_the_threshold_and_then_makes_no_call():
    clock = Clock()
    breaker = Breaker(failures=3, reset_seconds=5, clock=clock)
    for _ in range(3):
        with pytest.raises(ConnectionError):
            breaker.call(fail)
    assert breaker.state == OPEN and breaker.opened == 1
    calls = []
    with pytest.raises(BreakerOpen):
        breaker.call(lambda: calls.append(1))
    assert calls == [] and breaker.short_circuited == 1
    assert isinstance(BreakerOpen("x"), ConnectionError)  # callers' degraded path catches it


def test_half_open_lets_exactly_one_probe_through():
    clock = Clock()
    breaker = Breaker(failures=1, reset_seconds=5, clock=clock)
    with pytest.raises(ConnectionError):
        breaker.call(fail)
    clock.now = 5.0
    inside, release, others = threading.Event(), threading.Event(), []

    def probe() -> str:
        inside.set()
        release.wait(30)
        return "ok"

    thread = threading.Thread(target=lambda: breaker.call(probe))
    thread.start()
    assert inside.wait(30)
    assert breaker.state == HALF_OPEN
    for _ in range(5):
        try:
            breaker.call(ok)
        except BreakerOpen:
            others.append("refused")
    release.set()
    thread.join(30)
    assert others == ["refused"] * 5 and breaker.state == CLOSED


def test_an_error_reply_is_not_an_outage():
    breaker = Breaker(failures=1, reset_seconds=5, clock=Clock())
    with pytest.raises(RuntimeError):
        breaker.call(lambda: (_ for _ in ()).throw(RuntimeError("WRONGTYPE")))
    assert breaker.state == CLOSED


steps = st.lists(
    st.one_of(st.sampled_from(["ok", "fail"]), st.floats(0, 10, allow_nan=False)), max_size=60
)


@hsettings(max_examples=200, derandomize=True)
@given(steps=steps, threshold=st.integers(1, 4), reset=st.floats(0.5, 5))
def test_matches_the_reference_state_machine(steps, threshold, reset):
    clock = Clock()
    breaker = Breaker(failures=threshold, reset_seconds=reset, clock=clock)
    state, failures, opened_at = CLOSED, 0, 0.0
    for step in steps:
        if isinstance(step, float):
            clock.now += step
            continue
        admitted = state == CLOSED or clock.now - opened_at >= reset
        made = []
        try:
            breaker.call(lambda s=step, m=made: m.append(s) or (fail() if s == "fail" else ok()))
        except BreakerOpen:
            assert not admitted and not made
            continue
        except ConnectionError:
            pass
        assert admitted and made == [step]
        if step == "ok":
            state, failures = CLOSED, 0
        else:
            failures += 1
            if state != CLOSED or failures >= threshold:
                state, opened_at = OPEN, clock.now
        assert breaker.state == state, (steps, breaker.state, state)
