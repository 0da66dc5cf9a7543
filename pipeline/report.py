"""Run reports and fingerprints: what a nightly run did, and whether its inputs changed."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from datetime import date
from pathlib import Path

import polars as pl

from pipeline.data.curated import previous_report
from pipeline.features.build import feature_paths
from pipeline.features.declarations import TIMESTAMP


def data_fingerprint(curated_dir: Path, features_dir: Path, day: date) -> str:
    """Hash of everything a model trained for ``day`` reads: where the data lives, the ingest
    fingerprint of every day up to it and the snapshots present in each feature table."""
    digest = hashlib.sha256(f"{day.isoformat()}|{curated_dir.resolve()}".encode())
    for path in sorted((curated_dir / "_reports").glob("????-??-??.json")):
        if path.stem <= day.isoformat():
            digest.update(json.loads(path.read_text()).get("fingerprint", "").encode())
    for view, path in sorted(feature_paths(features_dir).items()):
        digest.update(view.encode())
        if path.exists():
            stamps = pl.read_parquet(path, columns=[TIMESTAMP]).get_column(TIMESTAMP)
            digest.update(f"{stamps.len()}:{stamps.min()!s}:{stamps.max()!s}".encode())
    return digest.hexdigest()[:32]


def freshness(features_dir: Path) -> list[dict[str, object]]:
    """Latest snapshot and row count of each feature table."""
    rows = []
    for view, path in feature_paths(features_dir).items():
        if not path.exists():
            rows.append({"view": view, "latest": "missing", "rows": 0})
            continue
        stamps = pl.read_parquet(path, columns=[TIMESTAMP]).get_column(TIMESTAMP)
        latest = stamps.max()
        rows.append(
            {
                "view": view,
                "latest": str(latest),
                "rows_at_latest": int((stamps == latest).sum()),
                "rows": stamps.len(),
            }
        )
    return rows


def _table(rows: Sequence[Mapping[str, object]]) -> str:
    if not rows:
        return "_none_\n"
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def with_interval(metrics: Mapping[str, float], name: str, sign: bool = False) -> str:
    """``0.4400 [0.4100, 0.4700]``: a metric with its 95% interval where it has one."""
    if name not in metrics:
        return "-"
    base = name.removesuffix("_diff")
    fmt = "+.4f" if sign else ".4f"
    low, high = metrics.get(f"{base}_ci_low"), metrics.get(f"{base}_ci_high")
    value = format(metrics[name], fmt)
    if low is None or high is None:
        return value
    return f"{value} [{format(low, fmt)}, {format(high, fmt)}]"


def verdict_of(metrics: Mapping[str, float], name: str) -> str:
    """ahead / behind / tied from a difference's interval (``-`` without one)."""
    base = name.removesuffix("_diff")
    low, high = metrics.get(f"{base}_ci_low"), metrics.get(f"{base}_ci_high")
    if low is None or high is None:
        return "-"
    return "ahead" if low > 0 else "behind" if high < 0 else "tied"


def nightly_report(
    curated_dir: Path,
    features_dir: Path,
    run_date: date,
    materialized: dict[str, str],
    metrics: dict[str, float],
    decision: dict[str, object],
) -> str:
    """Markdown: data quality of the day, feature freshness, materialisation, model metrics
    against the champion and the baselines, and the promotion decision."""
    ingest = previous_report(curated_dir, run_date) or {"tables": {}}
    quality = [
        {
            "table": table,
            "raw": c["raw"],
            "curated": c["curated"],
            "quarantined": c["quarantined"],
            "exact duplicates": c["exact_duplicates"],
            "reasons": ", ".join(f"{k}: {v}" for k, v in c["reasons"].items()) or "-",
        }
        for table, c in ingest["tables"].items()
    ]
    methods = sorted({k.split("_recall_at_20")[0] for k in metrics if k.endswith("_recall_at_20")})
    columns = {"recall@20": "recall_at_20", "mrr@20": "mrr_at_20", "ndcg@10": "ndcg_at_10"}
    model_rows = [
        {"method": m, **{label: with_interval(metrics, f"{m}_{n}") for label, n in columns.items()}}
        for m in methods
    ]
    versus = [
        {
            "metric": label,
            "model minus strongest baseline": with_interval(
                metrics, f"model_vs_best_{n}_diff", sign=True
            ),
            "verdict": verdict_of(metrics, f"model_vs_best_{n}_diff"),
        }
        for label, n in columns.items()
        if f"model_vs_best_{n}_diff" in metrics
    ]
    fit_names = ("fit_auc", "fit_auc_seen", "fit_auc_unseen", "fit_ece", "size_accuracy")
    fit = [
        {"fit head": name, "value": with_interval(metrics, f"model_{name}")}
        for name in fit_names
        if f"model_{name}" in metrics
    ]
    champion = {k: v for k, v in metrics.items() if k.startswith("champion_")}
    lines = [
        f"# fitrec nightly {run_date.isoformat()}",
        "",
        "## Data quality (ingest of the day)",
        _table(quality),
        "## Feature freshness",
        _table(freshness(features_dir)),
        "## Materialisation",
        _table([{"view": k, "written": v} for k, v in materialized.items()]),
        "## Model against the baselines (same test set)",
        _table(model_rows),
        _table(versus) if versus else "",
        _table(fit) if fit else "Fit head: no fit labels on this test set",
        f"Champion on this test set: {json.dumps({k: round(v, 4) for k, v in champion.items()})}",
        "",
        "## Promotion",
        f"Version {decision.get('version')}: "
        f"{'promoted to champion' if decision.get('promoted') else 'kept as challenger'} "
        f"- {decision.get('reason')}",
    ]
    return "\n".join(lines) + "\n"
