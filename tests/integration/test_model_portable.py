"""The registered model runs from its own files, outside fitrec's environment.

A tiny model is trained and registered as the champion; a fresh virtualenv (no system site
packages, no fitrec) is built from the model's logged ``requirements.txt`` and
``constraints.txt`` alone, installing offline from a wheel directory; that virtualenv's
``mlflow models serve --env-manager local`` answers ``/invocations`` exactly as the pyfunc
loaded in this process does.

The wheel directory is cached between runs (``.pytest_cache/d/fitrec-model-wheels``): it is
filled from the package indexes only when an offline install from it fails.
"""

from __future__ import annotations

import ast
import importlib.metadata as metadata
import json
import os
import subprocess
import sys
import venv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pandas as pd
import pytest
from packaging.utils import canonicalize_name

from pipeline.config import Settings
from pipeline.features.declarations import CUSTOMER_ENTITY
from pipeline.model.bundle import export_bundle
from pipeline.model.config import ModelConfig
from pipeline.model.examples import build_dataset
from pipeline.model.scoring import Scorer
from pipeline.model.training import fit
from pipeline.registry import environment, tracking
from tests.conftest import Environment, prepare_days
from tests.support.processes import http_ok, server_process
from tests.support.servers import free_port

pytestmark = pytest.mark.slow

TINY = ModelConfig(epochs=1, embedding_dim=8)


@dataclass
class Registered:
    settings: Settings
    uri: str
    files: Path  # the champion's downloaded model directory
    customer: str
    items: list[str]
    features: list[str]


@pytest.fixture(scope="module")
def registered(raw_drops: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registered]:
    """A tiny model trained on the small drops, registered and promoted to champion."""
    import mlflow

    root = tmp_path_factory.mktemp("portable")
    with Environment(root / "var") as settings:
        last = prepare_days(settings, raw_drops)
        data = build_dataset(settings.curated_dir, settings.features_dir, last, TINY.session_len)
        model, _ = fit(data, TINY)
        bundle = export_bundle(model, data, TINY, root / "bundle")
        scorer = Scorer(bundle)
        done = tracking.log_and_register(
            settings, bundle, TINY.as_params(), {}, scorer.customer_features, scorer.popular[:3]
        )
        tracking.promote(settings, done.version)
        uri = f"models:/{settings.model_name}@champion"
        files = Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(root / "model")))
        known = data.train.get_column(CUSTOMER_ENTITY).unique().sort().to_list()
        yield Registered(
            settings=settings,
            uri=uri,
            files=files,
            customer=known[0],
            items=scorer.popular[:4],
            features=scorer.customer_features,
        )


def _rows(reg: Registered) -> pd.DataFrame:
    """An anonymous empty session, a known customer with a session and features, an unknown
    customer with an unknown item."""
    features = {name: [None, 0.5, None] for name in reg.features[:3]}
    return pd.DataFrame(
        {
            "customer_id": ["", reg.customer, "C-unknown"],
            "session_items": [[], reg.items[:3], ["no-such-item"]],
            "session_events": [[], ["view", "try_on", "view"], ["view"]],
            **features,
        }
    )


def _clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without anything that points at the checkout or its venv."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return {**env, **extra}


def _offline_install(python: Path, requirements: Path, wheels: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(python), "-m", "pip", "install", "--no-index", "--find-links", str(wheels)]
        + ["--disable-pip-version-check", "--no-compile", "-q", "-r", str(requirements)],
        cwd=requirements.parent,
        # No pip configuration: neither the machine's indexes nor its find-links.
        env=_clean_env(PIP_CONFIG_FILE=os.devnull),
        capture_output=True,
        text=True,
        timeout=1500,
    )


@pytest.fixture(scope="module")
def model_venv(
    registered: Registered, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A virtualenv built only from the model's requirements.txt and constraints.txt."""
    requirements = registered.files / "requirements.txt"
    assert (registered.files / environment.CONSTRAINTS_FILE).exists()
    home = tmp_path_factory.mktemp("model-venv") / "venv"
    venv.EnvBuilder(with_pip=True, system_site_packages=False).create(home)
    python = home / "bin" / "python"
    wheels = Path(request.config.cache.mkdir("fitrec-model-wheels"))
    done = _offline_install(python, requirements, wheels)
    if done.returncode != 0:
        # Fill the cache from the package indexes once, then install offline again.
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check"]
            + ["-r", str(requirements), "-w", str(wheels)],
            cwd=requirements.parent,
            check=True,
            capture_output=True,
            timeout=1500,
        )
        done = _offline_install(python, requirements, wheels)
    assert done.returncode == 0, done.stderr[-3000:]
    return home


def test_model_venv_has_no_fitrec_and_the_pinned_versions(registered, model_venv):
    python = model_venv / "bin" / "python"
    code = (
        "import importlib.metadata as m, importlib.util as u, json;"
        "print(json.dumps({'pipeline': u.find_spec('pipeline') is not None,"
        f" 'versions': {{d: m.version(d) for d in {list(environment.PYFUNC_DISTRIBUTIONS)!r}}}}}))"
    )
    done = subprocess.run(
        [str(python), "-c", code],
        cwd=model_venv,
        env=_clean_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    found = json.loads(done.stdout)
    assert found["pipeline"] is False  # fitrec's code can only come from the model
    assert [f"{d}=={v}" for d, v in found["versions"].items()] == environment.pinned(
        environment.PYFUNC_DISTRIBUTIONS
    )


def test_model_served_from_its_own_virtualenv_answers_as_in_process(registered, model_venv):
    import mlflow

    rows = _rows(registered)
    expected = mlflow.pyfunc.load_model(registered.uri).predict(rows, params={"k": 5})
    port = free_port()
    log = model_venv.parent / "serve.log"
    # As with the virtualenv activated: MLflow starts the scoring server by name (uvicorn).
    env = _clean_env(
        MLFLOW_TRACKING_URI=registered.settings.tracking_uri,
        PATH=f"{model_venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    base = f"http://127.0.0.1:{port}"
    with server_process(
        [str(model_venv / "bin" / "mlflow"), "models", "serve", "-m", registered.uri]
        + ["--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)],
        log,
        ready=http_ok(f"{base}/ping"),
        env=env,
        cwd=model_venv.parent,
        interval=1,
    ):
        body = {"dataframe_split": json.loads(rows.to_json(orient="split")), "params": {"k": 5}}
        answer = httpx.post(f"{base}/invocations", json=body, timeout=120)
        assert answer.status_code == 200, answer.text
        served = answer.json()["predictions"]
    assert len(served) == len(expected) == 3
    for got, want in zip(served, expected.to_dict("records"), strict=True):
        assert got["item_ids"] == list(want["item_ids"])
        assert len(got["item_ids"]) == 5
        assert got["scores"] == pytest.approx(list(want["scores"]), rel=1e-6, abs=1e-7)
    # The rows differ, so the answers do: the comparison is not of three copies of one list.
    assert served[0]["item_ids"] != served[1]["item_ids"]


def test_requirements_cover_what_the_loaded_code_imports(registered):
    """Every third-party module imported by the fitrec modules the loaded model uses is one
    of the pinned distributions (the virtualenv test above would fail on a missing one, this
    one names it)."""
    code = (
        "import sys, json, mlflow, pandas as pd;"
        f"m = mlflow.pyfunc.load_model({str(registered.files)!r});"
        "m.predict(pd.DataFrame({'customer_id': [''], 'session_items': [[]]}));"
        "print(json.dumps({n: getattr(sys.modules[n], '__file__', None) for n in sys.modules"
        " if n.split('.')[0] == 'pipeline'}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=registered.files.parent,
        env=_clean_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    # Without PYTHONPATH or an installed fitrec in reach, the code comes from the model.
    files = [Path(f) for f in loaded.values() if f]
    assert files and all(registered.files / "code" in f.parents for f in files), files
    imported = (
        {
            name
            for path in [*files, registered.files / "pyfunc_entry.py"]
            for name in _top_level_imports(path)
        }
        - set(sys.stdlib_module_names)
        - {"pipeline"}
    )
    owners = metadata.packages_distributions()  # module -> distributions (mlflow: three)
    pinned = {canonicalize_name(d) for d in environment.PYFUNC_DISTRIBUTIONS}
    uncovered = {
        name
        for name in imported
        if not pinned & {canonicalize_name(d) for d in owners.get(name, [name])}
    }
    assert not uncovered
    assert {"tensorflow", "tensorflow_recommenders", "polars", "mlflow"} <= imported


def _top_level_imports(path: Path) -> set[str]:
    """Top-level modules ``path`` imports, leaving out optional ones (imported in a ``try``
    whose handler catches ModuleNotFoundError or ImportError)."""
    tree = ast.parse(path.read_text())
    optional = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.Try)
        and any(
            isinstance(h.type, ast.Name) and h.type.id in ("ModuleNotFoundError", "ImportError")
            for h in node.handlers
        )
        for statement in node.body
        for inner in ast.walk(statement)
    }
    names: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in optional:
            continue
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_serving_imports_nothing_of_the_train_extra(registered):
    """The ``serve`` extra is enough for serving: importing the app, loading the champion and
    answering a page view import none of the ``train`` extra's own packages (SciPy is left
    out of the check: MLflow imports it; TensorFlow is in both extras)."""
    code = (
        "import sys, json;"
        "import serving.app;"
        "from serving.recommender import Recommender, RecommendationRequest;"
        "rec = Recommender.from_registry();"
        f"request = RecommendationRequest(session_items={registered.items[:2]!r}, k=5);"
        "answer = rec.recommend(request);"
        "print(json.dumps({'items': len(answer.items), 'modules': sorted("
        "{n.split('.')[0] for n in sys.modules})}))"
    )
    env = _clean_env(
        PYTHONPATH=str(Path(__file__).resolve().parents[2]),
        FITREC_DATA_DIR=str(registered.settings.data_dir),
        FITREC_REDIS_URL="",
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["items"] == 5
    assert "tensorflow" in found["modules"]  # the SavedModel: why serve needs TensorFlow
    assert not {"prefect", "implicit", "matplotlib", "sklearn"} & set(found["modules"])
