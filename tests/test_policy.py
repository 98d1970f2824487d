"""The device-switch policy: image-seeking AND a screen AND no offer to the session within the cooldown."""

from __future__ import annotations

import threading

import pytest

from irp.policy import DEFAULT_COOLDOWN_S, Decision, SwitchPolicy, offer_propensity, policy_name, should_suggest


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
    assert not policy.decide(False, True, "s1").offer
    assert not policy.decide(False, None, None).offer
    assert len(policy) == 0  # no offer, no cooldown started


def test_screen_unavailable_blocks_and_unknown_screen_allows() -> None:
    policy = SwitchPolicy(clock=Clock())
    assert not policy.decide(True, False, "s1").offer
    assert len(policy) == 0  # a blocked offer does not start the cooldown
    assert policy.decide(True, None, "s1").offer  # unknown counts as available
    assert policy.decide(True, True, "s2").offer


def test_cooldown_per_session() -> None:
    clock = Clock()
    policy = SwitchPolicy(cooldown_s=600, clock=clock)
    assert policy.decide(True, True, "s1").offer
    clock.now += 599.9
    assert not policy.decide(True, True, "s1").offer  # still in its cooldown
    assert policy.decide(True, True, "s2").offer  # other sessions are independent
    clock.now += 0.1
    assert policy.decide(True, True, "s1").offer  # 600 s after the offer
    assert not policy.decide(True, True, "s1").offer  # and the cooldown restarts


def test_quiet_queries_do_not_extend_the_cooldown() -> None:
    clock = Clock()
    policy = SwitchPolicy(cooldown_s=600, clock=clock)
    assert policy.decide(True, True, "s1").offer
    for _ in range(5):  # repeated image-seeking queries inside the cooldown are not offers
        clock.now += 100
        assert not policy.decide(True, True, "s1").offer
    clock.now += 100  # 600 s after the only offer
    assert policy.decide(True, True, "s1").offer


def test_without_session_there_is_no_cooldown() -> None:
    policy = SwitchPolicy(clock=Clock())
    assert all(policy.decide(True, True, None).offer for _ in range(3))
    assert len(policy) == 0


def test_zero_cooldown_always_offers() -> None:
    policy = SwitchPolicy(cooldown_s=0, clock=Clock())
    assert all(policy.decide(True, True, "s1").offer for _ in range(3))


def test_memory_is_bounded_and_expired_sessions_are_forgotten() -> None:
    clock = Clock()
    policy = SwitchPolicy(cooldown_s=600, max_sessions=3, clock=clock)
    for i in range(5):
        assert policy.decide(True, True, f"s{i}").offer
    assert len(policy) == 3  # the two oldest offers were dropped
    assert policy.decide(True, True, "s0").offer  # forgotten, so offered again (documented trade-off)
    assert not policy.decide(True, True, "s4").offer
    clock.now += 600
    assert not policy.decide(False, True, None).offer  # no session: memory untouched ...
    assert len(policy) == 3
    assert policy.decide(True, True, "s9").offer  # ... a decision for a session sweeps the expired ones
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
            offered = policy.decide(True, True, "shared").offer
            with lock:
                offers.append(offered)

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(offers) == 1 and len(offers) == 1600


# ---- exploration and propensities -------------------------------------------------------------------------
def test_decision_reports_eligibility_and_exact_propensity_without_exploration() -> None:
    clock = Clock()
    policy = SwitchPolicy(cooldown_s=600, clock=clock)
    assert policy.decide(True, True, "s1") == Decision(True, True, False, 1.0)
    assert policy.decide(True, True, "s1") == Decision(False, False, False, 0.0)  # cooling down: not eligible
    assert policy.decide(False, None, "s2") == Decision(False, True, False, 0.0)
    assert policy.decide(True, False, "s3") == Decision(False, False, False, 0.0)  # no screen
    assert policy.settings == {"name": "threshold+cooldown", "cooldown_s": 600.0, "explore_rate": 0.0}


def test_exploration_is_seeded_and_its_propensity_exact() -> None:
    def run(seed: int) -> list[Decision]:
        policy = SwitchPolicy(cooldown_s=0, clock=Clock(), explore_rate=0.3, seed=seed)
        return [policy.decide(i % 2 == 0, True, None) for i in range(4000)]

    first = run(7)
    assert first == run(7) and first != run(8)  # deterministic with a seed
    explored = [d for d in first if d.explored]
    assert 0.25 < len(explored) / len(first) < 0.35
    assert 0.45 < sum(d.offer for d in explored) / len(explored) < 0.55  # explored: offered half the time
    for i, d in enumerate(first):
        assert d.eligible
        assert d.propensity == pytest.approx(0.85 if i % 2 == 0 else 0.15)  # (1 - E) * [seeking] + E / 2
        if not d.explored:
            assert d.offer == (i % 2 == 0)  # exploitation follows the threshold
    # the empirical offer rate matches the logged propensity
    seeking = [d for i, d in enumerate(first) if i % 2 == 0]
    assert abs(sum(d.offer for d in seeking) / len(seeking) - 0.85) < 0.03


def test_explored_offer_starts_the_cooldown_and_ineligible_records_are_not_explored() -> None:
    clock = Clock()
    policy = SwitchPolicy(cooldown_s=600, clock=clock, explore_rate=1.0, seed=1)
    decisions = [policy.decide(False, True, "s1") for _ in range(20)]
    first_offer = next(i for i, d in enumerate(decisions) if d.offer)
    assert all(d.explored and d.propensity == 0.5 for d in decisions[: first_offer + 1])
    after = decisions[first_offer + 1 :]
    assert after and all(not d.eligible and not d.explored and not d.offer and d.propensity == 0.0 for d in after)
    assert not policy.decide(True, False, "s2").explored  # no screen: never explored


def test_propensity_rule_and_names() -> None:
    for rate in (0.0, 0.1, 0.5, 1.0):
        assert offer_propensity(True, True, rate) == pytest.approx(1 - rate / 2)
        assert offer_propensity(False, True, rate) == pytest.approx(rate / 2)
        assert offer_propensity(True, False, rate) == 0.0
    assert policy_name(0.0) == "threshold+cooldown" and policy_name(0.01) == "threshold+cooldown+explore"
    with pytest.raises(ValueError, match="explore rate"):
        SwitchPolicy(explore_rate=1.5)
