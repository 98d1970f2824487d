"""Batched BM25 (irp.data.retrieval) against bm25s's own one-query-at-a-time retrieval."""

from __future__ import annotations

import bm25s
import numpy as np
import pytest

from irp.data.catalog import build_catalog, index_text
from irp.data.retrieval import BM25Index, CachedRetriever, tokenize


@pytest.fixture(scope="module")
def corpus() -> list[list[str]]:
    """Token lists of 600 catalogue products from several categories (many near-duplicate titles)."""
    products = build_catalog(0)
    return [tokenize(index_text(p)) for p in products[::8]]


@pytest.fixture(scope="module")
def queries(corpus: list[list[str]]) -> list[list[str]]:
    """200 queries of 1-4 in-vocabulary tokens drawn from the documents, some repeated tokens."""
    rng = np.random.default_rng(0)
    out = []
    for _ in range(200):
        doc = corpus[rng.integers(len(corpus))]
        out.append([doc[j] for j in rng.integers(0, len(doc), size=rng.integers(1, 5))])
    return out


@pytest.fixture(scope="module")
def reference(corpus: list[list[str]]) -> bm25s.BM25:
    retriever = bm25s.BM25(k1=1.5, b=0.75, method="lucene")
    retriever.index(corpus, show_progress=False)
    return retriever


def test_scores_match_bm25s(corpus: list[list[str]], queries: list[list[str]], reference: bm25s.BM25) -> None:
    ours = BM25Index(corpus).scores(queries)  # (queries x docs)
    theirs = np.stack([reference.get_scores(q) for q in queries])
    assert ours.shape == theirs.shape == (len(queries), len(corpus))
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("k", [5, 20])  # k <= 16 uses argmax rounds, larger k argpartition
def test_topk_matches_bm25s(corpus: list[list[str]], queries: list[list[str]], reference: bm25s.BM25, k: int) -> None:
    ids, scores = BM25Index(corpus).topk(queries, k)
    ref_ids, ref_scores = reference.retrieve([list(q) for q in queries], k=k, show_progress=False, n_threads=1)
    checked = 0
    for row in range(len(queries)):
        ref = ref_scores[row]
        np.testing.assert_allclose(scores[row], np.where(ref > 0, ref, 0.0), rtol=1e-5, atol=1e-5)
        # Same documents wherever the ranking is not a tie at the cut: every document scoring
        # clearly above the k-th score is in both lists.
        cut = ref[-1] + 1e-4
        ours_above = {int(d) for d, s in zip(ids[row], scores[row]) if s > cut}
        theirs_above = {int(d) for d, s in zip(ref_ids[row], ref) if s > cut}
        assert ours_above == theirs_above
        checked += len(ours_above)
    assert checked > len(queries)  # the comparison was not vacuous
    assert (ids == -1).sum() == (scores == 0).sum()  # empty slots only where nothing matched


def test_ties_go_to_lower_document_id() -> None:
    index = BM25Index([["red", "dress"], ["blue", "dress"], ["red", "dress"], ["red", "dress"]])
    ids, scores = index.topk([["red", "dress"], ["dress"]], k=3)
    assert ids.tolist() == [[0, 2, 3], [0, 1, 2]]
    assert scores[0, 0] == scores[0, 1] > 0


def test_unmatched_query_returns_no_documents() -> None:
    index = BM25Index([["red", "dress"], ["aa", "batteries"]])
    ids, scores = index.topk([["zebra"], []], k=2)
    assert ids.tolist() == [[-1, -1], [-1, -1]]
    assert not scores.any()


def test_cached_retriever_scores_each_token_bag_once(corpus: list[list[str]]) -> None:
    index = BM25Index(corpus)
    retriever = CachedRetriever(index, k=5)
    texts = ["alexa show me a red dress", "red dress please", "Dress, RED!", "aa batteries", "um aa batteries"]
    got = retriever.retrieve(texts)
    assert retriever.n_scored == 2  # {red, dress} and {aa, batteries}
    expected, _ = index.topk([tokenize(t) for t in texts], k=5)
    assert got.tolist() == expected.tolist()
    again = retriever.retrieve(texts[::-1])  # served from the cache
    assert retriever.n_scored == 2
    assert again.tolist() == expected[::-1].tolist()


def test_tokenize_drops_stopwords_and_punctuation() -> None:
    assert tokenize("Alexa, show me SOME red-ish Dresses!") == ["alexa", "red", "ish", "dresses"]
