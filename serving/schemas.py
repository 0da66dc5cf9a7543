"""What the API layer sends and gets back on a page view: the request and response models of
``POST /recommendations``, their fields described for the OpenAPI contract."""

from __future__ import annotations

import uuid
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints

ItemId = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[\w.\-:]+$")]


def json_integer(value: object) -> object:
    """A JSON integer, as the contract says: 10 or 10.0, never true or "10" (pydantic's lax
    mode would take both)."""
    if isinstance(value, bool | str):
        raise ValueError("must be an integer")
    return value


def new_recommendation_id() -> str:
    """A fresh answer id: ``r-`` and a uuid4 in hex."""
    return f"r-{uuid.uuid4().hex}"


class RecommendationRequest(BaseModel):
    """One page view: who (optional), which session, and what they looked at."""

    model_config = ConfigDict(
        extra="forbid",
        str_strip_whitespace=True,
        json_schema_extra={
            "examples": [
                {
                    "customer_id": "C0000013",
                    "session_id": "S0100000042",
                    "session_items": ["I000010", "I000020"],
                    "k": 10,
                }
            ]
        },
    )

    customer_id: Annotated[str, StringConstraints(min_length=1, max_length=128)] | None = Field(
        default=None,
        description=(
            "The retailer's customer id, if the shopper is signed in; pseudonymised (HMAC) "
            "before any lookup and never logged. Absent: an anonymous session."
        ),
        examples=["C0000013"],
    )
    session_id: ItemId | None = Field(
        default=None,
        description=(
            "The shop front's session id: the session's stored events (POST /events) are "
            "added before session_items."
        ),
        examples=["S0100000042"],
    )
    session_items: list[ItemId] = Field(
        default_factory=list,
        max_length=200,
        description=(
            "Items seen in this session, oldest first (added to the stored session); at most "
            "200. Items the model does not know are returned in ignored_items."
        ),
        examples=[["I000010", "I000020"]],
    )
    k: Annotated[int, BeforeValidator(json_integer)] = Field(
        default=10,
        ge=1,
        le=100,
        description="How many items to return (1 to 100).",
        examples=[10],
    )


class ScoredItem(BaseModel):
    """One recommended item, best first."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "item_id": "I000031",
                    "score": 7.42,
                    "recommended_size": "M",
                    "fit_confidence": 0.81,
                    "reasons": ["goes with I000020 you viewed", "fits you in M (81%)"],
                }
            ]
        }
    )

    item_id: str = Field(description="The catalogue item's id.", examples=["I000031"])
    score: float = Field(
        description=(
            "Ranking score (unitless, higher is better; comparable within one answer only)."
        ),
        examples=[7.42],
    )
    recommended_size: str | None = Field(
        default=None,
        description=(
            "The size most likely to fit this shopper, from the item's size chart and the "
            "fit head; null when the item has no size chart."
        ),
        examples=["M"],
    )
    fit_confidence: float | None = Field(
        default=None,
        description="P(fits) in the recommended size, a probability from 0 to 1.",
        examples=[0.81],
    )
    reasons: list[str] = Field(
        default_factory=list,
        description="Why it is recommended, for people: the strongest reason first.",
        examples=[["goes with I000020 you viewed", "fits you in M (81%)"]],
    )


class Recommendation(BaseModel):
    """The answer to a page view: the top k items and how they were made."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "items": [
                        {
                            "item_id": "I000031",
                            "score": 7.42,
                            "recommended_size": "M",
                            "fit_confidence": 0.81,
                            "reasons": ["goes with I000020 you viewed", "fits you in M (81%)"],
                        }
                    ],
                    "model_version": "3",
                    "known_customer": True,
                    "cold_start": False,
                    "degraded": False,
                    "ignored_items": [],
                    "recommendation_id": "r-5f0c6d2a9b8e4f1d8c7b6a5e4d3c2b1a",
                    "experiment": "ranker-v7",
                    "variant": "treatment",
                }
            ]
        }
    )

    items: list[ScoredItem] = Field(
        description="The recommended items, best first (at most k).",
        examples=[[{"item_id": "I000031", "score": 7.42, "reasons": ["popular now"]}]],
    )
    model_version: str = Field(
        description=(
            "Registry version of the model that answered: the champion, or the experiment "
            "arm's model (a holdout's popularity answer gives the champion's)."
        ),
        examples=["3"],
    )
    known_customer: bool = Field(
        description="Whether the online store held features for the customer.", examples=[True]
    )
    cold_start: bool = Field(
        description=(
            "Neither a known customer nor a session the model knows: the answer is what is "
            "popular now."
        ),
        examples=[False],
    )
    degraded: bool = Field(
        default=False,
        description=(
            "The online store (features or session state) was unavailable or incomplete, or "
            "the model failed: a valid but less personal answer."
        ),
        examples=[False],
    )
    ignored_items: list[str] = Field(
        default_factory=list,
        description="session_items the model does not know (not used for this answer).",
        examples=[["I999999"]],
    )
    recommendation_id: str = Field(
        default_factory=new_recommendation_id,
        description=(
            "This answer's id (r- and 32 hex digits): send it with the clicks, add-to-carts, "
            "purchases and returns it leads to (POST /events), so they are attributed to it."
        ),
        examples=["r-5f0c6d2a9b8e4f1d8c7b6a5e4d3c2b1a"],
    )
    experiment: str | None = Field(
        default=None,
        description="The running experiment this page view is in; null when none.",
        examples=["ranker-v7"],
    )
    variant: str | None = Field(
        default=None,
        description="The experiment's arm that answered; null outside an experiment.",
        examples=["treatment"],
    )
