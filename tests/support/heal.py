"""The online store's fault drill: Redis restarted empty, serving says so, materialise heals.

:func:`redis_restart_drill` runs against a real redis-server (a
:class:`~tests.support.servers.RestartableRedis` the pipeline has materialised into) and the
real app (FastAPI's test client around a :class:`~serving.recommender.Recommender`), and
returns a :class:`HealDrill` whose :attr:`HealDrill.healed` is the benchmark's
``redis_restart_healed``. The integration test and ``benchmarks/trust.py`` both call it.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from typing import Any, cast

import redis

from pipeline.config import Settings
from tests.support.servers import RestartableRedis

SESSION_PREFIX = b"fitrec:"  # sessions and the watermark hash: not feature rows


def known_customers(
    settings: Settings, recommender: Any, limit: int, scan: int = 5000
) -> list[str]:
    """Raw ids ``C0000001``... of the generated data whose pseudonym the model knows."""
    from pipeline.privacy import pseudonymise

    ids = getattr(getattr(recommender.model.scorer, "fast", None), "customer", None)
    if ids is None:
        raise RuntimeError("the model has no fast path: its customer vocabulary is unknown")
    key = settings.pseudonym_key.get_secret_value()
    found = [c for c in (f"C{i:07d}" for i in range(1, scan)) if pseudonymise(c, key) in ids.index]
    return found[:limit]


def batch_view_rows(settings: Settings) -> dict[bytes, dict[bytes, bytes]]:
    """Every feature key's fields of the batch (non-stream) views, as stored in Redis now.

    Stream views are left out: serving pushes into them, and a push is not on the offline side.
    """
    from pipeline.features import store
    from pipeline.features.online.layout import view_spec

    fs = store.feature_store(settings)
    fields: set[bytes] = set()
    for view in fs.list_feature_views():
        spec = view_spec(view, fs.config)
        fields.update(spec.field_hashes)
        fields.add(spec.ts_field)
    assert settings.redis_url
    client = redis.Redis.from_url(settings.redis_url)
    try:
        rows: dict[bytes, dict[bytes, bytes]] = {}
        for key in client.scan_iter(count=1000):
            if key.startswith(SESSION_PREFIX) or client.type(key) != b"hash":
                continue
            stored = cast("dict[bytes, bytes]", client.hgetall(key))
            kept = {f: v for f, v in stored.items() if f in fields}
            if kept:
                rows[key] = kept
        return rows
    finally:
        client.close()


@dataclass
class HealDrill:
    """What the drill saw at each step (health bodies, answers, counts)."""

    health_before: dict[str, Any]
    health_down: dict[str, Any]
    health_empty: dict[str, Any]
    answers_empty: int
    answers_empty_degraded: int
    materialize_output: dict[str, str]
    rows_before: int
    rows_after: int
    rows_equal: bool
    counts: dict[str, tuple[int, int]]  # view: (offline entities, online entities)
    health_after: dict[str, Any]
    answers_after_degraded: int
    notes: list[str] = field(default_factory=list)

    @property
    def healed(self) -> bool:
        return (
            self.health_before.get("status") == "ok"
            and "redis_unreachable" in self.health_down.get("reasons", [])
            and "store_empty" in self.health_empty.get("reasons", [])
            and self.answers_empty > 0
            and self.answers_empty_degraded == self.answers_empty
            and any(v.startswith("rewrote in full") for v in self.materialize_output.values())
            and self.rows_before > 0
            and self.rows_equal
            and all(offline == online for offline, online in self.counts.values())
            and self.health_after.get("status") == "ok"
            and self.answers_after_degraded == 0
        )

    def line(self) -> str:
        return (
            f"redis_restart_healed={'true' if self.healed else 'false'} "
            f"rows_before={self.rows_before} rows_after={self.rows_after} "
            f"answers_empty_degraded={self.answers_empty_degraded}/{self.answers_empty}"
        )


def _health_until(client: Any, done: Any, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = client.get("/health").json()
    while not done(body) and time.monotonic() < deadline:
        time.sleep(0.5)
        body = client.get("/health").json()
    return body


def redis_restart_drill(
    settings: Settings,
    server: RestartableRedis,
    recommender: Any,
    customers: int = 10,
    timeout: float = 120.0,
) -> HealDrill:
    """Kill Redis, restart it empty, check serving says so, run the ``materialize`` flow, check
    the store is whole again (the batch views' rows byte for byte, the counts equal to the
    offline side) and serving says ok.

    Args:
        settings: The environment the pipeline ran in (its ``redis_url`` is ``server``'s).
        server: The redis-server holding the online store; left running, healed.
        recommender: A fresh recommender (its rolling missing-features share starts empty).
        customers: Known customers asked for while the store is empty (keep it below
            :data:`serving.health.MIN_LOOKUPS` so the share does not outlive the drill).
        timeout: Longest wait for serving to see Redis back (the breaker's cool-down).
    """
    from fastapi.testclient import TestClient

    from flows.materialize import materialize
    from pipeline.features import store
    from pipeline.features.build import feature_paths
    from pipeline.features.declarations import TIMESTAMP
    from pipeline.features.online.state import inspect_views
    from serving.app import create_app

    ids = known_customers(settings, recommender, customers)
    before_rows = batch_view_rows(settings)
    app = create_app(settings, recommender=recommender, watch=False)
    with TestClient(app) as client:
        health_before = client.get("/health").json()
        server.kill()
        health_down = client.get("/health").json()
        shutil.rmtree(server.workdir, ignore_errors=True)  # comes back with no data
        server.start()
        recommender.clear_feature_cache()
        health_empty = _health_until(
            client, lambda b: "redis_unreachable" not in b.get("reasons", []), timeout
        )
        answers = [
            client.post("/recommendations", json={"customer_id": c, "k": 5}).json() for c in ids
        ]
        output = materialize()
        after_rows = batch_view_rows(settings)
        fs = store.feature_store(settings)
        views = [*fs.list_feature_views(), *fs.list_stream_feature_views()]
        states = inspect_views(fs, views, feature_paths(settings.features_dir), TIMESTAMP)
        recommender.clear_feature_cache()
        healed_answers = [
            client.post("/recommendations", json={"customer_id": c, "k": 5}).json() for c in ids * 3
        ]
        health_after = _health_until(client, lambda b: b.get("status") == "ok", timeout)
    return HealDrill(
        health_before=health_before,
        health_down=health_down,
        health_empty=health_empty,
        answers_empty=len(answers),
        answers_empty_degraded=sum(bool(a.get("degraded")) for a in answers),
        materialize_output=dict(output),
        rows_before=len(before_rows),
        rows_after=len(after_rows),
        rows_equal=before_rows == after_rows,
        counts={name: (s.offline_rows, s.online_rows) for name, s in states.items()},
        health_after=health_after,
        answers_after_degraded=sum(bool(a.get("degraded")) for a in healed_answers),
    )
