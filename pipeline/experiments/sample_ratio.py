"""The sample-ratio-mismatch check: were the units split as declared?

A split that drifts from the declared shares (a bot in one arm, a redirect that loses
some users, a crash in one arm) biases every metric; the check blocks the verdict.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import scipy.stats

__all__ = ["SampleRatio", "sample_ratio"]


@dataclass(frozen=True)
class SampleRatio:
    """A chi-square goodness-of-fit test of the units per variant against the shares."""

    p_value: float
    mismatch: bool
    counts: dict[str, int]
    expected: dict[str, float]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def sample_ratio(
    counts: Mapping[str, int],
    shares: Mapping[str, float],
    *,
    threshold: float = 0.001,
) -> SampleRatio:
    """Chi-square goodness of fit of the units per variant to the declared shares (k arms;
    for two arms it is tea-tasting's normal-approximation SampleRatio without continuity
    correction). ``mismatch`` when p < ``threshold`` (0.001 by convention: the check runs
    on every experiment and every day, so it must rarely cry wolf).

    Raises:
        ValueError: Unknown or missing variants, negative counts, non-positive shares.
    """
    if not shares or len(shares) < 2:
        raise ValueError(
            f"sample ratio: at least two variants with shares are needed, got {shares!r}"
        )
    unknown = sorted(set(counts) - set(shares))
    if unknown:
        raise ValueError(f"sample ratio: counts for undeclared variants {unknown}")
    for name, share in shares.items():
        if not (math.isfinite(share) and share > 0):
            raise ValueError(f"sample ratio: share of {name!r} must be positive, got {share!r}")
    observed = {name: int(counts.get(name, 0)) for name in shares}
    for name, n in observed.items():
        if n < 0:
            raise ValueError(f"sample ratio: count of {name!r} is negative ({n})")
    total = sum(observed.values())
    if total == 0:
        raise ValueError("sample ratio: no units in any variant")
    share_sum = sum(shares.values())
    expected = {name: total * share / share_sum for name, share in shares.items()}
    chi2 = sum((observed[k] - expected[k]) ** 2 / expected[k] for k in shares)
    p = float(scipy.stats.chi2.sf(chi2, df=len(shares) - 1))
    return SampleRatio(p_value=p, mismatch=p < threshold, counts=observed, expected=expected)
