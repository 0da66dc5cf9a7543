"""Feast glue: the repository config for this environment, apply, materialise, read online.

One resolution, two callers. :func:`config_document` turns :class:`~pipeline.config.Settings`
into Feast's configuration: the registry at ``<data dir>/feast/registry.db``, the online store
SQLite at ``<data dir>/feast/online_store.db``, or Redis when ``FITREC_REDIS_URL`` is set.

- fitrec itself builds its :class:`~feast.RepoConfig` from the settings it is given
  (:func:`repo_config`, :func:`feature_store`).
- Stock Feast (``cd feature_repo && feast plan|apply|serve|...``, or
  ``FeatureStore(repo_path="feature_repo")``) reads ``feature_repo/feature_store.yaml``, whose
  registry store (:class:`FitrecRegistryStore`) and online store
  (:data:`ONLINE_STORE_TYPE`, :class:`FitrecOnlineStoreConfig`) are resolved here from the
  settings of the environment (:func:`environment_settings`) when Feast loads the file.
  Nothing is written into the checkout and no secret into any file: the Redis URL (and its
  password) stays in the environment or ``.env``.

Feast's own ``${VAR}`` expansion (``os.path.expandvars``) cannot give a default (an unset
``${FITREC_DATA_DIR}`` stays in the path as written), nor read ``.env`` or the production
profile, so the file names fitrec's resolution instead of repeating it.

Feast objects are read from ``feature_repo/`` exactly as ``feast apply`` reads them.
"""

from __future__ import annotations

import importlib
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import polars as pl
import yaml
from feast import (
    Entity,
    FeatureService,
    FeatureStore,
    FeatureView,
    OnDemandFeatureView,
    RepoConfig,
    StreamFeatureView,
)
from feast.data_source import DataSource
from feast.infra.registry.file import FileRegistryStore
from feast.repo_config import RegistryConfig, get_online_config_from_type
from feast.repo_contents import RepoContents
from feast.repo_operations import extract_objects_for_apply_delete, get_repo_files
from pydantic import ValidationError

from pipeline.config import FEATURE_REPO, Settings
from pipeline.redis_url import RedisTarget

REGISTRY_STORE_TYPE = "pipeline.features.store.FitrecRegistryStore"
"""``registry.registry_store_type`` in ``feature_repo/feature_store.yaml``."""
ONLINE_STORE_TYPE = "pipeline.features.store.FitrecOnlineStore"
"""``online_store.type`` in ``feature_repo/feature_store.yaml``: Feast imports its config
class, :class:`FitrecOnlineStoreConfig` (Feast appends ``Config`` to the name)."""


def environment_settings() -> Settings:
    """The settings of this environment, read afresh: ``FITREC_*`` variables, then a ``.env``
    in the working directory, then the project's ``.env`` (:class:`~pipeline.config.Settings`;
    Feast's CLI runs in ``feature_repo/``, fitrec usually in the project root, and both see
    the project's ``.env``)."""
    return Settings()


def registry_path(settings: Settings) -> Path:
    return settings.feast_dir / "registry.db"


def online_store_config(settings: Settings) -> dict[str, Any]:
    """The ``online_store`` section: Redis (Feast's store reading fitrec's URL, so that any
    password works) when ``FITREC_REDIS_URL`` is set, else SQLite under the data dir."""
    if settings.redis_url:
        return RedisTarget.parse(settings.redis_url).feast_online_store()
    return {"type": "sqlite", "path": str(settings.feast_dir / "online_store.db")}


def config_document(settings: Settings) -> dict[str, Any]:
    """``feature_store.yaml`` with the registry and online store resolved for ``settings``."""
    base = yaml.safe_load((FEATURE_REPO / "feature_store.yaml").read_text())
    base["registry"] = str(registry_path(settings))
    base["online_store"] = online_store_config(settings)
    return base


def repo_config(settings: Settings) -> RepoConfig:
    config = RepoConfig(**config_document(settings))
    config.repo_path = FEATURE_REPO
    return config


class FitrecRegistryStore(FileRegistryStore):
    """Feast's file registry, at the path fitrec resolves (``<data dir>/feast/registry.db``)
    rather than the ``path`` of ``feature_store.yaml``; its folder is created if missing."""

    def __init__(self, registry_config: RegistryConfig, repo_path: Path):
        path = registry_path(environment_settings())
        path.parent.mkdir(parents=True, exist_ok=True)
        super().__init__(registry_config.model_copy(update={"path": str(path)}), repo_path)


class FitrecOnlineStoreConfig:
    """Not a config of its own: constructing it returns the online store config fitrec
    resolves for this environment (:func:`online_store_config`), a ``sqlite`` config or
    :class:`~pipeline.features.online.feast_store.RedisURLOnlineStoreConfig`.

    Feast builds ``online_store`` by calling the class it imports for ``type``, then picks
    the store from the class of the object it got, so everything after that (reads, writes,
    ``feast serve``, fitrec's fast Redis path) sees Feast's own SQLite or fitrec's Redis
    store. Further fields in the ``online_store`` section (``key_ttl_seconds``, ...) are
    passed on to the resolved config.
    """

    def __new__(cls, **fields: Any) -> Any:
        fields.pop("type", None)
        try:
            resolved = {**online_store_config(environment_settings()), **fields}
            if resolved["type"] == "sqlite":
                Path(resolved["path"]).parent.mkdir(parents=True, exist_ok=True)
            return get_online_config_from_type(resolved["type"])(**resolved)
        except ValidationError as error:
            # Feast validates inside its own RepoConfig, whose errors print their input: pass
            # on what is wrong, never the value (a Redis URL holds the password).
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'online_store'}: {e['msg']}"
                for e in error.errors(include_input=False, include_url=False)
            )
            raise ValueError(f"fitrec's online store: {problems}") from None


def feature_store(settings: Settings) -> FeatureStore:
    settings.feast_dir.mkdir(parents=True, exist_ok=True)
    return FeatureStore(config=repo_config(settings))


def repo_contents() -> RepoContents:
    """Parse ``feature_repo/`` as ``feast apply`` does (modules imported by their bare names).

    Modules are re-imported each call, so sources pick up the current settings.
    """
    if str(FEATURE_REPO) not in sys.path:
        sys.path.insert(0, str(FEATURE_REPO))
    contents = RepoContents(
        projects=[],
        data_sources=[],
        entities=[],
        feature_views=[],
        feature_services=[],
        on_demand_feature_views=[],
        stream_feature_views=[],
        label_views=[],
        permissions=[],
    )
    names = [path.stem for path in get_repo_files(FEATURE_REPO)]
    for name in names:
        sys.modules.pop(name, None)
    # Most specific class first: a StreamFeatureView is also a FeatureView.
    buckets: list[tuple[type, list[Any]]] = [
        (StreamFeatureView, contents.stream_feature_views),
        (OnDemandFeatureView, contents.on_demand_feature_views),
        (FeatureView, contents.feature_views),
        (FeatureService, contents.feature_services),
        (Entity, contents.entities),
        (DataSource, contents.data_sources),
    ]
    seen: set[int] = set()
    for name in names:
        module = importlib.import_module(name)
        for value in list(vars(module).values()):
            for kind, bucket in buckets:
                if isinstance(value, kind) and id(value) not in seen:
                    seen.add(id(value))
                    bucket.append(value)
                    break
    for source in list(contents.data_sources):
        batch = getattr(source, "batch_source", None)
        if batch is not None and id(batch) not in seen:
            seen.add(id(batch))
            contents.data_sources.append(batch)
    return contents


def apply(store: FeatureStore) -> None:
    """Register the repository's objects and create online tables; removes what was dropped."""
    repo = repo_contents()
    to_apply, to_delete, _, _ = extract_objects_for_apply_delete(
        store.project, store.registry, repo
    )
    store.apply(to_apply, objects_to_delete=to_delete, partial=False)


def materialize_new(
    store: FeatureStore, features_dir: Path, checkpoint_dir: Path | None = None
) -> dict[str, str]:
    """Load feature rows newer than the last materialisation into the online store, and
    rewrite any view the online store has lost.

    Like ``feast materialize-incremental``, but bounded by the data rather than by the clock
    (Feast starts from *now* minus the TTL, which would skip older snapshots). Before trusting
    the registry's "materialised up to", the online store itself is inspected
    (:mod:`pipeline.features.online.state`): a view whose watermark is missing or whose stored
    entities are fewer than the offline side's is rewritten in full, and its line says why.
    After each view its watermark (end, entities) is written into the online store. Into
    Redis it writes with :mod:`pipeline.features.online` (same bytes as Feast, 15-25x faster,
    resumable from ``checkpoint_dir``); into SQLite with Feast's own materialisation. Returns
    what was done per view.
    """
    from feast.infra.online_stores.redis import RedisOnlineStoreConfig

    from pipeline.features.build import feature_paths
    from pipeline.features.declarations import TIMESTAMP
    from pipeline.features.online.layout import view_spec
    from pipeline.features.online.materialize import materialize_view
    from pipeline.features.online.state import (
        Watermark,
        inspect_views,
        offline_entities,
        write_watermark,
    )

    fast = isinstance(store.config.online_store, RedisOnlineStoreConfig)
    paths = feature_paths(features_dir)
    views = [*store.list_feature_views(), *store.list_stream_feature_views()]
    states = inspect_views(store, views, paths, TIMESTAMP)
    done: dict[str, str] = {}
    for view in views:
        path = paths.get(view.name)
        if path is None or not path.exists():
            continue
        stamps = pl.read_parquet(path, columns=[TIMESTAMP]).get_column(TIMESTAMP)
        end = cast(datetime, stamps.max()) + timedelta(seconds=1)
        first = cast(datetime, stamps.min())
        start = view.most_recent_end_time or first
        why = ""
        state = states.get(view.name)
        if view.most_recent_end_time is not None and state is not None and not state.complete:
            start, why = first, f"rewrote in full ({state.reason}): "
        if start.tzinfo is None:
            start = start.replace(tzinfo=UTC)
        if start >= end:
            done[view.name] = "up to date"
            continue
        if fast:
            rows = materialize_view(store, view.name, start, end, checkpoint_dir)
            done[view.name] = f"{why}{start.isoformat()} .. {end.isoformat()}: {rows} rows (fast)"
        else:
            store.materialize(start_date=start, end_date=end, feature_views=[view.name])
            done[view.name] = f"{why}{start.isoformat()} .. {end.isoformat()}"
        join_key = view_spec(view, store.config).join_key
        entities = offline_entities(path, join_key, TIMESTAMP, end)
        mark = Watermark(
            end=end if end.tzinfo else end.replace(tzinfo=UTC),
            rows=len(entities),
            written_at=datetime.now(UTC),
        )
        write_watermark(store.config, view.name, mark)
    return done


def read_customer_features(store: FeatureStore, customer_ids: list[str]) -> list[dict[str, Any]]:
    """Online customer features, one dict per id (missing values are ``None``)."""
    from pipeline.features.declarations import CUSTOMER_ENTITY, CUSTOMER_FEATURES, CUSTOMER_VIEW

    refs = [f"{CUSTOMER_VIEW}:{f.name}" for f in CUSTOMER_FEATURES]
    response = store.get_online_features(
        features=refs, entity_rows=[{CUSTOMER_ENTITY: c} for c in customer_ids]
    ).to_dict()
    return [
        {f.name: response[f.name][i] for f in CUSTOMER_FEATURES} for i in range(len(customer_ids))
    ]
