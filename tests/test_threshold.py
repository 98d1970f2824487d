"""Threshold choice against brute force and scikit-learn's precision_recall_curve; the certified rule's bound
against scipy.stats, the whole rule against a brute-force reference, and its coverage on simulated draws."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import beta, binom, binomtest, norm
from sklearn.metrics import fbeta_score, precision_recall_curve

from irp.threshold import (
    PrecisionTargetWarning,
    ThresholdChoice,
    choose_threshold,
    clustered_counts,
    default_min_predicted,
    guarantee_sentence,
    min_certifiable,
    operating_points,
    precision_lower_bound,
    precision_lower_bounds,
    records_needed,
)


def brute_force(y: np.ndarray, s: np.ndarray, target: float) -> tuple[float, str]:
    """(threshold, rule) by trying every distinct score with plain numpy, as the spec words it."""
    rows = []
    for t in sorted(set(s.tolist()), reverse=True):  # descending: the first best is the highest threshold
        pred = s >= t
        tp = int((pred & (y == 1)).sum())
        precision, recall = tp / pred.sum(), tp / y.sum()
        f05 = 1.25 * precision * recall / (0.25 * precision + recall) if tp else 0.0
        rows.append((t, precision, recall, f05))
    feasible = [r for r in rows if r[1] >= target - 1e-12]
    if feasible:
        best = max(r[2] for r in feasible)
        return next(r[0] for r in feasible if r[2] == best), "max_recall_at_precision"
    best = max(r[3] for r in rows)
    return next(r[0] for r in rows if r[3] == pytest.approx(best, abs=1e-12)), "max_f05_fallback"


samples = st.integers(1, 50).flatmap(
    lambda n: st.tuples(
        st.lists(st.integers(0, 1), min_size=n, max_size=n).filter(lambda y: sum(y) > 0),
        st.lists(st.integers(0, 8).map(lambda v: v / 8), min_size=n, max_size=n),  # many ties
    )
)


@settings(max_examples=200, deadline=None)
@given(samples, st.sampled_from([0.5, 0.6, 2 / 3, 0.75, 0.8, 0.9, 1.0]))
def test_choice_equals_brute_force(data: tuple[list[int], list[float]], target: float) -> None:
    y, s = np.array(data[0]), np.array(data[1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrecisionTargetWarning)
        choice = choose_threshold(y, s, target, confidence=0)
    threshold, rule = brute_force(y, s, target)
    assert (choice.threshold, choice.rule) == (threshold, rule)
    assert choice.reached == (rule == "max_recall_at_precision")
    pred = s >= choice.threshold  # the reported metrics are those of `score >= threshold`
    assert choice.precision == pytest.approx(y[pred].mean())
    assert choice.recall == pytest.approx(y[pred].sum() / y.sum())
    assert choice.f05 == pytest.approx(fbeta_score(y, pred.astype(int), beta=0.5))
    if choice.reached:
        assert choice.precision >= target - 1e-12


@settings(max_examples=100, deadline=None)
@given(samples)
def test_operating_points_match_sklearn_precision_recall_curve(data: tuple[list[int], list[float]]) -> None:
    y, s = np.array(data[0]), np.array(data[1])
    op = operating_points(y, s)
    precision, recall, thresholds = precision_recall_curve(y, s)
    # sklearn: thresholds ascending with one extra (P=1, R=0) end point; ours: every distinct score, descending.
    ours = dict(zip(op.thresholds.tolist(), zip(op.precision.tolist(), op.recall.tolist())))
    assert set(thresholds.tolist()) <= set(ours)
    for t, p, r in zip(thresholds, precision[:-1], recall[:-1]):
        assert ours[t] == pytest.approx((p, r))


def test_exact_ties_and_exact_target() -> None:
    # Scores 0.9 (1 pos), 0.5 tied (3 pos, 1 neg), 0.1 (1 neg): at 0.5 precision is exactly 4/5 = 0.8.
    y = [1, 1, 1, 0, 1, 0]
    s = [0.9, 0.5, 0.5, 0.5, 0.5, 0.1]
    choice = choose_threshold(y, s, 0.8, confidence=0)
    assert choice == ThresholdChoice(
        threshold=0.5,
        rule="max_recall_at_precision",
        precision=0.8,
        recall=1.0,
        f05=pytest.approx(1.25 * 4 / (1.25 * 4 + 1)),  # type: ignore[arg-type]
        target_precision=0.8,
        reached=True,
        message=choice.message,
        n=6,
        positives=4,
        predicted_positive=5,
    )
    # The tied block is all-or-nothing: with 0.81 no threshold between 0.9 and 0.5 exists.
    assert choose_threshold(y, s, 0.81, confidence=0).threshold == 0.9


def test_equal_recall_prefers_the_higher_threshold() -> None:
    # Thresholds 0.8 and 0.6 both give recall 1 and precision >= 0.5; 0.8 has the higher precision.
    choice = choose_threshold([1, 0, 0], [0.8, 0.6, 0.2], 0.5, confidence=0)
    assert (choice.threshold, choice.precision, choice.recall) == (0.8, 1.0, 1.0)


def test_fallback_is_loud() -> None:
    y, s = [0, 1, 0, 1, 0, 0], [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]
    with pytest.warns(PrecisionTargetWarning, match="TARGET PRECISION NOT REACHED"):
        choice = choose_threshold(y, s, 0.9, confidence=0)
    assert choice.rule == "max_f05_fallback" and not choice.reached
    assert "0.9" in choice.message and "F0.5" in choice.message
    assert choice.threshold == 0.6  # F0.5 is 0.5 at 0.6 vs 0.3846 at 0.8


def test_choice_is_frozen_and_degenerate_inputs_raise() -> None:
    choice = choose_threshold([0, 1], [0.1, 0.9], confidence=0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        choice.threshold = 0.0  # type: ignore[misc]
    with pytest.raises(ValueError, match="no positive example"):
        choose_threshold([0, 0], [0.1, 0.9])
    with pytest.raises(ValueError, match="no examples"):
        choose_threshold([], [])
    with pytest.raises(ValueError, match="target precision"):
        choose_threshold([0, 1], [0.1, 0.9], target_precision=0.0)
    with pytest.raises(ValueError, match="confidence must be in"):
        choose_threshold([0, 1], [0.1, 0.9], confidence=1.0)
    with pytest.raises(ValueError, match="confidence must be in"):
        choose_threshold([0, 1], [0.1, 0.9], confidence=-0.1)
    with pytest.warns(PrecisionTargetWarning, match="precision 1 can never be certified"):
        assert choose_threshold([0, 1], [0.1, 0.9], target_precision=1.0, confidence=0.9).rule == "max_f05_fallback"
    assert choose_threshold([0, 1], [0.1, 0.9], target_precision=1.0, confidence=0).reached  # point rule allows 1


# ---- the certified rule -----------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 400).flatmap(lambda m: st.tuples(st.integers(0, m), st.just(m))),
       st.sampled_from([0.5, 0.8, 0.9, 0.95, 0.99]))
def test_bound_is_scipys_one_sided_clopper_pearson(km: tuple[int, int], confidence: float) -> None:
    k, m = km
    ours = precision_lower_bound(k, m, confidence)
    # scipy's exact one-sided interval: binomtest(..., alternative="greater") gives [low, 1]
    low = binomtest(k, m, alternative="greater").proportion_ci(confidence_level=confidence, method="exact").low
    assert ours == pytest.approx(low, abs=1e-9)
    if k > 0:  # the defining tail: P(Binom(m, L) >= k) = 1 - confidence at the bound
        assert binom.sf(k - 1, m, ours) == pytest.approx(1 - confidence, rel=1e-6)
        assert ours == pytest.approx(beta.ppf(1 - confidence, k, m - k + 1))
    else:
        assert ours == 0.0


def test_bounds_are_vectorised_and_checked() -> None:
    k, m = np.array([0, 5, 10, 90]), np.array([3, 10, 10, 100])
    np.testing.assert_allclose(precision_lower_bounds(k, m, 0.9), [precision_lower_bound(a, b, 0.9) for a, b in zip(k, m)])
    with pytest.raises(ValueError, match="0 <= tp <= predicted"):
        precision_lower_bounds([4], [3], 0.9)
    with pytest.raises(ValueError, match="confidence in"):
        precision_lower_bounds([1], [3], 0.0)


def test_min_certifiable_and_records_needed_match_a_search() -> None:
    for target, confidence in [(0.8, 0.9), (0.9, 0.9), (0.8, 0.95), (0.5, 0.99), (0.95, 0.8)]:
        n = next(n for n in range(1, 10_000) if precision_lower_bound(n, n, confidence) >= target)
        assert min_certifiable(target, confidence) == n
    # records_needed: the smallest m whose bound at floor(precision * m) correct reaches the target (near enough:
    # the bound is not monotone in m when floor() steps, so check it certifies and that m - 1 does not)
    for precision in (0.85, 0.9, 0.95):
        m = records_needed(precision, 0.8, 0.9)
        assert m is not None and precision_lower_bound(int(precision * m + 1e-9), m, 0.9) >= 0.8
        assert precision_lower_bound(int(precision * (m - 1) + 1e-9), m - 1, 0.9) < 0.8
    assert records_needed(0.8, 0.8, 0.9) is None and records_needed(0.7, 0.8, 0.9) is None
    assert default_min_predicted(100, 0.8, 0.9) == 11 and default_min_predicted(1000, 0.8, 0.9) == 50


def certified_reference(y: np.ndarray, s: np.ndarray, target: float, confidence: float,
                        min_predicted: int | None) -> tuple[float, str]:
    """(threshold, rule) of the certified rule, as the issue words it, with plain numpy and scipy.stats."""
    n = len(y)
    start = min_predicted or max(min_certifiable(target, confidence), int(np.ceil(0.05 * n)))
    thresholds = sorted(set(s.tolist()), reverse=True)
    passed = None
    started = False
    for i, t in enumerate(thresholds):
        pred = s >= t
        if pred.sum() < start and i < len(thresholds) - 1:
            continue  # the scan starts at the first threshold predicting >= start records (or the lowest one)
        started = True
        k, m = int(y[pred].sum()), int(pred.sum())
        # Clopper-Pearson via the beta quantile (equal to binomtest's exact interval: tested above, and faster)
        low = beta.ppf(1 - confidence, k, m - k + 1) if k else 0.0
        if low < target:
            break
        passed = t
    assert started
    if passed is not None:
        return passed, "certified_precision"
    f05 = []
    for t in thresholds:
        tp, predicted = int(y[s >= t].sum()), int((s >= t).sum())
        f05.append(1.25 * tp / (1.25 * tp + 0.25 * (y.sum() - tp) + (predicted - tp)))
    best = max(f05)
    return next(t for t, f in zip(thresholds, f05) if f >= best - 1e-12), "max_f05_fallback"


certified_samples = st.integers(5, 80).flatmap(
    lambda n: st.tuples(
        st.lists(st.integers(0, 1), min_size=n, max_size=n).filter(lambda y: sum(y) > 0),
        st.lists(st.integers(0, 30).map(lambda v: v / 30), min_size=n, max_size=n),
    )
)


@settings(max_examples=150, deadline=None)
@given(certified_samples, st.sampled_from([0.3, 0.5, 0.6, 0.8]), st.sampled_from([0.5, 0.8, 0.9]),
       st.sampled_from([None, 1, 3, 8]))
def test_certified_rule_equals_brute_force(data: tuple[list[int], list[float]], target: float, confidence: float,
                                           min_predicted: int | None) -> None:
    y, s = np.array(data[0]), np.array(data[1])  # random labels: mostly fallbacks, low targets certify
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrecisionTargetWarning)
        choice = choose_threshold(y, s, target, confidence, min_predicted=min_predicted)
    threshold, rule = certified_reference(y, s, target, confidence, min_predicted)
    assert (choice.threshold, choice.rule) == (threshold, rule)
    pred = s >= choice.threshold
    assert (choice.n, choice.positives, choice.predicted_positive) == (len(y), y.sum(), pred.sum())
    assert choice.lower_bound == pytest.approx(precision_lower_bound(int(y[pred].sum()), int(pred.sum()), confidence))
    if rule == "certified_precision":
        assert choice.reached and choice.lower_bound >= target


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10_000))
def test_certified_rule_on_informative_scores_equals_brute_force(seed: int) -> None:
    """Scores that rank positives first (a trained model): the certified branch is exercised, not only fallbacks."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 150))
    y = (rng.random(n) < 0.4).astype(int)
    y[0] = 1
    s = np.round(rng.normal(0, 1, n) + 2.5 * y, 1)
    target, confidence = float(rng.choice([0.6, 0.7, 0.8])), float(rng.choice([0.8, 0.9, 0.95]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrecisionTargetWarning)
        choice = choose_threshold(y, s, target, confidence)
    assert (choice.threshold, choice.rule) == certified_reference(y, s, target, confidence, None)


def gaussian_population(pi: float = 0.21, mu: float = 2.0):
    """Class-conditional N(0, 1) / N(mu, 1) scores: the population precision of `score >= t` is known exactly."""

    def draw(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        y = (rng.random(n) < pi).astype(int)
        return y, rng.normal(0, 1, n) + mu * y

    def precision(t: float) -> float:
        tp, fp = pi * norm.sf(t - mu), (1 - pi) * norm.sf(t)
        return tp / (tp + fp)

    return draw, precision


def test_certified_threshold_keeps_its_promise_on_new_records() -> None:
    """The guarantee, measured: over 300 validation draws the chosen threshold's *population* precision reaches the
    target in >= ~90 % of draws at confidence 0.9, where the point rule's does about half the time."""
    draw, population_precision = gaussian_population()
    rng = np.random.default_rng(0)
    covered: dict[float, list[bool]] = {0.9: [], 0.0: []}
    recall: dict[float, list[float]] = {0.9: [], 0.0: []}
    for _ in range(300):
        y, s = draw(rng, 1000)
        for confidence in covered:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", PrecisionTargetWarning)
                c = choose_threshold(y, s, 0.8, confidence)
            covered[confidence].append(population_precision(c.threshold) >= 0.8)
            recall[confidence].append(c.recall)
    # measured: 0.94 certified vs 0.55 point (binomial s.e. of a 0.9 coverage over 300 draws: 0.017)
    assert np.mean(covered[0.9]) >= 0.87
    assert np.mean(covered[0.0]) <= 0.7
    # the price: some recall (population recall at exactly precision 0.8 is 0.597)
    assert 0.35 < np.median(recall[0.9]) < np.median(recall[0.0])


def test_the_default_start_certifies_where_starting_at_n_min_fails() -> None:
    """3,500 records, 21 % positives, precision 0.9 in the top 20 % of scores: starting the scan at 5 % of the
    records certifies in every draw; starting at n_min (11) stops at the first early negative most of the time."""
    rng = np.random.default_rng(1)
    reached_default = reached_nmin = 0
    for _ in range(100):
        s = rng.random(3500)
        y = (rng.random(3500) < np.where(s > 0.8, 0.9, (0.21 - 0.2 * 0.9) / 0.8)).astype(int)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PrecisionTargetWarning)
            reached_default += choose_threshold(y, s, 0.8, 0.9).reached
            reached_nmin += choose_threshold(y, s, 0.8, 0.9, min_predicted=min_certifiable(0.8, 0.9)).reached
    assert reached_default >= 98 and reached_nmin <= 60  # measured: 100 and 32


def test_certified_fallback_message_gives_the_best_bound_and_the_data_needed() -> None:
    # 200 records, flat validation precision 0.9 over the top 100 (one negative in ten), 10 positives below: the
    # first step (11 records, 10 correct) cannot certify 0.8 at 90 %, though the top 100 would (bound 0.85).
    y = np.array(([1] * 9 + [0]) * 10 + [1] + [0] * 9 + [1] * 9 + [0] * 81)
    s = np.linspace(1, 0, len(y))
    with pytest.warns(PrecisionTargetWarning, match="TARGET PRECISION NOT CERTIFIED") as caught:
        choice = choose_threshold(y, s, 0.8, 0.9)
    assert choice.rule == "max_f05_fallback" and not choice.reached
    message = str(caught[0].message)
    assert message == choice.message
    first = precision_lower_bound(int(y[:11].sum()), 11, 0.9)
    best = max(precision_lower_bound(int(y[:m].sum()), m, 0.9) for m in range(11, len(y) + 1))
    assert best >= 0.8 > first  # a later step would pass: the fixed sequence stopped at the first one
    assert f"the scan starts at 11 predicted positives, validation precision 0.909, lower bound {first:.3f}" in message
    assert f"the best bound reached is {best:.3f}" in message
    # The best bound is at the top 110 (precision 100/110), where 32 records are needed in the first step; the
    # first step is 5 % of n', so n' = 640 = 3.2 x 200 records, and 3.2 x 100 positives.
    assert records_needed(100 / 110, 0.8, 0.9) == 32
    assert "first step needs about 32 predicted positives (it holds 11)" in message
    assert "a validation file about 3.2x as large: roughly 320 validation positives (this file has 100)" in message
    assert "fell back to the F0.5-maximising threshold" in message
    assert guarantee_sentence(choice).startswith("No guarantee: the target precision 0.8 could not be certified")
    with pytest.warns(PrecisionTargetWarning, match="raise min_predicted"):  # a fixed first step does not grow
        choose_threshold(y, s, 0.8, 0.9, min_predicted=11)


def test_fallback_says_when_the_top_is_the_problem_or_the_precision_is_too_low() -> None:
    # The first 50 records (5 % of 1000) are 60 % precise, the next 500 all positive: data is not the issue.
    y = np.array([1, 1, 1, 0, 0] * 10 + [1] * 500 + [0] * 450)
    with pytest.warns(PrecisionTargetWarning) as caught:
        choose_threshold(y, np.linspace(1, 0, len(y)), 0.8, 0.9)
    assert "the top-scored records are less precise than those below them" in str(caught[0].message)
    # When precision is nowhere above the target, more data cannot help, and the message says so.
    with pytest.warns(PrecisionTargetWarning):
        poor = choose_threshold([1, 0] * 20, np.linspace(1, 0, 40), 0.8, 0.9)
    assert "more validation data would not help" in poor.message


def test_guarantee_sentences_name_what_is_covered() -> None:
    y, s = [1] * 40 + [0] * 60, np.linspace(1, 0, 100)
    certified = choose_threshold(y, s, 0.8, 0.9)
    text = guarantee_sentence(certified)
    assert "90 %" in text and "at least 0.8" in text and "same distribution as the validation file" in text
    assert "drift" in text and f"{certified.lower_bound:.3f}" in text
    assert guarantee_sentence(choose_threshold(y, s, 0.8, 0)).startswith("No guarantee: the threshold reaches")


def test_confidence_accepts_numpy_scalars() -> None:
    y, s = [1] * 40 + [0] * 60, np.linspace(1, 0, 100)
    assert choose_threshold(y, s, 0.8, np.float32(0.9)).confidence == pytest.approx(0.9)


def design_effect_brute_force(y: np.ndarray, groups: np.ndarray) -> tuple[float, float]:
    """(tp_eff, predicted_eff) of one predicted set, from the formula with a loop over groups."""
    m, tp = y.size, float(y.sum())
    p = tp / m
    keys = sorted(set(groups.tolist()))
    spread = sum((y[groups == k].sum() - p * (groups == k).sum()) ** 2 for k in keys)
    c = len(keys)
    v_cluster = c / (c - 1) * spread / m**2 if c > 1 else 0.0
    v_binomial = p * (1 - p) / (m - 1) if m > 1 else 0.0
    deff = max(v_cluster / v_binomial, 1.0) if v_binomial > 0 else 1.0
    return tp / deff, m / deff


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10_000))
def test_clustered_counts_equal_the_formula_at_every_cut(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 60))
    y = (rng.random(n) < rng.random()).astype(int)
    groups = rng.integers(0, int(rng.integers(1, 12)), n).astype(str)
    end = np.unique(rng.integers(0, n, 5))
    tp_eff, m_eff = clustered_counts(y, groups, end)
    for j, e in enumerate(end):
        want = design_effect_brute_force(y[: e + 1], groups[: e + 1])
        assert tp_eff[j] == pytest.approx(want[0]) and m_eff[j] == pytest.approx(want[1])


def test_groups_of_one_record_change_nothing_and_groups_must_match() -> None:
    rng = np.random.default_rng(3)
    y = (rng.random(2000) < 0.3).astype(int)
    s = rng.normal(0, 1, 2000) + 2.0 * y
    plain = choose_threshold(y, s, 0.8, 0.9)
    single = choose_threshold(y, s, 0.8, 0.9, groups=np.arange(2000))
    assert single.threshold == plain.threshold
    assert single.lower_bound == pytest.approx(plain.lower_bound, rel=1e-9) and single.design_effect == pytest.approx(1)
    assert np.isnan(plain.design_effect)
    with pytest.raises(ValueError, match="one key per record"):
        choose_threshold(y, s, 0.8, 0.9, groups=np.arange(10))


def test_grouped_certificate_keeps_its_promise_where_the_binomial_one_does_not() -> None:
    """Sessions of 6 records that share one label and nearly one score: the binomial bound counts 6 records where
    there is one, so its coverage collapses; counting effective records restores it (population precision known
    exactly, as in the test above; 300 draws of 200 sessions)."""
    draw, population_precision = gaussian_population()
    rng = np.random.default_rng(5)
    covered: dict[str, list[bool]] = {"binomial": [], "grouped": []}
    for _ in range(300):
        y0, s0 = draw(rng, 200)
        y, groups = np.repeat(y0, 6), np.repeat(np.arange(200), 6)
        s = np.repeat(s0, 6) + rng.normal(0, 1e-3, 1200)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PrecisionTargetWarning)
            for rule, keys in (("binomial", None), ("grouped", groups)):
                c = choose_threshold(y, s, 0.8, 0.9, groups=keys)
                covered[rule].append(not c.reached or population_precision(c.threshold) >= 0.8)
    # measured: 0.79 binomial (below the 0.9 it promises), 0.97 grouped
    assert np.mean(covered["binomial"]) <= 0.85
    assert np.mean(covered["grouped"]) >= 0.9
