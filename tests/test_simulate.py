"""The voice-shopping log simulator: determinism, statistics, knobs, records, CLI."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from irp.cli import app
from irp.data.catalog import CATEGORIES, CATEGORY_NAMES, PRODUCT_FIELDS, build_catalog
from irp.data.io import iter_records
from irp.data.simulate import SimConfig, simulate, simulate_to_file
from irp.schema import INTENTS, validate_record

runner = CliRunner()


@pytest.fixture(scope="module")
def records() -> list[dict]:
    """20K records with the default knobs (about 2 s)."""
    return list(simulate(SimConfig(n=20_000, seed=11)))


def _rates(recs: list[dict]) -> tuple[float, float, float]:
    label = np.array([r["label"] for r in recs])
    true = np.array([r["true_intent"] for r in recs])
    return float(label.mean()), float(true.mean()), float((label != true).mean())


# ---- determinism --------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path, suffix: str) -> None:
    paths = [tmp_path / f"{name}{suffix}" for name in ("a", "b", "c")]
    for path, seed in zip(paths, (3, 3, 4)):
        simulate_to_file(path, SimConfig(n=3_000, seed=seed), progress=False)
    a, b, c = (p.read_bytes() for p in paths)
    assert a == b
    assert a != c


def test_catalog_is_deterministic_and_complete() -> None:
    catalog = build_catalog(0)
    assert catalog == build_catalog(0) and catalog != build_catalog(1)
    assert len(catalog) >= 2_000
    assert {p["category"] for p in catalog} == set(CATEGORY_NAMES) and len(CATEGORY_NAMES) >= 20
    for p in catalog:
        assert tuple(sorted(p)) == tuple(sorted(PRODUCT_FIELDS))
        assert all(isinstance(p[f], str) and p[f] for f in PRODUCT_FIELDS if f != "price")
        assert isinstance(p["price"], float) and p["price"] > 0
    visual = {c.name: c.visual for c in CATEGORIES}
    assert min(visual[c] for c in ("apparel", "shoes", "jewelry", "furniture", "wall art")) > 0.8
    assert max(visual[c] for c in ("batteries", "paper goods", "detergent", "printer ink", "vitamins")) < 0.1


# ---- statistics of the default simulation --------------------------------------------------------


def test_rates_categories_and_intents(records: list[dict]) -> None:
    positive, true_rate, noise = _rates(records)
    assert 0.10 <= positive <= 0.45
    assert 0.10 <= true_rate <= 0.50
    assert 0.05 <= noise <= 0.25
    assert len({r["true_category"] for r in records}) >= 20
    assert len({p["category"] for r in records for p in r["products"]}) >= 20
    assert set(Counter(r["intent"] for r in records)) == set(INTENTS)


def test_visual_categories_want_to_be_seen_more(records: list[dict]) -> None:
    by_cat: dict[str, list[int]] = {}
    for r in records:
        by_cat.setdefault(r["true_category"], []).append(r["true_intent"])
    assert np.mean(by_cat["wall art"]) > 0.5 > 0.1 > np.mean(by_cat["batteries"])


def test_voice_style_utterances(records: list[dict]) -> None:
    utterances = [r["utterance"] for r in records]
    assert all(re.fullmatch(r"[a-z0-9 ]+", u) for u in utterances)  # lowercase, no punctuation
    assert sum(u.startswith(("alexa", "um", "uh", "hey alexa")) for u in utterances) > 0.1 * len(utterances)
    # Many queries name no category: vague needs and follow-ups.
    vague = sum(("gift for my" in u) or ("something for" in u) or ("how much is it" in u) for u in utterances)
    assert vague > 0.05 * len(utterances)
    assert len(set(utterances)) > 0.3 * len(utterances)  # templates repeat, but not a lookup table


def test_sessions_carry_context(records: list[dict]) -> None:
    by_session: dict[str, list[dict]] = {}
    for r in records:
        by_session.setdefault(r["session_id"], []).append(r)
    lengths = Counter(len(v) for v in by_session.values())
    assert lengths[1] > 0 and max(lengths) > 2
    for turns in by_session.values():
        for t, r in enumerate(turns):
            assert r["context"] == [x["utterance"] for x in turns[:t]]
            assert r["user_id"] == turns[0]["user_id"]


def test_retrieved_products_follow_the_target(records: list[dict]) -> None:
    same = np.mean([r["products"][0]["category"] == r["true_category"] for r in records if r["products"]])
    assert 0.75 < same < 0.99  # mostly relevant; failures and ambiguous words give irrelevant ones
    assert np.mean([len(r["products"]) == 5 for r in records]) > 0.95


# ---- knobs --------------------------------------------------------------------------------------


def test_label_noise_knobs() -> None:
    clean = list(simulate(SimConfig(n=4_000, seed=5, miss_rate=0.0, accidental_tap_rate=0.0, screen_rate=1.0)))
    noisy = list(simulate(SimConfig(n=4_000, seed=5, miss_rate=0.4, accidental_tap_rate=0.1)))
    assert _rates(clean)[2] < 0.03  # only the rare moments without a screen at hand
    assert _rates(noisy)[2] > 0.15
    # The knobs act on the tap only: the latent intent is drawn the same way.
    assert [r["true_intent"] for r in clean] == [r["true_intent"] for r in noisy]


def test_retrieval_failure_knob() -> None:
    def relevant(rate: float) -> float:
        recs = simulate(SimConfig(n=3_000, seed=2, retrieval_failure_rate=rate))
        return float(np.mean([r["products"][0]["category"] == r["true_category"] for r in recs]))

    assert relevant(0.0) > 0.8
    assert relevant(1.0) < 0.2


def test_asr_error_knob() -> None:
    def words(rate: float) -> set[str]:
        return {w for r in simulate(SimConfig(n=3_000, seed=2, asr_error_rate=rate)) for w in r["utterance"].split()}

    clean, garbled = words(0.0), words(0.3)
    assert len(garbled - clean) > 200  # misheard, clipped and merged words appear
    assert {"blew", "genes"} & garbled


def test_k_controls_products() -> None:
    recs = list(simulate(SimConfig(n=500, seed=1, k=3)))
    assert max(len(r["products"]) for r in recs) == 3


def test_bad_config_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="miss_rate"):
        SimConfig(n=10, miss_rate=1.5).check()
    with pytest.raises(ValueError, match="n must be"):
        list(simulate(SimConfig(n=0)))


# ---- records and files --------------------------------------------------------------------------


def test_records_pass_the_schema(records: list[dict]) -> None:
    for i, r in enumerate(records[:5_000]):
        clean = validate_record(r, i + 1)
        assert clean["utterance"] == r["utterance"] and clean["products"] == r["products"]
        assert set(clean["products"][0]) == set(PRODUCT_FIELDS)
    assert all(r["screen_available"] in (True, False) for r in records)
    assert np.mean([r["screen_available"] for r in records]) > 0.75


def test_parquet_fast_path_equals_record_path(tmp_path: Path) -> None:
    config = SimConfig(n=2_500, seed=9)
    summary = simulate_to_file(tmp_path / "s.parquet", config, progress=False)
    simulate_to_file(tmp_path / "s.jsonl", config, progress=False)
    from_parquet = list(iter_records(tmp_path / "s.parquet"))  # validates every record
    from_jsonl = list(iter_records(tmp_path / "s.jsonl"))
    assert from_parquet == from_jsonl
    assert [r["id"] for r in from_jsonl] == [r["id"] for r in simulate(config)]
    positive, _, noise = _rates(from_jsonl)
    assert summary.rows == 2_500 and summary.positive_rate == pytest.approx(positive)
    assert summary.label_noise_rate == pytest.approx(noise)
    assert sum(v["rows"] for v in summary.per_category.values()) == 2_500
    assert sum(summary.per_intent.values()) == 2_500


def test_cli_simulate(tmp_path: Path) -> None:
    out = tmp_path / "sim.jsonl.gz"
    result = runner.invoke(app, ["simulate", "--n", "300", "--seed", "2", "--out", str(out), "--k", "4"])
    assert result.exit_code == 0, result.output
    assert "300 records" in result.output and "positive rate" in result.output
    recs = list(iter_records(out))
    assert len(recs) == 300 and max(len(r["products"]) for r in recs) == 4


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--out", "x.csv"], "unsupported file type"),
        (["--out", "x.jsonl", "--miss-rate", "2"], "miss_rate"),
        (["--out", "x.jsonl", "--k", "0"], "k must be"),
    ],
)
def test_cli_simulate_bad_arguments(tmp_path: Path, args: list[str], message: str) -> None:
    args = [a if not a.startswith("x.") else str(tmp_path / a) for a in args]
    result = runner.invoke(app, ["simulate", "--n", "10", *args])
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output
