"""Session-neighbour heuristics: VS-KNN, STAN and V-STAN (sequential rules, SR, are in
:mod:`pipeline.evaluation.baselines.sequential_rules`).

Ludewig, Mauro, Latifi and Jannach (UMUAI 2021) and Shehzad and Jannach (ECIR 2024) found
these heuristics matching or beating neural session models. Each class follows the reference
code of ``rn5l/session-rec`` (``algorithms/knn/vsknn.py``, ``stan.py``, ``vstan.py``,
``algorithms/baselines/sr.py``) in its parameters, defaults and scores;
``tests/unit/evaluation/test_session_neighbours.py`` holds them equal to that code's scores.
Where the reference departs from its paper, these classes follow the reference:

* STAN / V-STAN's item-neighbourhood weight measures the distance to the *last position in
  the neighbour session of any item shared with the query*, not to the neighbour's copy of
  the most recent query item;
* V-STAN always uses cosine similarity (the reference's ``similarity`` argument is unused);
* IDF counts events, not sessions: ``log(n_sessions / n_events(item))``.

Unlike the reference, which walks each session with a Python loop per step, the three KNNs
score a batch of queries with sparse products: query-by-session overlaps (``Q @ B.T``), the
``sample_size`` most recent candidates and the ``k`` most similar of those per row, then one
expansion of the chosen neighbours' items. Unknown items are dropped from histories before any
position is counted (as in every :class:`~pipeline.evaluation.baselines.base.IndexedBaseline`), and
neighbours tied on similarity are taken most recent first (the reference leaves that order to
Python's set iteration). :func:`pipeline.evaluation.baselines.tuning.tune` picks their parameters on
the latest part of training.
"""

from __future__ import annotations

import numpy as np

from pipeline.evaluation.baselines.neighbourhood import (
    DAY,
    POSITION_WEIGHTS,
    STEP_DECAYS,
    Neighbours,
    QueryItems,
    SessionNeighbours,
    check_choice,
    check_positive,
)


class VSKNN(SessionNeighbours):
    """Vector multiplication session-based KNN (Ludewig and Jannach 2018; session-rec's
    ``VMContextKNN``).

    Query items are weighted by position (``weighting``), candidates are the ``sample_size``
    most recent sessions sharing an item, the ``k`` most similar vote for their items with their
    similarity times ``weighting_score`` of how far back the most recent shared item is.
    """

    name = "vsknn"

    def __init__(
        self,
        k: int = 100,
        sample_size: int = 1000,
        similarity: str = "vec",
        weighting: str = "div",
        weighting_score: str = "div",
        idf_weighting: float = 0.0,
        remind: bool = True,
        exclude_seen: bool = False,
    ) -> None:
        """Configure the baseline (it learns nothing until :meth:`fit`).

        Args:
            k: neighbour sessions per query.
            sample_size: most recent candidate sessions kept before choosing neighbours.
            similarity: ``"vec"`` (weighted overlap over the query's distinct items) or
                ``"cosine"``.
            weighting: position weight of query items (``linear``, ``same``, ``div``, ``log``,
                ``quadratic``).
            weighting_score: decay of a neighbour's vote by how many steps back its most
                recent shared item is (same names).
            idf_weighting: votes scaled by ``1 + idf_weighting * idf(item)`` (0: off).
            remind: let neighbours vote for items already in the query.
            exclude_seen: never recommend an item already in the query's history.
        """
        super().__init__(k, sample_size, remind, exclude_seen)
        check_choice("similarity", similarity, {"vec": 1, "cosine": 1})
        check_choice("weighting", weighting, POSITION_WEIGHTS)
        check_choice("weighting_score", weighting_score, STEP_DECAYS)
        if isinstance(idf_weighting, bool) or not idf_weighting >= 0:
            raise ValueError(f"idf_weighting must be >= 0, got {idf_weighting!r}")
        self.similarity = similarity
        self.weighting = weighting
        self.weighting_score = weighting_score
        self.idf_weighting = float(idf_weighting)

    def _params(self) -> tuple[str, ...]:
        return (
            "k",
            "sample_size",
            "similarity",
            "weighting",
            "weighting_score",
            "idf_weighting",
            "remind",
            "exclude_seen",
        )

    def _query_weights(self, query: QueryItems) -> np.ndarray:
        length = query.length[query.rows].astype(np.float64)
        return POSITION_WEIGHTS[self.weighting](query.last.astype(np.float64), length)

    def _similarity(self, rows, sessions, overlap, query, weights, times):  # type: ignore[no-untyped-def]
        n = len(query.length)
        if self.similarity == "vec":
            distinct = np.bincount(query.rows, minlength=n).astype(np.float64)
            return overlap / distinct[rows]
        norm = np.sqrt(np.bincount(query.rows, weights=weights * weights, minlength=n))
        return overlap / (norm[rows] * np.sqrt(self.session_length[sessions]))

    def _contributions(
        self, neighbour: Neighbours, query: QueryItems, times: np.ndarray
    ) -> np.ndarray:
        steps_back = query.length[neighbour.rows] - neighbour.query_last + 1
        decay = STEP_DECAYS[self.weighting_score](steps_back)
        boost = 1.0 + self.idf_weighting * self.idf[neighbour.cols]
        return neighbour.similarity * boost * decay


class STAN(SessionNeighbours):
    """Sequence and time aware neighbourhood (Garg et al., SIGIR 2019; session-rec's ``STAN``).

    Query items weigh ``exp((position - length) / lambda_spw)`` in a cosine similarity, which
    decays by ``exp(-age / lambda_snh)`` (age: query time minus the neighbour's last event, in
    days); a neighbour's items vote with that similarity times
    ``exp(-|position - position of the last shared item| / lambda_inh)``.
    """

    name = "stan"

    def __init__(
        self,
        k: int = 100,
        sample_size: int = 5000,
        lambda_spw: float = 1.02,
        lambda_snh: float = 5,
        lambda_inh: float = 2.05,
        remind: bool = True,
        exclude_seen: bool = False,
    ) -> None:
        """Configure the baseline (it learns nothing until :meth:`fit`).

        Args:
            k: neighbour sessions per query.
            sample_size: most recent candidate sessions kept before choosing neighbours.
            lambda_spw: position decay of query items (in steps).
            lambda_snh: time decay of neighbour sessions, in days.
            lambda_inh: decay of neighbour items by distance to the last shared item (steps).
            remind: let neighbours vote for items already in the query.
            exclude_seen: never recommend an item already in the query's history.
        """
        super().__init__(k, sample_size, remind, exclude_seen)
        check_positive("lambda_spw", lambda_spw)
        check_positive("lambda_snh", lambda_snh)
        check_positive("lambda_inh", lambda_inh)
        self.lambda_spw = float(lambda_spw)
        self.lambda_snh = float(lambda_snh)
        self.lambda_inh = float(lambda_inh)

    def _params(self) -> tuple[str, ...]:
        return ("k", "sample_size", "lambda_spw", "lambda_snh", "lambda_inh", "remind")

    def _query_weights(self, query: QueryItems) -> np.ndarray:
        length = query.length[query.rows]
        return np.exp((query.last - length) / self.lambda_spw)

    def _similarity(self, rows, sessions, overlap, query, weights, times):  # type: ignore[no-untyped-def]
        n = len(query.length)
        norm = np.sqrt(np.bincount(query.rows, weights=weights * weights, minlength=n))
        cosine = overlap / (norm[rows] * np.sqrt(self.session_length[sessions]))
        age = times[rows] - self.session_time[sessions]
        return cosine * np.exp(-age / (self.lambda_snh * DAY))

    def _contributions(
        self, neighbour: Neighbours, query: QueryItems, times: np.ndarray
    ) -> np.ndarray:
        distance = np.abs(neighbour.item_last - neighbour.last_shared)
        return neighbour.similarity * np.exp(-distance / self.lambda_inh)


class VSTAN(STAN):
    """STAN with V-SKNN's vote weighting and IDF (Ludewig et al. 2021; session-rec's
    ``VSKNN_STAN``).

    Votes are STAN's, times ``1 + lambda_idf * idf(item)``, times
    ``exp((position of the most recent shared query item - length) / lambda_ipw)``.
    """

    name = "vstan"

    def __init__(
        self,
        k: int = 100,
        sample_size: int = 5000,
        lambda_spw: float = 1.02,
        lambda_snh: float = 5,
        lambda_inh: float = 2.05,
        lambda_ipw: float = 1.02,
        lambda_idf: float = 5,
        remind: bool = True,
        exclude_seen: bool = False,
    ) -> None:
        """Configure the baseline (it learns nothing until :meth:`fit`).

        Args:
            k: neighbour sessions per query.
            sample_size: most recent candidate sessions kept before choosing neighbours.
            lambda_spw: position decay of query items (in steps).
            lambda_snh: time decay of neighbour sessions, in days.
            lambda_inh: decay of neighbour items by distance to the last shared item (steps).
            lambda_ipw: decay of a vote by the position of the most recent shared query item.
            lambda_idf: weight of the items' IDF in votes (0: off).
            remind: let neighbours vote for items already in the query.
            exclude_seen: never recommend an item already in the query's history.
        """
        super().__init__(k, sample_size, lambda_spw, lambda_snh, lambda_inh, remind, exclude_seen)
        check_positive("lambda_ipw", lambda_ipw)
        if isinstance(lambda_idf, bool) or not lambda_idf >= 0:
            raise ValueError(f"lambda_idf must be >= 0, got {lambda_idf!r}")
        self.lambda_ipw = float(lambda_ipw)
        self.lambda_idf = float(lambda_idf)

    def _params(self) -> tuple[str, ...]:
        return (*super()._params(), "lambda_ipw", "lambda_idf")

    def _contributions(
        self, neighbour: Neighbours, query: QueryItems, times: np.ndarray
    ) -> np.ndarray:
        stan = super()._contributions(neighbour, query, times)
        boost = 1.0 + self.lambda_idf * self.idf[neighbour.cols]
        length = query.length[neighbour.rows]
        return stan * boost * np.exp((neighbour.query_last - length) / self.lambda_ipw)
