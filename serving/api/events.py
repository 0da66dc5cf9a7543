"""``POST /events``: a shopper's event, logged durably, the live session updated."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from serving.api.deps import ProcessorDep
from serving.api.timing import TimedRoute
from serving.events import SessionEventRequest
from serving.middleware import note
from serving.security import ERROR_RESPONSES

router = APIRouter(route_class=TimedRoute, tags=["events"])


class EventResponse(BaseModel):
    """An accepted event and the session as it stands after it."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"accepted": True, "degraded": False, "session_events": 4.0, "engagement": 1.79}
            ]
        }
    )

    accepted: bool = Field(
        description="Always true in a 200: the event is in the durable log (ingested nightly).",
        examples=[True],
    )
    degraded: bool = Field(
        description=(
            "The live session state in Redis could not be updated (Redis down or slow): the "
            "event is logged, but the next page view does not see it yet."
        ),
        examples=[False],
    )
    session_events: float | None = Field(
        default=None,
        description="Events in the session so far, this one included (null when degraded).",
        examples=[4.0],
    )
    engagement: float | None = Field(
        default=None,
        description=(
            "log1p of the session's weighted events (a view weighs 1, a purchase 8); "
            "unitless, null when degraded."
        ),
        examples=[1.79],
    )


async def event_time_error(request: Request, exc: Exception) -> JSONResponse:
    """An event time outside the accepted window: a 422 on ``ts``, shaped like pydantic's."""
    detail = [{"loc": ["body", "ts"], "msg": str(exc), "type": "event_time", "input": None}]
    return JSONResponse({"detail": detail}, status_code=422)


@router.post(
    "/events",
    response_model=EventResponse,
    responses=ERROR_RESPONSES,
    summary="Record a shopper's event",
    response_description="Logged durably; the session as it stands now.",
)
def events(event: SessionEventRequest, http: Request, processor: ProcessorDep) -> EventResponse:
    """Append the event to the durable event log (fsynced within
    FITREC_EVENTS_SYNC_SECONDS, 0.2 s by default; the nightly ingest reads it), update the
    session's live state in Redis and push its features to Feast. An event time outside
    the accepted window is a 422 on `ts`. `degraded`: logged, but the live session state
    could not be updated."""
    processor.event_time(event)  # refused (422) outside the window the ingest reads
    state, degraded = processor.process(event)
    note(http, degraded=degraded)
    features = state.features() if state else {}
    # Validated, not passed as keywords: the features dict's values are typed object.
    return EventResponse.model_validate(
        {
            "accepted": True,
            "degraded": degraded,
            "session_events": features.get("session_events"),
            "engagement": features.get("engagement"),
        }
    )
