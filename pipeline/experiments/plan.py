"""``fitrec experiment plan``: the sample size and duration of an experiment from the recent
traffic in the event log.

The recent traffic is every answer served (curated exposures, any experiment or none) in the
last ``days`` days with its attributed outcomes, taken as one arm: the per-unit frame of
:func:`pipeline.experiments.metrics.unit_metrics` gives the primary metric's baseline and
per-unit variance, and the distinct units per day give the duration.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl

from pipeline.config import Settings
from pipeline.data.curated import scan_curated
from pipeline.experiments import power
from pipeline.experiments.config import METRICS, Experiment
from pipeline.experiments.metrics import unit_metrics

__all__ = ["PlanError", "plan_from_traffic"]

BASELINE = "baseline"


class PlanError(RuntimeError):
    """No recent traffic to plan from."""


def plan_from_traffic(
    settings: Settings, experiment: Experiment, days: int, now: datetime | None = None
) -> power.Plan:
    """The plan for ``experiment`` from the last ``days`` days of traffic.

    Raises:
        PlanError: No answers served in that window (serve first: the plan needs traffic).
    """
    now = now or datetime.now(UTC)
    since = now - timedelta(days=days)
    exposures = scan_curated(settings.curated_dir, "exposures").collect()
    recent = exposures.filter((pl.col("ts") >= since) & (pl.col("ts") < now))
    if recent.is_empty():
        raise PlanError(
            f"no answers served in the last {days} days in {settings.curated_dir}/exposures: "
            "the plan needs recent traffic (serve, then run the nightly ingest)"
        )
    # The window's traffic as one arm of a stand-in experiment over the same window.
    stand_in = Experiment.model_validate(
        experiment.model_dump()
        | {
            "start": since,
            "end": now,
            "mode": "ab",
            "variants": [
                {"name": BASELINE, "model": "champion", "share": 0.5},
                {"name": "other", "model": "champion", "share": 0.5},
            ],
        }
    )
    recent = recent.with_columns(
        pl.lit(stand_in.name).alias("experiment"), pl.lit(BASELINE).alias("variant")
    )
    outcomes = scan_curated(settings.curated_dir, "outcomes").collect()
    units = unit_metrics(recent, outcomes, stand_in)
    if units.is_empty():
        raise PlanError(
            f"the answers of the last {days} days have no {experiment.unit} to count "
            f"(unit = {experiment.unit!r})"
        )
    return power.plan(
        units.drop("variant"),
        METRICS[experiment.primary_metric],
        minimum_detectable_effect=experiment.minimum_detectable_effect,
        alpha=experiment.alpha,
        power=experiment.power,
        shares=[v.share for v in experiment.variants],
        units_per_day=units.height / days,
    )
