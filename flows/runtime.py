"""Prefect's API for flows run by hand, started so that it starts every time.

With ``PREFECT_API_URL`` set, flows talk to that server and nothing starts here. Without it,
Prefect starts a temporary ("ephemeral") API server in a subprocess on the first flow run and
waits for it ``PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS`` (20 s by default, read when
Prefect is imported). On a busy machine its start-up (imports, database migrations) can take
longer, and the run dies with "Timed out while attempting to connect to ephemeral Prefect API
server". :func:`start_prefect_api` starts that same server first, with a generous timeout and
one retry on a fresh port; Prefect's flow runs then find it running.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

# Seconds to wait for the ephemeral API to answer: the first attempt, then the retry.
STARTUP_TIMEOUTS = (120, 240)


def start_prefect_api(timeouts: tuple[int, ...] = STARTUP_TIMEOUTS) -> str | None:
    """Start Prefect's ephemeral API unless a server is configured; return its URL.

    Args:
        timeouts: Seconds to wait for the server to answer, one per attempt; a server that
            did not answer in time is stopped before the next attempt starts a new one.

    Returns:
        The ephemeral API's URL, or None when ``PREFECT_API_URL`` names a server (or
        Prefect's ephemeral mode is off: then Prefect itself reports what is missing).

    Raises:
        RuntimeError: Prefect's own error when no attempt answered in time (or
            ``httpx.HTTPError`` when the last one answered but was not healthy).
    """
    import httpx
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    if settings.api.url or not settings.server.ephemeral.enabled:
        return None
    for attempt, timeout in enumerate(timeouts, 1):
        server = SubprocessASGIServer()  # the instance Prefect's clients use
        try:
            server.start(timeout=timeout)
        except (RuntimeError, httpx.HTTPError) as error:  # no answer, or not yet healthy
            server.stop()  # and forget it, so the next attempt is a new server on a new port
            if attempt == len(timeouts):
                raise
            log.warning(
                "Prefect's ephemeral API did not answer in %d s (attempt %d of %d), "
                "starting it again: %s",
                timeout,
                attempt,
                len(timeouts),
                str(error).partition(" stdout:")[0],
            )
        else:
            return server.api_url
    return None
