"""An experiment of two registered model versions, end to end on real processes (issue 16).

``fitrec experiment start`` records it; ``fitrec serve --workers 2`` splits many customers
as declared (a chi-square test on the counts), each customer always in the same arm, on
either worker and after a restart; purchases and returns are posted with the answers'
``recommendation_id``; the ``analyse_experiment`` flow ingests serving's logs, attributes
every outcome to its arm and reports per arm (a Prefect artifact, the experiment's MLflow
run, the verdict on the experiment's record).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import polars as pl
import pytest
from scipy.stats import chisquare

from pipeline.config import CHAMPION, PROJECT_ROOT, Settings
from pipeline.data.curated import scan_curated
from pipeline.experiments.state import load_state
from pipeline.registry import tracking as registry
from serving.security import API_KEY_HEADER
from tests.integration.test_metrics_workers import KEY, page_views_by_worker, two_workers

pytestmark = pytest.mark.slow

CUSTOMERS = 400
NAME = "two-versions"


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "TF_USE_LEGACY_KERAS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _ask(url: str, customer: str) -> dict:
    """One page view on a new connection (so either worker may answer)."""
    answer = httpx.post(
        url + "/recommendations",
        json={"customer_id": customer, "session_id": f"s-{customer}", "k": 5},
        headers={API_KEY_HEADER: KEY},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


def _post(url: str, body: dict) -> None:
    answer = httpx.post(url + "/events", json=body, headers={API_KEY_HEADER: KEY}, timeout=60)
    assert answer.status_code == 200, answer.text


def test_two_versions_split_stick_and_are_attributed(served, tmp_path: Path):
    settings: Settings = served[0]
    client = registry.configure(settings)
    champion = str(client.get_model_version_by_alias(settings.model_name, CHAMPION).version)
    copy = str(
        client.copy_model_version(
            f"models:/{settings.model_name}/{champion}", settings.model_name
        ).version
    )
    start = (datetime.now(UTC) - timedelta(hours=1)).isoformat(timespec="seconds")
    spec = tmp_path / "experiment.toml"
    spec.write_text(
        f"""
name = "{NAME}"
unit = "customer"
salt = "test-{copy}"
start = {start.replace("+00:00", "Z")}
primary_metric = "net_kept_revenue_per_unit"
guardrails = ["return_rate", "p99_latency_ms", "error_rate"]
minimum_detectable_effect = 0.05

[[variants]]
name = "control"
model = "{champion}"
share = 0.5

[[variants]]
name = "treatment"
model = "{copy}"
share = 0.5
""",
        encoding="utf-8",
    )
    customers = [f"EXP{i:05d}" for i in range(CUSTOMERS)]
    try:
        started = _cli("experiment", "start", str(spec))
        assert started.returncode == 0, started.stderr
        prom_dir = tmp_path / "prometheus"
        prom_dir.mkdir()
        with two_workers(prom_dir, tmp_path / "serve.log") as http:
            url = str(http.base_url)
            first = {c: _ask(url, c) for c in customers}
            second = {c: _ask(url, c) for c in customers}
            by_worker = page_views_by_worker(prom_dir)
        assert len(by_worker) == 2 and all(n > 0 for n in by_worker.values()), by_worker

        arms = {c: a["variant"] for c, a in first.items()}
        assert {a["experiment"] for a in first.values()} == {NAME}
        assert all(second[c]["variant"] == arms[c] for c in customers)  # sticky
        counts = Counter(arms.values())
        assert set(counts) == {"control", "treatment"}
        assert chisquare([counts["control"], counts["treatment"]]).pvalue > 0.001, counts
        version = {"control": champion, "treatment": copy}
        assert all(a["model_version"] == version[a["variant"]] for a in first.values())
        ids = [a["recommendation_id"] for a in [*first.values(), *second.values()]]
        assert len(set(ids)) == len(ids)

        # A restart (new processes, new pids): every customer in the same arm again.
        (prom_dir / "again").mkdir()
        expected: Counter = Counter()
        with two_workers(prom_dir / "again", tmp_path / "serve-again.log") as http:
            url = str(http.base_url)
            for n, customer in enumerate(customers):
                answer = _ask(url, customer)
                assert answer["variant"] == arms[customer]
                if n % 2 or not answer["items"]:
                    continue
                # Every other customer buys the first item shown (treatment: two units),
                # and every fourth sends one back as too small.
                item, arm = answer["items"][0]["item_id"], arms[customer]
                quantity = 2 if arm == "treatment" else 1
                base = {"customer_id": customer, "item_id": item}
                rid = answer["recommendation_id"]
                _post(
                    url,
                    {
                        **base,
                        "session_id": f"s-{customer}",
                        "event_type": "click",
                        "recommendation_id": rid,
                    },
                )
                _post(
                    url,
                    {
                        **base,
                        "session_id": f"s-{customer}",
                        "event_type": "purchase",
                        "recommendation_id": rid,
                        "order_id": f"o-{customer}",
                        "quantity": quantity,
                        "price": 40.0,
                    },
                )
                expected[(arm, "items")] += quantity
                expected[(arm, "revenue")] += 40.0 * quantity
                if n % 4 == 0:
                    _post(
                        url,
                        {
                            **base,
                            "event_type": "return",
                            "return_reason": "too_small",
                            "recommendation_id": rid,
                            "order_id": f"o-{customer}",
                            "price": 40.0,
                        },
                    )
                    expected[(arm, "size_returns")] += 1
        assert expected[("control", "items")] and expected[("treatment", "items")]

        from flows.experiment import analyse_experiment

        result = analyse_experiment(NAME)
        curated = scan_curated(settings.curated_dir, "exposures").collect()
        ours = curated.filter(pl.col("experiment") == NAME)
        # Every answer served is an exposure: two passes and the restart's.
        assert ours.height == 3 * CUSTOMERS
        from pipeline.experiments.metrics import unit_metrics

        units = unit_metrics(
            curated,
            scan_curated(settings.curated_dir, "outcomes").collect(),
            load_state(settings.experiments_dir, NAME).experiment,
        )
        per_arm = units.group_by("variant").agg(
            pl.col("items").sum(),
            pl.col("revenue").sum(),
            pl.col("size_returns").sum(),
            pl.len().alias("units"),
        )
        for row in per_arm.iter_rows(named=True):
            arm = row["variant"]
            assert row["units"] == counts[arm]
            assert row["items"] == expected[(arm, "items")]
            assert row["revenue"] == pytest.approx(expected[(arm, "revenue")])
            assert row["size_returns"] == expected[(arm, "size_returns")]
        assert result["unattributed"] == 0
        assert Path(result["plot"]).stat().st_size > 0
        assert "treatment" in Path(result["report"]).read_text()
        record = load_state(settings.experiments_dir, NAME)
        assert record.verdict is not None and record.verdict["run_id"] == result["run_id"]
        run = client.get_run(result["run_id"])
        assert run.data.tags["fitrec.experiment"] == NAME
        assert run.data.tags["fitrec.verdict"] == result["verdict"]
    finally:
        stopped = _cli("experiment", "stop", NAME)
        assert stopped.returncode == 0, stopped.stderr
        client.set_registered_model_alias(settings.model_name, CHAMPION, champion)
        client.delete_model_version(settings.model_name, copy)


def _experiment(name: str, variants: list[dict], mode: str = "ab"):
    from pipeline.experiments.config import Experiment

    return Experiment.from_mapping(
        {
            "name": name,
            "mode": mode,
            "salt": f"salt-{name}",
            "start": datetime.now(UTC) - timedelta(hours=1),
            "primary_metric": "conversion",
            "minimum_detectable_effect": 0.1,
            "variants": variants,
        }
    )


def _exposures(settings: Settings, name: str) -> pl.DataFrame:
    lines = []
    for path in sorted(settings.events_dir.glob("*/exposures-*.jsonl")):
        lines += [json.loads(line) for line in path.read_text().splitlines() if line]
    return pl.DataFrame(lines, infer_schema_length=None).filter(pl.col("experiment") == name)


def test_arms_holdout_and_interleaving_in_process(served, tmp_path: Path):
    """One process: each arm answers with its own rules, the holdout with popularity, an
    interleaved page holds both rankers' items with the arm of each logged; every answer is
    an exposure naming the experiment, version and arm, under the pseudonym only."""
    from pipeline.experiments.state import start, stop
    from serving.recommender import LoadedModel, Recommender
    from serving.schemas import RecommendationRequest

    settings: Settings = served[0]
    rules = tmp_path / "no-dresses.yaml"
    rules.write_text("categories:\n  exclude: [dress]\n")
    ab = _experiment(
        "arms",
        [
            {"name": "control", "model": CHAMPION, "share": 0.4},
            {"name": "no-dresses", "model": CHAMPION, "rules": str(rules), "share": 0.4},
            {"name": "holdout", "holdout": True, "share": 0.2},
        ],
    )
    customers = [f"ARM{i:04d}" for i in range(150)]
    start(settings.experiments_dir, ab)
    rec = Recommender(settings, LoadedModel.load(settings))
    try:
        categories = dict(
            zip(rec.model.attributes["item_id"], rec.model.attributes["category"], strict=True)
        )
        popular = rec.model.scorer.item_ids[rec.model.popular[:5]].tolist()
        seen = Counter()
        for customer in customers:
            answer = rec.recommend(RecommendationRequest(customer_id=customer, k=5))
            assert answer.experiment == "arms"
            seen[answer.variant] += 1
            items = [i.item_id for i in answer.items]
            if answer.variant == "holdout":
                assert items == popular
            if answer.variant == "no-dresses":
                assert all(categories[i] != "dress" for i in items)
        anonymous = rec.recommend(RecommendationRequest(session_items=popular[:2], k=5))
        assert anonymous.experiment is None and anonymous.variant is None  # unit = customer
        assert set(seen) == {"control", "no-dresses", "holdout"}
    finally:
        stop(settings.experiments_dir, "arms")
        rec.close()
    logged = _exposures(settings, "arms")
    assert logged.height == len(customers)
    assert set(logged["experiment_version"]) == {ab.version}
    assert dict(Counter(logged["variant"])) == dict(seen)
    raw = "\n".join(p.read_text() for p in settings.events_dir.glob("*/exposures-*.jsonl"))
    assert not any(c in raw for c in customers)  # pseudonyms only

    both = _experiment(
        "draft",
        [
            {"name": "control", "model": CHAMPION, "share": 0.5},
            {"name": "no-dresses", "model": CHAMPION, "rules": str(rules), "share": 0.5},
        ],
        mode="interleaving",
    )
    start(settings.experiments_dir, both)
    rec = Recommender(settings, LoadedModel.load(settings))
    try:
        answers = [rec.recommend(RecommendationRequest(customer_id=c, k=6)) for c in customers[:40]]
    finally:
        stop(settings.experiments_dir, "draft")
        rec.close()
    assert {a.variant for a in answers} == {"interleaved"}
    logged = _exposures(settings, "draft")
    assert logged.height == len(answers)
    for row in logged.iter_rows(named=True):
        assert len(row["teams"]) == len(row["items"]) == len(set(row["items"]))
        assert set(row["teams"]) <= {"control", "no-dresses"}
        # The arm that excludes dresses never placed one.
        placed = zip(row["items"], row["teams"], strict=True)
        assert all(categories[i] != "dress" for i, team in placed if team == "no-dresses")
    assert {t for row in logged["teams"] for t in row} == {"control", "no-dresses"}
