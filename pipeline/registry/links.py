"""Where a person opens an MLflow run: its UI address, and the metrics it holds.

A tracking server (``http(s)://``) serves its own UI, so a run's address is the server's
``#/experiments/<id>/runs/<run>`` page. A SQLite database or a file store has no UI until
someone starts ``mlflow ui --backend-store-uri <store>``, which listens on
:data:`LOCAL_UI` by default; the address is that UI's page for the run. (A ``file://`` path to
the run's folder would open, but shows only MLflow's ``meta.yaml`` and metric files, not the
run.)
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from mlflow import MlflowClient

from pipeline.config import Settings

LOCAL_UI = "http://127.0.0.1:5000"  # `mlflow ui`'s default address


@dataclass(frozen=True)
class RunLink:
    """An MLflow run as a person finds it: its address, how to open it, its metrics."""

    run_id: str
    experiment_id: str
    url: str
    how_to_open: str  # markdown: one sentence
    metrics: dict[str, float]


def served_by_tracking_server(tracking_uri: str) -> bool:
    return urlsplit(tracking_uri).scheme in {"http", "https"}


def ui_base(tracking_uri: str) -> str:
    """The UI's address for a tracking URI (never with the URI's credentials)."""
    if not served_by_tracking_server(tracking_uri):
        return LOCAL_UI
    parts = urlsplit(tracking_uri)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def run_url(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    return f"{ui_base(tracking_uri)}/#/experiments/{experiment_id}/runs/{run_id}"


def how_to_open(tracking_uri: str) -> str:
    if served_by_tracking_server(tracking_uri):
        return "Served by the MLflow tracking server."
    scheme = urlsplit(tracking_uri).scheme
    # Only local stores are named: a database URI may carry a password.
    store = tracking_uri if scheme in {"sqlite", "file", ""} else "<tracking URI>"
    return f"Opens once `mlflow ui --backend-store-uri {store}` runs (port 5000 by default)."


def run_link(settings: Settings, run_id: str) -> RunLink:
    """The run's address and the metrics MLflow holds for it (latest value of each)."""
    run = MlflowClient(settings.tracking_uri, settings.tracking_uri).get_run(run_id)
    experiment_id = str(run.info.experiment_id)
    return RunLink(
        run_id=run_id,
        experiment_id=experiment_id,
        url=run_url(settings.tracking_uri, experiment_id, run_id),
        how_to_open=how_to_open(settings.tracking_uri),
        metrics=dict(run.data.metrics),
    )
