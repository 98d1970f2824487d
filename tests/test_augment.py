"""`irp augment`: perturbed, unlabelled copies of records as distillation transfer records."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from irp.cli import app
from irp.data.augment import augment_records, drop_words
from irp.data.io import load_records, write_records
from irp.schema import validate_record


def _records(n: int) -> list[dict[str, Any]]:
    return [
        validate_record({
            "id": f"r{i}", "session_id": f"s{i // 3}", "utterance": f"can you show me the number {i} jacket please",
            "products": [{"title": f"jacket {i}", "color": ["red"]}], "label": i % 2, "true_intent": i % 2,
        })
        for i in range(n)
    ]  # fmt: skip


def test_copies_are_unlabelled_valid_records_that_differ_from_their_source() -> None:
    records = _records(60)
    copies = augment_records(records, copies=2, word_drop=0.0, product_swap=0.0, seed=1)
    assert [c["id"] for c in copies[:4]] == ["r0~aug0", "r0~aug1", "r1~aug0", "r1~aug1"]
    for source, copy in zip([r for r in records for _ in range(2)], copies, strict=True):
        assert "label" not in copy and "true_intent" not in copy
        validate_record(copy)  # a record the data contract accepts
        assert copy["session_id"] == source["session_id"]
        # neither perturbation drew: exactly one word is dropped, the products stay
        assert len(copy["utterance"].split()) == len(source["utterance"].split()) - 1
        assert copy["products"] == source["products"]
    assert "label" in records[0], "the input records are not modified"


def test_rates_are_what_they_say_and_a_swap_never_takes_its_own_products() -> None:
    records = _records(400)
    copies = augment_records(records, copies=1, word_drop=0.3, product_swap=0.5, seed=0)
    swapped = [c["products"] != r["products"] for r, c in zip(records, copies, strict=True)]
    assert 0.42 < np.mean(swapped) < 0.58  # 400 draws of p = 0.5: 4 standard deviations is 0.1
    words = sum(len(r["utterance"].split()) for r in records)
    kept = sum(len(c["utterance"].split()) for c in copies)
    assert 0.63 < kept / words < 0.77  # 3,600 word draws at p = 0.3
    assert augment_records(records, 1, 0.3, 0.5, seed=0) == copies  # deterministic
    assert augment_records(records, 1, 0.3, 0.5, seed=1) != copies


def test_one_word_utterances_are_perturbed_by_their_products() -> None:
    records = _records(5)
    records[0]["utterance"] = "show"
    copy = augment_records(records, copies=1, word_drop=0.0, product_swap=0.0, seed=0)[0]
    assert copy["utterance"] == "show" and copy["products"] != records[0]["products"]


def test_drop_words_keeps_one_word() -> None:
    rng = np.random.default_rng(0)
    assert all(len(drop_words("a b c d", 1.0, rng).split()) == 1 for _ in range(20))
    assert drop_words("  a   b  ", 0.0, rng) == "a b"


@pytest.mark.parametrize(
    "kwargs", [{"copies": 0}, {"word_drop": -0.1}, {"word_drop": 1.5}, {"product_swap": 2.0}]
)
def test_bad_settings_raise(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        augment_records(_records(3), **kwargs)


def test_cli_augment_writes_copies_and_rejects_bad_flags(tmp_path: Path) -> None:
    src = tmp_path / "train.jsonl"
    write_records(src, _records(12))
    runner = CliRunner()
    out = tmp_path / "aug.parquet"
    result = runner.invoke(app, ["augment", str(src), "--out", str(out), "--copies", "2", "--seed", "3"])
    assert result.exit_code == 0, result.output
    copies = load_records(out)
    assert len(copies) == 24 and all(c.get("label") is None for c in copies)
    assert "24 unlabelled copies of 12 records" in " ".join(result.output.split())
    for flags in (["--copies", "0"], ["--word-drop", "1.2"], ["--product-swap", "-1"], ["--out", str(tmp_path / "x.csv")]):
        bad_out = tmp_path / "bad.jsonl"
        args = ["augment", str(src), "--out", str(bad_out), *flags]
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (flags, result.output)
        assert not bad_out.exists() and not (tmp_path / "x.csv").exists()
    one = tmp_path / "one.jsonl"
    write_records(one, _records(1))
    result = runner.invoke(app, ["augment", str(one), "--out", str(tmp_path / "o.jsonl")])
    assert result.exit_code == 2 and "at least two records" in result.output
