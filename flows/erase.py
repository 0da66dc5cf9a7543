"""Flow ``erase``: erase a batch of customers (GDPR Art. 17) or withdraw their consent to body
data, from a file of ids (one a line), then purge superseded model versions.

The ids are read inside the flow from the file, never passed as parameters (Prefect stores
parameters in its database) and never logged; the flow returns the audit record (counts)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from prefect import flow, get_run_logger, task

from pipeline import erasure
from pipeline.config import get_settings


@task(retries=1, retry_delay_seconds=[5])
def erase_batch(ids_file: Path, body_only: bool) -> dict:
    settings = get_settings()
    record = erasure.erase_customers(settings, erasure.read_ids(ids_file), body_only=body_only)
    return asdict(record)


@task(retries=1, retry_delay_seconds=[5])
def purge_models() -> dict:
    return erasure.purge_models(get_settings())


@flow(name="erase")
def erase(ids_file: Path, body_only: bool = False) -> dict:
    """Erase every customer listed in ``ids_file`` (or only their body data)."""
    record = erase_batch(Path(ids_file), body_only)
    get_run_logger().info(
        "erasure %s: %d customers, rows %s, leftovers %d",
        record["erasure_id"],
        record["customers"],
        record["rows"],
        record["leftovers"],
    )
    return record


@flow(name="purge_erased_models")
def purge_erased_models() -> dict:
    """After a retrain is promoted: delete every non-champion model version that still holds
    an erased pseudonym (run at the end of the nightly flow)."""
    return purge_models()
