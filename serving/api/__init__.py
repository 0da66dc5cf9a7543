"""The HTTP routes, one ``APIRouter`` per concern, assembled by :func:`serving.app.create_app`.

- :mod:`serving.api.recommendations`: ``POST /recommendations``.
- :mod:`serving.api.events`: ``POST /events``.
- :mod:`serving.api.probes`: ``GET /health``, ``/health/live``, ``/health/ready``.
- :mod:`serving.api.metrics`: ``GET /metrics`` (Prometheus).

The app's parts reach the routes through the typed dependencies of :mod:`serving.api.deps`;
the timed routes' latency and errors are counted once, by :class:`serving.api.timing.TimedRoute`.
"""
