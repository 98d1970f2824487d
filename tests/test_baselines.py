"""Baselines: estimator behaviour, the fit/threshold/report protocol and `irp baseline`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from irp.baselines import (
    CUE_GROUPS,
    KeywordBaseline,
    MajorityBaseline,
    TfidfLRBaseline,
    cue_counts,
    field_text,
    labels_of,
    make_baseline,
    run_baseline,
)
from irp.cli import app
from irp.data.io import write_records
from irp.schema import validate_record
from irp.threshold import PrecisionTargetWarning


def flat(text: str) -> str:
    """CLI output with rich's line wrapping undone."""
    return " ".join(text.split())


VISUAL = ["show me red dresses", "can I see a picture of it", "any floral skirts", "what does it look like",
          "show me something similar", "let me see other colors", "striped sweaters please", "show me boots"]
OTHER = ["add it to my cart", "how much does it cost", "what sizes are there", "buy it", "reorder my coffee",
         "is it in stock", "what is the return policy", "checkout now"]  # fmt: skip


def toy(n_repeat: int = 6, seed: int = 0) -> list[dict[str, Any]]:
    """Labelled records: visual requests are positive; a product title hints the category."""
    rng = np.random.default_rng(seed)
    records = []
    for i in range(n_repeat):
        for j, u in enumerate(VISUAL + OTHER):
            label = int(u in VISUAL)
            title = "Floral Maxi Dress" if rng.random() < 0.5 else "Ground Coffee 1kg"
            records.append(
                validate_record(
                    {"id": f"{i}-{j}", "utterance": u, "label": label, "session_id": f"s{i}-{j}",
                     "products": [{"title": title, "color": ["red"]}]}
                )
            )  # fmt: skip
    return records


def test_majority_predicts_the_training_prior() -> None:
    train = toy()
    model = MajorityBaseline()
    assert model.fit(train) is model
    proba = model.predict_proba(train[:5])
    assert proba.shape == (5, 2) and np.allclose(proba[:, 1], 0.5) and np.allclose(proba.sum(axis=1), 1)
    with pytest.raises(RuntimeError, match="not fitted"):
        MajorityBaseline().predict_proba(train)


def test_keyword_cues_and_scores() -> None:
    counts = cue_counts(["Show me the RED striped dress, what does it look like?"])
    groups = dict(zip(CUE_GROUPS, counts[0]))
    assert groups["view_request"] == 2 and groups["color"] == 1 and groups["pattern"] == 1
    assert groups["visual_category"] == 1 and groups["alternatives"] == 0
    assert cue_counts(["reshow", "showroom", "redo"]).sum() == 0  # whole words only
    model = KeywordBaseline().fit([])
    p = model.predict_proba([{"utterance": u} for u in VISUAL + OTHER])[:, 1]
    assert ((p > 0) & (p < 1)).all()
    assert p[: len(VISUAL)].min() > p[len(VISUAL) :].max()  # every visual request outranks every other


def test_keyword_learned_weights_fit_the_data() -> None:
    train = toy()
    model = KeywordBaseline(learn_weights=True).fit(train)
    assert model.weights_.shape == (len(CUE_GROUPS),)
    assert model.weights_[CUE_GROUPS.index("view_request")] > 0
    assert (model.predict(train) == labels_of(train)).mean() > 0.8


def test_tfidf_lr_learns_and_uses_title_field() -> None:
    train, test = toy(seed=0), toy(n_repeat=2, seed=1)
    model = TfidfLRBaseline(fields=("utterance", "title"), char_ngrams=True)
    assert model.fit(train) is model
    assert sorted(model.vectorizers_) == ["title", "utterance", "utterance:char"]
    assert (model.predict(test) == labels_of(test)).all()
    only_utterance = TfidfLRBaseline(fields=("utterance",)).fit(train)
    assert sorted(only_utterance.vectorizers_) == ["utterance"]
    n_title = len(model.vectorizers_["title"].vocabulary_)
    assert model.model_.coef_.shape[1] > len(only_utterance.vectorizers_["utterance"].vocabulary_) + n_title - 1
    with pytest.raises(ValueError, match="utterance"):
        TfidfLRBaseline(fields=("title",))


def test_field_text_joins_products_in_rank_order() -> None:
    record = {"utterance": "u", "intent": "search", "products": [{"title": "A", "style": ["x", "y"]}, {"title": "B"}]}
    assert field_text(record, "title") == "A | B"
    assert field_text(record, "style") == "x y"
    assert field_text(record, "intent") == "search"
    assert field_text(record, "brand") == ""


def test_labels_are_required() -> None:
    with pytest.raises(ValueError, match="has no 0/1 label"):
        labels_of([{"id": "r7", "utterance": "x", "label": None}])
    with pytest.raises(ValueError, match="unknown baseline kind"):
        make_baseline("bert")


def test_run_baseline_reports_on_test_with_the_validation_threshold() -> None:
    train, valid, test = toy(seed=0), toy(n_repeat=3, seed=1), toy(n_repeat=3, seed=2)
    result = run_baseline("tfidf-lr", train, valid, test, target_precision=0.9, n_boot=100)
    for key in ("precision", "recall", "f05", "ap", "roc_auc", "threshold", "n", "positives", "ci"):
        assert key in result
    choice = result["threshold_choice"]
    assert result["threshold"] == choice["threshold"] and choice["reached"]
    assert (result["kind"], result["n"], result["train"]["n"], result["valid"]["n"]) == ("tfidf-lr", 48, 96, 48)
    assert result["precision"] == 1.0 and result["ap"] == 1.0
    assert result["target_met"] == result["target_verdict"]["verdict"] == "met"  # interval [1, 1] >= 0.9

    with pytest.warns(PrecisionTargetWarning):
        majority = run_baseline("majority", train, valid, test, n_boot=50)
    assert majority["threshold_choice"]["rule"] == "max_f05_fallback"
    assert majority["precision"] == pytest.approx(0.5) and majority["recall"] == 1.0 and majority["roc_auc"] == 0.5
    assert majority["target_met"] == "missed" and majority["target_verdict"]["interval"][1] < 0.8


def _files(tmp_path: Path) -> list[str]:
    paths = []
    for name, seed, n in (("train", 0, 6), ("valid", 1, 3), ("test", 2, 3)):
        path = tmp_path / f"{name}.jsonl"
        write_records(path, toy(n_repeat=n, seed=seed))
        paths += [f"--{name}", str(path)]
    return paths


@pytest.mark.parametrize("kind", ["majority", "keyword", "tfidf-lr"])
def test_cli_baseline_writes_json(tmp_path: Path, kind: str) -> None:
    out = tmp_path / "out" / "report.json"
    args = ["baseline", "--kind", kind, *_files(tmp_path), "--json", str(out), "--n-boot", "50"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["kind"] == kind and report["n"] == 48 and set(report["ci"]) >= {"precision", "ap"}
    assert "precision" in flat(result.output) and "validation" in flat(result.output)
    if kind == "majority":
        assert "TARGET PRECISION NOT CERTIFIED" in flat(result.output)  # baselines use the certified rule too


def test_cli_baseline_errors_are_clean(tmp_path: Path) -> None:
    runner = CliRunner()
    files = _files(tmp_path)
    bad_kind = runner.invoke(app, ["baseline", "--kind", "bert", *files])
    assert bad_kind.exit_code == 2 and "--kind must be one of" in flat(bad_kind.output)
    missing = runner.invoke(app, ["baseline", "--kind", "majority", *files[:-1], str(tmp_path / "none.jsonl")])
    assert missing.exit_code == 2 and "no such file" in flat(missing.output)
    unlabeled = tmp_path / "unlabeled.jsonl"
    write_records(unlabeled, [validate_record({"id": "q1", "utterance": "show me shoes"})])
    no_label = runner.invoke(app, ["baseline", "--kind", "majority", *files[:-1], str(unlabeled)])
    assert no_label.exit_code == 2 and "has no 0/1 label" in flat(no_label.output)
    fields = runner.invoke(app, ["baseline", "--kind", "keyword", *files, "--fields", "utterance"])
    assert fields.exit_code == 2 and "only applies to" in flat(fields.output)
