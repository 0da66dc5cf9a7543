"""The whole analysis of an A/B experiment: the verdict, its evidence and its report.

:func:`analyse` puts the pieces together, each in its own module:

- :mod:`.sample_ratio`: were the units split as declared? (a mismatch blocks the verdict)
- :mod:`.differences`: fixed-horizon differences with CUPED, via tea-tasting (delta method for
  ratio metrics);
- :mod:`.group_sequential` (an experiment with a planned ``end``: O'Brien-Fleming alpha
  spending over its duration) or :mod:`.sequential` (no end: the always-valid mSPRT): the
  daily looks, safe to take, which decide the verdict;
- :mod:`.guardrails`: what an arm must not make worse (Holm-corrected);
- :mod:`.power`: the sample size a plan needs.

The :class:`Analysis` renders as markdown (the Prefect artifact and the terminal report) and
as the plot of the cumulative lift with its interval valid at every look.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any, Final

import polars as pl

from pipeline.experiments.config import METRICS, UNIT_COLUMNS, Experiment
from pipeline.experiments.differences import Difference, difference
from pipeline.experiments.frames import check_frame, check_units, finite
from pipeline.experiments.group_sequential import group_sequential
from pipeline.experiments.guardrails import assess_guardrails, check_operational
from pipeline.experiments.sample_ratio import SampleRatio, sample_ratio
from pipeline.experiments.sequential import sequential

__all__ = ["VERDICTS", "Analysis", "analyse", "lift_chart", "sequential_looks", "spending_time"]

VERDICTS: Final = (
    "blocked: sample ratio mismatch",
    "guardrail breached",
    "treatment wins",
    "treatment loses",
    "no significant difference yet",
)


@dataclass
class Analysis:
    """An experiment's analysis: see :func:`analyse`."""

    experiment: str
    version: str
    srm: SampleRatio
    primary: list[Difference]
    sequential: list[Difference]
    metrics: list[Difference]
    guardrails: list[dict[str, Any]]
    cumulative: pl.DataFrame
    verdict: str
    winner: str | None
    notes: list[str] = field(default_factory=list)  # metrics that could not be computed

    def as_dict(self) -> dict[str, Any]:
        return {
            "experiment": self.experiment,
            "version": self.version,
            "verdict": self.verdict,
            "winner": self.winner,
            "srm": self.srm.as_dict(),
            "primary": [d.as_dict() for d in self.primary],
            "sequential": [d.as_dict() for d in self.sequential],
            "metrics": [d.as_dict() for d in self.metrics],
            "guardrails": [
                {k: finite(v) if isinstance(v, float) else v for k, v in g.items()}
                for g in self.guardrails
            ],
            "cumulative": [
                {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in row.items()}
                for row in self.cumulative.to_dicts()
            ],
            "notes": list(self.notes),
        }

    def to_markdown(self) -> str:
        def pct(x: float) -> str:
            return f"{x:+.2%}" if math.isfinite(x) else "n/a"

        def row(d: Difference) -> str:
            return (
                f"| {d.treatment} | {d.metric} | {d.control_value:.4g} | {d.treatment_value:.4g} "
                f"| {pct(d.relative)} [{pct(d.relative_low)}, {pct(d.relative_high)}] "
                f"| {d.p_value:.3g} | {d.method} |"
            )

        head = "| variant | metric | control | treatment | lift [interval] | p | method |\n"
        head += "|---|---|---|---|---|---|---|\n"
        lines = [
            f"# Experiment {self.experiment} (version {self.version})",
            "",
            f"**Verdict: {self.verdict}**" + (f" (winner: {self.winner})" if self.winner else ""),
            "",
            f"Sample ratio: p = {self.srm.p_value:.3g}, counts {self.srm.counts}"
            + (" **mismatch**" if self.srm.mismatch else ""),
            "",
            "## Primary metric",
            "",
            head + "\n".join(row(d) for d in [*self.primary, *self.sequential]),
            "",
            "## Guardrails",
            "",
            "| variant | guardrail | control | treatment | adjusted p | breached |",
            "|---|---|---|---|---|---|",
        ]
        for g in self.guardrails:
            p = g.get("p_adjusted")
            ptxt = f"{p:.3g}" if isinstance(p, float) and math.isfinite(p) else "-"
            cv, tv = g["control_value"], g["treatment_value"]
            lines.append(
                f"| {g['variant']} | {g['guardrail']} | {'-' if cv is None else f'{cv:.4g}'} "
                f"| {'-' if tv is None else f'{tv:.4g}'} | {ptxt} "
                f"| {'yes' if g['breached'] else 'no'} |"
            )
        if self.cumulative.height:
            lines += [
                "",
                "## Cumulative lift (interval valid at every look, one look a day)",
                "",
                "```",
                *lift_chart(self.cumulative),
                "```",
            ]
        lines += ["", "## All metrics", "", head + "\n".join(row(d) for d in self.metrics)]
        if self.notes:
            lines += ["", "Notes:", *[f"- {n}" for n in self.notes]]
        return "\n".join(lines) + "\n"

    def plot(self, path: Path) -> Path:
        """The cumulative relative lift of the primary metric with its interval valid at every
        look, one line per treatment, and a zero line. Written with matplotlib's Agg canvas."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        path = Path(path)
        fig = Figure(figsize=(8, 4.5))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        for name in self.cumulative["variant"].unique(maintain_order=True).to_list():
            part = self.cumulative.filter(pl.col("variant") == name).sort("day")
            days = part["day"].to_list()
            (line,) = ax.plot(days, part["relative"].to_numpy(), marker="o", label=name)
            ax.fill_between(
                days,
                part["relative_low"].to_numpy(),
                part["relative_high"].to_numpy(),
                color=line.get_color(),
                alpha=0.2,
            )
        ax.axhline(0, color="black", linewidth=1)
        primary = self.primary[0].metric if self.primary else ""
        ax.set_title(f"{self.experiment}: cumulative lift of {primary} (valid at every look)")
        ax.set_ylabel("relative to control")
        ax.yaxis.set_major_formatter(lambda x, _pos: f"{x:.0%}")
        if self.cumulative.height:
            ax.legend()
        fig.autofmt_xdate()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100, bbox_inches="tight")
        return path


def lift_chart(cumulative: pl.DataFrame, width: int = 41, limit: float = 1.0) -> list[str]:
    """The cumulative lift over time as text, one line per look: the estimate (``o``) in its
    interval (``-``) on one axis shared by every line, with 0 marked (``|``), so a terminal
    shows the band narrowing as units accrue. The axis spans the values but at most
    +-``limit`` (100 %); a band that goes on beyond it ends in ``<`` or ``>``. Non-finite
    values are not drawn."""

    def ok(v: float | None) -> bool:
        return v is not None and math.isfinite(v)

    values = [
        v
        for c in ("relative", "relative_low", "relative_high")
        for v in cumulative[c].to_list()
        if ok(v)
    ]
    if not values:
        return ["(no finite interval yet)"]
    low, high = max(min(*values, 0.0), -limit), min(max(*values, 0.0), limit)
    span = (high - low) or 1.0

    def at(value: float) -> int:
        return min(width - 1, max(0, round((value - low) / span * (width - 1))))

    def pct(v: float | None) -> str:
        return f"{v:+.1%}" if ok(v) else "n/a"

    lines = [f"{'day':<10} {'variant':<12} {'lift':>8}  {'interval':<20} {low:+.0%} .. {high:+.0%}"]
    for row in cumulative.sort("variant", "day").iter_rows(named=True):
        axis = [" "] * width
        axis[at(0.0)] = "|"
        est, lo, hi = row["relative"], row["relative_low"], row["relative_high"]
        if ok(lo) and ok(hi):
            for x in range(at(lo), at(hi) + 1):
                axis[x] = "-" if axis[x] == " " else axis[x]
            if lo < low:
                axis[0] = "<"
            if hi > high:
                axis[-1] = ">"
        if ok(est):
            axis[at(est)] = "o"
        interval = f"[{pct(lo)}, {pct(hi)}]"
        chart = "".join(axis).rstrip()
        lines.append(
            f"{row['day']!s:<10} {row['variant']:<12} {pct(est):>8}  {interval:<20} {chart}"
        )
    return lines


def spending_time(experiment: Experiment, day: date) -> float:
    """How far through its planned duration ``experiment`` is at the end of ``day`` (UTC):
    the group-sequential look's spending time (1 or more after the end)."""
    if experiment.end is None:
        raise ValueError(f"experiment {experiment.name} has no planned end")
    end_of_day = datetime.combine(day + timedelta(days=1), time(), UTC)
    return (end_of_day - experiment.start) / (experiment.end - experiment.start)


def sequential_looks(
    experiment: Experiment,
    looks: Sequence[tuple[date, pl.DataFrame]],
    control: str,
    treatment: str,
) -> list[tuple[date, Difference]]:
    """The primary metric's sequential difference at each daily look (day, units known by
    its end), in day order: :func:`~.group_sequential.group_sequential` (O'Brien-Fleming
    spending over the planned duration) when the experiment declares an ``end``, else the
    mSPRT (:func:`~.sequential.sequential`, tau = the minimum detectable effect times the
    control value, the p-value the running minimum over the looks). A look the statistic
    cannot be computed on is left out."""
    metric = METRICS[experiment.primary_metric]
    looks = sorted(looks, key=lambda look: look[0])
    if experiment.end is not None:
        timed = [(spending_time(experiment, day), units) for day, units in looks]
        diffs = group_sequential(timed, metric, control, treatment, alpha=experiment.alpha)
        return [(day, d) for (day, _), d in zip(looks, diffs, strict=True)]
    out: list[tuple[date, Difference]] = []
    previous = 1.0
    for day, units in looks:
        try:
            d = sequential(
                units,
                metric,
                control,
                treatment,
                alpha=experiment.alpha,
                relative_tau=experiment.minimum_detectable_effect,
                previous_p=previous,
            )
        except ValueError:
            continue  # too few units in an arm so far
        previous = d.p_value
        out.append((day, d))
    return out


def analyse(
    units: pl.DataFrame,
    experiment: Experiment,
    *,
    operational: pl.DataFrame | None = None,
    looks: Mapping[date, pl.DataFrame] | None = None,
) -> Analysis:
    """The whole analysis of an A/B experiment.

    - ``srm``: :func:`sample_ratio` of the units per variant against the declared shares.
    - ``primary``: fixed-horizon CUPED difference of the primary metric, per treatment arm
      (holdouts included: every arm is compared with the control).
    - ``sequential``: the primary metric's difference at the last daily look of
      ``cumulative`` (:func:`sequential_looks`): group-sequential when the experiment has a
      planned end, else the mSPRT with tau = the minimum detectable effect times the control
      value (its p-value the running minimum over the looks).
    - ``metrics``: every :data:`METRICS` entry, fixed, no CUPED (those that cannot be computed,
      e.g. no items bought in an arm, are named in ``notes``).
    - ``guardrails``: per arm, metric guardrails (direction from ``higher_is_better``) and the
      operational ones from ``operational`` (one row per variant: answers, p99_latency_ms,
      degraded, errors): degraded_share and error_rate by a two-proportion z-test,
      p99_latency_ms untested and breached when above 1.2 x control. Holm across the tested
      guardrails of an arm; breached = worse direction and adjusted p < alpha.
    - ``cumulative``: for each day d, the sequential interval at that day's look. With
      ``looks`` (day -> the per-unit frame of everything known by the end of that day, as
      the analysis flow builds it) these are the exact looks. Without, the units first
      exposed on or before d with their totals to the end of the data: an approximation of
      what was known on day d (later outcomes of early units are already in).
    - ``verdict``: a sample ratio mismatch blocks everything; otherwise an arm wins (loses)
      when its sequential interval excludes 0 in the better (worse) direction; a breached
      guardrail overrides a win. ``winner``: the clean winner with the largest lift.

    Raises:
        ValueError: Naming the problem with the input.
    """
    frame, present = _checked_units(units, experiment, operational)
    control = experiment.control.name
    treatments = [v.name for v in experiment.variants][1:]
    srm = sample_ratio(present, {v.name: v.share for v in experiment.variants})
    primary = _primary_differences(frame, experiment, control, treatments)
    metrics, notes = _metric_differences(frame, experiment, control, treatments)
    cumulative, seq = _cumulative_looks(frame, experiment, control, treatments, looks)
    by_key = {(d.treatment, d.metric): d for d in metrics}
    guardrails = [
        row
        for t in treatments
        for row in assess_guardrails(experiment, by_key, operational, control, t)
    ]
    verdict, winner = _verdict(experiment, srm, seq, guardrails)
    return Analysis(
        experiment=experiment.name,
        version=experiment.version,
        srm=srm,
        primary=primary,
        sequential=seq,
        metrics=metrics,
        guardrails=guardrails,
        cumulative=cumulative,
        verdict=verdict,
        winner=winner,
        notes=notes,
    )


def _checked_units(
    units: pl.DataFrame, experiment: Experiment, operational: pl.DataFrame | None
) -> tuple[pl.DataFrame, dict[str, int]]:
    """The units with every column checked, and the count of units per variant."""
    if not isinstance(experiment, Experiment):
        raise ValueError(f"experiment: expected an Experiment, got {type(experiment).__name__}")
    if experiment.mode != "ab":
        raise ValueError(
            f"experiment {experiment.name}: analyse compares A/B arms; an {experiment.mode} "
            "experiment is analysed by pipeline.experiments.interleaving"
        )
    names = [v.name for v in experiment.variants]
    frame = check_frame(
        units, ["variant", "unit", "day", *UNIT_COLUMNS], f"experiment {experiment.name}"
    )
    frame = frame.with_columns(pl.col("variant").cast(pl.String))
    if frame.schema["day"] != pl.Date:
        raise ValueError(
            f"experiment {experiment.name}: column 'day' is {frame.schema['day']}, expected Date"
        )
    if frame["day"].null_count():
        raise ValueError(f"experiment {experiment.name}: column 'day' has nulls")
    present = dict(frame.group_by("variant").len().iter_rows())
    unknown = sorted(set(present) - set(names))
    if unknown:
        raise ValueError(f"experiment {experiment.name}: units in undeclared variants {unknown}")
    empty = [n for n in names if present.get(n, 0) == 0]
    if empty:
        raise ValueError(f"experiment {experiment.name}: variants {empty} have no units")
    check_operational(operational, names)
    return frame, present


def _primary_differences(
    frame: pl.DataFrame, experiment: Experiment, control: str, treatments: Sequence[str]
) -> list[Difference]:
    """The fixed-horizon CUPED difference of the primary metric, per treatment arm."""
    metric = METRICS[experiment.primary_metric]
    return [
        difference(frame, metric, control, t, alpha=experiment.alpha, cuped=True)
        for t in treatments
    ]


def _metric_differences(
    frame: pl.DataFrame, experiment: Experiment, control: str, treatments: Sequence[str]
) -> tuple[list[Difference], list[str]]:
    """Every metric's fixed difference per treatment arm, and a note on each that cannot be
    computed."""
    notes: list[str] = []
    metrics: list[Difference] = []
    for t in treatments:
        for metric in METRICS.values():
            try:
                metrics.append(difference(frame, metric, control, t, alpha=experiment.alpha))
            except ValueError as exc:
                notes.append(str(exc))
    return metrics, notes


CUMULATIVE_SCHEMA: Final = {
    "day": pl.Date,
    "variant": pl.String,
    "relative": pl.Float64,
    "relative_low": pl.Float64,
    "relative_high": pl.Float64,
    "p_value": pl.Float64,
}


def _cumulative_looks(
    frame: pl.DataFrame,
    experiment: Experiment,
    control: str,
    treatments: Sequence[str],
    looks: Mapping[date, pl.DataFrame] | None,
) -> tuple[pl.DataFrame, list[Difference]]:
    """Sequential looks, one a day, per treatment arm: the cumulative frame and each arm's
    difference at its last look (group-sequential when the experiment has a planned end, the
    mixture SPRT, valid however long it runs, when it runs until stopped)."""
    primary_metric = METRICS[experiment.primary_metric]
    rows = []
    final: dict[str, Difference] = {}
    days = sorted(frame["day"].unique().to_list())
    views = (
        dict(looks)
        if looks is not None
        else {day: frame.filter(pl.col("day") <= day) for day in days}
    )
    for t in treatments:
        usable = []
        for day, upto in sorted(views.items()):
            try:
                check_units(upto, primary_metric, [control, t])
            except ValueError:
                continue  # too few units in an arm so far
            usable.append((day, upto))
        looked = sequential_looks(experiment, usable, control, t)
        for day, d in looked:
            rows.append(
                {
                    "day": day,
                    "variant": t,
                    "relative": d.relative,
                    "relative_low": d.relative_low,
                    "relative_high": d.relative_high,
                    "p_value": d.p_value,
                }
            )
        if looked:
            final[t] = looked[-1][1]
    cumulative = pl.DataFrame(rows, schema=CUMULATIVE_SCHEMA)
    seq = [final[t] for t in treatments if t in final]
    if len(seq) != len(treatments):
        raise ValueError(f"experiment {experiment.name}: the primary metric cannot be computed")
    return cumulative, seq


def _verdict(
    experiment: Experiment,
    srm: SampleRatio,
    seq: Sequence[Difference],
    guardrails: Sequence[Mapping[str, Any]],
) -> tuple[str, str | None]:
    """One of :data:`VERDICTS`, and the clean winner with the largest lift (or None)."""
    primary_metric = METRICS[experiment.primary_metric]
    breached = {g["variant"] for g in guardrails if g["breached"]}

    def better(d: Difference) -> bool:
        return d.absolute > 0 if primary_metric.higher_is_better else d.absolute < 0

    winners = [d for d in seq if d.significant() and better(d) and d.treatment not in breached]
    losers = [d for d in seq if d.significant() and not better(d)]
    if srm.mismatch:
        return VERDICTS[0], None
    if winners:
        sign = 1 if primary_metric.higher_is_better else -1
        return VERDICTS[2], max(winners, key=lambda d: sign * d.absolute).treatment
    if breached:
        return VERDICTS[1], None
    if losers:
        return VERDICTS[3], None
    return VERDICTS[4], None
