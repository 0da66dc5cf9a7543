"""Live session state, updated one event at a time.

The same state :func:`pipeline.features.build.session_state` computes in batch from curated
events when they arrive in time order (tests/unit/features/test_session.py checks the two
agree on random event sequences), kept small enough to live in Redis: the last
:data:`~pipeline.features.declarations.SESSION_LENGTH` items and event types, the engagement
weight, the event count and the first and last event times.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

from pipeline.features.declarations import ENGAGEMENT_WEIGHTS, SESSION_LENGTH


@dataclass
class SessionState:
    """What serving keeps per session."""

    session_id: str
    customer_id: str | None = None
    items: list[str] = field(default_factory=list)
    event_types: list[str] = field(default_factory=list)
    weight: float = 0.0
    events: int = 0
    first_ts: float | None = None  # epoch seconds
    last_ts: float | None = None
    purchased: list[str] = field(default_factory=list)

    def features(self) -> dict[str, object]:
        """The session view's features (names as in :mod:`pipeline.features.declarations`)."""
        first, last = self.first_ts, self.last_ts
        age = last - first if first is not None and last is not None else 0.0
        return {
            "session_items": list(self.items),
            "session_event_types": list(self.event_types),
            "engagement": math.log1p(max(self.weight, 0.0)),
            "session_events": float(self.events),
            "session_age_s": float(age or 0.0),
        }

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> SessionState:
        return cls(**json.loads(text))


def apply_event(
    state: SessionState | None,
    session_id: str,
    customer_id: str | None,
    event_type: str,
    item_id: str,
    ts: float,
) -> SessionState:
    """The state after one more event.

    A late event (older than the last one) still counts and moves ``first_ts`` and
    ``last_ts`` correctly, but its item is appended: the items are in arrival order, where
    the batch state has them in time order.
    """
    state = state or SessionState(session_id=session_id)
    state.customer_id = state.customer_id or customer_id
    state.items = [*state.items, item_id][-SESSION_LENGTH:]
    state.event_types = [*state.event_types, event_type][-SESSION_LENGTH:]
    state.weight += ENGAGEMENT_WEIGHTS[event_type]
    state.events += 1
    state.first_ts = ts if state.first_ts is None else min(state.first_ts, ts)
    state.last_ts = ts if state.last_ts is None else max(state.last_ts, ts)
    if event_type == "purchase" and item_id not in state.purchased:
        state.purchased = [*state.purchased, item_id][-50:]
    return state
