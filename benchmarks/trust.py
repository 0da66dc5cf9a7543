"""Trust drills against real processes: hostile ingest input, the HTTP API fuzzed from its own
spec, an online store lost and healed, ``kill -9`` of serving under load, a customer erased
everywhere, and page views with Redis frozen (ours, behind the circuit breaker, against the
naive path that waits for the timeout on every request).

Builds a small generated pipeline once (ingest, features, materialisation into a redis-server
started here, training, registration) in ``--workdir`` (default: a temporary folder), then
runs each drill on it.

Last line::

    trust ingest_cases=N ingest_crashes=0 reconciled=N/N http_cases=N http_5xx=0
    redis_restart_healed=true events_accepted=N events_in_log=N erase_leftovers=0
    p99_ms_redis_frozen=X
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

KEY = "trust-bench-key-5c81e2"
SMALL = {"customers": 1000, "days": 7, "seed": 11, "dirty": 0.01}


def environment(workdir: Path, redis_url: str) -> None:
    os.environ["FITREC_DATA_DIR"] = str(workdir / "data")
    os.environ["FITREC_REDIS_URL"] = redis_url
    os.environ.setdefault("PREFECT_HOME", str(workdir / "prefect"))
    from pipeline.config import get_settings

    get_settings.cache_clear()


def prepare(workdir: Path) -> date:
    """Generated raw drops and one nightly run (through Prefect's ephemeral API)."""
    from flows.nightly import nightly
    from flows.runtime import start_prefect_api
    from pipeline.config import get_settings
    from pipeline.data.curated import drops_up_to
    from pipeline.data.generate import GeneratorConfig, write_drops
    from pipeline.model.config import ModelConfig

    settings = get_settings()
    shutil.rmtree(settings.data_dir, ignore_errors=True)
    write_drops(GeneratorConfig(**SMALL), settings.raw_dir)
    run_date = drops_up_to(settings.raw_dir, date.max)[-1][0]
    start_prefect_api()  # patiently, with a retry: Prefect's own 20 s fails on a busy machine
    nightly(run_date, ModelConfig(epochs=3, embedding_dim=16))
    return run_date


def http_drills(redis_pid: int, requests: int) -> dict[str, float]:
    """The fuzz of the live API, and page views with Redis frozen: behind the breaker (ours)
    and with a breaker that never opens (the naive path: every request waits the timeout)."""
    from pipeline.config import get_settings
    from serving.app import create_app
    from serving.events import EventProcessor
    from serving.recommender import Recommender
    from serving.security import hash_key
    from tests.support.drills import frozen, fuzz_api, live_app, percentile, timed_page_views

    base = get_settings().model_copy(
        update={"api_key_hashes": [hash_key(KEY)], "api_rate_limit": "1000000/second"}
    )
    out: dict[str, float] = {}
    fuzz_settings = base.model_copy(update={"data_dir": Path(tempfile.mkdtemp("-fuzz"))})
    rec = Recommender.from_registry(base)
    try:
        processor = EventProcessor(fuzz_settings, rec.sessions)
        app = create_app(fuzz_settings, recommender=rec, processor=processor, watch=False)
        with live_app(app) as url:
            fuzz = fuzz_api(url, KEY)
        out["http_cases"] = fuzz.cases
        out["http_5xx"] = fuzz.server_errors
        out["http_mismatches"] = len(fuzz.mismatches)
        print(f"http fuzz: {fuzz.cases} cases, {dict(sorted(fuzz.statuses.items()))}")
        for line in fuzz.mismatches[:10]:
            print("  mismatch:", line)

        for name, failures in (("breaker", 1), ("naive", 10**9)):
            settings = base.model_copy(
                update={"redis_breaker_failures": failures, "redis_breaker_reset_seconds": 600.0}
            )
            frozen_rec = Recommender(settings, rec.model)
            try:
                app = create_app(settings, recommender=frozen_rec, watch=False)
                with live_app(app) as url:
                    timed_page_views(url, KEY, 20, session="warm")  # warm, Redis alive
                    with frozen(redis_pid):
                        timed_page_views(url, KEY, 5, session="open")  # opens the breaker
                        latencies, degraded = timed_page_views(url, KEY, requests)
            finally:
                frozen_rec.close()
            p50, p99 = percentile(latencies, 0.5) * 1e3, percentile(latencies, 0.99) * 1e3
            out[f"{name}_p50_ms"], out[f"{name}_p99_ms"] = p50, p99
            print(
                f"redis frozen, {name}: p50={p50:.2f} ms p99={p99:.2f} ms over {requests} "
                f"page views, {degraded} answered degraded"
            )
    finally:
        rec.close()
    return out


def kill9_drill(workdir: Path, redis_url: str) -> tuple[int, int]:
    from pipeline.config import get_settings
    from serving.security import hash_key
    from tests.support.drills import kill9_drill as drill

    settings = get_settings()
    env = {
        "FITREC_DATA_DIR": str(settings.data_dir),
        "FITREC_REDIS_URL": redis_url,
        "FITREC_API_KEY_HASHES": hash_key(KEY),
        "FITREC_API_RATE_LIMIT": "1000000/second",
    }
    result = drill(env, settings.events_dir, KEY, workdir, target=2000)
    print(f"kill -9: {result.accepted} events answered accepted, {result.in_log} in the log")
    return result.accepted, result.in_log


def heal_drill(redis: object) -> bool:
    """Kill Redis, restart it empty, run the materialise flow: is the store whole again, and
    did serving's health say degraded until then?"""
    from pipeline.config import get_settings
    from serving.recommender import Recommender
    from tests.support.heal import redis_restart_drill

    settings = get_settings()
    rec = Recommender.from_registry(settings)
    try:
        drill = redis_restart_drill(settings, redis, rec)  # type: ignore[arg-type]
    finally:
        rec.close()
    print(f"online store lost: {drill.line()}")
    return drill.healed


def erase_drill(run_date: date) -> int:
    """Erase the busiest customer (in every store, served live too), run the next nightly,
    make its model champion (by the gate, or by hand as an operator would), purge superseded
    versions; returns the traces of the raw id and the pseudonym left anywhere."""
    from flows.nightly import nightly
    from pipeline import erasure
    from pipeline.config import get_settings
    from pipeline.model.config import ModelConfig
    from pipeline.privacy import pseudonymise
    from pipeline.registry import tracking as registry
    from tests.support.drills import customer_in_every_table, serve_events

    settings = get_settings()
    raw = customer_in_every_table(settings)
    pseudonym = pseudonymise(raw, settings.pseudonym_key.get_secret_value())
    serve_events(settings, run_date, [raw])
    before = erasure.find_traces(settings, [raw])
    record = erasure.erase_customers(settings, [raw])
    second = nightly(run_date, ModelConfig(epochs=3, embedding_dim=16))
    if not second["promoted"]:
        registry.promote(settings, second["version"])
    erasure.purge_models(settings)
    left = erasure.find_traces(settings, [raw]) + erasure.find_traces(settings, [], [pseudonym])
    stores = sorted({h.split("/")[0].split(":")[0] for h in before})
    print(
        f"erasure: {len(before)} traces in {len(stores)} stores before ({', '.join(stores)}), "
        f"rows erased {sum(record.rows.values())}, {len(left)} left after the next nightly"
    )
    for hit in left[:10]:
        print("  left:", hit)
    return len(left)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--requests", type=int, default=500, help="page views per frozen run")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="fitrec-trust-"))
    workdir.mkdir(parents=True, exist_ok=True)

    from tests.support.servers import RestartableRedis

    redis = RestartableRedis(workdir / "redis")
    redis.start()
    try:
        environment(workdir, redis.url)
        from tests.support.drills import ingest_drill

        drill = ingest_drill(workdir / "ingest")
        ingest = {"cases": drill.cases, "crashes": drill.crashes, "reconciled": drill.reconciled}
        print(
            f"ingest: {drill.cases} hostile cases, {drill.crashes} crashed, "
            f"{drill.reconciled} reconciled"
        )
        for line in drill.failures:
            print("  failed:", line)
        started = time.perf_counter()
        run_date = prepare(workdir)
        print(f"prepared in {time.perf_counter() - started:.0f} s")
        assert redis.process is not None
        http = http_drills(redis.process.pid, args.requests)
        accepted, in_log = kill9_drill(workdir, redis.url)
        healed = heal_drill(redis)
        leftovers = erase_drill(run_date)
    finally:
        redis.kill()
    ratio = http["naive_p99_ms"] / max(http["breaker_p99_ms"], 1e-9)
    print(f"frozen Redis p99: naive/ours = {ratio:.1f}x")
    print(
        f"trust ingest_cases={ingest['cases']} ingest_crashes={ingest['crashes']} "
        f"reconciled={ingest['reconciled']}/{ingest['cases']} "
        f"http_cases={int(http['http_cases'])} http_5xx={int(http['http_5xx'])} "
        f"redis_restart_healed={'true' if healed else 'false'} "
        f"events_accepted={accepted} events_in_log={in_log} erase_leftovers={leftovers} "
        f"p99_ms_redis_frozen={http['breaker_p99_ms']:.2f}"
    )


if __name__ == "__main__":
    main()
