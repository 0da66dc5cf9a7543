"""Issue 13, "losing the online store is permanent and invisible": against the nightly run's
real redis-server and the real app. A partial store (keys deleted) is detected and rewritten;
the drill kills Redis, restarts it empty, and the materialise flow heals it while /health and
the answers say degraded until then."""

from __future__ import annotations

import polars as pl
import pytest
import redis
from fastapi.testclient import TestClient
from feast.value_type import ValueType
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from pipeline.features import store
from pipeline.features.build import feature_paths
from pipeline.features.declarations import CUSTOMER_VIEW, TIMESTAMP
from pipeline.features.online.keys import redis_keys
from pipeline.features.online.layout import view_spec
from pipeline.features.online.state import inspect_views, state_key
from pipeline.privacy import pseudonymise
from serving.app import create_app
from serving.health import MIN_LOOKUPS
from serving.recommender import Recommender
from tests.support.heal import batch_view_rows, known_customers, redis_restart_drill

pytestmark = pytest.mark.slow


@pytest.fixture
def fresh(served):
    """A recommender of its own: the rolling missing-features share starts empty."""
    settings, _, _ = served
    rec = Recommender.from_registry(settings)
    yield rec
    rec.close()


def _delete_customers(settings, pseudonyms: list[str]) -> int:
    fs = store.feature_store(settings)
    spec = view_spec(fs.get_feature_view(CUSTOMER_VIEW), fs.config)
    keys = redis_keys(
        pl.Series(pseudonyms, dtype=pl.String), spec.join_key, ValueType.STRING, fs.project
    )
    client = redis.Redis.from_url(settings.redis_url)
    try:
        return int(client.delete(*keys.to_pylist())) if pseudonyms else 0
    finally:
        client.close()


def _states(settings):
    fs = store.feature_store(settings)
    views = [*fs.list_feature_views(), *fs.list_stream_feature_views()]
    return inspect_views(fs, views, feature_paths(settings.features_dir), TIMESTAMP)


def test_a_partial_store_is_seen_by_serving_and_rewritten(served, fresh):
    settings, _, _ = served
    ids = known_customers(settings, fresh, 2 * MIN_LOOKUPS)
    assert len(ids) > MIN_LOOKUPS + 5  # the generated data has a few dozen in the vocabulary
    key = settings.pseudonym_key.get_secret_value()
    before = batch_view_rows(settings)
    assert all(s.complete for s in _states(settings).values())

    lost = ids[: MIN_LOOKUPS + 5]
    assert _delete_customers(settings, [pseudonymise(c, key) for c in lost]) == len(lost)
    state = _states(settings)[CUSTOMER_VIEW]
    assert not state.complete
    assert state.reason == (
        f"online store holds {state.offline_rows - len(lost)} of {state.offline_rows} entities"
    )

    app = create_app(settings, recommender=fresh, watch=False)
    with TestClient(app) as client:
        assert client.get("/health").json()["status"] == "ok"  # too few lookups to say
        answers = [client.post("/recommendations", json={"customer_id": c}).json() for c in lost]
        assert all(a["degraded"] and not a["known_customer"] for a in answers)
        health = client.get("/health")
        assert health.status_code == 200
        body = health.json()
        assert body["status"] == "degraded" and body["reasons"] == ["features_missing"]
        metrics = client.get("/metrics").text
        assert 'fitrec_store_degraded_total{reason="features_missing"} 1.0' in metrics

        done = store.materialize_new(store.feature_store(settings), settings.features_dir)
        assert done[CUSTOMER_VIEW].startswith(f"rewrote in full ({state.reason})")
        assert batch_view_rows(settings) == before
        assert all(s.complete for s in _states(settings).values())

        fresh.clear_feature_cache()
        for _ in range(2):
            answers = [client.post("/recommendations", json={"customer_id": c}).json() for c in ids]
            assert not any(a["degraded"] for a in answers)
            assert all(a["known_customer"] for a in answers)
        assert client.get("/health").json() == {
            **body,
            "status": "ok",
            "reasons": [],
            "details": [],
        }


@hsettings(
    max_examples=5,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_any_deleted_subset_or_lost_watermark_is_rewritten(served, recommender, data):
    settings, _, _ = served
    ids = known_customers(settings, recommender, 30)
    key = settings.pseudonym_key.get_secret_value()
    before = batch_view_rows(settings)
    lost = data.draw(st.lists(st.sampled_from(ids), unique=True, max_size=len(ids)))
    drop_mark = data.draw(st.booleans())
    _delete_customers(settings, [pseudonymise(c, key) for c in lost])
    if drop_mark:
        client = redis.Redis.from_url(settings.redis_url)
        client.delete(state_key(store.feature_store(settings).project))
        client.close()
    damaged = bool(lost) or drop_mark
    assert all(s.complete for s in _states(settings).values()) is not damaged

    done = store.materialize_new(store.feature_store(settings), settings.features_dir)
    rewrote = done[CUSTOMER_VIEW].startswith("rewrote in full")
    assert rewrote is damaged
    if not damaged:
        assert done[CUSTOMER_VIEW] == "up to date"
    assert batch_view_rows(settings) == before
    states = _states(settings)
    assert all(s.complete and s.offline_rows == s.online_rows for s in states.values())


def test_redis_restarted_empty_heals_through_the_materialize_flow(served, fresh):
    settings, _, server = served
    drill = redis_restart_drill(settings, server, fresh)
    print(drill.line(), drill.materialize_output, drill.counts, drill.health_empty)
    assert drill.health_before["status"] == "ok"
    assert drill.health_down["status"] == "degraded"
    assert "redis_unreachable" in drill.health_down["reasons"]
    assert drill.health_empty["status"] == "degraded"
    assert drill.health_empty["reasons"] == ["store_empty"], drill.health_empty
    assert drill.answers_empty == 10 and drill.answers_empty_degraded == 10
    assert drill.materialize_output[CUSTOMER_VIEW].startswith(
        "rewrote in full (online store is empty (no watermark, no rows))"
    )
    assert drill.rows_before > 0 and drill.rows_equal and drill.rows_after == drill.rows_before
    assert drill.counts and all(off == on for off, on in drill.counts.values())
    assert drill.health_after["status"] == "ok" and drill.health_after["reasons"] == []
    assert drill.answers_after_degraded == 0
    assert drill.healed
    assert drill.line().startswith("redis_restart_healed=true ")


def test_sqlite_store_deleted_is_seen_and_rewritten(raw_drops, prefect_harness, tmp_path):
    """The SQLite online store: its database deleted, health says store_empty, the
    materialise flow rewrites every view (the same values, counts equal to the offline side)
    and health says ok."""
    import shutil
    from datetime import date

    from flows.features import build_features
    from flows.ingest import ingest
    from flows.materialize import materialize
    from pipeline.data.curated import drops_up_to
    from serving.breaker import Breaker
    from serving.health import StoreHealth
    from tests.conftest import Environment

    with Environment(tmp_path / "sqlite") as settings:
        shutil.copytree(raw_drops, settings.raw_dir)
        run_date = drops_up_to(settings.raw_dir, date.max)[-1][0]
        ingest(run_date)
        build_features(run_date)
        first = materialize()
        assert not any(v.startswith("rewrote") for v in first.values())
        assert set(materialize().values()) == {"up to date"}
        fs = store.feature_store(settings)
        health = StoreHealth(settings, Breaker.from_settings(settings), fs.config)
        assert health.check().status == "ok"
        ids = pl.read_parquet(feature_paths(settings.features_dir)[CUSTOMER_VIEW])
        sample = ids.get_column(view_spec(fs.get_feature_view(CUSTOMER_VIEW), fs.config).join_key)
        sample = sample.unique().sort().head(25).to_list()
        before = store.read_customer_features(fs, sample)
        assert all(any(v is not None for v in row.values()) for row in before)

        (settings.feast_dir / "online_store.db").unlink()
        report = health.check()
        assert report.status == "degraded" and report.reasons == ["store_empty"]
        assert not any(s.complete for s in _states(settings).values())

        healed = materialize()
        assert all(
            v.startswith("rewrote in full (online store is empty") for v in healed.values()
        ), healed
        fs = store.feature_store(settings)
        assert store.read_customer_features(fs, sample) == before
        states = _states(settings)
        assert states and all(
            s.complete and s.offline_rows == s.online_rows for s in states.values()
        )
        assert health.check().status == "ok"
