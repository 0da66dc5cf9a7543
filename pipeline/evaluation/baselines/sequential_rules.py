"""Sequential rules (SR; Kamehkhosh et al. 2017), the rule-based member of the session
heuristics beside :mod:`pipeline.evaluation.baselines.session_neighbours`, following
``rn5l/session-rec``'s ``algorithms/baselines/sr.py`` in its parameters, defaults and scores
(``tests/unit/evaluation/test_session_neighbours.py`` holds them equal to that code's).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import numpy as np
import polars as pl
import scipy.sparse as sp

from pipeline.evaluation.baselines.base import Histories, IndexedBaseline, dense_codes
from pipeline.evaluation.baselines.neighbourhood import (
    STEP_DECAYS,
    catalogue_scores,
    check_choice,
    check_count,
    sparse_top_k,
)


class SequentialRules(IndexedBaseline):
    """Sequential rules (Kamehkhosh et al. 2017; session-rec's ``SequentialRules``).

    Every training click ``b`` strengthens the rule ``a -> b`` of each of the ``steps`` clicks
    ``a`` before it in its session by ``weighting(distance)``; each item keeps its ``pruning``
    strongest rules. A query is scored by the rules of its last item (plus, with
    ``last_in_session``, those of earlier items scaled by ``session_weighting``).
    """

    name = "sr"

    def __init__(
        self,
        steps: int = 10,
        weighting: str = "div",
        pruning: float = 20,
        last_in_session: int = 0,
        session_weighting: str = "div",
        exclude_seen: bool = False,
    ) -> None:
        """Configure the baseline (it learns nothing until :meth:`fit`).

        Args:
            steps: how many earlier clicks of a session each click forms rules with.
            weighting: rule weight by distance (``linear``, ``same``, ``div``, ``log``,
                ``quadratic``).
            pruning: rules kept per item: at least 1 keeps that many, a fraction in
                ``(0, 1)`` drops that share, 0 keeps all.
            last_in_session: earlier query items whose rules are added too (0: last only).
            session_weighting: weight of the ``i``-th item from the end's rules (same names).
            exclude_seen: never recommend an item already in the query's history.
        """
        super().__init__(exclude_seen)
        check_count("steps", steps, 1)
        check_choice("weighting", weighting, STEP_DECAYS)
        if isinstance(pruning, bool) or not pruning >= 0:
            raise ValueError(f"pruning must be >= 0, got {pruning!r}")
        check_count("last_in_session", last_in_session, 0)
        check_choice("session_weighting", session_weighting, STEP_DECAYS)
        self.steps = int(steps)
        self.weighting = weighting
        self.pruning = pruning
        self.last_in_session = int(last_in_session)
        self.session_weighting = session_weighting

    def _params(self) -> tuple[str, ...]:
        return ("steps", "weighting", "pruning", "last_in_session", "session_weighting")

    def _fit(self, events: pl.DataFrame) -> None:
        cols = events.get_column("col").to_numpy().astype(np.int64)
        session = dense_codes(events.get_column("session_id"))
        index = np.arange(len(cols))
        first = np.r_[0, np.flatnonzero(np.diff(session)) + 1] if len(cols) else index
        start = np.repeat(first, np.diff(np.r_[first, len(cols)]))
        position = index - start
        prev, nxt, weight, seq = [], [], [], []
        for i in range(1, self.steps + 1):
            at = index[position >= i]
            prev.append(cols[at - i])
            nxt.append(cols[at])
            weight.append(np.full(len(at), float(STEP_DECAYS[self.weighting](np.array(i)))))
            # Order of first sight, as the reference's dict insertion breaks pruning ties.
            seq.append(at * (self.steps + 1) + i)
        a, b = np.concatenate(prev), np.concatenate(nxt)
        w, q = np.concatenate(weight), np.concatenate(seq)
        keys = a * self.n_items + b
        order = np.lexsort((q, keys))
        keys, w, q = keys[order], w[order], q[order]
        starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]]) if len(keys) else index[:0]
        total = np.add.reduceat(w, starts) if len(keys) else w
        first_seen = q[starts]
        src, dst = keys[starts] // self.n_items, keys[starts] % self.n_items
        if self.pruning > 0:
            per_item = np.bincount(src, minlength=self.n_items)
            keep = (
                np.full(self.n_items, int(self.pruning))
                if self.pruning >= 1
                else per_item - (per_item * self.pruning).astype(np.int64)
            )
            ranked = np.lexsort((first_seen, -total, src))
            group_start = np.searchsorted(src[ranked], src[ranked])
            rank = np.arange(len(ranked)) - group_start
            kept = ranked[rank < keep[src[ranked]]]
            src, dst, total = src[kept], dst[kept], total[kept]
        self.rules = sp.csr_array((total, (src, dst)), shape=(self.n_items, self.n_items))

    def _scores(self, part: Histories, customers: list[str] | None) -> np.ndarray:
        return np.asarray(self._rule_votes(part).toarray())

    def _rule_votes(self, part: Histories) -> sp.coo_array:
        """The rules of the last item (and of earlier ones, with ``last_in_session``)."""
        back = part.from_end.astype(np.float64) + 1
        weights = np.where(back == 1, 1.0, STEP_DECAYS[self.session_weighting](back))
        weights = np.where(back <= self.last_in_session + 1, weights, 0.0)
        return sp.coo_array(part.matrix(self.n_items, weights) @ self.rules)

    def _rank_batch(self, part: Histories, customers: list[str] | None, k: int) -> np.ndarray:
        votes = self._rule_votes(part)
        if self.exclude_seen or (votes.data < 0).any():
            return super()._rank_batch(part, customers, k)
        keys = votes.row.astype(np.int64) * self.n_items + votes.col
        return sparse_top_k(keys, votes.data, part.n, self.n_items, k)

    def score(
        self,
        histories: Sequence[Sequence[str]],
        times: Sequence[datetime] | np.ndarray | pl.Series | None = None,
    ) -> np.ndarray:
        """Raw scores of every catalogue item per query (``times`` is ignored).

        Returns:
            ``(len(histories), len(items))`` float64 scores in catalogue order.
        """
        return catalogue_scores(self, self._scores(self.encode_histories(histories), None))
