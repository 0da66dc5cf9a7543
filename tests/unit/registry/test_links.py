"""Addresses of MLflow runs for Prefect's link artifacts."""

from __future__ import annotations

from pipeline.registry.links import LOCAL_UI, how_to_open, run_url


def test_a_tracking_server_links_its_own_ui_without_credentials():
    url = run_url("https://ml:secret@mlflow.example.com:8443/mlflow/", "3", "abc123")
    assert url == "https://mlflow.example.com:8443/mlflow/#/experiments/3/runs/abc123"
    assert how_to_open("http://127.0.0.1:5000") == "Served by the MLflow tracking server."


def test_a_local_store_links_the_mlflow_ui_and_says_how_to_start_it():
    uri = "sqlite:////data/fitrec/mlflow.db"
    assert run_url(uri, "1", "r1") == f"{LOCAL_UI}/#/experiments/1/runs/r1"
    assert f"mlflow ui --backend-store-uri {uri}" in how_to_open(uri)
    assert run_url("/data/mlruns", "0", "r2") == f"{LOCAL_UI}/#/experiments/0/runs/r2"


def test_a_database_store_is_never_named_with_its_password():
    text = how_to_open("postgresql://fitrec:hunter2@db:5432/mlflow")
    assert "hunter2" not in text and "<tracking URI>" in text
