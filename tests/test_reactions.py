"""The simulated users' reactions to an offer: contract, determinism, rates."""

from __future__ import annotations

import numpy as np
import pytest

from irp.data.simulate import SimConfig, accept_probability, reactions, simulate, would_accept


def test_contract_events() -> None:
    rec = {"id": "a", "label": 1, "true_intent": 1}
    assert reactions(rec, False, 0) == ["carousel_tap"]
    assert reactions({**rec, "label": 0}, False, 0) == ["no_tap"]
    offered = reactions(rec, True, 0)
    assert len(offered) == 2 and offered[0] in ("offer_accepted", "offer_declined") and offered[1] == "carousel_tap"


def test_deterministic_in_seed_and_id_and_shared_by_counterfactuals() -> None:
    recs = [{"id": f"r{i}", "label": i % 2, "true_intent": 1} for i in range(400)]
    a = [reactions(r, True, 7) for r in recs]
    assert a == [reactions(r, True, 7) for r in recs]
    assert a != [reactions(r, True, 8) for r in recs]  # another seed, other draws
    # the taps do not depend on the offer; the accept answer is the counterfactual one
    assert [x[1:] for x in a] == [reactions(r, False, 7) for r in recs]
    assert [x[0] == "offer_accepted" for x in a] == [would_accept(r, 7) for r in recs]


def test_accept_rates_follow_true_intent() -> None:
    n = 20_000
    for intent in (0, 1):
        recs = [{"id": f"s{i}", "label": 0, "true_intent": intent} for i in range(n)]
        rate = np.mean([reactions(r, True, 1)[0] == "offer_accepted" for r in recs])
        p = accept_probability(intent)
        assert abs(rate - p) < 4 * np.sqrt(p * (1 - p) / n)


def test_on_simulated_records() -> None:
    recs = list(simulate(SimConfig(n=300, seed=3)))
    for r in recs:
        ev = reactions(r, True, 0)
        assert ev[1] == ("carousel_tap" if r["label"] == 1 else "no_tap")


def test_bad_records_raise() -> None:
    with pytest.raises(ValueError, match="label"):
        reactions({"id": "x"}, False, 0)
    with pytest.raises(ValueError, match="true_intent"):
        reactions({"id": "x", "label": 1}, True, 0)
    with pytest.raises(ValueError):
        accept_probability(2)
