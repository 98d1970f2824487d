"""Split records by session, so that no dialog has turns on both sides of a split.

Turns of one dialog share context and the product on screen; splitting them across train/test (or
validation/test) would let a model be scored on near-copies of what it was tuned on.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np


def session_key(record: dict[str, Any]) -> str:
    """The session of a record; a record without `session_id` is a session of its own (by id).

    >>> session_key({"id": "7", "session_id": "s1"}), session_key({"id": "7", "session_id": None})
    ('s1', 'id:7')
    """
    session = record.get("session_id")
    return str(session) if session is not None else f"id:{record['id']}"


def split_by_session(
    records: Sequence[dict[str, Any]], fraction: float, seed: int = 0
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(first, second): a random `fraction` of the sessions (rounded) goes to `first`, the rest to `second`.

    Deterministic for a given set of sessions and seed, whatever the record order; records keep
    their input order within each part.

    >>> recs = [{"id": str(i), "session_id": f"s{i // 2}"} for i in range(8)]
    >>> a, b = split_by_session(recs, 0.5, seed=0)
    >>> len(a), len(b), {r["session_id"] for r in a}.isdisjoint({r["session_id"] for r in b})
    (4, 4, True)
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    sessions = sorted({session_key(r) for r in records})  # sorted: independent of record order
    chosen = np.random.default_rng(seed).permutation(len(sessions))[: round(fraction * len(sessions))]
    first_sessions = {sessions[i] for i in chosen}
    first = [r for r in records if session_key(r) in first_sessions]
    second = [r for r in records if session_key(r) not in first_sessions]
    return first, second


def session_overlap(a: Iterable[dict[str, Any]], b: Iterable[dict[str, Any]]) -> set[str]:
    """Sessions present in both collections of records (empty when the split is clean).

    >>> session_overlap([{"id": "1", "session_id": "s"}], [{"id": "2", "session_id": "s"}])
    {'s'}
    """
    return {session_key(r) for r in a} & {session_key(r) for r in b}
