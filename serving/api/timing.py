"""Endpoint latency and errors, counted once for every route of a timed router.

:class:`TimedRoute` wraps the route's handler: a request the endpoint answered (or failed
on, a 500) is observed in ``fitrec_request_seconds{endpoint}``, and a failure counted in
``fitrec_errors{endpoint}``; a request refused as the client's error (401, 413, 422, 429)
is neither, as before the routes were timed here. The endpoint label is the route's name
(its function's name: ``recommendations``, ``events``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from serving.events import EventTimeError

CLIENT_ERRORS = (HTTPException, RequestValidationError, EventTimeError)
"""Answered as the client's error (by the app's handlers): not the endpoint's."""


class TimedRoute(APIRoute):
    """An ``APIRoute`` whose requests are timed and whose failures are counted."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        endpoint = self.name

        async def timed(request: Request) -> Response:
            start = time.perf_counter()
            try:
                response = await handler(request)
            except CLIENT_ERRORS:
                raise
            except Exception:
                metrics = request.app.state.metrics
                metrics.errors.labels(endpoint).inc()
                metrics.latency.labels(endpoint).observe(time.perf_counter() - start)
                raise
            request.app.state.metrics.latency.labels(endpoint).observe(time.perf_counter() - start)
            return response

        return timed
