"""What the registered model needs to load and predict outside this checkout.

The pyfunc flavour (:mod:`pipeline.registry.pyfunc`) loads the bundle through
:class:`~pipeline.model.scoring.Scorer`, which loads the SavedModel (TensorFlow, with
TensorFlow Recommenders and tf-keras through :mod:`pipeline.tfenv`) and reads the catalogue
with Polars; MLflow and pandas carry the rows in and out. Those are the distributions the
model's ``requirements.txt`` names, pinned to the versions running when it is logged; every
distribution they pull in is pinned in its ``constraints.txt``, so a virtualenv built from
the two is the environment the model was trained and tested in. fitrec itself is not a
requirement (it is not published): the ``pipeline`` package travels with the model as
``code_paths``, which MLflow puts on ``sys.path`` before it loads the model.

``tests/integration/test_model_portable.py`` builds that virtualenv from the logged files
alone, serves the model with its ``mlflow models serve`` and holds the answers equal to the
in-process ones; it also checks that this list covers every third-party module the loaded
fitrec code imports.
"""

from __future__ import annotations

import importlib.metadata as metadata
import shutil
from collections.abc import Iterable
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import pipeline

# Distributions the pyfunc imports when it loads and predicts (directly, or TensorFlow's
# Keras 2 flavour that TF_USE_LEGACY_KERAS=1 selects).
PYFUNC_DISTRIBUTIONS: tuple[str, ...] = (
    "mlflow",
    "pandas",
    "numpy",
    "polars",
    "tensorflow",
    "tf-keras",
    "tensorflow-recommenders",
)

CONSTRAINTS_FILE = "constraints.txt"
# Installers, not imports: a virtualenv brings its own, and pinning them would only make
# MLflow warn about a mismatch in every environment but this one.
NOT_CONSTRAINED = frozenset({"pip", "setuptools", "wheel"})


def pinned(names: Iterable[str]) -> list[str]:
    """``name==version`` for each installed distribution in ``names``."""
    return [f"{name}=={metadata.version(name)}" for name in names]


def dependency_closure(names: Iterable[str]) -> list[str]:
    """Every installed distribution that ``names`` need, directly or not (markers evaluated
    for this interpreter, extras not followed), without themselves and the installers
    (:data:`NOT_CONSTRAINED`); sorted canonical names."""
    roots = {canonicalize_name(n) for n in names}
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue  # a marker-less requirement for another platform: not installed here
        seen.add(name)
        for line in requires:
            requirement = Requirement(line)
            if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
                continue
            todo.append(canonicalize_name(requirement.name))
    return sorted(seen - roots - NOT_CONSTRAINED)


def write_constraints(directory: Path) -> Path:
    """Pins of every dependency of :data:`PYFUNC_DISTRIBUTIONS` in ``directory``."""
    path = directory / CONSTRAINTS_FILE
    path.write_text("\n".join(pinned(dependency_closure(PYFUNC_DISTRIBUTIONS))) + "\n")
    return path


def pip_requirements(directory: Path) -> list[str]:
    """The model's ``pip_requirements``: pinned imports plus ``-c`` the constraints written
    into ``directory`` (MLflow copies that file into the model)."""
    return [*pinned(PYFUNC_DISTRIBUTIONS), f"-c {write_constraints(directory)}"]


def code_paths(directory: Path) -> list[str]:
    """A clean copy of the ``pipeline`` package (sources only) in ``directory``, for
    ``log_model(code_paths=...)``."""
    source = Path(pipeline.__file__).parent
    target = directory / "pipeline"
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return [str(target)]
