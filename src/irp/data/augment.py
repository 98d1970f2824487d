"""Perturbed, unlabelled copies of records: in-domain transfer records for distillation.

A student learns its teachers' function only where it sees their scores. Copies of the training
records with spoken-query noise (words dropped, as a recogniser drops them) and, at random, the
product of another record put teacher scores next to the training data (the augmentation of
TinyBERT, Jiao et al. 2020, without its masked-LM word replacement). The copies carry no label:
`irp distill --transfer` reads only the teachers' scores on them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

LABEL_FIELDS = ("label", "true_intent")  # what a copy must not carry: its label is the teachers' score
COPY_MARK = "~aug"  # a copy's id: <source id>~aug<k>


def drop_words(utterance: str, rate: float, rng: np.random.Generator) -> str:
    """`utterance` with each word dropped with probability `rate`, keeping at least one word.

    >>> drop_words("show me the red one", 0.0, np.random.default_rng(0))
    'show me the red one'
    >>> len(drop_words("show me the red one", 1.0, np.random.default_rng(0)).split())
    1
    """
    words = utterance.split()
    kept = [w for w, drop in zip(words, rng.random(len(words)) < rate, strict=True) if not drop]
    return " ".join(kept) if kept else words[int(rng.integers(len(words)))]


def check_settings(copies: int, word_drop: float, product_swap: float, n_records: int | None = None) -> None:
    """Raise ValueError naming the `irp augment` flag of a bad setting (`n_records`: how many records there are to
    swap products between, when known).

    >>> check_settings(1, 0.15, 0.5, n_records=2)
    >>> check_settings(1, 1.5, 0.5)
    Traceback (most recent call last):
    ValueError: --word-drop must be in [0, 1], got 1.5
    """
    if copies < 1:
        raise ValueError(f"--copies must be >= 1, got {copies}")
    for flag, rate in (("--word-drop", word_drop), ("--product-swap", product_swap)):
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"{flag} must be in [0, 1], got {rate}")
    if n_records is not None and product_swap > 0 and n_records < 2:
        raise ValueError(f"--product-swap needs at least two records to swap products between, got {n_records}")


def augment_records(
    records: Sequence[dict[str, Any]],
    copies: int = 1,
    word_drop: float = 0.15,
    product_swap: float = 0.5,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """`copies` perturbed copies of each record, without labels, ids `<id>~aug<k>`.

    Each copy drops utterance words at rate `word_drop` and, with probability `product_swap`, takes
    the products of another record (drawn uniformly among the others). A copy equal to its source
    would add nothing, so where neither happened one word is dropped (or, for a one-word utterance,
    the products swapped, given another record). Session ids are kept: the copies stay with their dialog.
    Deterministic for a given input order and seed.

    >>> recs = [{"id": "a", "utterance": "show me it", "products": [{"title": "x"}], "label": 1},
    ...         {"id": "b", "utterance": "what sizes", "products": [{"title": "y"}], "label": 0}]
    >>> out = augment_records(recs, copies=2, seed=0)
    >>> [r["id"] for r in out], any("label" in r for r in out)
    (['a~aug0', 'a~aug1', 'b~aug0', 'b~aug1'], False)
    """
    check_settings(copies, word_drop, product_swap, len(records))
    rng = np.random.default_rng(seed)
    out: list[dict[str, Any]] = []
    for i, record in enumerate(records):
        for k in range(copies):
            copy = {key: value for key, value in record.items() if key not in LABEL_FIELDS}
            copy["id"] = f"{record.get('id', i)}{COPY_MARK}{k}"
            words = record["utterance"].split()
            utterance = drop_words(record["utterance"], word_drop, rng)
            swap = rng.random() < product_swap
            if utterance == " ".join(words) and not swap:  # nothing drawn: the copy would equal its source
                if len(words) > 1:
                    del words[int(rng.integers(len(words)))]
                    utterance = " ".join(words)
                elif len(records) > 1:
                    swap = True
            copy["utterance"] = utterance
            if swap:
                other = int(rng.integers(len(records) - 1))
                copy["products"] = records[other + (other >= i)].get("products", [])  # skip itself
            out.append(copy)
    return out
