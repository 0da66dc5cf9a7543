"""The experiment statistics proven on simulated shoppers (:mod:`pipeline.experiments.simulator`).

Every number comes from the simulation; nothing is tuned to a target. Per run, units are
assigned by :class:`~pipeline.experiments.assignment.Assigner` under a fresh salt, the shoppers
shop for ``--days`` days and the per-unit frame is analysed by
:mod:`pipeline.experiments.analysis`. The primary metric is ``net_kept_revenue_per_unit``.

* **A/A** (both arms the champion): ``aa_fpr`` is the share of runs the fixed-horizon test
  calls significant at alpha 0.05 at the end; ``aa_peeking_fpr`` the share ever significant
  when looked at daily as :func:`analyse` looks at an experiment with a planned end (``days``
  days): the group-sequential design (:func:`group_sequential`, O'Brien-Fleming spending by
  elapsed time). The mSPRT that :func:`analyse` uses for an experiment without an end
  (:func:`sequential`, running-minimum p, tau = the planned minimum detectable effect times
  the control mean) is printed beside it; ``naive_peeking_fpr`` the share ever significant by
  the fixed test looked at daily.
* **A/B**: the minimum detectable effect is planned (:func:`plan`) on a pre-period frame of
  the champion; the treatment's buy probability is multiplied by ``1 + mde``, whose true
  relative effect on the metric is exactly ``mde`` (:func:`planted_effect`). Each run enrols
  as many customers as the plan asks for (scaled by the pre-period's exposure rate).
  ``ab_power`` is the share of runs the fixed test detects; ``planned_power`` the mean of
  :func:`power_at` at each run's actual treatment units. ``cuped_ci_shrink`` is one minus
  the median ratio of the CUPED interval width to the plain one on the same runs.
* **SRM**: 50/50 declared, 47/53 served (a broken split); ``srm_caught`` is true when
  :func:`sample_ratio` flags at least 95 % of the runs.
* **Interleaving**: a better ranker (affinity quality ``0.6``) against the champion (``0.5``).
  The sessions each method needs for 80 % power at alpha 0.05 are computed from the effect
  sizes observed on large simulated pools (documented choice): A/B split by session on
  clicks per session, ``2 * (z_a + z_b)^2 (s_a^2 + s_b^2) / delta^2`` sessions in all;
  interleaving's sign test on the sessions one team wins, ``((z_a / 2 + z_b sqrt(p (1 - p)))
  / (p - 1/2))^2`` decided sessions divided by the share of sessions decided. A resampling
  check of both powers at those sizes is printed.
* **Assignment overhead**: the median per-request time of serving's experiment path
  (``ExperimentRouter.route`` on a pseudonym, the arm stamped on the answer,
  ``exposure_record`` and ``EventLog.append``) minus the same answer without it, over
  ``--requests`` calls; the median of 5 repeats (the mean, with its fsyncs, is printed).

Last line::

    experiments aa_fpr=X aa_peeking_fpr=X naive_peeking_fpr=X ab_power=X planned_power=X
    srm_caught=true interleaving_session_ratio=X cuped_ci_shrink=X assignment_overhead_ms=X
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

METRIC = "net_kept_revenue_per_unit"
ALPHA = 0.05
POWER = 0.8


def experiment(name: str, shares: tuple[float, float] = (0.5, 0.5)):
    from pipeline.experiments.config import Experiment

    return Experiment.from_mapping(
        {
            "name": name,
            "salt": name,
            "start": datetime(2026, 12, 1, tzinfo=UTC),
            "primary_metric": METRIC,
            "minimum_detectable_effect": 0.05,
            "variants": [
                {"name": "control", "model": "champion", "share": shares[0]},
                {"name": "treatment", "model": "challenger", "share": shares[1]},
            ],
        }
    )


def assign(shoppers, name: str, enrolled: np.ndarray, shares=(0.5, 0.5)) -> np.ndarray:
    """Arm index per customer (-1 not enrolled) by the production Assigner."""
    from pipeline.experiments.assignment import Assigner

    assigner = Assigner(experiment(name, shares))
    ids = shoppers.world.customers.get_column("customer_id").to_list()
    arm_of = np.full(len(ids), -1)
    for i in np.flatnonzero(enrolled):
        arm_of[i] = 0 if assigner.variant(ids[i]).name == "control" else 1
    return arm_of


def aa_runs(shoppers, champion, runs: int, days: int, seed: int, mde: float) -> dict[str, float]:
    from pipeline.experiments.config import METRICS
    from pipeline.experiments.differences import difference
    from pipeline.experiments.group_sequential import group_sequential
    from pipeline.experiments.sample_ratio import sample_ratio
    from pipeline.experiments.sequential import sequential
    from pipeline.experiments.simulator import Arm, pre_revenue, simulate

    metric = METRICS[METRIC]
    arms = [Arm("control", champion), Arm("treatment", champion)]
    everyone = np.ones(shoppers.n_customers, bool)
    fixed = peeking = msprt = peeking_default = naive = srm_alarms = 0
    started = time.perf_counter()
    for run in range(runs):
        arm_of = assign(shoppers, f"aa-{seed}-{run}", everyone)
        pre = pre_revenue(shoppers, champion, everyone, days=days, seed=seed * 100_003 + run)
        events = simulate(shoppers, arms, arm_of, days=days, seed=[seed, 1, run])
        p_seq, p_default, ever_seq, ever_default, ever_naive = 1.0, 1.0, False, False, False
        looks = []
        for day in range(days):
            units = events.units(day, pre)
            looks.append(((day + 1) / days, units))  # the plan: `days` days, a look a day
            # tau = the planned minimum detectable effect times the control, as analyse() sets it
            seq = sequential(
                units,
                metric,
                "control",
                "treatment",
                alpha=ALPHA,
                relative_tau=mde,
                previous_p=p_seq,
            )
            p_seq = seq.p_value
            ever_seq |= p_seq < ALPHA
            default = sequential(
                units, metric, "control", "treatment", alpha=ALPHA, previous_p=p_default
            )
            p_default = default.p_value
            ever_default |= p_default < ALPHA
            fix = difference(units, metric, "control", "treatment", alpha=ALPHA)
            ever_naive |= fix.significant()
        fixed += fix.significant()
        # What analyse() does for an experiment with a planned end: O'Brien-Fleming spending
        # over the looks; its last interval is the intersection of all (a crossing stays).
        planned = group_sequential(
            looks, metric, "control", "treatment", alpha=ALPHA, p_value=False
        )
        peeking += planned[-1].significant()
        msprt += ever_seq
        peeking_default += ever_default
        naive += ever_naive
        counts = dict(units.group_by("variant").len().iter_rows())
        srm_alarms += sample_ratio(counts, {"control": 0.5, "treatment": 0.5}).mismatch
        if (run + 1) % max(1, runs // 10) == 0:
            print(
                f"  A/A {run + 1}/{runs}: fixed {fixed}, group-sequential ever {peeking}, "
                f"mSPRT ever {msprt}, naive ever {naive}"
                f" ({time.perf_counter() - started:.0f} s)",
                flush=True,
            )
    print(f"  A/A sample-ratio false alarms: {srm_alarms}/{runs}")
    print(
        f"  A/A mSPRT (experiments without a planned end), tau = the mde: ever significant "
        f"{msprt}/{runs}; with the default tau (5 % lift): {peeking_default}/{runs}"
    )
    return {
        "aa_fpr": fixed / runs,
        "aa_peeking_fpr": peeking / runs,
        "msprt_peeking_fpr": msprt / runs,
        "naive": naive / runs,
    }


def ab_runs(shoppers, champion, runs: int, days: int, seed: int, mde: float) -> dict[str, float]:
    from pipeline.experiments.config import METRICS
    from pipeline.experiments.differences import difference
    from pipeline.experiments.power import plan, power_at
    from pipeline.experiments.simulator import Arm, planted_effect, pre_revenue, simulate

    metric = METRICS[METRIC]
    everyone = np.ones(shoppers.n_customers, bool)
    baseline = simulate(
        shoppers,
        [Arm("control", champion)],
        np.zeros(shoppers.n_customers, int),
        days=days,
        seed=[seed, 2],
    ).units()
    exposure_rate = baseline.height / shoppers.n_customers
    the_plan = plan(
        baseline,
        metric,
        minimum_detectable_effect=mde,
        alpha=ALPHA,
        power=POWER,
        shares=(0.5, 0.5),
        units_per_day=baseline.height / days,
    )
    enrol = math.ceil(the_plan.total_units / exposure_rate)
    print(
        f"  plan: mde {mde:.0%} of {the_plan.baseline:.1f} (sd {the_plan.std:.1f}) needs "
        f"{the_plan.units_per_variant} units per arm; enrolling {enrol} of "
        f"{shoppers.n_customers} customers (exposure rate {exposure_rate:.3f})"
    )
    if enrol > shoppers.n_customers:
        print("  WARNING: the plan needs more customers than the world has; enrolling all")
        enrol = shoppers.n_customers
    arms = [Arm("control", champion), Arm("treatment", champion, 1 + mde)]
    truth = planted_effect(1 + mde)
    detected, planned, shrink, estimates = 0, [], [], []
    started = time.perf_counter()
    for run in range(runs):
        rng = np.random.default_rng([seed, 3, run])
        enrolled = np.zeros(shoppers.n_customers, bool)
        enrolled[rng.choice(shoppers.n_customers, enrol, replace=False)] = True
        arm_of = assign(shoppers, f"ab-{seed}-{run}", enrolled)
        pre = pre_revenue(shoppers, champion, everyone, days=days, seed=seed * 100_019 + run)
        units = simulate(shoppers, arms, arm_of, days=days, seed=[seed, 4, run]).units(None, pre)
        plain = difference(units, metric, "control", "treatment", alpha=ALPHA)
        cuped = difference(units, metric, "control", "treatment", alpha=ALPHA, cuped=True)
        detected += plain.significant() and plain.absolute > 0
        estimates.append(plain.relative)
        n_t = int((units.get_column("variant") == "treatment").sum())
        planned.append(
            power_at(
                baseline,
                metric,
                relative_effect=mde,
                alpha=ALPHA,
                units_per_variant=n_t,
                shares=(0.5, 0.5),
            )
        )
        width = plain.absolute_high - plain.absolute_low
        shrink.append((cuped.absolute_high - cuped.absolute_low) / width)
        if (run + 1) % max(1, runs // 10) == 0:
            print(
                f"  A/B {run + 1}/{runs}: detected {detected}, planned power "
                f"{np.mean(planned):.3f} ({time.perf_counter() - started:.0f} s)",
                flush=True,
            )
    print(
        f"  A/B true effect {truth:+.3f}, mean estimate {np.mean(estimates):+.3f}; "
        f"CUPED width ratio median {np.median(shrink):.3f}"
    )
    return {
        "ab_power": detected / runs,
        "planned_power": float(np.mean(planned)),
        "cuped_ci_shrink": 1 - float(np.median(shrink)),
    }


def srm_runs(shoppers, champion, runs: int, days: int, seed: int) -> bool:
    from pipeline.experiments.sample_ratio import sample_ratio
    from pipeline.experiments.simulator import Arm, simulate

    arms = [Arm("control", champion), Arm("treatment", champion)]
    everyone = np.ones(shoppers.n_customers, bool)
    caught = 0
    for run in range(runs):
        # declared 50/50, served 47/53
        arm_of = assign(shoppers, f"srm-{seed}-{run}", everyone, shares=(0.47, 0.53))
        units = simulate(shoppers, arms, arm_of, days=days, seed=[seed, 5, run]).units()
        counts = dict(units.group_by("variant").len().iter_rows())
        caught += sample_ratio(counts, {"control": 0.5, "treatment": 0.5}).mismatch
    print(f"  SRM 47/53 served as 50/50: caught {caught}/{runs}")
    return caught >= 0.95 * runs


def interleaving_ratio(shoppers, champion, better, sessions: int, seed: int) -> float:
    from scipy.stats import norm, ttest_ind

    from pipeline.experiments.interleaving import preference
    from pipeline.experiments.simulator import session_clicks, simulate_interleaved

    z_a, z_b = norm.isf(ALPHA / 2), norm.isf(1 - POWER)
    clicks_b = session_clicks(shoppers, champion, sessions * 4, seed=seed * 7 + 1)
    clicks_a = session_clicks(shoppers, better, sessions * 4, seed=seed * 7 + 2)
    delta = clicks_a.mean() - clicks_b.mean()
    ab_sessions = 2 * (z_a + z_b) ** 2 * (clicks_a.var() + clicks_b.var()) / delta**2
    pool = simulate_interleaved(shoppers, better, champion, sessions, seed=seed * 7 + 3)
    a, b = pool.get_column("clicks_a").to_numpy(), pool.get_column("clicks_b").to_numpy()
    win_a, win_b = (a > b).mean(), (a < b).mean()
    decided = win_a + win_b
    p = win_a / decided
    il_sessions = ((z_a / 2 + z_b * math.sqrt(p * (1 - p))) / (p - 0.5)) ** 2 / decided
    print(
        f"  A/B by session: clicks/session {clicks_a.mean():.3f} vs {clicks_b.mean():.3f} "
        f"-> {ab_sessions:.0f} sessions; interleaving: better wins {win_a:.3f}, loses "
        f"{win_b:.3f} -> {il_sessions:.0f} sessions"
    )
    # resampling check of both powers at those sizes
    rng = np.random.default_rng([seed, 8])
    reps = 300
    n_il, n_ab = math.ceil(il_sessions), math.ceil(ab_sessions / 2)
    il_hits = ab_hits = 0
    for _ in range(reps):
        pick = rng.integers(0, len(a), n_il)
        wins_a, wins_b = int((a[pick] > b[pick]).sum()), int((a[pick] < b[pick]).sum())
        il_hits += preference(wins_a, wins_b, ALPHA).winner == "a"
        sa, sb = rng.choice(clicks_a, n_ab), rng.choice(clicks_b, n_ab)
        test = ttest_ind(sa, sb, equal_var=False)
        ab_hits += test.pvalue < ALPHA and sa.mean() > sb.mean()
    print(
        f"  resampled power at those sizes: interleaving {il_hits / reps:.3f}, "
        f"A/B {ab_hits / reps:.3f}"
    )
    return float(ab_sessions / il_sessions)


def assignment_overhead_ms(requests: int, repeats: int = 5) -> float:
    """Serving's own experiment path per page view: :meth:`ExperimentRouter.route` on a
    pseudonym (the running experiment read from a real record), the answer stamped with the
    experiment and arm, :func:`exposure_record` and ``EventLog.append`` (flush per line, fsync
    within 0.2 s), against the same answer without them (the path before issue 16)."""
    from types import SimpleNamespace

    from pipeline.config import Settings
    from pipeline.experiments.state import start
    from pipeline.privacy import pseudonymise
    from serving.events import EventLog
    from serving.experiments import ExperimentRouter, exposure_record
    from serving.schemas import Recommendation, ScoredItem

    pseudonyms = [pseudonymise(f"C{i:07d}", "bench-key") for i in range(1000)]
    items = [ScoredItem(item_id=f"I{i:06d}", score=1.0 - i / 10) for i in range(10)]

    def answer() -> Recommendation:
        return Recommendation(items=items, model_version="7", known_customer=True, cold_start=False)

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp))
        start(settings.experiments_dir, experiment("overhead"))
        router = ExperimentRouter(settings, lambda v: None, lambda ref: "7")
        router.refresh(SimpleNamespace(version="7"))
        log = EventLog(Path(tmp) / "events", prefix="exposures")

        def naive(i: int) -> Recommendation:
            return answer()

        def full(i: int) -> Recommendation:
            pseudonym = pseudonyms[i % 1000]
            routed = router.route(pseudonym, f"s{i}")
            assert routed is not None
            out = answer()
            out.experiment, out.variant = routed[0].experiment.name, routed[1].name
            log.append(exposure_record(out, f"s{i}", pseudonym, "k1", routed[0], 1.5, False))
            return out

        def timed(path) -> np.ndarray:
            times = np.empty(requests, dtype=np.int64)
            clock = time.perf_counter_ns
            for i in range(requests):
                t0 = clock()
                path(i)
                times[i] = clock() - t0
            return times

        overheads, means = [], []
        try:
            for _ in range(repeats):
                with_it, without = timed(full), timed(naive)
                overheads.append((np.median(with_it) - np.median(without)) / 1e6)
                means.append((with_it.mean() - without.mean()) / 1e6)
        finally:
            log.close()
    print(
        f"  experiment path per request: median {[round(float(o), 4) for o in overheads]} ms, "
        f"mean (fsyncs included) {[round(float(m), 4) for m in means]} ms"
    )
    return float(np.median(overheads))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiments", type=int, default=200, help="A/A and A/B runs each")
    parser.add_argument("--customers", type=int, default=12_000)
    parser.add_argument("--items", type=int, default=400)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--mde", type=float, default=0.1, help="relative, planted as the uplift")
    parser.add_argument("--sessions", type=int, default=20_000, help="interleaving pool")
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="a tiny run to check the wiring")
    args = parser.parse_args()
    if args.quick:
        args.experiments, args.customers, args.items = 4, 1500, 150
        args.days, args.sessions, args.requests, args.mde = 4, 1000, 500, 0.5

    from pipeline.experiments.simulator import Shoppers, affinity_ranker

    started = time.perf_counter()
    shoppers = Shoppers(customers=args.customers, items=args.items, seed=args.seed)
    champion = affinity_ranker(shoppers, 0.5, seed=args.seed * 10 + 1, name="champion")
    better = affinity_ranker(shoppers, 0.6, seed=args.seed * 10 + 2, name="challenger")
    print(
        f"world: {shoppers.n_customers} customers, {shoppers.n_items} items "
        f"({time.perf_counter() - started:.1f} s)",
        flush=True,
    )
    print(f"A/A: {args.experiments} runs of {args.days} days, daily looks", flush=True)
    aa = aa_runs(shoppers, champion, args.experiments, args.days, args.seed, args.mde)
    print(f"A/B: {args.experiments} runs, planted uplift {args.mde:.0%}", flush=True)
    ab = ab_runs(shoppers, champion, args.experiments, args.days, args.seed, args.mde)
    print("SRM:", flush=True)
    srm = srm_runs(shoppers, champion, args.experiments, args.days, args.seed)
    print("interleaving:", flush=True)
    ratio = interleaving_ratio(shoppers, champion, better, args.sessions, args.seed)
    print("assignment overhead:", flush=True)
    overhead = assignment_overhead_ms(args.requests)
    print(f"done in {time.perf_counter() - started:.0f} s")
    print(
        f"experiments aa_fpr={aa['aa_fpr']:.3f} aa_peeking_fpr={aa['aa_peeking_fpr']:.3f} "
        f"naive_peeking_fpr={aa['naive']:.3f} ab_power={ab['ab_power']:.3f} "
        f"planned_power={ab['planned_power']:.3f} srm_caught={'true' if srm else 'false'} "
        f"interleaving_session_ratio={ratio:.3f} cuped_ci_shrink={ab['cuped_ci_shrink']:.3f} "
        f"assignment_overhead_ms={overhead:.3f}"
    )


if __name__ == "__main__":
    main()
