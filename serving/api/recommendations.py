"""``POST /recommendations``: the top k items for a page view."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool

from serving.api.deps import RecommenderDep
from serving.api.timing import TimedRoute
from serving.middleware import note
from serving.schemas import Recommendation, RecommendationRequest
from serving.security import ERROR_RESPONSES

router = APIRouter(route_class=TimedRoute, tags=["recommendations"])


# The page view runs in the thread pool: its Redis read may wait up to the timeout, and on
# the event loop that wait stalled every other request (a frozen Redis took the app from
# about 170 to 17 requests/s). The answer is serialised once, by pydantic-core, instead of
# validated again against response_model.
@router.post(
    "/recommendations",
    response_model=Recommendation,
    responses=ERROR_RESPONSES,
    summary="Recommend items for a page view",
    response_description="The top k items, best first.",
)
async def recommendations(
    request: RecommendationRequest, http: Request, recommender: RecommenderDep
) -> Response:
    """The top k items for this shopper and session, each with a recommended size,
    P(fits) and reasons, after the retailer's rules. Never fails on a valid request:
    when the online store is down the answer is flagged `degraded` (and may be the
    popularity fallback, `cold_start`). Items the model does not know are ignored and
    listed in `ignored_items`."""
    answer = await run_in_threadpool(recommender.recommend, request)
    note(http, model_version=answer.model_version, degraded=answer.degraded)
    return Response(answer.model_dump_json(), media_type="application/json")
