"""Device-switch policy: when to offer "want to see these on your screen?".

    eligible       = screen_available is not False              (unknown counts as available)
                     AND the session was not offered a switch within the cooldown (default 10 minutes)
    suggest_switch = eligible AND image_seeking                 (explore rate E = 0, the default)

A wrong or repeated offer is friction, so the model's high-precision decision is gated twice more: no offer
when the user has no screen at hand, and at most one offer per session per cooldown. A request without a
`session_id` has no session to remember, so only the screen condition applies to it.

Exploration (`explore_rate` E > 0): for an eligible record, with probability E the offer is randomised (offered
with probability 1/2, whatever the score); otherwise the threshold decides. So every eligible record has a
known, non-zero chance of each action, and a later off-policy evaluation of another threshold has support:

    P(offer | eligible, score) = (1 - E) * [probability >= threshold] + E / 2        (0 when not eligible)

Every offer, explored or not, starts the session's cooldown; a query that was not offered anything leaves the
session's clock alone. Memory is bounded: sessions whose cooldown has passed are forgotten, and beyond
`max_sessions` remembered offers the oldest is dropped (that session could then be offered again early).
"""

from __future__ import annotations

import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

DEFAULT_COOLDOWN_S = 600.0
DEFAULT_MAX_SESSIONS = 100_000
EXPLORE_OFFER_PROB = 0.5  # an explored record is offered a switch with this probability, whatever its score


def should_suggest(
    image_seeking: bool, screen_available: bool | None, last_offer_s: float | None, now_s: float, cooldown_s: float
) -> bool:
    """The exploitation rule as a pure function of one decision (times in seconds, any common clock).

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
    return image_seeking and is_eligible(screen_available, last_offer_s, now_s, cooldown_s)


def is_eligible(screen_available: bool | None, last_offer_s: float | None, now_s: float, cooldown_s: float) -> bool:
    """Whether an offer may be made at all: a screen is (or may be) at hand and the session is not cooling down.

    >>> is_eligible(None, None, now_s=0.0, cooldown_s=600), is_eligible(False, None, now_s=0.0, cooldown_s=600)
    (True, False)
    """
    if screen_available is False:
        return False
    return last_offer_s is None or now_s - last_offer_s >= cooldown_s


def offer_propensity(image_seeking: bool, eligible: bool, explore_rate: float) -> float:
    """The exact probability that the policy offers a switch, given the decision at the threshold.

    >>> offer_propensity(True, True, 0.0), offer_propensity(False, True, 0.0)
    (1.0, 0.0)
    >>> offer_propensity(True, True, 0.25), offer_propensity(False, True, 0.25)   # (1 - E) + E / 2, E / 2
    (0.875, 0.125)
    >>> offer_propensity(True, False, 0.25)                                      # not eligible: never offered
    0.0
    """
    if not eligible:
        return 0.0
    return (1.0 - explore_rate) * float(image_seeking) + explore_rate * EXPLORE_OFFER_PROB


def policy_name(explore_rate: float) -> str:
    """The name written to the decision log.

    >>> policy_name(0.0), policy_name(0.05)
    ('threshold+cooldown', 'threshold+cooldown+explore')
    """
    return "threshold+cooldown+explore" if explore_rate > 0 else "threshold+cooldown"


@dataclass(frozen=True)
class Decision:
    """One policy decision. `propensity` = P(offer) before the coin flips (exact, see offer_propensity)."""

    offer: bool
    eligible: bool
    explored: bool
    propensity: float


class SwitchPolicy:
    """Remembers the last offer per session and flips the exploration coins; thread-safe (the server decides
    from several threads). `seed` makes the coins reproducible (in the order decisions are made).

    >>> clock = iter([0.0, 30.0, 700.0]).__next__
    >>> policy = SwitchPolicy(cooldown_s=600, clock=clock)
    >>> [policy.decide(True, True, "s1").offer for _ in range(3)]   # offered at 0 s, quiet at 30 s, again at 700 s
    [True, False, True]
    >>> SwitchPolicy(explore_rate=0.2, seed=0).decide(False, True, None)
    Decision(offer=False, eligible=True, explored=False, propensity=0.1)
    """

    def __init__(
        self,
        cooldown_s: float = DEFAULT_COOLDOWN_S,
        max_sessions: int = DEFAULT_MAX_SESSIONS,
        clock: Callable[[], float] = time.monotonic,
        explore_rate: float = 0.0,
        seed: int | None = None,
    ) -> None:
        if cooldown_s < 0:
            raise ValueError(f"cooldown must be >= 0 seconds, got {cooldown_s}")
        if max_sessions < 1:
            raise ValueError(f"max_sessions must be >= 1, got {max_sessions}")
        if not 0.0 <= explore_rate <= 1.0:
            raise ValueError(f"explore rate must be in [0, 1], got {explore_rate}")
        self.cooldown_s = float(cooldown_s)
        self.max_sessions = max_sessions
        self.explore_rate = float(explore_rate)
        self._clock = clock
        self._rng = random.Random(seed)
        self._last_offer: OrderedDict[str, float] = OrderedDict()  # session -> time of its last offer, oldest first
        self._lock = threading.Lock()

    @property
    def settings(self) -> dict[str, Any]:
        """What the decision log records about the policy (`policy` of a decision line)."""
        return {"name": policy_name(self.explore_rate), "cooldown_s": self.cooldown_s,
                "explore_rate": self.explore_rate}

    def decide(self, image_seeking: bool, screen_available: bool | None, session_id: str | None) -> Decision:
        """Whether to offer a switch now (and why); an offer starts the session's cooldown."""
        if screen_available is False:
            return Decision(False, False, False, 0.0)  # fast path: no clock, no lock
        with self._lock:  # one lock for cooldown state and coins: a seeded run is reproducible in decision order
            now = self._clock()
            if session_id is not None:
                self._forget_expired(now)
            last = self._last_offer.get(session_id) if session_id is not None else None
            eligible = is_eligible(screen_available, last, now, self.cooldown_s)
            explored = eligible and self.explore_rate > 0 and self._rng.random() < self.explore_rate
            offer = eligible and (self._rng.random() < EXPLORE_OFFER_PROB if explored else image_seeking)
            if offer and session_id is not None:
                self._last_offer[session_id] = now
                self._last_offer.move_to_end(session_id)
                while len(self._last_offer) > self.max_sessions:
                    self._last_offer.popitem(last=False)
        return Decision(offer, eligible, explored, offer_propensity(image_seeking, eligible, self.explore_rate))

    def draw(self, image_seeking: bool) -> tuple[bool, bool]:
        """The coins of one decision drawn before its eligibility is known, for a shared cooldown store
        (irp.serve.state) that checks eligibility and starts the cooldown in one atomic step: (explored, whether
        to offer if eligible). Same distribution as `decide`: P(offer | eligible) = (1 - E) [seeking] + E / 2.

        >>> SwitchPolicy(explore_rate=0.0).draw(True), SwitchPolicy(explore_rate=1.0, seed=0).draw(False)
        ((False, True), (True, False))
        """
        if self.explore_rate <= 0:
            return False, image_seeking
        with self._lock:
            explored = self._rng.random() < self.explore_rate
            return explored, (self._rng.random() < EXPLORE_OFFER_PROB if explored else image_seeking)

    def shared_decision(self, image_seeking: bool, eligible: bool, explored: bool, offered: bool) -> Decision:
        """The Decision once a shared store answered (`eligible`: not in the cooldown; `offered`: it started it)."""
        return Decision(offered, eligible, explored and eligible,
                        offer_propensity(image_seeking, eligible, self.explore_rate))

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
