"""Team-draft interleaving (Radlinski, Kurup and Joachims, 2008).

Two rankers answer the same page view with one merged list: each round a fair coin decides
which team picks first, then each team in turn adds its highest-ranked item that is not in the
list yet (an item already placed, by either team or earlier in the team's own ranking, is
skipped). The merge stops at ``k`` items or when both rankings are exhausted; once one team has
nothing left, the other fills the remaining slots alone. Every click is credited to the team
that placed the clicked item; a page view (or session) is won by the team with more credited
clicks, and :func:`preference` tests whether one team wins more often than a fair coin would.

Seeded by a string (the recommendation id), :func:`team_draft` is deterministic across
processes and machines, so replaying the logged id reproduces the page and its teams.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = ["Preference", "credit", "preference", "team_draft"]

Team = Literal["a", "b"]


def _rng(rng_or_seed: random.Random | int | str | bytes) -> random.Random:
    if isinstance(rng_or_seed, random.Random):
        return rng_or_seed
    if isinstance(rng_or_seed, bool) or not isinstance(rng_or_seed, int | str | bytes):
        raise TypeError(f"expected a random.Random, int, str or bytes, got {rng_or_seed!r}")
    material = rng_or_seed.encode() if isinstance(rng_or_seed, str) else rng_or_seed
    if isinstance(material, int):
        return random.Random(material)
    # str's hash() is salted per process; a keyed digest is the same everywhere.
    digest = hashlib.blake2b(material, digest_size=8, person=b"fitrec-tdi").digest()
    return random.Random(int.from_bytes(digest, "big"))


def team_draft(
    a: Sequence[str],
    b: Sequence[str],
    k: int,
    rng_or_seed: random.Random | int | str | bytes,
) -> tuple[list[str], list[str]]:
    """Merge rankings ``a`` and ``b`` into at most ``k`` items by team draft.

    Args:
        a: Ranker A's items, best first (may repeat items or share them with ``b``).
        b: Ranker B's items, best first.
        k: Page size; ``k <= 0`` gives an empty page.
        rng_or_seed: A ``random.Random`` (advanced), or an int, str or bytes seed: the same
            seed always gives the same page (strings are hashed with BLAKE2b, not ``hash``).

    Returns:
        ``(items, teams)``: the page, and for each item the team (``"a"`` or ``"b"``) that
        placed it. Items are distinct; each team's items keep their order in its ranking.
    """
    rng = _rng(rng_or_seed)
    items: list[str] = []
    teams: list[str] = []
    placed: set[str] = set()
    rankings: dict[Team, Sequence[str]] = {"a": a, "b": b}
    cursor: dict[Team, int] = {"a": 0, "b": 0}

    def pick(team: Team) -> bool:
        ranking, i = rankings[team], cursor[team]
        while i < len(ranking) and ranking[i] in placed:
            i += 1
        cursor[team] = i + 1
        if i >= len(ranking):
            return False
        items.append(ranking[i])
        teams.append(team)
        placed.add(ranking[i])
        return True

    while len(items) < k:
        order: tuple[Team, Team] = ("a", "b") if rng.random() < 0.5 else ("b", "a")
        progressed = False
        for team in order:
            if len(items) >= k:
                break
            progressed = pick(team) or progressed
        if not progressed:  # both rankings exhausted
            break
    return items, teams


def credit(teams: Sequence[str], items: Sequence[str], clicked: Iterable[str]) -> tuple[int, int]:
    """Clicks credited to team A and team B on one interleaved page.

    Each distinct clicked item counts once, for the team that placed it; a click on an item
    that was not on the page is ignored.
    """
    if len(teams) != len(items):
        raise ValueError(f"{len(teams)} teams for {len(items)} items")
    owner = dict(zip(items, teams, strict=True))
    wins = {"a": 0, "b": 0}
    for item in set(clicked):
        team = owner.get(item)
        if team is not None:
            wins[team] += 1
    return wins["a"], wins["b"]


@dataclass(frozen=True)
class Preference:
    """Share of decided comparisons won by A, its exact (Clopper-Pearson) interval, the
    two-sided p-value against a fair coin, and the winner (None when not significant)."""

    share_a: float
    low: float
    high: float
    p_value: float
    winner: Literal["a", "b"] | None
    comparisons: int


def preference(wins_a: int, wins_b: int, alpha: float = 0.05) -> Preference:
    """Test whether A wins more (or fewer) comparisons than a fair coin would.

    ``wins_a`` and ``wins_b`` count the page views (or sessions) each team won with more
    credited clicks; ties, including views without a click, carry no preference and are
    excluded before calling (the sign test). With no decided comparison the answer is a
    share of 0.5, the interval [0, 1] and a p-value of 1.
    """
    if wins_a < 0 or wins_b < 0:
        raise ValueError("wins must be non-negative")
    if not 0 < alpha < 1:
        raise ValueError("alpha must be in (0, 1)")
    n = int(wins_a) + int(wins_b)
    if n == 0:
        return Preference(0.5, 0.0, 1.0, 1.0, None, 0)
    from scipy.stats import binomtest  # here: serving imports team_draft and has no SciPy

    result = binomtest(int(wins_a), n, 0.5, alternative="two-sided")
    interval = result.proportion_ci(confidence_level=1 - alpha, method="exact")
    share = wins_a / n
    p_value = float(result.pvalue)
    winner: Literal["a", "b"] | None = None
    if p_value < alpha:
        winner = "a" if share > 0.5 else "b"
    return Preference(share, float(interval.low), float(interval.high), p_value, winner, n)
