"""Keep third-party chatter out of fitrec's command line (called by entry points, never on import).

What is silenced is named, each by category and module: notices that a library's feature is
experimental, a dependency's deprecation inside another dependency, INFO records of chatty
loggers. Errors are never hidden, and a warning of any other category or module still
shows. TensorFlow's C++ logging is the exception that needs a blunter tool: its start-up
INFO lines ignore ``TF_CPP_MIN_LOG_LEVEL`` (they are written before absl logging is
initialised), so :func:`import_quietly` drops exactly those lines from the process's
stderr while TensorFlow loads and passes everything else through. Export
``TF_CPP_MIN_LOG_LEVEL=0`` to see all of TensorFlow's C++ logs again.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

# (message regex, category, module regex), each ignored: Feast warns on every use of stream and
# on-demand feature views that they are experimental; MLflow's SQLAlchemy store uses a
# loader strategy SQLAlchemy 2.1 deprecates (nothing fitrec can change).
WARNING_FILTERS: tuple[tuple[str, type[Warning], str], ...] = (
    ("Stream feature views are experimental", RuntimeWarning, r"feast\.stream_feature_view"),
    ("On demand feature view is an experimental", RuntimeWarning, r"feast\.feature_store"),
    ("", DeprecationWarning, r"mlflow\.store\.tracking\.sqlalchemy_store"),
)

# Loggers whose INFO records narrate routine work (database migrations, input validation);
# their warnings and errors still show.
CHATTY_LOGGERS = ("mlflow", "alembic", "absl")

# TensorFlow's C++ log lines at INFO level ("I0000 00:00:1796168398.595676  10377 port.cc:153]
# ...") and absl's notice that precedes them.
_NATIVE_INFO = re.compile(
    r"^(I\d{4} \d\d:\d\d:[\d.]+ +\d+ [\w.\-/]+:\d+\] "
    r"|WARNING: All log messages before absl::InitializeLog\(\) is called)"
)


def quiet_third_parties() -> None:
    """Filter the known third-party notices and lower chatty loggers to WARNING.

    Call once when a command starts, before TensorFlow is imported: TensorFlow reads its
    C++ log level (3: fatal only; its failures reach Python as exceptions) at import.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # MLflow's per-file download bar (logging a model re-reads its artifacts); fitrec's own
    # progress line says when registration starts and ends.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for message, category, module in WARNING_FILTERS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
    for name in CHATTY_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level < logging.WARNING:
            logger.setLevel(logging.WARNING)


@contextmanager
def without_native_info(stream_fd: int = 2) -> Iterator[None]:
    """Hold what is written to file descriptor ``stream_fd`` (by C++ or Python) until the
    block ends, then write it back without the native INFO lines (:data:`_NATIVE_INFO`)."""
    sys.stderr.flush()
    saved = os.dup(stream_fd)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), stream_fd)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, stream_fd)
            os.close(saved)
            held.seek(0)
            text = held.read().decode("utf8", errors="replace")
            kept = [line for line in text.splitlines(True) if not _NATIVE_INFO.match(line)]
            if kept:
                os.write(stream_fd, "".join(kept).encode("utf8"))


def import_quietly() -> None:
    """Import TensorFlow (through :mod:`pipeline.tfenv`), Feast and MLflow without their noise.

    TensorFlow's start-up INFO lines are dropped (:func:`without_native_info`). Feast's
    modules call ``warnings.simplefilter("once", ...)`` for whole categories and MLflow sets
    its logger to INFO when imported, which would undo :func:`quiet_third_parties`: it runs
    again after them.
    """
    if "pipeline.tfenv" not in sys.modules:
        with without_native_info():
            import pipeline.tfenv  # noqa: F401
    import feast  # noqa: F401
    import mlflow  # noqa: F401

    quiet_third_parties()
