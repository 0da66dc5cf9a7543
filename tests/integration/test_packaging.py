"""fitrec as a package: the wheel carries what an installed fitrec needs (feature_repo with
its Feast config, the console script) and nothing of the checkout's tests; the extras split
the roles; every dependency is pinned in requirements.lock."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from email.parser import Parser

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from pipeline.config import PROJECT_ROOT

PYPROJECT = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
# What the checkout holds beside the sources; copying them would only slow the build down.
NOT_SOURCES = shutil.ignore_patterns(
    ".git", ".venv", "var", "build", "*.egg-info", "__pycache__", ".*_cache", "mlruns"
)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    """fitrec's wheel, built (non-editable, isolated build) from a copy of the checkout."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "src"
    shutil.copytree(PROJECT_ROOT, source, ignore=NOT_SOURCES)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "--disable-pip-version-check"]
        + [str(source), "-w", str(root / "dist")],
        check=True,
        capture_output=True,
        timeout=600,
    )
    (built,) = (root / "dist").glob("fitrec-*.whl")
    return zipfile.ZipFile(built)


def _metadata(wheel: zipfile.ZipFile):
    (name,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    return Parser().parsestr(wheel.read(name).decode())


def test_wheel_holds_feature_repo_and_the_code_not_the_tests(wheel):
    names = set(wheel.namelist())
    repo = {f"feature_repo/{p.name}" for p in (PROJECT_ROOT / "feature_repo").iterdir()}
    repo -= {"feature_repo/__pycache__", "feature_repo/data"}
    assert {"feature_repo/feature_store.yaml", "feature_repo/.feastignore"} <= repo <= names
    assert "pipeline/registry/pyfunc_entry.py" in names
    assert {"serving/app.py", "flows/cli/__init__.py", "flows/cli/__main__.py"} <= names
    tops = {n.split("/")[0] for n in names if not n.startswith("fitrec-")}
    assert tops == {"pipeline", "flows", "serving", "feature_repo"}
    assert not [n for n in names if "__pycache__" in n]
    # Test tooling (server starters, drills, certificates) lives in tests/support, not here.
    assert not [n for n in names if n.startswith("pipeline/testing")]
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    assert "fitrec = flows.cli:app" in wheel.read(entry_points).decode()


def test_wheel_metadata_splits_roles_and_supports_311_and_312(wheel):
    meta = _metadata(wheel)
    assert meta["Requires-Python"] in (">=3.11,<3.13", "<3.13,>=3.11")
    assert {"serve", "train", "postgres", "dev", "bench"} <= set(meta.get_all("Provides-Extra"))
    core = {
        canonicalize_name(Requirement(r).name)
        for r in meta.get_all("Requires-Dist")
        if "extra ==" not in r
    }
    # A serving host gets neither the trainer's nor the orchestrator's stack from core.
    assert not core & {"tensorflow", "prefect", "implicit", "matplotlib", "psycopg2-binary"}
    assert {"feast", "mlflow", "polars", "pydantic-settings"} <= core


def test_every_dependency_and_extra_is_pinned_in_the_lock():
    locked = {
        canonicalize_name(line.split("==")[0])
        for line in (PROJECT_ROOT / "requirements.lock").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    }
    project = PYPROJECT["project"]
    declared = [*project["dependencies"], *sum(project["optional-dependencies"].values(), [])]
    missing = {
        canonicalize_name(Requirement(r).name)
        for r in declared
        if canonicalize_name(Requirement(r).name) not in locked
    }
    assert not missing
