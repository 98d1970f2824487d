"""bench/soup_recipe.py: the greedy recipe and the dialog halves (pure logic; soups are exercised in test_soup)."""

from __future__ import annotations

import numpy as np
from conftest import load_bench

bench = load_bench("soup_recipe")


def test_greedy_members_follows_make_soup_order_and_keeps_on_ties() -> None:
    aps = {frozenset({0, 2}): 0.95, frozenset({0, 1, 2}): 0.94, frozenset({0, 2, 3}): 0.96}
    tried: list[frozenset[int]] = []

    def soup_ap(members: frozenset[int]) -> float:
        tried.append(members)
        return aps[members]

    # best first: 0 (0.9), 2 (0.7), 1 (0.6), 3 (0.5); 2 raises the AP, 1 lowers it, 3 raises it
    assert bench.greedy_members([0.9, 0.6, 0.7, 0.5], soup_ap) == frozenset({0, 2, 3})
    assert tried == [frozenset({0, 2}), frozenset({0, 1, 2}), frozenset({0, 2, 3})]
    # a tie with the current soup's AP keeps the ingredient, as irp soup does
    assert bench.greedy_members([0.5, 0.4], lambda m: 0.5) == frozenset({0, 1})
    assert bench.greedy_members([0.5, 0.4], lambda m: 0.49) == frozenset({0})


def test_split_halves_keeps_sessions_whole_and_takes_half_of_them() -> None:
    sessions = np.repeat(np.arange(40).astype(str), 3)
    a = bench.split_halves(sessions, np.random.default_rng(0))
    assert len(set(sessions[a])) == 20 and set(sessions[a]).isdisjoint(sessions[~a])
    assert not np.array_equal(a, bench.split_halves(sessions, np.random.default_rng(1)))
