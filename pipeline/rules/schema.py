"""Per-retailer business rules: their schema, validation and loading.

A retailer writes its rules once, in YAML or TOML; :func:`load_rules` validates them into a
:class:`Rules` (or raises :class:`RulesError` naming the file and the offending field). Serving
compiles them against its catalogue (:class:`pipeline.rules.compiled.CatalogueRules`) and
applies them to the model's candidates on every page view, in three stages:

1. **Filters** drop candidates: out of stock in the customer's recommended size, already
   purchased or returned, outside the category include/exclude lists, outside the price range.
2. **Boosts and buries** multiply a non-negative transform of the score, ``exp(score)``, by
   each matching rule's factor. This is done in log space, so the reported score is
   ``score + ln(factor)`` and never overflows. Because ``exp`` is strictly increasing, a boost
   (factor > 1) always moves an item up and a bury (factor < 1) always moves it down, whatever
   the sign of the model's score; multiplying a raw negative score by 2 would instead bury it.
3. **Selection** picks at most ``k`` items greedily: by score, or by Maximal Marginal
   Relevance when ``diversity.method`` is ``"mmr"``, skipping items whose brand or category
   has reached its cap.

Nothing happens at import: no I/O and no default rules file. :data:`EXAMPLE_YAML` is a
complete rules file that :func:`load_rules` accepts::

    in_stock_in_recommended_size: true
    exclude_purchased: true
    exclude_returned: true
    categories:
      include: null
      exclude: [accessories]
    price:
      min: 10.0
      max: null
    boost:
      - attribute: brand
        values: [brand_03, brand_07]
        factor: 1.5
    bury:
      - attribute: colour
        values: [pink]
        factor: 0.5
    diversity:
      method: mmr
      lambda: 0.7
    max_per_brand: 3
    max_per_category: 4
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline.data.contracts import CATEGORIES
from pipeline.files import FileProblem, read_document

__all__ = [
    "EXAMPLE_YAML",
    "BoostRule",
    "BuryRule",
    "CategoryFilter",
    "Context",
    "Diversity",
    "PriceFilter",
    "Rules",
    "RulesError",
    "load_rules",
]

EXAMPLE_YAML: Final = """\
# Business rules of one retailer. Every key is optional; defaults are in brackets.
in_stock_in_recommended_size: true  # [false] needs stock in the customer's recommended size
exclude_purchased: true             # [true]
exclude_returned: true              # [false]
categories:
  include: null                     # [null = every category], e.g. [dress, top]
  exclude: [accessories]            # [[]]
price:
  min: 10.0                         # [null = no floor]; bounds are inclusive
  max: null                         # [null = no ceiling]
boost:                              # [[]] factor > 1 multiplies exp(score)
  - attribute: brand                # category | brand | style | colour
    values: [brand_03, brand_07]
    factor: 1.5
bury:                               # [[]] 0 < factor < 1 multiplies exp(score)
  - attribute: colour
    values: [pink]
    factor: 0.5
diversity:
  method: mmr                       # [none] | mmr
  lambda: 0.7                       # [0.7] 1 = pure relevance, 0 = pure variety
max_per_brand: 3                    # [null = no cap]
max_per_category: 4                 # [null = no cap]
"""

Attribute = Literal["category", "brand", "style", "colour"]


class RulesError(ValueError):
    """A rules file or mapping is unreadable or invalid.

    Attributes:
        source: The file (or ``"<mapping>"``) the rules came from.
        problems: One ``"field: message"`` line per problem, fields in dotted form such as
            ``boost[0].factor``.
    """

    def __init__(self, source: str, problems: Sequence[str]):
        self.source = source
        self.problems = tuple(problems)
        super().__init__(f"invalid rules in {source}: " + "; ".join(self.problems))


class _Strict(BaseModel):
    """Base of every rules model: unknown keys are errors (typos must not pass silently)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _check_categories(values: list[str] | None) -> list[str] | None:
    """Reject category names outside the shared vocabulary, where a typo would match nothing."""
    unknown = sorted({v for v in values or () if v not in CATEGORIES})
    if unknown:
        raise ValueError(f"unknown categories {unknown}; expected some of {list(CATEGORIES)}")
    return values


class CategoryFilter(_Strict):
    """Which catalogue categories may be recommended."""

    include: list[str] | None = Field(
        default=None,
        min_length=1,
        description=(
            "Only these categories (names from pipeline.data.contracts.CATEGORIES); null allows "
            "every category. An empty list is rejected because it would allow none. Items "
            "with a null category fail an include list."
        ),
    )
    exclude: list[str] = Field(
        default_factory=list,
        description="Never these categories; items with a null category pass.",
    )

    @field_validator("include", "exclude")
    @classmethod
    def _known(cls, values: list[str] | None) -> list[str] | None:
        return _check_categories(values)

    @model_validator(mode="after")
    def _disjoint(self) -> Self:
        both = sorted(set(self.include or ()) & set(self.exclude))
        if both:
            raise ValueError(f"categories {both} are both included and excluded")
        return self


class PriceFilter(_Strict):
    """An inclusive price range; either bound may be open."""

    min: float | None = Field(
        default=None,
        ge=0,
        allow_inf_nan=False,
        description="Lowest price allowed (inclusive); null for no floor.",
    )
    max: float | None = Field(
        default=None,
        ge=0,
        allow_inf_nan=False,
        description=(
            "Highest price allowed (inclusive); null for no ceiling. When either bound is set, "
            "items with an unknown (null or NaN) price are dropped."
        ),
    )

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is above max ({self.max})")
        return self

    @property
    def active(self) -> bool:
        """Whether either bound is set."""
        return self.min is not None or self.max is not None


class _ScoreRule(_Strict):
    """Fields shared by boosts and buries."""

    attribute: Attribute = Field(
        description="The item column the rule matches: category, brand, style or colour."
    )
    values: list[str] = Field(
        min_length=1,
        description=(
            "The rule matches items whose attribute equals any of these (exact, "
            "case-sensitive); null attributes never match. Category values must come from "
            "pipeline.data.contracts.CATEGORIES; brand, style and colour are free text because "
            "real catalogues bring their own (e.g. 'dark blue')."
        ),
    )

    @field_validator("values")
    @classmethod
    def _non_empty(cls, values: list[str]) -> list[str]:
        if any(not v for v in values):
            raise ValueError("values must be non-empty strings")
        return values

    @model_validator(mode="after")
    def _known_category(self) -> Self:
        if self.attribute == "category":
            _check_categories(self.values)
        return self


class BoostRule(_ScoreRule):
    """Move matching items up: ``exp(score)`` is multiplied by ``factor`` (> 1)."""

    factor: float = Field(
        gt=1,
        allow_inf_nan=False,
        description=(
            "Multiplies exp(score), i.e. adds ln(factor) to the score, so it must exceed 1 "
            "(1.5 makes exp(score) half as large again). Several matching rules multiply."
        ),
    )


class BuryRule(_ScoreRule):
    """Move matching items down: ``exp(score)`` is multiplied by ``factor`` (in (0, 1))."""

    factor: float = Field(
        gt=0,
        lt=1,
        allow_inf_nan=False,
        description=(
            "Multiplies exp(score), i.e. adds ln(factor) < 0 to the score, so it must lie "
            "strictly between 0 and 1 (0.5 halves it). Several matching rules multiply."
        ),
    )


class Diversity(_Strict):
    """How the final top-k trades relevance for variety."""

    method: Literal["none", "mmr"] = Field(
        default="none",
        description=(
            "'none' ranks by score; 'mmr' is Maximal Marginal Relevance: each next item "
            "maximises lambda * relevance - (1 - lambda) * max similarity to those already "
            "picked, where relevance is the boosted score min-max scaled to [0, 1] and "
            "similarity is the cosine of item vectors, or, without vectors, 0.5 * same "
            "category + 0.5 * same brand. The first pick is always the most relevant."
        ),
    )
    lambda_: float = Field(
        default=0.7,
        ge=0,
        le=1,
        alias="lambda",
        description="MMR trade-off (key 'lambda' in files): 1 = pure relevance, 0 = variety.",
    )


class Rules(_Strict):
    """One retailer's business rules; every field has a default, so ``Rules()`` is valid.

    The defaults switch every rule off except ``exclude_purchased``.
    """

    in_stock_in_recommended_size: bool = Field(
        default=False,
        description=(
            "Keep only items with stock in the size recommended to this customer; items with "
            "no recommended size need stock in at least one size."
        ),
    )
    exclude_purchased: bool = Field(
        default=True, description="Drop items the customer has already bought."
    )
    exclude_returned: bool = Field(
        default=False, description="Drop items the customer has bought and returned."
    )
    categories: CategoryFilter = Field(
        default_factory=CategoryFilter, description="Category include/exclude lists."
    )
    price: PriceFilter = Field(default_factory=PriceFilter, description="Price range.")
    boost: list[BoostRule] = Field(
        default_factory=list, description="Rules that move matching items up."
    )
    bury: list[BuryRule] = Field(
        default_factory=list, description="Rules that move matching items down."
    )
    diversity: Diversity = Field(
        default_factory=Diversity, description="Relevance vs variety of the final top-k."
    )
    max_per_brand: int | None = Field(
        default=None,
        ge=1,
        description="At most this many items of one brand in the top-k; null brands are uncapped.",
    )
    max_per_category: int | None = Field(
        default=None,
        ge=1,
        description=(
            "At most this many items of one category in the top-k; null categories are uncapped."
        ),
    )

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], source: str = "<mapping>") -> Rules:
        """Validate a mapping (e.g. parsed YAML) into rules.

        Args:
            data: The rules as plain data; keys as in :data:`EXAMPLE_YAML`.
            source: Where the data came from, for error messages.

        Returns:
            The validated rules.

        Raises:
            RulesError: If ``data`` is not a mapping or any field is invalid; the message names
                ``source`` and each offending field.
        """
        if not isinstance(data, Mapping):
            raise RulesError(source, [f"<root>: expected a mapping, got {type(data).__name__}"])
        try:
            return cls.model_validate(dict(data))
        except ValidationError as exc:
            # Re-raise without the pydantic chain: callers see fields, not library internals.
            raise RulesError(source, _problems(exc)) from None


def _problems(exc: ValidationError) -> list[str]:
    """One ``"field.path[0]: message (got value)"`` line per pydantic error."""
    lines = []
    for error in exc.errors(include_url=False):
        path = ""
        for part in error["loc"]:
            path += f"[{part}]" if isinstance(part, int) else f"{'.' if path else ''}{part}"
        got = repr(error.get("input"))
        got = got if len(got) <= 60 else got[:57] + "..."
        msg = error["msg"].removeprefix("Value error, ")
        lines.append(f"{path or '<root>'}: {msg} (got {got})")
    return lines


def load_rules(path: Path) -> Rules:
    """Read and validate a rules file.

    Args:
        path: A ``.yaml``/``.yml`` or ``.toml`` file. An empty YAML file means all defaults.
            TOML has no null, so leave a key out to keep its null default.

    Returns:
        The validated rules.

    Raises:
        RulesError: If the file cannot be read or parsed, or a field is invalid; the message
            names the file and each offending field (or the parser's line and column).
    """
    source = str(Path(path))
    try:
        data = read_document(path)
    except FileProblem as exc:
        raise RulesError(source, [exc.problem]) from None
    return Rules.from_mapping(data, source=source)


@dataclass(frozen=True)
class Context:
    """What the rules need to know about the customer of this page view.

    Attributes:
        purchased: Item ids the customer has bought.
        returned: Item ids the customer has bought and returned.
    """

    purchased: frozenset[str] = field(default_factory=frozenset)
    returned: frozenset[str] = field(default_factory=frozenset)
