"""Team-draft interleaving: the page is a fair merge of both rankings, credit follows the
team that placed the clicked item, and the preference test holds its level under no
difference."""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from pipeline.experiments.interleaving import credit, preference, team_draft

ranking = st.lists(st.sampled_from([f"i{n}" for n in range(12)]), max_size=15)


def _subsequence(small: list[str], big: list[str]) -> bool:
    it = iter(big)
    return all(x in it for x in small)


@hsettings(max_examples=300, deadline=None)
@given(a=ranking, b=ranking, k=st.integers(-2, 30), seed=st.text(max_size=8))
def test_team_draft_properties_under_hostile_inputs(a, b, k, seed):
    items, teams = team_draft(a, b, k, seed)
    assert len(items) == len(teams)
    assert len(items) == len(set(items))  # every item once
    assert set(teams) <= {"a", "b"}
    assert len(items) <= max(k, 0)
    assert set(items) <= set(a) | set(b)
    # stops at k or when both lists are exhausted: nothing placeable is left out
    if len(items) < max(k, 0):
        assert set(items) == set(a) | set(b)
    # each team placed its own items in its own ranking's relative order
    team_a = [i for i, t in zip(items, teams, strict=True) if t == "a"]
    team_b = [i for i, t in zip(items, teams, strict=True) if t == "b"]
    assert _subsequence(team_a, list(dict.fromkeys(a)))
    assert _subsequence(team_b, list(dict.fromkeys(b)))
    # while neither team runs dry, the teams differ by at most one
    if len(set(a)) >= k and len(set(b)) >= k:
        assert abs(len(team_a) - len(team_b)) <= 1
    # the same string seed gives the same page (a replay of the recommendation id)
    assert team_draft(a, b, k, seed) == (items, teams)


def test_edge_cases():
    assert team_draft([], [], 10, "r1") == ([], [])
    assert team_draft(["x"], ["x"], 0, "r1") == ([], [])
    items, teams = team_draft(["x", "x", "y"], ["x", "y"], 10, "r2")
    assert sorted(items) == ["x", "y"] and len(teams) == 2
    items, teams = team_draft(["p", "q"], [], 5, 3)
    assert items == ["p", "q"] and teams == ["a", "a"]
    with pytest.raises(TypeError):
        team_draft(["a"], ["b"], 1, 1.5)  # type: ignore[arg-type]


def test_first_pick_is_a_fair_coin_and_seeds_are_stable():
    firsts = [team_draft(["a1", "a2"], ["b1", "b2"], 4, f"rec-{n}")[1][0] for n in range(2000)]
    share = firsts.count("a") / len(firsts)
    assert 0.46 < share < 0.54
    assert team_draft(["a1", "a2"], ["b1", "b2"], 4, "rec-7") == team_draft(
        ["a1", "a2"], ["b1", "b2"], 4, "rec-7"
    )
    rng = random.Random(5)
    assert len(team_draft(["a1"], ["b1"], 2, rng)[0]) == 2


def test_credit_counts_distinct_clicks_on_the_page():
    items, teams = ["x", "y", "z"], ["a", "b", "a"]
    assert credit(teams, items, ["x", "z", "x", "unknown"]) == (2, 0)
    assert credit(teams, items, ["y"]) == (0, 1)
    assert credit(teams, items, []) == (0, 0)
    with pytest.raises(ValueError):
        credit(["a"], items, [])


def test_preference_basics():
    empty = preference(0, 0)
    assert empty.p_value == 1.0 and empty.winner is None and (empty.low, empty.high) == (0, 1)
    strong = preference(80, 20)
    assert strong.winner == "a" and strong.low < 0.8 < strong.high and strong.p_value < 1e-6
    assert preference(20, 80).winner == "b"
    assert preference(52, 48).winner is None
    with pytest.raises(ValueError):
        preference(-1, 3)


def test_identical_rankers_reject_at_about_alpha():
    """Same ranker on both teams: clicks follow positions only, so wins are a fair coin."""
    rng = np.random.default_rng(0)
    ranked = [f"i{n}" for n in range(10)]
    click_p = 0.3 / np.log2(np.arange(10) + 2)
    rejections, runs = 0, 400
    for run in range(runs):
        wins = [0, 0]
        for view in range(150):
            items, teams = team_draft(ranked, ranked, 10, f"{run}-{view}")
            clicked = [i for i, p in zip(items, click_p, strict=True) if rng.random() < p]
            ca, cb = credit(teams, items, clicked)
            if ca != cb:
                wins[ca < cb] += 1
        rejections += preference(*wins).p_value < 0.05
    assert 0.015 <= rejections / runs <= 0.09
