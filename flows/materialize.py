"""Flow ``materialize``: feast apply, then load new feature rows into the online store, and
rewrite any view the online store has lost (each such view's line says why, also logged)."""

from __future__ import annotations

from prefect import flow, get_run_logger, task

from pipeline.config import get_settings
from pipeline.features import store
from pipeline.progress import timed


@task(retries=2, retry_delay_seconds=[2, 10])
def apply_repo() -> None:
    store.apply(store.feature_store(get_settings()))


@task(retries=3, retry_delay_seconds=[2, 10, 30])
def materialize_online() -> dict[str, str]:
    settings = get_settings()
    with timed(f"materialising the {settings.online_store} online store") as notes:
        done = store.materialize_new(
            store.feature_store(settings), settings.features_dir, settings.feast_dir / "checkpoints"
        )
        notes["views written"] = sum(line != "up to date" for line in done.values())
        notes["up to date"] = sum(line == "up to date" for line in done.values())
    for view, line in done.items():
        if line.startswith("rewrote"):  # the online store had lost rows: say so loudly
            get_run_logger().warning("%s: %s", view, line)
    return done


@flow(name="materialize")
def materialize() -> dict[str, str]:
    apply_repo()
    return materialize_online()
