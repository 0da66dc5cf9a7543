"""The live session state (one event at a time) agrees with the batch one (curated events).

Serving keeps :class:`~pipeline.features.session.SessionState` per session and the push source
gets its features; training and the offline store get
:func:`~pipeline.features.build.session_state` of the same events. The two must not drift.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from pipeline.data.contracts import EVENT_TYPES
from pipeline.features.build import session_state
from pipeline.features.declarations import SESSION_FEATURES, SESSION_LENGTH, TIMESTAMP
from pipeline.features.session import SessionState, apply_event

START = datetime(2026, 10, 5, 9, 30, tzinfo=UTC)

# One event: (session, signed in, type, item, microseconds after the previous one). Few
# sessions and items, and zero gaps, so that sessions interleave, anonymous and signed-in
# events mix, items repeat and timestamps tie. A session belongs to one customer at most.
EVENT = st.tuples(
    st.sampled_from(["s1", "s2", "s3"]),
    st.booleans(),
    st.sampled_from(sorted(EVENT_TYPES)),
    st.sampled_from([f"I{i}" for i in range(6)]),
    st.one_of(st.just(0), st.integers(1, 10**6), st.integers(1, 3 * 3600 * 10**6)),
)
EVENTS = st.lists(EVENT, min_size=1, max_size=3 * SESSION_LENGTH)


def _in_time_order(events: list[tuple]) -> list[tuple[str, str | None, str, str, datetime]]:
    """Events as they arrive, in time order: each gap is added to the previous timestamp."""
    ts, out = START, []
    for session, signed_in, kind, item, gap in events:
        ts += timedelta(microseconds=gap)
        out.append((session, f"c-{session}" if signed_in else None, kind, item, ts))
    return out


def _live(events: list[tuple]) -> dict[str, SessionState]:
    states: dict[str, SessionState] = {}
    for session, customer, kind, item, ts in events:
        state = apply_event(states.get(session), session, customer, kind, item, ts.timestamp())
        # Through JSON, as it is stored in Redis between two events.
        states[session] = SessionState.from_json(state.to_json())
    return states


def _batch(events: list[tuple]) -> dict[str, dict]:
    frame = pl.DataFrame(
        events,
        schema={
            "session_id": pl.String,
            "customer_id": pl.String,
            "event_type": pl.String,
            "item_id": pl.String,
            "ts": pl.Datetime("us", "UTC"),
        },
        orient="row",
    )
    return {row["session_id"]: row for row in session_state(frame).iter_rows(named=True)}


def _assert_same(live: SessionState, batch: dict, order_too: bool = True) -> None:
    features = live.features()
    if order_too:
        assert batch["session_items"] == features["session_items"]
        assert batch["session_event_types"] == features["session_event_types"]
    else:
        assert len(batch["session_items"]) == len(features["session_items"])
    # The batch features are float32 (as declared); the live ones are exact.
    for name in ("engagement", "session_events", "session_age_s"):
        assert batch[name] == pytest.approx(features[name], rel=1e-6, abs=1e-6), name
    assert batch["customer_id"] == live.customer_id
    assert batch[TIMESTAMP] == datetime.fromtimestamp(live.last_ts, UTC)


@hsettings(max_examples=300, deadline=None)
@given(EVENTS)
def test_live_state_equals_batch_state(events):
    """Events applied one by one as they arrive (in time order, ties included) end in the
    features the batch computes from all of them."""
    events = _in_time_order(events)
    live, batch = _live(events), _batch(events)
    assert live.keys() == batch.keys()
    for session, state in live.items():
        _assert_same(state, batch[session])


@hsettings(max_examples=200, deadline=None)
@given(EVENTS, st.randoms(use_true_random=False))
def test_late_events_change_only_the_order(events, rng):
    """Events arriving out of time order: counts, engagement, age and last time still agree;
    the items are the live state's arrival order, the batch's time order (see
    :func:`~pipeline.features.session.apply_event`)."""
    events = _in_time_order(events)
    rng.shuffle(events)
    live, batch = _live(events), _batch(events)
    for session, state in live.items():
        if len(batch[session]["session_items"]) == state.events:  # nothing fell off the tail
            assert sorted(batch[session]["session_items"]) == sorted(state.items)
        _assert_same(state, batch[session], order_too=False)


def test_declared_features_are_the_live_ones():
    assert list(SessionState("s").features()) == [f.name for f in SESSION_FEATURES]


def test_tied_timestamps_keep_arrival_order():
    """Curated times have whole seconds, so a session's events often tie; the batch must keep
    them in the order they came (the live order), also on frames large enough for Polars to
    sort in parallel (an unstable sort scrambled them from about a hundred rows)."""
    kinds = sorted(EVENT_TYPES)
    events = [
        (f"s{i % 7}", None, kinds[i % len(kinds)], f"I{i}", START + timedelta(seconds=i // 50))
        for i in range(5000)
    ]
    live, batch = _live(events), _batch(events)
    for session, state in live.items():
        _assert_same(state, batch[session])
