"""Device-switch policy: when to offer "want to see these on your screen?".

    suggest_switch = image_seeking
                     AND screen_available is not False      (unknown counts as available)
                     AND the session was not offered a switch within the cooldown (default 10 minutes)

A wrong or repeated offer is friction, so the model's high-precision decision is gated twice more: no offer
when the user has no screen at hand, and at most one offer per session per cooldown. A request without a
`session_id` has no session to remember, so only the first two conditions apply to it.

Only offers start a cooldown; a query that was not offered anything leaves the session's clock alone.
Memory is bounded: sessions whose cooldown has passed are forgotten, and beyond `max_sessions` remembered
offers the oldest is dropped (that session could then be offered again before its cooldown ends).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

DEFAULT_COOLDOWN_S = 600.0
DEFAULT_MAX_SESSIONS = 100_000


def should_suggest(
    image_seeking: bool, screen_available: bool | None, last_offer_s: float | None, now_s: float, cooldown_s: float
) -> bool:
    """The policy as a pure function of one decision (times in seconds, any common clock).

    >>> should_suggest(True, None, None, now_s=0.0, cooldown_s=600)    # unknown screen counts as available
    True
    >>> should_suggest(True, False, None, now_s=0.0, cooldown_s=600)   # no screen at hand
    False
    >>> should_suggest(True, True, 100.0, now_s=699.0, cooldown_s=600)  # offered 599 s ago
    False
    >>> should_suggest(True, True, 100.0, now_s=700.0, cooldown_s=600)  # cooldown over
    True
    >>> should_suggest(False, True, None, now_s=0.0, cooldown_s=600)
    False
    """
    if not image_seeking or screen_available is False:
        return False
    return last_offer_s is None or now_s - last_offer_s >= cooldown_s


class SwitchPolicy:
    """Remembers the last offer per session; thread-safe (the server decides from several threads).

    >>> clock = iter([0.0, 30.0, 700.0]).__next__
    >>> policy = SwitchPolicy(cooldown_s=600, clock=clock)
    >>> [policy.decide(True, True, "s1") for _ in range(3)]   # offered at 0 s, quiet at 30 s, again at 700 s
    [True, False, True]
    """

    def __init__(
        self,
        cooldown_s: float = DEFAULT_COOLDOWN_S,
        max_sessions: int = DEFAULT_MAX_SESSIONS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if cooldown_s < 0:
            raise ValueError(f"cooldown must be >= 0 seconds, got {cooldown_s}")
        if max_sessions < 1:
            raise ValueError(f"max_sessions must be >= 1, got {max_sessions}")
        self.cooldown_s = float(cooldown_s)
        self.max_sessions = max_sessions
        self._clock = clock
        self._last_offer: OrderedDict[str, float] = OrderedDict()  # session -> time of its last offer, oldest first
        self._lock = threading.Lock()

    def decide(self, image_seeking: bool, screen_available: bool | None, session_id: str | None) -> bool:
        """Whether to offer a switch now; an offer starts the session's cooldown."""
        if not image_seeking or screen_available is False:
            return False  # fast path: no clock, no lock
        now = self._clock()
        if session_id is None:
            return True
        with self._lock:
            self._forget_expired(now)
            if not should_suggest(True, screen_available, self._last_offer.get(session_id), now, self.cooldown_s):
                return False
            self._last_offer[session_id] = now
            self._last_offer.move_to_end(session_id)
            while len(self._last_offer) > self.max_sessions:
                self._last_offer.popitem(last=False)
            return True

    def _forget_expired(self, now: float) -> None:
        # Entries are in offer order, so expired ones are at the front.
        while self._last_offer:
            session, offered = next(iter(self._last_offer.items()))
            if now - offered < self.cooldown_s:
                break
            del self._last_offer[session]

    def __len__(self) -> int:
        """Sessions currently in their cooldown (or remembered until the next decision)."""
        return len(self._last_offer)
