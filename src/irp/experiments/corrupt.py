"""Retrieval failure at test time: some of each record's retrieved products become random catalogue products."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def n_replaced(k: int, fraction: float, u: float) -> int:
    """How many of k products to replace: fraction * k, rounded up with probability equal to its fractional part
    (`u` is a uniform draw), so that on average exactly `fraction` of the products are replaced.

    >>> n_replaced(5, 0.25, 0.1), n_replaced(5, 0.25, 0.3), n_replaced(5, 0.0, 0.0), n_replaced(5, 1.0, 0.99)
    (2, 1, 0, 5)
    """
    whole = math.floor(fraction * k + 1e-9)
    return min(k, whole + (u < fraction * k - whole - 1e-9))


def corrupt_products(
    records: Sequence[dict], fraction: float, catalog: Sequence[dict], seed: int = 0
) -> list[dict]:
    """Copies of `records` where a random `fraction` of each record's products is replaced by products drawn
    uniformly from `catalog` (positions chosen at random, the rest kept in rank order). The input is not changed;
    records without products stay as they are. Deterministic for (records, fraction, catalog, seed).

    >>> recs = [{"id": "a", "products": [{"title": f"p{i}"} for i in range(4)]}, {"id": "b", "products": []}]
    >>> cat = [{"title": "random"}]
    >>> out = corrupt_products(recs, 0.5, cat, seed=1)
    >>> sum(p["title"] == "random" for p in out[0]["products"]), out[1]["products"], recs[0]["products"][0]
    (2, [], {'title': 'p0'})
    >>> [p["title"] for p in corrupt_products(recs, 1.0, cat)[0]["products"]]
    ['random', 'random', 'random', 'random']
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    if fraction > 0 and not catalog:
        raise ValueError("an empty catalogue cannot replace products")
    rng = np.random.default_rng([seed, round(fraction * 1_000_000)])
    out: list[dict] = []
    for record in records:
        products = list(record.get("products") or [])
        k = len(products)
        if k and fraction > 0:
            m = n_replaced(k, fraction, float(rng.random()))
            for position in rng.choice(k, size=m, replace=False):
                products[int(position)] = dict(catalog[int(rng.integers(len(catalog)))])
        out.append({**record, "products": products})
    return out
