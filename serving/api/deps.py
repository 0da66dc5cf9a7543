"""Typed dependencies: the app's parts, which live on ``app.state`` from start-up (the
lifespan) to shut-down.

Async so that FastAPI calls them on the event loop, not through its thread pool.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from pipeline.config import Settings
from serving.events import EventProcessor
from serving.metrics import Metrics
from serving.recommender import Recommender


async def get_settings(request: Request) -> Settings:
    """The app's settings (set when the app is made)."""
    return request.app.state.settings


async def get_recommender(request: Request) -> Recommender:
    """The app's recommender."""
    return request.app.state.recommender


async def get_loaded_recommender(request: Request) -> Recommender | None:
    """The app's recommender, None before one is loaded (readiness asks)."""
    return getattr(request.app.state, "recommender", None)


async def get_processor(request: Request) -> EventProcessor:
    """The app's event processor."""
    return request.app.state.processor


async def get_metrics(request: Request) -> Metrics:
    """The app's Prometheus metrics."""
    return request.app.state.metrics


SettingsDep = Annotated[Settings, Depends(get_settings)]
RecommenderDep = Annotated[Recommender, Depends(get_recommender)]
LoadedRecommenderDep = Annotated[Recommender | None, Depends(get_loaded_recommender)]
ProcessorDep = Annotated[EventProcessor, Depends(get_processor)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
