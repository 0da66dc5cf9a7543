"""Notebooks are executed so they cannot rot, and they must draw: each one is re-run here and
must produce its plots as images, with no error. ``data_tour`` needs no run; ``explore_run``
reads a nightly run's data dir and ``model_report`` its champion's evaluation (both the shared
``served`` run).

The committed copies are stored executed (``tests/unit/test_notebooks_stored.py`` checks that),
so a reader on GitHub sees the plots without running anything."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).parents[2]


def execute(name: str) -> nbformat.NotebookNode:
    notebook = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    for cell in notebook.cells:  # what we check must come from this run, not the stored copy
        if cell.cell_type == "code":
            cell.outputs = []
    NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(ROOT / "notebooks")}},
    ).execute()
    return notebook


def outputs(notebook: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]


def images(notebook: nbformat.NotebookNode) -> int:
    return sum("image/png" in o.get("data", {}) for o in outputs(notebook))


@pytest.mark.slow
def test_data_tour_draws_its_plots(monkeypatch):
    monkeypatch.setenv("FITREC_PROJECT_ROOT", str(ROOT))
    notebook = execute("data_tour.ipynb")
    assert not [o for o in outputs(notebook) if o.output_type == "error"]
    assert images(notebook) == 3  # body measurements, fit mix, session lengths


@pytest.mark.slow
def test_explore_run_draws_its_plots(served, monkeypatch):
    monkeypatch.setenv("FITREC_PROJECT_ROOT", str(ROOT))
    notebook = execute("explore_run.ipynb")
    assert not [o for o in outputs(notebook) if o.output_type == "error"]
    assert images(notebook) >= 2


@pytest.mark.slow
def test_model_report_draws_the_champions_evaluation(served, monkeypatch):
    monkeypatch.setenv("FITREC_PROJECT_ROOT", str(ROOT))
    notebook = execute("model_report.ipynb")
    assert not [o for o in outputs(notebook) if o.output_type == "error"]
    # Against baselines, by segment, the reliability diagram and the size confusion matrix.
    assert images(notebook) == 4
    text = "".join(o.get("text", "") for o in outputs(notebook))
    assert "version" in text and "run" in text  # it names the champion it read
