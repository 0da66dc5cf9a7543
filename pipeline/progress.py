"""Progress lines of long steps (training epochs, registration, materialisation).

One logger, ``fitrec.progress``, so a command line can show exactly these lines (``fitrec
demo`` prints them under its spinner) and a flow's logs carry them, while the modules'
own loggers stay at their usual levels. Lines carry counts and seconds, never customer data.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

PROGRESS_LOGGER = "fitrec.progress"
progress = logging.getLogger(PROGRESS_LOGGER)


@contextmanager
def timed(what: str, start_note: str = "") -> Iterator[dict[str, object]]:
    """Log ``<what> ...`` on entry and ``<what> done in N.Ns (<notes>)`` on exit.

    The caller fills the yielded dict with counts to report at the end (``{"rows": 10}``
    ends as ``rows 10``).
    """
    notes: dict[str, object] = {}
    progress.info("%s%s ...", what, f" ({start_note})" if start_note else "")
    began = time.perf_counter()
    yield notes
    seconds = time.perf_counter() - began
    detail = ", ".join(f"{k} {v}" for k, v in notes.items())
    progress.info("%s done in %.1fs%s", what, seconds, f" ({detail})" if detail else "")
