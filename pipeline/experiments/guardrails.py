"""Guardrails: what an arm must not make worse, whatever it wins.

Metric guardrails are differences of :data:`pipeline.experiments.config.METRICS` entries, in
their worse direction (``higher_is_better``); operational ones come from the answers served
(one row per variant: answers, p99_latency_ms, degraded, errors): ``degraded_share`` and
``error_rate`` by a two-proportion z-test, ``p99_latency_ms`` untested and breached above
1.2 x control. Holm across an arm's tested guardrails (tea-tasting's :func:`adjust_fwer`);
breached = the worse direction and an adjusted p below alpha.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Final

import polars as pl
import scipy.stats
import tea_tasting as tt
import tea_tasting.experiment
import tea_tasting.multiplicity

from pipeline.experiments.config import METRICS, Experiment
from pipeline.experiments.differences import Difference
from pipeline.experiments.frames import check_frame

__all__ = ["LATENCY_TOLERANCE", "assess_guardrails", "check_operational"]

LATENCY_TOLERANCE: Final = 1.2  # p99 latency guardrail: breached above 1.2 x control


def _holm(pvalues: Mapping[str, float], alpha: float) -> dict[str, float]:
    if not pvalues:
        return {}
    result = tea_tasting.experiment.ExperimentResult(
        {name: {"pvalue": p} for name, p in pvalues.items()}  # type: ignore[misc]
    )
    adjusted = tt.adjust_fwer(result, alpha=alpha, arbitrary_dependence=True, method="bonferroni")
    return {
        name: float(r["pvalue_adj"])  # type: ignore[index]
        for name, r in adjusted[tea_tasting.multiplicity.NO_NAME_COMPARISON].items()
    }


def _two_proportions(x_c: int, n_c: int, x_t: int, n_t: int) -> float:
    if n_c <= 0 or n_t <= 0:
        raise ValueError("operational: a variant has no answers")
    pooled = (x_c + x_t) / (n_c + n_t)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n_c + 1 / n_t))
    diff = x_t / n_t - x_c / n_c
    if se == 0:
        return 1.0 if diff == 0 else 0.0
    return float(2 * scipy.stats.norm.sf(abs(diff) / se))


def _untested(row: dict[str, Any], note: str) -> dict[str, Any]:
    """A guardrail row without values: never worse, never breached, ``note`` says why."""
    return row | {
        "control_value": None,
        "treatment_value": None,
        "difference": None,
        "p_value": math.nan,
        "worse": False,
        "note": note,
    }


def assess_guardrails(
    experiment: Experiment,
    differences: Mapping[tuple[str, str], Difference],
    operational: pl.DataFrame | None,
    control: str,
    treatment: str,
) -> list[dict[str, Any]]:
    ops: dict[str, dict[str, Any]] = {}
    if operational is not None:
        ops = {row["variant"]: row for row in operational.to_dicts()}
    rows: list[dict[str, Any]] = []
    for name in experiment.guardrails:
        row: dict[str, Any] = {"variant": treatment, "guardrail": name}
        if name in METRICS:
            d = differences.get((treatment, name))
            if d is None:
                rows.append(_untested(row, "could not be computed"))
                continue
            worse = d.absolute < 0 if METRICS[name].higher_is_better else d.absolute > 0
            rows.append(
                row
                | {
                    "control_value": d.control_value,
                    "treatment_value": d.treatment_value,
                    "difference": d.absolute,
                    "p_value": d.p_value,
                    "worse": worse,
                }
            )
            continue
        c, t = ops.get(control), ops.get(treatment)
        if c is None or t is None:
            rows.append(_untested(row, "no operational data"))
            continue
        if name == "p99_latency_ms":
            cv, tv = float(c["p99_latency_ms"]), float(t["p99_latency_ms"])
            rows.append(
                row
                | {
                    "control_value": cv,
                    "treatment_value": tv,
                    "difference": tv - cv,
                    "p_value": math.nan,
                    "worse": tv > LATENCY_TOLERANCE * cv,
                    "note": f"no test: breached above {LATENCY_TOLERANCE} x control",
                }
            )
            continue
        col = "degraded" if name == "degraded_share" else "errors"
        cv, tv = c[col] / c["answers"], t[col] / t["answers"]
        p = _two_proportions(int(c[col]), int(c["answers"]), int(t[col]), int(t["answers"]))
        rows.append(
            row
            | {
                "control_value": cv,
                "treatment_value": tv,
                "difference": tv - cv,
                "p_value": p,
                "worse": tv > cv,
            }
        )
    tested = {r["guardrail"]: r["p_value"] for r in rows if math.isfinite(r["p_value"])}
    adjusted = _holm(tested, experiment.alpha)
    for r in rows:
        r["p_adjusted"] = adjusted.get(r["guardrail"], math.nan)
        if r["guardrail"] == "p99_latency_ms":
            r["breached"] = bool(r["worse"])
        else:
            r["breached"] = bool(r["worse"] and r["p_adjusted"] < experiment.alpha)
    return rows


def check_operational(operational: pl.DataFrame | None, variants: Sequence[str]) -> None:
    if operational is None:
        return
    cols = ["variant", "answers", "p99_latency_ms", "degraded", "errors"]
    frame = check_frame(operational, cols, "operational")
    for row in frame.to_dicts():
        if row["answers"] <= 0:
            raise ValueError(
                f"operational: variant {row['variant']!r} has {row['answers']} answers"
            )
        if not 0 <= row["degraded"] <= row["answers"] or not 0 <= row["errors"] <= row["answers"]:
            raise ValueError(
                f"operational: variant {row['variant']!r} has counts outside [0, answers]"
            )
    if frame["variant"].n_unique() != frame.height:
        raise ValueError("operational: one row per variant expected")
    unknown = sorted(set(frame["variant"].cast(pl.String).to_list()) - set(variants))
    if unknown:
        raise ValueError(f"operational: undeclared variants {unknown}")
