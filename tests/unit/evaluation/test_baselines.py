"""Baselines on toy session logs where the right answer can be worked out by hand."""

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

import pipeline.evaluation.baselines.base as baselines
from pipeline.evaluation.baselines import (
    Baseline,
    LastItemSuccessor,
    Popularity,
    RecentPopularity,
    SessionKNN,
    all_baselines,
)
from pipeline.evaluation.baselines.als import ImplicitALS
from pipeline.model.metrics import hit_rate_at_k, mrr_at_k

ITEMS = ["a", "b", "c", "d", "e", "f"]  # f never occurs in train
A, B, C, D, E, F = range(6)
DAY0 = datetime(2024, 3, 1, tzinfo=UTC)

# (session, customer, day, items in order). Item counts: e 5 (all on day 0), c 4, a 3, b 3,
# d 3, f 0. Sessions containing each item: a {s2,s3,s4}, b {s2,s3,s4}, c {s2,s5,s6,s7},
# d {s4,s5,s6}, e {s1}. Successors (repeats collapsed): a->b x3, b->c, b->d, c->d, d->c.
SESSIONS = [
    ("s1", "u1", 0, "eeeee"),
    ("s2", "", 20, "abc"),
    ("s3", None, 21, "ab"),
    ("s4", "u2", 22, "abd"),
    ("s5", "", 23, "cd"),
    ("s6", "", 24, "dc"),
    ("s7", "", 25, "c"),
]


def session_log(sessions) -> pl.DataFrame:
    rows = [
        {
            "session_id": session,
            "customer_id": customer,
            "item_id": item,
            "ts": DAY0 + timedelta(days=day, minutes=step),
        }
        for session, customer, day, items in sessions
        for step, item in enumerate(items)
    ]
    return pl.DataFrame(
        rows,
        schema={
            "session_id": pl.String,
            "customer_id": pl.String,
            "item_id": pl.String,
            "ts": pl.Datetime("us", "UTC"),
        },
    )


@pytest.fixture(scope="module")
def toy() -> pl.DataFrame:
    # Shuffled on purpose: baselines must sort events themselves.
    return session_log(SESSIONS).sample(fraction=1.0, shuffle=True, seed=3)


def test_all_baselines_share_the_interface():
    models = all_baselines(implicit_als={"factors": 8})
    assert [m.name for m in models] == [
        "popularity",
        "recent_popularity",
        "session_knn",
        "last_item_successor",
        "implicit_als",
        "vsknn",
        "stan",
        "vstan",
        "sr",
    ]
    assert all(isinstance(m, Baseline) for m in models)
    assert models[4].factors == 8
    with pytest.raises(ValueError, match="unknown baselines"):
        all_baselines(gru4rec={})
    with pytest.raises(RuntimeError, match="not fitted"):
        Popularity().recommend([["a"]], None, 3)


def test_popularity_order_and_exclusion(toy):
    model = Popularity().fit(toy, ITEMS)
    assert model.recommend([[], ["a"]], None, 6).tolist() == [[E, C, A, B, D, F]] * 2
    seen = Popularity(exclude_seen=True).fit(toy, ITEMS)
    assert seen.recommend([["e", "c"], ["zzz"]], None, 4).tolist() == [
        [A, B, D, F],
        [E, C, A, B],
    ]
    # Six items, two seen: the last two places cannot be filled.
    assert seen.recommend([["e", "c"]], None, 6).tolist() == [[A, B, D, F, -1, -1]]


def test_recent_popularity_ignores_old_events(toy):
    # The window ends at day 25; e's events (day 0) fall outside, so e only wins the tie
    # with f (both 0 recent events) on overall popularity.
    model = RecentPopularity(days=7).fit(toy, ITEMS)
    assert model.recommend([[]], None, 6).tolist() == [[C, A, B, D, E, F]]
    everything = RecentPopularity(days=30).fit(toy, ITEMS)
    assert everything.recommend([[]], None, 2).tolist() == [[E, C]]


def test_session_knn_ranks_the_partner_first(toy):
    # From a: sim(a, b) = 3 / sqrt(3 * 3) = 1, sim(a, d) = 1 / 3, sim(a, c) = 1 / sqrt(12);
    # the zero-score rest in popularity order (a itself scores 0: no self-similarity).
    model = SessionKNN().fit(toy, ITEMS)
    assert model.recommend([["a"], ["zzz", "a"]], None, 6).tolist() == [[B, D, C, E, A, F]] * 2
    seen = SessionKNN(exclude_seen=True).fit(toy, ITEMS)
    assert seen.recommend([["a"]], None, 6).tolist() == [[B, D, C, E, F, -1]]
    repeats = SessionKNN(repeat_weight=2.0).fit(toy, ITEMS)
    assert repeats.recommend([["a"]], None, 2).tolist() == [[A, B]]


def test_session_knn_weights_recent_items_more(toy):
    # sim(d, c) = 2 / sqrt(3 * 4) = 0.577, sim(d, b) = 1 / 3, sim(a, b) = 1, sim(a, c) = 0.289.
    # Last item a (decay 0.1 on d): b = 1 + 0.033 beats c = 0.289 + 0.058.
    # Last item d (decay 0.1 on a): c = 0.577 + 0.029 beats b = 0.333 + 0.1.
    model = SessionKNN(decay=0.1).fit(toy, ITEMS)
    top = model.recommend([["d", "a"], ["a", "d"]], None, 1)
    assert top.tolist() == [[B], [C]]


def test_last_item_successor(toy):
    model = LastItemSuccessor().fit(toy, ITEMS)
    # a was always followed by b.
    assert model.recommend([["c", "a"]], None, 1).tolist() == [[B]]
    # b -> c and b -> d once each: the tie goes to co-occurrence with the history (d: 1/3
    # from each of a and b; c: 0.289 from each), although c is more popular. Then a and b
    # by co-occurrence (sim(b, a) = 1, sim(a, b) = 1 at decay 0.7), then e and f by popularity.
    assert model.recommend([["a", "b"]], None, 6).tolist() == [[D, C, A, B, E, F]]
    # e's only successor is e itself, which is collapsed: nothing follows e, and e has no
    # co-occurring items, so popularity fills the list.
    assert model.recommend([["e"]], None, 3).tolist() == [[E, C, A]]


def test_last_item_successor_collapses_repeats():
    # Raw a -> a three times, a -> c twice, a -> b once; collapsed, c follows a most often.
    log = session_log([("t1", "", 0, "aaaab"), ("t2", "", 0, "ac"), ("t3", "", 0, "ac")])
    model = LastItemSuccessor().fit(log, ITEMS)
    assert model.recommend([["a"]], None, 2).tolist() == [[C, B]]


def test_batches_do_not_change_results(toy, monkeypatch):
    histories = [["a"], ["a", "b"], [], ["d", "c", "zzz"], ["e"]]
    expected = LastItemSuccessor().fit(toy, ITEMS).recommend(histories, None, 4)
    monkeypatch.setattr(baselines, "BATCH_CELLS", 1)  # one query per batch
    batched = LastItemSuccessor().fit(toy, ITEMS).recommend(histories, None, 4)
    np.testing.assert_array_equal(batched, expected)


def _two_communities() -> pl.DataFrame:
    # a and b are consumed together, c and d (twice as popular) together; e is alone.
    sessions = [(f"ab{i}", "u_ab" if i < 3 else "", i % 5, "ab") for i in range(12)]
    sessions += [(f"cd{i}", "u_cd", i % 5, "cdcd") for i in range(12)]
    sessions += [(f"e{i}", "", i % 5, "e") for i in range(4)]
    return session_log(sessions)


def test_implicit_als_learns_co_consumption_and_is_seeded():
    pytest.importorskip("implicit")
    train = _two_communities()
    histories = [["a"], ["d"], []]
    first = ImplicitALS(factors=4, iterations=8, random_state=7).fit(train, ITEMS)
    ranked = first.recommend(histories, None, 6)
    position = {item: int(np.flatnonzero(ranked[0] == item)[0]) for item in (B, C, D)}
    assert position[B] < position[C] and position[B] < position[D]
    assert set(ranked[1, :2].tolist()) == {C, D}
    # Known customers with an empty session: their own factors are used, so the a/b customer
    # gets a and b rather than the more popular c and d.
    known = first.recommend([[], []], ["u_ab", "u_cd"], 2)
    assert [set(row) for row in known.tolist()] == [{A, B}, {C, D}]
    again = ImplicitALS(factors=4, iterations=8, random_state=7).fit(train, ITEMS)
    np.testing.assert_array_equal(again.recommend(histories, None, 6), ranked)
    np.testing.assert_array_equal(again.item_factors, first.item_factors)


def _planted_successor_log(seed: int = 0) -> tuple[pl.DataFrame, list[str]]:
    """~20k events: each next item is its predecessor's planted successor 85% of the time."""
    rng = np.random.default_rng(seed)
    n_items, n_sessions = 300, 3300
    successor = rng.permutation(n_items)
    popularity = 1 / np.arange(1, n_items + 1) ** 0.8
    popularity /= popularity.sum()
    lengths = rng.integers(2, 11, size=n_sessions)
    session_ids, item_ids, times = [], [], []
    for s, length in enumerate(lengths):
        item = rng.choice(n_items, p=popularity)
        for step in range(length):
            session_ids.append(f"s{s}")
            item_ids.append(f"i{item}")
            times.append(DAY0 + timedelta(hours=s, minutes=step))
            follow = rng.random() < 0.85
            item = successor[item] if follow else rng.choice(n_items, p=popularity)
    log = pl.DataFrame(
        {"session_id": session_ids, "customer_id": "", "item_id": item_ids, "ts": times}
    )
    return log, [f"i{i}" for i in range(n_items)]


def test_last_item_successor_beats_popularity_on_planted_successors():
    log, items = _planted_successor_log()
    assert 18_000 < len(log) < 22_000
    cutoff = DAY0 + timedelta(hours=2800)
    train = log.filter(pl.col("ts") < cutoff)
    test = (
        log.filter(pl.col("ts") >= cutoff)
        .group_by("session_id", maintain_order=True)
        .agg("item_id")
    )
    histories, targets = [], []
    for sequence in test.get_column("item_id").to_list():
        for i in range(1, len(sequence)):
            histories.append(sequence[:i])
            targets.append(int(sequence[i][1:]))
    targets = np.array(targets)
    successor = LastItemSuccessor().fit(train, items).recommend(histories, None, 20)
    popular = Popularity().fit(train, items).recommend(histories, None, 20)
    hr_successor = hit_rate_at_k(successor, targets, 20)
    hr_popular = hit_rate_at_k(popular, targets, 20)
    # 85% of next items are the planted successor; popularity only catches the head.
    assert hr_successor > 0.8
    assert hr_successor > hr_popular + 0.4
    assert mrr_at_k(successor, targets, 20) > 0.75
