"""Matrix factorisation baseline: implicit-feedback ALS from the ``implicit`` library, in the
same popularity-rank index space as :mod:`pipeline.evaluation.baselines`."""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp

from pipeline.evaluation.baselines.base import Histories, IndexedBaseline, dense_codes

# --------------------------------------------------------------------------------------------
# Matrix factorisation.
# --------------------------------------------------------------------------------------------


class ImplicitALS(IndexedBaseline):
    """Implicit-feedback ALS (Hu, Koren, Volinsky 2008) from the ``implicit`` library.

    Users are customers when known, else sessions; the confidence is the interaction count.
    A query from a customer seen in training uses that customer's factors; any other query
    folds its session history in (one least-squares solve against the item factors, as
    ``recommend(..., recalculate_user=True)`` does). An empty history scores zero everywhere
    and gets popularity order.
    """

    name = "implicit_als"

    def __init__(
        self,
        factors: int = 64,
        iterations: int = 10,
        regularization: float = 0.1,
        alpha: float = 40.0,
        num_threads: int = 2,
        random_state: int = 42,
        exclude_seen: bool = False,
    ) -> None:
        """Configure the baseline (it learns nothing until :meth:`fit`).

        Args:
            factors: latent dimensions.
            iterations: ALS sweeps.
            regularization: L2 weight on the factors.
            alpha: confidence scale for interaction counts (``C = alpha * count``); 40 as in
                Hu et al. implicit's default of 1 lost about 20 points of HR@20 on YooChoose,
                with or without consecutive repeated clicks.
            num_threads: CPU threads for fitting and folding in.
            random_state: seed of the factor initialisation (fitting is then deterministic).
            exclude_seen: never recommend an item already in the query's history.
        """
        super().__init__(exclude_seen)
        self.factors = factors
        self.iterations = iterations
        self.regularization = regularization
        self.alpha = alpha
        self.num_threads = num_threads
        self.random_state = random_state

    def _params(self) -> tuple[str, ...]:
        return (
            "factors",
            "iterations",
            "regularization",
            "alpha",
            "num_threads",
            "random_state",
            "exclude_seen",
        )

    def _fit(self, events: pl.DataFrame) -> None:
        from implicit.als import AlternatingLeastSquares  # optional dependency, CPU build
        from threadpoolctl import threadpool_limits

        keyed = events.with_columns(
            pl.when(pl.col("customer_id") != "")
            .then(pl.lit("c:") + pl.col("customer_id"))
            .otherwise(pl.lit("s:") + pl.col("session_id"))
            .alias("user")
        )
        codes = dense_codes(keyed.get_column("user"))
        n_users = int(codes.max(initial=-1)) + 1
        # Duplicate (user, item) entries add up to interaction counts in the conversion.
        user_items = sp.csr_matrix(
            (np.ones(len(codes), dtype=np.float32), (codes, keyed.get_column("col").to_numpy())),
            shape=(n_users, self.n_items),
        )
        customers = (
            keyed.select("customer_id", pl.Series("_u", codes))
            .filter(pl.col("customer_id") != "")
            .unique("customer_id")
        )
        self._customer_row = dict(
            zip(customers.get_column("customer_id"), customers.get_column("_u"), strict=True)
        )
        # implicit asks for single-threaded BLAS while it runs its own threads (it warns and
        # slows down otherwise).
        with threadpool_limits(1, "blas"):
            self.model: Any = AlternatingLeastSquares(
                factors=self.factors,
                regularization=self.regularization,
                alpha=self.alpha,
                iterations=self.iterations,
                num_threads=self.num_threads,
                random_state=self.random_state,
                use_gpu=False,
            )
            self.model.fit(user_items, show_progress=False)
        self.user_factors = np.asarray(self.model.user_factors, dtype=np.float32)
        self.item_factors = np.asarray(self.model.item_factors, dtype=np.float32)

    def _scores(self, part: Histories, customers: list[str] | None) -> np.ndarray:
        rows = np.full(part.n, -1, dtype=np.int64)
        if customers is not None:
            rows = np.fromiter(
                (self._customer_row.get(c, -1) if c else -1 for c in customers),
                dtype=np.int64,
                count=part.n,
            )
        factors = np.zeros((part.n, self.item_factors.shape[1]), dtype=np.float32)
        known = rows >= 0
        factors[known] = self.user_factors[rows[known]]
        if (~known).any():
            from threadpoolctl import threadpool_limits

            history = sp.csr_matrix(part.matrix(self.n_items), dtype=np.float32)[~known]
            with threadpool_limits(1, "blas"):
                folded = self.model.recalculate_user(np.arange(history.shape[0]), history)
            factors[~known] = folded
        return factors @ self.item_factors.T
