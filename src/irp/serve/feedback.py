"""What users did with the answers: `POST /v1/feedback` events, and the live precision of offers.

An event names the id that /v1/predict answered and one of offer_accepted, offer_declined, carousel_tap,
no_tap (irp.serve.checks.check_feedback validates it). The server writes it to the decision log (kind
"feedback", joined later by `irp logs join`) and counts it; events about its own recent offers also feed two
`LivePrecision` windows (over the last `window_s` seconds, each with a Wilson 95 % interval):

    live precision of offers      = accepted / (accepted + declined)         Prometheus irp_live_precision*
    live tap precision of offers  = tapped / (tapped + not tapped), offers only  irp_live_tap_precision*

The artifact's promised precision is about the label it was trained on: the tap precision for a model trained
on `irp logs join --label tap` (the default), the acceptance for `--label accept`. GET /v1/model shows both next
to the promise; deploy/prometheus/rules.yml compares the matching one fleet-wide, from counters. The server remembers which model version
made each recent offer (`OfferMemory`), so both are also given per model version: after a reload, the window
holds answers to both models for a while.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from typing import Any

Z95 = 1.959963984540054


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (95 % by default); (0, 1) when n = 0.

    Better than the normal interval at the small counts and extreme proportions a live window has.

    >>> [round(x, 4) for x in wilson_interval(8, 10)]
    [0.4902, 0.9433]
    >>> wilson_interval(0, 0)
    (0.0, 1.0)
    >>> [round(x, 4) for x in wilson_interval(10, 10)]
    [0.7225, 1.0]
    """
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    z2 = z * z
    center = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, center - half), min(1.0, center + half)


_ANSWER_BITS = {"offer": 1, "tap": 2}  # the kinds of answer an offer gets, one bit each


class OfferMemory:
    """id -> model_version of the most recent `capacity` offers: attributes answers to the model that made
    the offer, and tells a repeated answer (a client retry) from a first one, per kind of answer ("offer":
    accepted / declined, "tap": carousel tap / no tap).

    >>> memory = OfferMemory()
    >>> memory.remember([("a", "v1")])
    >>> memory.answer("a"), memory.answer("a"), memory.answer("a", "tap"), memory.answer("zz")
    ('v1', 'repeat', 'v1', None)
    """

    def __init__(self, capacity: int = 200_000) -> None:
        self.capacity = capacity
        self._offers: OrderedDict[str, list] = OrderedDict()  # id -> [model_version, bits of the kinds answered]
        self._lock = threading.Lock()

    def remember(self, ids_versions: list[tuple[str, str]]) -> None:
        if not ids_versions:
            return
        with self._lock:
            for record_id, version in ids_versions:
                self._offers[record_id] = [version, 0]
                self._offers.move_to_end(record_id)
            while len(self._offers) > self.capacity:
                self._offers.popitem(last=False)

    def attribute(self, record_id: str, kind: str = "offer") -> tuple[str | None, bool]:
        """(model version of the offer or None when not remembered, whether this kind of answer is its first).

        >>> memory = OfferMemory(); memory.remember([("a", "v1")])
        >>> memory.attribute("a", "tap"), memory.attribute("a", "tap"), memory.attribute("b")
        (('v1', True), ('v1', False), (None, False))
        """
        with self._lock:
            entry = self._offers.get(record_id)
            if entry is None:
                return None, False
            bit = _ANSWER_BITS[kind]
            first = not entry[1] & bit
            entry[1] |= bit
            return entry[0], first

    def answer(self, record_id: str, kind: str = "offer") -> str | None:
        """The model version of the offer being answered; "repeat" when this kind of answer came before; None
        when this server does not remember the offer (another replica made it, it is older than `capacity`, or
        the answer is a tap on a record that was not offered)."""
        with self._lock:
            entry = self._offers.get(record_id)
            if entry is None:
                return None
            bit = _ANSWER_BITS[kind]
            if entry[1] & bit:
                return "repeat"
            entry[1] |= bit
            return entry[0]


class LivePrecision:
    """Answers to offers in a sliding time window: accepted / (accepted + declined), overall and per model.

    >>> now = [0.0]
    >>> live = LivePrecision(window_s=60, clock=lambda: now[0])
    >>> for accepted in (True, True, False, True):
    ...     live.add(accepted, "v1")
    >>> live.snapshot()["precision"]
    0.75
    >>> now[0] = 61.0; live.add(False, "v2")          # the first four fell out of the window
    >>> s = live.snapshot(); s["answers"], s["precision"], s["by_model_version"]["v2"]["answers"]
    (1, 0.0, 1)
    """

    def __init__(self, window_s: float = 3600.0, max_answers: int = 1_000_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s, self.max_answers, self._clock = window_s, max_answers, clock
        self._answers: deque[tuple[float, bool, str]] = deque()
        self._counts: Counter[tuple[str, bool]] = Counter()
        self._lock = threading.Lock()

    def add(self, accepted: bool, model_version: str | None) -> None:
        version = model_version or "unknown"
        with self._lock:
            now = self._clock()
            self._answers.append((now, accepted, version))
            self._counts[(version, accepted)] += 1
            self._prune(now)

    def _prune(self, now: float) -> None:
        answers = self._answers
        while answers and (now - answers[0][0] > self.window_s or len(answers) > self.max_answers):
            _, accepted, version = answers.popleft()
            self._counts[(version, accepted)] -= 1
            if not self._counts[(version, accepted)]:
                del self._counts[(version, accepted)]

    def snapshot(self) -> dict[str, Any]:
        """{window_s, answers, accepted, precision (None when no answer), ci, by_model_version}."""
        with self._lock:
            self._prune(self._clock())
            counts = dict(self._counts)
        versions = sorted({v for v, _ in counts})
        by_version = {v: _summary(counts.get((v, True), 0), counts.get((v, True), 0) + counts.get((v, False), 0))
                      for v in versions}
        accepted = sum(n for (_, a), n in counts.items() if a)
        total = sum(counts.values())
        return {"window_s": self.window_s, **_summary(accepted, total), "by_model_version": by_version}


def _summary(accepted: int, answers: int) -> dict[str, Any]:
    lo, hi = wilson_interval(accepted, answers)
    return {"answers": answers, "accepted": accepted, "precision": accepted / answers if answers else None,
            "ci": [lo, hi]}
