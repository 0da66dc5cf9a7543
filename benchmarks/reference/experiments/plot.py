"""The README's report plot: one simulated A/B experiment (planted +10 % buy uplift, 14 days,
daily exact looks) analysed by :func:`pipeline.experiments.analysis.analyse`; writes
``cumulative_lift.png`` and ``report.md`` beside this file. Run from the repository root:
``python benchmarks/reference/experiments/plot.py``."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))


def main() -> None:
    from pipeline.experiments.analysis import analyse
    from pipeline.experiments.config import Experiment
    from pipeline.experiments.simulator import START, Arm, Shoppers, affinity_ranker, simulate

    shoppers = Shoppers(customers=12_000, items=400, seed=1)
    champion = affinity_ranker(shoppers, 0.5, seed=11, name="champion")
    arm_of = np.random.default_rng(7).integers(0, 2, shoppers.n_customers)
    events = simulate(
        shoppers,
        [Arm("control", champion), Arm("treatment", champion, 1.10)],
        arm_of,
        days=14,
        seed=[1, 5],
    )
    experiment = Experiment.from_mapping(
        {
            "name": "simulated-uplift",
            "salt": "readme",
            "start": datetime.combine(START, datetime.min.time(), UTC),
            "end": datetime.combine(START + timedelta(days=14), datetime.min.time(), UTC),
            "primary_metric": "net_kept_revenue_per_unit",
            "minimum_detectable_effect": 0.1,
            "variants": [
                {"name": "control", "model": "champion", "share": 0.5},
                {"name": "treatment", "model": "2", "share": 0.5},
            ],
        }
    )
    looks = {START + timedelta(days=d): events.units(through_day=d) for d in range(14)}
    analysis = analyse(events.units(), experiment, looks=looks)
    analysis.plot(HERE / "cumulative_lift.png")
    (HERE / "report.md").write_text(analysis.to_markdown(), encoding="utf-8")
    print(analysis.verdict)


if __name__ == "__main__":
    main()
