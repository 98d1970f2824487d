"""bench/soup_recipe.py: the dialog halves (pure logic; the greedy recipe and soups are tested in test_soup)."""

from __future__ import annotations

import numpy as np
from conftest import load_bench

bench = load_bench("soup_recipe")


def test_split_halves_keeps_sessions_whole_and_takes_half_of_them() -> None:
    sessions = np.repeat(np.arange(40).astype(str), 3)
    a = bench.split_halves(sessions, np.random.default_rng(0))
    assert len(set(sessions[a])) == 20 and set(sessions[a]).isdisjoint(sessions[~a])
    assert not np.array_equal(a, bench.split_halves(sessions, np.random.default_rng(1)))
