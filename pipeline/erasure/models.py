"""Erasure in the model registry: versions whose artifacts hold an erased pseudonym."""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pipeline import traces
from pipeline.config import Settings
from pipeline.data.tombstones import erased_pseudonyms
from pipeline.traces import Who

log = logging.getLogger(__name__)


# --- models ------------------------------------------------------------------------------------


def purge_models(settings: Settings, pseudonyms: Iterable[str] | None = None) -> dict[str, Any]:
    """Registered model versions whose artifacts hold an erased pseudonym (vocabulary,
    embeddings): every one but the champion is deleted with its run's artifacts; the
    champion is kept until a model trained after the erasure replaces it (the next nightly
    retrain, then this runs again). Returns the versions deleted and whether the champion
    still holds one."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from pipeline.registry import tracking as registry

    needles = frozenset(pseudonyms if pseudonyms is not None else erased_pseudonyms(settings))
    result: dict[str, Any] = {"deleted": [], "champion_holds": False}
    local_db = settings.tracking_uri.removeprefix("sqlite:///")
    if not needles or (
        settings.tracking_uri.startswith("sqlite:///") and not Path(local_db).exists()
    ):
        return result  # nobody erased, or no registry yet (not created just to look)
    client: MlflowClient = registry.configure(settings)
    try:
        versions = client.search_model_versions(f"name='{settings.model_name}'")
    except MlflowException:
        return result
    champion = registry.champion_version(client, settings.model_name)
    who = Who(frozenset(), needles, settings.pseudonym_keys)
    for version in sorted(versions, key=lambda v: int(v.version)):
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(registry.download_bundle(settings, str(version.version), Path(tmp)))
            holds = any(traces.file_names(p, who) for p in local.parent.rglob("*") if p.is_file())
        if not holds:
            continue
        if str(version.version) == champion:
            result["champion_holds"] = True
            continue
        _delete_artifacts(client, version)
        client.delete_model_version(settings.model_name, str(version.version))
        result["deleted"].append(str(version.version))
    return result


def _delete_artifacts(client: Any, version: Any) -> None:
    """Remove a version's files where the artifact store is a local folder (elsewhere the
    run is deleted and ``mlflow gc`` removes its artifacts)."""
    from urllib.parse import urlparse

    uris = [version.source or ""]
    if version.run_id:
        uris.append(client.get_run(version.run_id).info.artifact_uri or "")
    for uri in uris:
        parsed = urlparse(uri)
        if parsed.scheme in ("file", "") and parsed.path and Path(parsed.path).exists():
            shutil.rmtree(parsed.path, ignore_errors=True)
    # MLflow 3: the version's source is its logged model, ``models:/m-...``.
    model_id = getattr(version, "model_id", None)
    source = version.source or ""
    if not model_id and source.startswith("models:/m-"):
        model_id = source.removeprefix("models:/").split("/")[0]
    if model_id:
        try:
            model = client.get_logged_model(model_id)
            parsed = urlparse(model.artifact_location)
            if parsed.scheme in ("file", "") and Path(parsed.path).exists():
                shutil.rmtree(parsed.path, ignore_errors=True)
            client.delete_logged_model(model_id)
        except Exception as exc:  # noqa: BLE001 - older MLflow (no logged models): say so
            log.warning("erasure: logged model of version %s not deleted: %s", version.version, exc)
    if version.run_id:
        client.delete_run(version.run_id)
