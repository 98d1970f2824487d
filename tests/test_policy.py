"""The device-switch policy: image-seeking AND a screen AND no offer to the session within the cooldown."""

from __future__ import annotations

import threading

import pytest

from irp.policy import DEFAULT_COOLDOWN_S, SwitchPolicy, should_suggest


class Clock:
    """A hand-driven clock (seconds)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_default_cooldown_is_ten_minutes() -> None:
    assert DEFAULT_COOLDOWN_S == 600.0
    assert SwitchPolicy().cooldown_s == 600.0


def test_not_image_seeking_is_never_offered() -> None:
    policy = SwitchPolicy(clock=Clock())
    assert not policy.decide(False, True, "s1")
    assert not policy.decide(False, None, None)
    assert len(policy) == 0  # no offer, no cooldown started


def test_screen_unavailable_blocks_and_unknown_screen_allows() -> None:
    policy = SwitchPolicy(clock=Clock())
    assert not policy.decide(True, False, "s1")
    assert len(policy) == 0  # a blocked offer does not start the cooldown
    assert policy.decide(True, None, "s1")  # unknown counts as available
    assert policy.decide(True, True, "s2")


def test_cooldown_per_session() -> None:
    clock = Clock()
    policy = SwitchPolicy(cooldown_s=600, clock=clock)
    assert policy.decide(True, True, "s1")
    clock.now += 599.9
    assert not policy.decide(True, True, "s1")  # still in its cooldown
    assert policy.decide(True, True, "s2")  # other sessions are independent
    clock.now += 0.1
    assert policy.decide(True, True, "s1")  # 600 s after the offer
    assert not policy.decide(True, True, "s1")  # and the cooldown restarts


def test_quiet_queries_do_not_extend_the_cooldown() -> None:
    clock = Clock()
    policy = SwitchPolicy(cooldown_s=600, clock=clock)
    assert policy.decide(True, True, "s1")
    for _ in range(5):  # repeated image-seeking queries inside the cooldown are not offers
        clock.now += 100
        assert not policy.decide(True, True, "s1")
    clock.now += 100  # 600 s after the only offer
    assert policy.decide(True, True, "s1")


def test_without_session_there_is_no_cooldown() -> None:
    policy = SwitchPolicy(clock=Clock())
    assert all(policy.decide(True, True, None) for _ in range(3))
    assert len(policy) == 0


def test_zero_cooldown_always_offers() -> None:
    policy = SwitchPolicy(cooldown_s=0, clock=Clock())
    assert all(policy.decide(True, True, "s1") for _ in range(3))


def test_memory_is_bounded_and_expired_sessions_are_forgotten() -> None:
    clock = Clock()
    policy = SwitchPolicy(cooldown_s=600, max_sessions=3, clock=clock)
    for i in range(5):
        assert policy.decide(True, True, f"s{i}")
    assert len(policy) == 3  # the two oldest offers were dropped
    assert policy.decide(True, True, "s0")  # forgotten, so offered again (documented trade-off)
    assert not policy.decide(True, True, "s4")
    clock.now += 600
    policy.decide(False, True, "x")  # a non-offer does not touch memory ...
    assert policy.decide(True, True, "s9")  # ... the next offer sweeps the expired ones
    assert len(policy) == 1


def test_invalid_settings_are_rejected() -> None:
    with pytest.raises(ValueError, match="cooldown"):
        SwitchPolicy(cooldown_s=-1)
    with pytest.raises(ValueError, match="max_sessions"):
        SwitchPolicy(max_sessions=0)


def test_pure_rule_matches_the_stateful_policy() -> None:
    for seeking in (True, False):
        for screen in (True, False, None):
            for last in (None, 0.0, 500.0):
                expected = seeking and screen is not False and (last is None or 600.0 - last >= 600)
                assert should_suggest(seeking, screen, last, now_s=600.0, cooldown_s=600) == expected


def test_one_offer_per_session_under_concurrency() -> None:
    policy = SwitchPolicy(cooldown_s=600, clock=Clock())
    offers: list[bool] = []
    lock = threading.Lock()

    def hammer() -> None:
        for _ in range(200):
            offered = policy.decide(True, True, "shared")
            with lock:
                offers.append(offered)

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(offers) == 1 and len(offers) == 1600
