"""Erasure end to end: a demo-sized nightly run on real Redis, Feast, MLflow and Prefect;
one customer who is in every store is erased, the next nightly trains a model without them
and it becomes champion; then every store is searched for the raw id and the pseudonym."""

from __future__ import annotations

import json
import shutil
from datetime import date

import polars as pl
import pytest
from mlflow import MlflowClient

from pipeline import erasure
from pipeline.config import CHAMPION
from pipeline.data.curated import current_dimension, drops_up_to
from pipeline.features import store
from pipeline.model.config import ModelConfig
from pipeline.privacy import pseudonymise
from pipeline.registry import tracking as registry
from tests.conftest import Environment
from tests.support.drills import customer_in_every_table, serve_events

pytestmark = pytest.mark.slow
# Cheap: the test needs a model before and a retrain after the erasure, not a good one.
FAST = ModelConfig(epochs=1, embedding_dim=8)


def _with_body(settings, key: str, exclude: str) -> str:
    """A raw id of a customer with consented body data (not ``exclude``)."""
    customers = current_dimension(settings.curated_dir, "customers").filter(
        pl.col("body_data_consent") & pl.col("height_cm").is_not_null()
    )
    raws = pl.concat(
        pl.read_parquet(p, columns=["customer_id"])
        for p in sorted(settings.raw_dir.glob("*/customers.parquet"))
    )["customer_id"].unique()
    wanted = set(customers["customer_id"]) - {exclude}
    return next(r for r in sorted(raws.drop_nulls()) if pseudonymise(r, key) in wanted)


def test_an_erased_customer_is_nowhere_after_the_next_nightly(
    raw_drops, redis_url, prefect_harness, tmp_path_factory
):
    from flows.nightly import nightly

    data_dir = tmp_path_factory.mktemp("erase-e2e")
    with Environment(data_dir, redis_url) as settings:
        shutil.copytree(raw_drops, settings.raw_dir)
        days = drops_up_to(settings.raw_dir, date.max)
        run_date = days[-1][0]
        key = settings.pseudonym_key.get_secret_value()
        # Ingest what exists, find the customer, let serving see them, then the full night.
        from pipeline.data.ingest import ingest_day

        for day, folder in days:
            ingest_day(folder, day, settings)
        raw = customer_in_every_table(settings)
        pseudonym = pseudonymise(raw, key)
        serve_events(settings, run_date, [raw, "C-not-erased"])
        first = nightly(run_date, FAST)
        assert first["promoted"]

        before = erasure.find_traces(settings, [raw])
        stores = {h.split("/")[0].split(":")[0] for h in before}
        # raw drops, curated, features, Feast's registry/online files, serving's log,
        # training outputs, the champion's artifacts in MLflow, the Redis online store
        # and session keys.
        assert {"raw", "curated", "features", "events", "training", "mlartifacts", "redis"} <= (
            stores
        ), before
        client = MlflowClient(settings.tracking_uri, settings.tracking_uri)
        old_champion = client.get_model_version_by_alias(settings.model_name, CHAMPION).version

        # Consent withdrawal of someone else on the Redis online store: body features go,
        # the rest stays.
        body = erasure.body_feature_names()
        withdrawn = _with_body(settings, key, exclude=pseudonym)
        fs = store.feature_store(settings)
        (online,) = store.read_customer_features(fs, [pseudonymise(withdrawn, key)])
        assert online["has_body"] == 1.0
        consent = erasure.erase_customers(settings, [withdrawn], body_only=True)
        assert consent.rows["online_store"] == 1
        (online,) = store.read_customer_features(fs, [pseudonymise(withdrawn, key)])
        assert all(online[b] is None for b in body), online
        assert any(v is not None for f, v in online.items() if f not in body)

        record = erasure.erase_customers(settings, [raw])
        assert record.champion_holds_until_retrain  # the documented window
        assert record.leftovers == 0, erasure.find_traces(settings, [raw])
        assert {"raw", "curated", "features", "online_store", "event_log", "session_keys"} <= set(
            record.rows
        )
        left = erasure.find_traces(settings, [raw])
        assert left and all(h.startswith("mlartifacts/") for h in left), left

        # The next nightly: a re-ingest without them, a retrain; its model becomes champion
        # (by the gate, or by hand as an operator would if the gate kept the old one).
        second = nightly(run_date, FAST)
        assert second["version"] != str(old_champion)
        if second["promoted"]:
            # The nightly purged the superseded version itself, right after promoting.
            versions = client.search_model_versions(f"name='{settings.model_name}'")
            assert str(old_champion) not in {str(v.version) for v in versions}
        else:
            registry.promote(settings, second["version"])
            purged = erasure.purge_models(settings)
            assert str(old_champion) in purged["deleted"] and not purged["champion_holds"]

        assert erasure.find_traces(settings, [raw]) == []
        assert erasure.find_traces(settings, [], [pseudonym]) == []
        # The other customer served alongside is still there (nothing over-erased).
        assert erasure.find_traces(settings, [], [pseudonymise("C-not-erased", key)])
        # Every report says nothing about them: the erased re-ingest reconciles.
        for report in sorted((settings.curated_dir / "_reports").glob("*.json")):
            for counts in json.loads(report.read_text())["tables"].values():
                assert counts["raw"] == (
                    counts["curated"]
                    + counts["quarantined"]
                    + counts["exact_duplicates"]
                    + counts["erased"]
                )


def _tiny_drop(settings) -> None:
    """Two customers in a raw drop and in serving's log (enough for the command paths)."""
    drop = settings.raw_dir / "2024-05-01"
    drop.mkdir(parents=True)
    pl.DataFrame(
        {"customer_id": ["C-a", "C-b", "C-c"], "height_cm": [170.0, 160.0, 180.0]}
    ).write_parquet(drop / "customers.parquet")
    lines = [
        {"event_id": f"e{n}", "session_id": f"s{n}", "customer_id": c, "item_id": "I1"}
        for n, c in enumerate(["C-a", "C-b", "C-c", "C-a"])
    ]
    (drop / "session_events.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))


def test_the_erase_command_and_the_batch_flow(prefect_harness, tmp_path):
    """`fitrec erase --customer`, then a batch from a file through the Prefect flow."""
    from typer.testing import CliRunner

    from flows.cli import app

    with Environment(tmp_path / "var") as settings:
        _tiny_drop(settings)
        result = CliRunner().invoke(app, ["erase", "--customer", "C-a"])
        assert result.exit_code == 0, result.output
        record = json.loads(result.output)
        assert record["rows"]["raw"] == 3 and record["leftovers"] == 0
        assert "C-a" not in result.output
        assert erasure.find_traces(settings, ["C-a"]) == []

        ids = tmp_path / "requests.txt"
        ids.write_text("# batch\nC-b\nC-c\n")
        # What `fitrec erase --file` runs (the flow's logs need a real terminal, not CliRunner).
        from flows.erase import erase as erase_flow

        record = erase_flow(ids)
        assert record["customers"] == 2 and record["rows"]["raw"] == 4
        assert erasure.find_traces(settings, ["C-b", "C-c"]) == []
        assert len(list(erasure.audit_records(settings))) == 2
        for audit in (settings.privacy_dir / "audit").glob("*.json"):
            assert not any(c in audit.read_text() for c in ("C-a", "C-b", "C-c"))

        result = CliRunner().invoke(app, ["erase"])
        assert result.exit_code != 0
