"""SIMMC importers (synthetic rows and the real shared files), session split, and `irp import simmc`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from irp.cli import app
from irp.data.importers import (
    POST_HOC_FIELDS,
    SourceFormatError,
    fashion_record,
    furniture_records,
    import_simmc,
    parse_scene_objects,
)
from irp.data.io import load_records
from irp.data.split import session_overlap, split_by_session
from irp.schema import validate_record

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
FASHION = SHARED_DATA / "simmc1_fashion"
FURNITURE = SHARED_DATA / "simmc1_furniture"
needs_data = pytest.mark.skipif(
    not (FASHION / "image_intent_train.jsonl").is_file(),
    reason=f"SIMMC data not found at {SHARED_DATA} (the shared/ folder beside the repo)",
)

FASHION_ROW: dict[str, Any] = {
    "split": "dev",
    "dialog_id": 4146,
    "turn_idx": 2,
    "user_utterance": "Are there any other sweaters I could look at with a crew neck?",
    "prev_user_utterances": ["What's the price of this sweater?"],
    "shown_item_id": 1646,
    "shown_item": {
        "availableSizes": "['L', 'XL']",
        "brand": "Art News Today",
        "customerRating": "3.37",
        "embellishments": ["ribbed"],
        "necklineStyle": ["peter_pan_collar", "crew_neck"],
        "pattern": ["striped", "marled"],
        "price": "$143",
        "sweaterStyle": ["cardigan"],
        "type": "sweater",
    },
    "wizard_action": "SearchDatabase",
    "asked_attributes": ["necklineStyle"],
    "new_item_id": 1649,
    "new_item": {"brand": "Uptown Gallery", "color": ["black", "purple"], "type": "sweater"},
    "label_image_response": 1,
    "annotated_user_acts": ["DA:REQUEST:GET:CLOTHING"],
    "system_response": "Here's another crew neck sweater you might like.",
}


def flat(text: str) -> str:
    """CLI output with rich's line wrapping undone."""
    return " ".join(text.split())


def furniture_row(seq: int, utterance: str, label: int, scene: str = "", row: int = 0) -> dict[str, Any]:
    return {
        "split": "dev",
        "row": row,
        "dialog_seq": seq,
        "user_utterance": utterance,
        "scene_objects": scene,
        "annotated_user_acts": ["DA:REQUEST:GET:FURNITURE"],
        "belief_state_raw": "DA:REQUEST:GET:FURNITURE [ ]",
        "system_response": "Here is a nice bookcase.",
        "label_annot_show_request": label,
        "label_annot_rotate_request": 0,
    }


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


# ---- fashion ----------------------------------------------------------------------------------------


def test_fashion_record_maps_fields_and_drops_post_hoc_ones() -> None:
    record = validate_record(fashion_record(FASHION_ROW))
    assert record["id"] == "4146_2" and record["session_id"] == "4146"
    assert record["utterance"] == FASHION_ROW["user_utterance"]
    assert record["context"] == ["What's the price of this sweater?"]
    assert record["intent"] == "unknown" and record["label"] == 1
    (product,) = record["products"]
    assert product["title"] == "Art News Today striped marled sweater"
    assert product["category"] == "sweater" and product["brand"] == "Art News Today"
    assert product["style"] == ["cardigan", "peter pan collar", "crew neck"]
    assert product["price"] == 143.0 and product["available_sizes"] == ["L", "XL"]
    assert product["id"] == "1646"
    text = json.dumps(record)
    for name in POST_HOC_FIELDS["fashion"]:
        assert name not in record
    for leaked in ("Uptown Gallery", "1649", "SearchDatabase", "DA:REQUEST", "you might like", "asked"):
        assert leaked not in text, leaked


def test_fashion_rows_that_cannot_be_records_are_skipped_with_reasons(tmp_path: Path) -> None:
    rows = [
        FASHION_ROW,
        "{not json",
        {**FASHION_ROW, "turn_idx": 3, "label_image_response": None},
        {**FASHION_ROW, "turn_idx": 4, "user_utterance": "   "},
        {**FASHION_ROW, "turn_idx": 5, "user_utterance": "x" * 2001},
        [1, 2],
    ]
    report = import_simmc(write_jsonl(tmp_path / "f.jsonl", rows), tmp_path / "out.jsonl")
    assert (report.dataset, report.rows, report.imported, report.positives) == ("fashion", 6, 1, 1)
    assert sum(report.skipped.values()) == 5
    reasons = " | ".join(report.skipped)
    for expected in ("invalid JSON", "label_image_response", "utterance: empty", "utterance: too long", "not a JSON"):
        assert expected in reasons
    assert report.examples[0].startswith("line 2: invalid JSON")
    assert len(load_records(tmp_path / "out.jsonl")) == 1


def test_import_rejects_files_that_are_not_simmc(tmp_path: Path) -> None:
    with pytest.raises(SourceFormatError, match="not a SIMMC"):
        import_simmc(write_jsonl(tmp_path / "x.jsonl", [{"utterance": "hi"}]), tmp_path / "o.jsonl")
    with pytest.raises(FileNotFoundError):
        import_simmc(tmp_path / "missing.jsonl", tmp_path / "o.jsonl")


# ---- furniture ---------------------------------------------------------------------------------------


def test_parse_scene_objects() -> None:
    scene = (
        "OBJECT_6 : pos left color ['Yellow'] class_name Dining Chairs decor_style ['Modern'] "
        "OBJECT_7 : pos center color ['Gray,Black'] class_name Coffee & Cocktail Tables "
        "decor_style ['Rustic', 'Traditional']"
    )
    first, second = parse_scene_objects(scene)
    assert first == {
        "title": "Yellow Dining Chairs",
        "id": "OBJECT_6",
        "color": ["Yellow"],
        "category": "Dining Chairs",
        "style": ["Modern"],
        "position": "left",
    }
    assert second["title"] == "Gray Black Coffee & Cocktail Tables" and second["color"] == ["Gray", "Black"]
    assert second["style"] == ["Rustic", "Traditional"] and second["position"] == "center"
    assert parse_scene_objects("") == []


def test_furniture_context_is_earlier_user_turns_of_the_same_dialog() -> None:
    rows = [
        furniture_row(1, "I need a bookcase.", 1),
        furniture_row(1, "Show me a few.", 1),
        furniture_row(2, "Hi, a sofa please.", 1),
        furniture_row(1, "May I see it from behind?", 1, "OBJECT_0 : pos focus color ['Black'] class_name Bookcases"),
    ]
    out = [r for _, r in furniture_records(enumerate(rows, 1))]
    assert [r["id"] for r in out] == ["dev-1_0", "dev-1_1", "dev-2_0", "dev-1_2"]
    assert out[3]["context"] == ["I need a bookcase.", "Show me a few."]
    assert out[2]["context"] == [] and out[2]["session_id"] == "dev-2"
    assert out[3]["products"][0]["title"] == "Black Bookcases"
    for record in out:
        text = json.dumps(validate_record(record))
        assert "DA:" not in text and "Here is a nice" not in text and "rotate" not in text


def test_furniture_is_detected_by_its_fields_and_via_the_cli(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "furn.jsonl", [furniture_row(1, "I need a bookcase.", 1), furniture_row(1, "ok", 0)])
    report = import_simmc(src, tmp_path / "a.jsonl")
    assert (report.dataset, report.imported, report.positives) == ("furniture", 2, 1)
    result = CliRunner().invoke(app, ["import", "simmc-furniture", str(src), "--out", str(tmp_path / "b.parquet")])
    assert result.exit_code == 0, result.output
    assert "2 imported" in flat(result.output) and "50.0%" in flat(result.output)
    assert load_records(tmp_path / "b.parquet") == load_records(tmp_path / "a.jsonl")


def test_cli_import_errors_are_clean(tmp_path: Path) -> None:
    runner = CliRunner()
    missing = runner.invoke(app, ["import", "simmc", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "o.jsonl")])
    assert missing.exit_code == 2 and "no such file" in flat(missing.output)
    src = write_jsonl(tmp_path / "f.jsonl", [FASHION_ROW])
    bad_suffix = runner.invoke(app, ["import", "simmc", str(src), "--out", str(tmp_path / "o.csv")])
    assert bad_suffix.exit_code == 2 and "unsupported file type" in flat(bad_suffix.output)
    bad_kind = runner.invoke(app, ["import", "simmc", str(src), "--out", str(tmp_path / "o.jsonl"), "--kind", "toys"])
    assert bad_kind.exit_code == 2 and "--kind" in flat(bad_kind.output)


# ---- split by session ----------------------------------------------------------------------------------


def _records(n_sessions: int, per_session: int = 3) -> list[dict[str, Any]]:
    return [
        {"id": f"{s}_{t}", "session_id": f"s{s}", "label": (s + t) % 2}
        for s in range(n_sessions)
        for t in range(per_session)
    ]


def test_split_by_session_is_disjoint_deterministic_and_order_free() -> None:
    records = _records(41)
    first, second = split_by_session(records, 0.5, seed=3)
    assert len(first) + len(second) == len(records)
    assert not session_overlap(first, second)
    assert len({r["session_id"] for r in first}) == round(0.5 * 41)
    assert split_by_session(records, 0.5, seed=3) == (first, second)
    shuffled_first, _ = split_by_session(list(reversed(records)), 0.5, seed=3)
    assert {r["id"] for r in shuffled_first} == {r["id"] for r in first}
    assert {r["session_id"] for r in split_by_session(records, 0.5, seed=4)[0]} != {r["session_id"] for r in first}
    assert split_by_session(records, 0.0, seed=0)[0] == [] and split_by_session(records, 1.0, seed=0)[1] == []
    with pytest.raises(ValueError):
        split_by_session(records, 1.5)


def test_records_without_session_are_their_own_session() -> None:
    records = [{"id": str(i), "session_id": None} for i in range(10)]
    first, second = split_by_session(records, 0.3, seed=0)
    assert (len(first), len(second)) == (3, 7)


def test_cli_split(tmp_path: Path) -> None:
    from irp.data.io import write_records

    src = tmp_path / "all.jsonl"
    write_records(src, [validate_record({"utterance": "u", **r}) for r in _records(10)])
    result = CliRunner().invoke(
        app,
        ["split", str(src), "--fraction", "0.5", "--seed", "0", "--out-first", str(tmp_path / "a.jsonl"),
         "--out-second", str(tmp_path / "b.jsonl")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    a, b = load_records(tmp_path / "a.jsonl"), load_records(tmp_path / "b.jsonl")
    assert len(a) == len(b) == 15 and not session_overlap(a, b)


# ---- the real SIMMC files -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Any, list[dict[str, Any]]]]:
    out = tmp_path_factory.mktemp("simmc")
    sources = {
        "train": FASHION / "image_intent_train.jsonl",
        "dev": FASHION / "image_intent_dev.jsonl",
        "furniture": FURNITURE / "furniture_annotated_dev.jsonl",
    }
    result = {}
    for name, src in sources.items():
        report = import_simmc(src, out / f"{name}.jsonl")
        result[name] = (report, load_records(out / f"{name}.jsonl"))
    return result


@needs_data
@pytest.mark.parametrize(
    "name, dataset, count, positive_rate",
    [
        ("train", "fashion", 21_196, 0.2034),  # README: 20.3 %
        ("dev", "fashion", 3_513, 0.2101),  # README: 21.0 %
        ("furniture", "furniture", 4_827, 0.3261),  # README: "32.6 % / 33.8 %" (dev / devtest); dev is 32.6 %
    ],
)
def test_real_counts_and_positive_rates(imported: dict, name: str, dataset: str, count: int, positive_rate: float) -> None:
    report, records = imported[name]
    assert report.dataset == dataset and not report.skipped
    assert report.rows == report.imported == len(records) == count
    assert report.positive_rate == pytest.approx(positive_rate, abs=5e-5)
    assert sum(r["label"] for r in records) == report.positives
    assert len({r["id"] for r in records}) == count  # ids are unique


@needs_data
def test_fashion_train_and_dev_dialogs_are_disjoint(imported: dict) -> None:
    train, dev = imported["train"][1], imported["dev"][1]
    assert len({r["session_id"] for r in train}) == 3_929 and len({r["session_id"] for r in dev}) == 655
    assert not session_overlap(train, dev)


@needs_data
@pytest.mark.parametrize("name, src", [("dev", FASHION / "image_intent_dev.jsonl"),
                                       ("furniture", FURNITURE / "furniture_annotated_dev.jsonl")])  # fmt: skip
def test_no_post_hoc_text_in_any_record(imported: dict, name: str, src: Path) -> None:
    """Every post-hoc value of every row is absent from the record made from that row."""
    rows = [json.loads(line) for line in src.read_text().splitlines()]
    records = imported[name][1]
    assert len(rows) == len(records)
    dataset = "fashion" if name == "dev" else "furniture"
    checked = 0
    for row, record in zip(rows, records):
        assert record["utterance"] == row["user_utterance"].strip()
        text = json.dumps(record, ensure_ascii=False)
        assert not set(POST_HOC_FIELDS[dataset]) & set(record)
        assert "DA:" not in text and "wizard" not in text
        response = row["system_response"].strip()
        if len(response) >= 25:  # long enough not to occur by chance in the user's own words
            assert response not in text
            checked += 1
        if dataset == "fashion":
            assert row["wizard_action"] not in text.replace(row["user_utterance"], "")
            assert [p["id"] for p in record["products"]] == [str(row["shown_item_id"])]
    assert checked > 0.5 * len(rows)
