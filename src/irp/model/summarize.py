"""Product summarizers: small pure functions that turn k retrieved products into model inputs.

- `pool_products` (mean / max): per attribute, pool the k products' value vectors into one vector.
- `mmr_select`: pick m diverse-but-relevant products by Maximal Marginal Relevance.
- `bag_cosine`: the similarity MMR uses (cosine of token-count bags; cheap and needs no model).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
import torch


def pool_products(values: torch.Tensor, present: torch.Tensor, mode: str = "mean") -> torch.Tensor:
    """Pool product attribute vectors across products, ignoring absent ones.

    values: [B, K, F, H] (batch, products, attributes, hidden); present: [B, K, F] bool.
    Returns [B, F, H]; an attribute that no product has pools to zeros.

    >>> v = torch.tensor([[[[1.0]], [[3.0]], [[100.0]]]])  # B=1, K=3, F=1, H=1
    >>> p = torch.tensor([[[True], [True], [False]]])
    >>> pool_products(v, p, "mean").flatten().tolist()
    [2.0]
    >>> pool_products(v, p, "max").flatten().tolist()
    [3.0]
    >>> pool_products(v, torch.zeros_like(p), "max").flatten().tolist()
    [0.0]
    """
    mask = present.unsqueeze(-1).to(values.dtype)  # [B, K, F, 1]
    if mode == "mean":
        return (values * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
    if mode == "max":
        neg = torch.finfo(values.dtype).min
        pooled = values.masked_fill(mask == 0, neg).amax(dim=1)
        return torch.where(present.any(dim=1).unsqueeze(-1), pooled, torch.zeros_like(pooled))
    raise ValueError(f"unknown pooling mode {mode!r}")


def bag_cosine(a: Counter[int], b: Counter[int]) -> float:
    """Cosine similarity of two token-count bags.

    >>> bag_cosine(Counter([1, 2]), Counter([2, 3]))
    0.5
    >>> bag_cosine(Counter(), Counter([1]))
    0.0
    """
    if not a or not b:
        return 0.0
    dot = sum(count * b.get(token, 0) for token, count in a.items())
    norm = (sum(c * c for c in a.values()) * sum(c * c for c in b.values())) ** 0.5
    return dot / norm


def mmr_select(relevance: Sequence[float], similarity: np.ndarray, m: int, lam: float = 0.7) -> list[int]:
    """Greedy Maximal Marginal Relevance: argmax_i  lam * rel_i - (1 - lam) * max_{j in S} sim_ij.

    relevance: [K] relevance of each product to the query; similarity: [K, K] between products.
    Returns up to m indices in selection order (ties go to the earlier, higher-ranked product).

    >>> sim = np.array([[1.0, 0.9, 0.0], [0.9, 1.0, 0.1], [0.0, 0.1, 1.0]])
    >>> mmr_select([0.9, 0.8, 0.5], sim, m=2, lam=0.5)   # 1 is a near-duplicate of 0
    [0, 2]
    >>> mmr_select([0.9, 0.8, 0.5], sim, m=2, lam=1.0)   # pure relevance
    [0, 1]
    """
    remaining = list(range(len(relevance)))
    chosen: list[int] = []
    while remaining and len(chosen) < m:
        def score(i: int) -> float:
            redundancy = max((similarity[i, j] for j in chosen), default=0.0)
            return lam * relevance[i] - (1.0 - lam) * redundancy

        best = max(remaining, key=lambda i: (score(i), -i))
        chosen.append(best)
        remaining.remove(best)
    return chosen
