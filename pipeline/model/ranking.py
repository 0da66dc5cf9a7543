"""The ranking of one page view: score, heads, the retailer's rules, sizes and reasons.

One place for what serving answers, and what a batch job or an evaluation that wants the
served ranking calls: retrieval over the whole catalogue (:meth:`Scorer.serve`), the ranking
heads' nudge (``weight * (log P(purchase) + log P(keep))``), the rules compiled against the
catalogue (:class:`pipeline.rules.compiled.CatalogueRules`), the recommended size for each
pick and its reasons (:mod:`pipeline.model.reasons`). Nothing here knows HTTP, Redis or the
registry: the caller hands in the scorer, the customer's features and the session.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from pipeline.model.reasons import drivers, explain, lifts
from pipeline.rules.compiled import CatalogueRules
from pipeline.rules.schema import Context, Rules

if TYPE_CHECKING:
    from pipeline.model.scoring import Scorer

MAX_COMPILED = 16
"""Compiled rule sets kept (the champion's and each experiment arm's; arms come and go)."""

POPULAR_REASON = "popular now"


@dataclass(frozen=True)
class Ranked:
    """One pick: its final score, recommended size with P(fits), and reasons."""

    item_id: str
    score: float
    recommended_size: str | None
    fit_confidence: float | None
    reasons: list[str]


@dataclass(frozen=True)
class _Candidates:
    """The retrieval's best candidates with their final scores (before the rules)."""

    out: dict[str, Any]
    items: np.ndarray
    row: np.ndarray
    top: np.ndarray
    ids: list[str]
    final: np.ndarray
    log_purchase: np.ndarray
    log_keep: np.ndarray


class Ranker:
    """Ranks a catalogue for one shopper; holds the rules compiled per catalogue.

    Args:
        candidates: How many of the retrieval's best the heads and the rules see.
        weight: The ranking heads' weight next to the retrieval score. Relevance first,
            nudged by how likely the item is bought and kept (returns cost the retailer
            twice); a full weight let purchase propensity override the session's intent
            (share of dresses after a dress session: 0.5 -> 0.3).
    """

    def __init__(self, candidates: int, weight: float):
        self.candidates = candidates
        self.weight = weight
        self._compiled: dict[tuple[int, int], tuple[pl.DataFrame, Rules, CatalogueRules]] = {}

    def compiled(self, catalogue: pl.DataFrame, rules: Rules) -> CatalogueRules:
        """``rules`` compiled against ``catalogue`` (attributes by catalogue index), once per
        catalogue and rule set: a swap or new rules compile afresh, a race at worst twice."""
        key = (id(catalogue), id(rules))
        compiled = self._compiled.get(key)
        if compiled is None or compiled[0] is not catalogue or compiled[1] is not rules:
            if len(self._compiled) >= MAX_COMPILED:
                self._compiled.clear()
            compiled = self._compiled[key] = (catalogue, rules, CatalogueRules(rules, catalogue))
        return compiled[2]

    def rank(
        self,
        scorer: Scorer,
        catalogue: pl.DataFrame,
        rules: Rules,
        customer: str,
        features: dict,
        session: Sequence[str],
        k: int,
        purchased: Sequence[str] = (),
    ) -> list[Ranked]:
        """The top ``k`` for one shopper, after the rules, each with its size and reasons.

        Args:
            scorer: The model version's scorer.
            catalogue: Its catalogue attributes by catalogue index (for the rules).
            rules: The retailer's rules.
            customer: The customer's pseudonym when known to the store, else "".
            features: The customer's online features (empty when none).
            session: The session's items the model knows, oldest first.
            k: How many picks.
            purchased: Items bought in the session (the rules may exclude them).
        """
        found = self._candidates(scorer, customer, features, session)
        # Sizes before the rules when a rule reads them (for the best candidates), else only
        # for the picks.
        by_size = rules.in_stock_in_recommended_size
        who = found.out.get("customer")
        sizes = (
            scorer.best_sizes(customer, features, found.ids[: max(3 * k, 30)], who, found.row[0])
            if by_size
            else {}
        )
        mmr = rules.diversity.method == "mmr"
        picked_ids, scores, reasons_of = self.compiled(catalogue, rules).apply(
            found.top,
            found.final,
            [sizes.get(i, (None,))[0] for i in found.ids] if by_size else None,
            Context(purchased=frozenset(purchased), returned=frozenset()),
            k,
            scorer.raw_item_vectors[found.top] if mmr else None,
        )
        picked = picked_ids.tolist()
        if not by_size:
            sizes = scorer.best_sizes(customer, features, picked, who, found.row[0])
        leads, anchors = self._drivers(scorer, found, picked, scores)
        answer = []
        picks = zip(picked, scores.tolist(), reasons_of, leads, anchors, strict=True)
        for item_id, score, rule_reasons, lead, anchor in picks:
            size, confidence = sizes.get(item_id, (None, None))
            reasons = explain(
                lead, rule_reasons, size, confidence, bool(customer), bool(session), anchor
            )
            answer.append(
                Ranked(
                    item_id=item_id,
                    score=round(score, 6),
                    recommended_size=size,
                    fit_confidence=None if confidence is None else round(confidence, 4),
                    reasons=reasons,
                )
            )
        return answer

    def _candidates(
        self, scorer: Scorer, customer: str, features: dict, session: Sequence[str]
    ) -> _Candidates:
        """One model call over the whole catalogue; the heads' nudge on the best candidates."""
        items, kinds = scorer.pad_sessions([list(session)])
        row = scorer.feature_matrix([features])
        out = scorer.serve(customer, row, items, kinds, self.candidates)
        top = out["indices"]
        log_purchase, log_keep = np.log(out["purchase"] + 1e-6), np.log(out["keep"] + 1e-6)
        final = out["scores"] + self.weight * (log_purchase + log_keep)
        return _Candidates(
            out, items, row, top, scorer.item_ids[top].tolist(), final, log_purchase, log_keep
        )

    def _drivers(
        self, scorer: Scorer, found: _Candidates, picked: list[str], scores: np.ndarray
    ) -> tuple[list[list[str]], list[str | None]]:
        """Why each pick: the largest contributions to its final score (only the k picks),
        and the session item that anchors it when the transition memory drives it."""
        position = dict(zip(found.ids, range(len(found.ids)), strict=True))
        at = [position[i] for i in picked]
        parts = scorer.score_parts(found.out, found.items, found.top[at])
        leads: list[list[str]] = [[] for _ in at]
        if parts is not None:
            rule_lift = scores - found.final[at]
            contributions = lifts(
                parts, at, found.log_purchase, found.log_keep, self.weight, rule_lift
            )
            leads = drivers(contributions)
        anchored = any("also_viewed" in keys for keys in leads)
        anchors: list[str | None] = (
            scorer.memory_anchors(found.items, found.top[at]) if anchored else [None] * len(at)
        )
        return leads, anchors


def popular(scorer: Scorer, order: np.ndarray, k: int) -> list[Ranked]:
    """The ``k`` most popular items (``order``: catalogue indices, most popular first), the
    answer when the model cannot (its failure, a holdout arm)."""
    ids = scorer.item_ids[order[:k]].tolist()
    return [
        Ranked(
            item_id=i,
            score=float(k - r),
            recommended_size=None,
            fit_confidence=None,
            reasons=[POPULAR_REASON],
        )
        for r, i in enumerate(ids)
    ]
