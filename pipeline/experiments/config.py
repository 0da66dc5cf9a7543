"""Experiments declared in TOML or YAML, validated at load (errors name the field).

An experiment file (every key but ``description``, ``end``, ``guardrails`` and the variants'
``rules`` is required or has the default in brackets)::

    name = "ranker-v7"                      # letters, digits, '.', '_', '-'
    description = "the new ranker against the champion"
    mode = "ab"                             # [ab] | interleaving
    unit = "customer"                       # [customer] pseudonymised customer | session
    salt = "ranker-v7-2026-12"              # a new salt reshuffles every unit
    start = 2026-12-01T00:00:00Z
    end = 2026-12-15T00:00:00Z              # [none: until stopped] the planned end: daily
                                            # looks spend alpha over it (group-sequential);
                                            # without one, the mSPRT (valid for ever)
    primary_metric = "net_kept_revenue_per_unit"
    guardrails = ["return_rate", "p99_latency_ms", "degraded_share", "error_rate"]
    minimum_detectable_effect = 0.05        # relative to control (5 %)
    alpha = 0.05                            # [0.05]
    power = 0.8                             # [0.8]
    attribution_window_hours = 24           # [24] last touch within this window

    [[variants]]
    name = "control"                        # the first variant is the control
    model = "champion"                      # a registry alias or a version number
    share = 0.5

    [[variants]]
    name = "treatment"
    model = "7"
    rules = "rules/summer.yaml"             # [the serving default] a rule set for this arm
    share = 0.5

A variant with ``holdout = true`` gets no personalisation (the popularity ranking); it needs
no model. Shares must add up to 1. Interleaving compares exactly two non-holdout variants on
the same page view; their shares are then the traffic in the experiment, split by nothing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline.files import FileProblem, read_document

__all__ = [
    "GUARDRAILS",
    "METRICS",
    "Experiment",
    "ExperimentError",
    "Metric",
    "Variant",
    "load_experiment",
]

NAME_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


class Metric(BaseModel):
    """A per-variant metric: the sum of ``numerator`` over the sum of ``denominator`` across
    units (a ratio metric, analysed with the delta method), or the mean of ``numerator`` per
    unit when ``denominator`` is None. Columns are those of the per-unit frame
    (:func:`pipeline.experiments.metrics.unit_metrics`)."""

    model_config = ConfigDict(frozen=True)

    name: str
    numerator: str
    denominator: str | None
    description: str
    higher_is_better: bool = True


# Declared once: the per-unit columns, the metrics over them and the guardrails.
UNIT_COLUMNS: Final = (
    "exposures",  # answers served to the unit
    "clicks",
    "add_to_carts",
    "orders",  # distinct orders with an attributed purchase
    "converted",  # 1 if the unit bought anything attributed, else 0
    "items",  # attributed items bought
    "revenue",
    "returns",  # attributed items returned
    "size_returns",  # of which for size (too small, too large)
    "returned_revenue",
    "net_revenue",  # revenue minus returned revenue
    "pre_revenue",  # the unit's revenue before the experiment (the CUPED covariate)
)

METRICS: Final = {
    m.name: m
    for m in (
        Metric(
            name="click_through_rate",
            numerator="clicks",
            denominator="exposures",
            description="clicks per answer served",
        ),
        Metric(
            name="add_to_cart_rate",
            numerator="add_to_carts",
            denominator="exposures",
            description="add-to-carts per answer served",
        ),
        Metric(
            name="conversion",
            numerator="converted",
            denominator=None,
            description="share of units that bought an attributed item",
        ),
        Metric(
            name="revenue_per_unit",
            numerator="revenue",
            denominator=None,
            description="attributed revenue per unit",
        ),
        Metric(
            name="return_rate",
            numerator="returns",
            denominator="items",
            description="attributed items returned per item bought",
            higher_is_better=False,
        ),
        Metric(
            name="size_return_rate",
            numerator="size_returns",
            denominator="items",
            description="items returned for size (too small or too large) per item bought",
            higher_is_better=False,
        ),
        Metric(
            name="net_kept_revenue_per_unit",
            numerator="net_revenue",
            denominator=None,
            description="attributed revenue minus the revenue of returns, per unit",
        ),
        Metric(
            name="items_per_order",
            numerator="items",
            denominator="orders",
            description="attributed items per order",
        ),
    )
}

# Operational guardrails, computed from the exposures themselves (not per unit).
GUARDRAILS: Final = {
    "p99_latency_ms": "99th percentile of the answer's latency, ms (lower is better)",
    "degraded_share": "share of answers flagged degraded (lower is better)",
    "error_rate": "share of answers that fell back after a model error (lower is better)",
}


class ExperimentError(ValueError):
    """An experiment file or mapping is unreadable or invalid.

    Attributes:
        source: The file (or ``"<mapping>"``) the experiment came from.
        problems: One ``"field: message"`` line per problem (``variants[1].share``).
    """

    def __init__(self, source: str, problems: Sequence[str]):
        self.source = source
        self.problems = tuple(problems)
        super().__init__(f"invalid experiment in {source}: " + "; ".join(self.problems))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Variant(_Strict):
    """One arm of an experiment."""

    name: str = Field(pattern=NAME_PATTERN, description="the arm's name, unique in the file")
    model: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="a registry alias (champion, challenger) or a version number",
    )
    rules: Path | None = Field(default=None, description="a rules file for this arm")
    share: float = Field(gt=0, le=1, allow_inf_nan=False, description="share of the traffic")
    holdout: bool = Field(default=False, description="no personalisation: popularity only")

    @model_validator(mode="after")
    def _model_or_holdout(self) -> Self:
        if self.holdout and (self.model is not None or self.rules is not None):
            raise ValueError("a holdout serves popularity: it takes neither model nor rules")
        if not self.holdout and self.model is None:
            raise ValueError("model is required (an alias or a version) unless holdout = true")
        return self

    @property
    def version(self) -> str | None:
        """The registry version when ``model`` names one by number, else None (an alias)."""
        return self.model if self.model is not None and self.model.isdigit() else None


class Experiment(_Strict):
    """A validated experiment; see the module's docstring for the file."""

    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    mode: Literal["ab", "interleaving"] = "ab"
    unit: Literal["customer", "session"] = "customer"
    salt: str = Field(min_length=1, max_length=128)
    start: datetime
    end: datetime | None = None
    primary_metric: str
    guardrails: tuple[str, ...] = ()
    minimum_detectable_effect: float = Field(gt=0, le=10, allow_inf_nan=False)
    alpha: float = Field(default=0.05, gt=0, lt=0.5, allow_inf_nan=False)
    power: float = Field(default=0.8, gt=0.5, lt=1, allow_inf_nan=False)
    attribution_window_hours: float = Field(default=24, gt=0, le=24 * 90, allow_inf_nan=False)
    variants: tuple[Variant, ...] = Field(min_length=2, max_length=8)

    @field_validator("start", "end")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    @field_validator("primary_metric")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        if value not in METRICS:
            raise ValueError(f"unknown metric {value!r}; expected one of {sorted(METRICS)}")
        return value

    @field_validator("guardrails")
    @classmethod
    def _known_guardrails(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        unknown = sorted(set(values) - set(METRICS) - set(GUARDRAILS))
        if unknown:
            known = sorted([*METRICS, *GUARDRAILS])
            raise ValueError(f"unknown guardrails {unknown}; expected some of {known}")
        if len(set(values)) != len(values):
            raise ValueError("a guardrail is listed twice")
        return values

    @model_validator(mode="after")
    def _coherent(self) -> Self:
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError(f"variant names must be unique, got {names}")
        total = sum(v.share for v in self.variants)
        if abs(total - 1) > 1e-9:
            raise ValueError(f"variant shares add up to {total:g}, not 1")
        if self.variants[0].holdout:
            raise ValueError("the first variant is the control: it cannot be the holdout")
        if self.end is not None and self.end <= self.start:
            raise ValueError("end must be after start")
        if self.mode == "interleaving" and sum(not v.holdout for v in self.variants) != 2:
            raise ValueError("interleaving compares exactly two non-holdout variants")
        return self

    @property
    def control(self) -> Variant:
        """The first variant."""
        return self.variants[0]

    @property
    def version(self) -> str:
        """A short hash of the validated content: two files that mean the same thing have
        the same version, any change of meaning gives a new one."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(canonical).hexdigest()[:12]

    def running_at(self, when: datetime) -> bool:
        """Whether ``when`` is within [start, end)."""
        return self.start <= when and (self.end is None or when < self.end)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], source: str = "<mapping>") -> Experiment:
        """Validate a parsed file.

        Raises:
            ExperimentError: Naming each offending field.
        """
        if not isinstance(data, Mapping):
            kind = type(data).__name__
            raise ExperimentError(source, [f"<root>: expected a mapping, got {kind}"])
        try:
            return cls.model_validate(dict(data))
        except ValidationError as exc:
            problems = []
            for error in exc.errors():
                where = "".join(
                    f"[{part}]" if isinstance(part, int) else f".{part}" for part in error["loc"]
                ).lstrip(".")
                problems.append(f"{where or '<root>'}: {error['msg']}")
            raise ExperimentError(source, problems) from None


def load_experiment(path: Path) -> Experiment:
    """Read and validate an experiment file (``.toml``, ``.yaml`` or ``.yml``).

    Raises:
        ExperimentError: If the file cannot be read or parsed, or a field is invalid.
    """
    source = str(Path(path))
    try:
        data = read_document(path)
    except FileProblem as exc:
        raise ExperimentError(source, [exc.problem]) from None
    return Experiment.from_mapping(data, source=source)
