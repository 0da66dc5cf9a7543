"""Why an item is recommended: the part of its final score that lifted it the most.

A pick's final score is a sum: the retrieval score's parts (:meth:`Scorer.score_parts`, each
measured against the average catalogue item), the ranking heads' ``weight * log P(purchase)``
and ``weight * log P(keep)`` (against the average candidate) and the business rules' boosts
and buries. The largest of those lifts names the reason, so an item picked for the session
does not read like one picked for the trend. Only the ``k`` picks get here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

# Ties go to the first key (a dict keeps its order); the history's phrase depends on whether
# the customer is known.
_PHRASES: dict[str, str] = {
    "session": "like what you are looking at",
    "also_viewed": "goes with what you are looking at",
    "revisit": "you viewed it earlier",
    "bestseller": "a best-seller",
    "trend": "popular now",
    "purchase": "often bought when viewed",
}


def lifts(
    parts: Mapping[str, np.ndarray],
    positions: Sequence[int],
    log_purchase: np.ndarray,
    log_keep: np.ndarray,
    weight: float,
    rule_lift: np.ndarray,
) -> dict[str, np.ndarray]:
    """Every contribution to the picks' final scores, one array per driver, aligned with
    ``positions``.

    Args:
        parts: The retrieval score's parts for the picks (:meth:`Scorer.score_parts`).
        positions: Each pick's position among the ranked candidates.
        log_purchase: log P(purchase) of every candidate.
        log_keep: log P(keep) of every candidate.
        weight: The ranking heads' weight next to the retrieval score.
        rule_lift: What the rules added to each pick's score (boosts > 0, buries < 0).
    """
    at = np.asarray(positions, dtype=np.intp)
    return {
        **parts,
        "purchase": weight * (log_purchase[at] - log_purchase.mean()),
        "keep": weight * (log_keep[at] - log_keep.mean()),
        "rule": np.asarray(rule_lift, dtype=np.float64),
    }


# A second reason is named only when it lifts the score by at least this much: a tenth of a
# logit, about 10% likelier; below that it is noise next to the lead.
SECOND_REASON_LIFT = 0.1


def drivers(contributions: Mapping[str, np.ndarray]) -> list[list[str]]:
    """For each row, the key of the largest contribution (ties: the earlier key), then the
    runner-up's when it lifts the score by :data:`SECOND_REASON_LIFT` or more."""
    names = list(contributions)
    if not names:
        return []
    stacked = np.stack([np.asarray(contributions[n], dtype=np.float64) for n in names])
    order = np.argsort(-stacked, axis=0, kind="stable")[:2]
    firsts = order[0].tolist()
    if len(names) == 1:
        return [[names[i]] for i in firsts]
    seconds = order[1].tolist()
    strong = (np.take_along_axis(stacked, order[1:2], axis=0)[0] >= SECOND_REASON_LIFT).tolist()
    return [
        [names[a], names[b]] if keep else [names[a]]
        for a, b, keep in zip(firsts, seconds, strong, strict=True)
    ]


def explain(
    driven_by: list[str],
    rule_reasons: list[str],
    size: str | None,
    confidence: float | None,
    known_customer: bool,
    in_session: bool,
    anchor: str | None = None,
) -> list[str]:
    """A pick's reasons: its :func:`drivers`' phrases, then the rules', then the size.

    Args:
        driven_by: The :func:`drivers` keys, largest first; empty when the model cannot split
            its score (then the session, if any, is named, as before the split existed).
        rule_reasons: What the business rules say about the pick ("boosted: brand X").
        size: The recommended size, if the item has a size chart.
        confidence: P(fits) in that size.
        known_customer: Whether the customer has features (history) online.
        in_session: Whether the request has a session.
        anchor: The session item whose transitions lift the pick the most, if any (named
            when the transition memory drives it).
    """
    fit = f"fits you in {size} ({confidence:.0%})" if size is not None else None
    leads = [_phrase(d, rule_reasons, fit, known_customer, anchor) for d in driven_by]
    if not driven_by and in_session:
        leads = ["goes with what you are looking at"]
    return list(dict.fromkeys(r for r in [*leads, *rule_reasons, fit] if r))


def _phrase(
    driver: str, rule_reasons: list[str], fit: str | None, known: bool, anchor: str | None
) -> str:
    if driver == "keep":  # kept rather than returned: mostly a matter of fit
        return fit or "rarely returned"
    if driver == "rule":
        return next((r for r in rule_reasons if r.startswith("boosted")), "picked by a store rule")
    if driver == "history":
        return "matches your history" if known else "liked by most shoppers"
    if driver == "also_viewed" and anchor is not None:
        return f"goes with {anchor} you viewed"
    return _PHRASES[driver]
