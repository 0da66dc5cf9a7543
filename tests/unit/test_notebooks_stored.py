"""The notebooks are committed executed: every code cell has its outputs, the plots are there
as images, and no cell stored an error (``tests/integration/test_notebooks.py`` re-runs them)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).parents[2] / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stored_executed_with_plots(path: Path):
    notebook = nbformat.read(path, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(cell.outputs for cell in code), "store the notebook executed"
    assert all(cell.execution_count for cell in code)
    found = [o for cell in code for o in cell.outputs]
    assert not [o for o in found if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in found), "no plot stored"
