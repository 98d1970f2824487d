"""irp.schema: every rejection case, normalization and defaults of one interaction record."""

from __future__ import annotations

import copy
import math
import pickle
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from irp.schema import (
    FIELDS,
    INTENTS,
    MAX_PRODUCTS,
    MAX_UTTERANCE_CHARS,
    RecordError,
    validate_record,
)

P = {"title": "Linen dress"}  # a minimal valid product


def test_constants_match_the_contract() -> None:
    assert MAX_UTTERANCE_CHARS == 2000 and MAX_PRODUCTS == 50
    assert INTENTS == ("search", "buy", "reorder", "add_to_cart", "price_check", "product_question", "deals", "browse")


def test_minimal_record_gets_every_default() -> None:
    assert validate_record({"utterance": "lamps"}, line_no=12) == {
        "id": "12",
        "utterance": "lamps",
        "intent": "unknown",
        "context": [],
        "products": [],
        "label": None,
        "screen_available": None,
        "session_id": None,
        "true_intent": None,
    }


def test_full_record_is_kept_and_normalized() -> None:
    record = {
        "extra_b": [1, {"x": None}],
        "true_intent": 1.0,
        "session_id": "s-9",
        "screen_available": False,
        "label": 0.0,
        "products": [
            {"title": "Sofa ✨", "color": ["grey", "blue"], "brand": "Oak", "price": 0, "size": None},
            {"title": " Rug ", "price": 19.99, "pattern": []},
        ],
        "context": ["hi", ""],
        "intent": "  price_check ",
        "utterance": "\n  how much is the grey sofa  ",
        "id": "abc",
        "extra_a": None,
    }
    out = validate_record(record, line_no=3)
    assert list(out) == [*FIELDS, "extra_b", "extra_a"]  # known fields first, extras in input order
    assert out["utterance"] == "how much is the grey sofa" and out["intent"] == "price_check"
    assert out["label"] == 0 and type(out["label"]) is int and out["true_intent"] == 1 and type(out["true_intent"]) is int
    assert out["products"] == [
        {"title": "Sofa ✨", "color": ["grey", "blue"], "brand": "Oak", "price": 0},  # null attribute dropped
        {"title": " Rug ", "price": 19.99, "pattern": []},  # titles are kept as given
    ]
    assert out["id"] == "abc" and out["context"] == ["hi", ""] and out["extra_b"] == [1, {"x": None}]
    assert out["extra_a"] is None and out["screen_available"] is False and out["session_id"] == "s-9"


def test_input_is_not_mutated() -> None:
    record = {"utterance": " x ", "products": [{"title": "t", "color": None}], "label": 1.0}
    before = copy.deepcopy(record)
    out = validate_record(record, 1)
    assert record == before
    assert out["products"][0] is not record["products"][0]


def test_nulls_mean_absent() -> None:
    nulls = {field: None for field in FIELDS if field != "utterance"}
    assert validate_record({"utterance": "u", **nulls}, 5) == validate_record({"utterance": "u"}, 5)


def test_ids() -> None:
    assert validate_record({"utterance": "u", "id": 77}, 1)["id"] == "77"  # int ids (e.g. int64 columns) load
    assert validate_record({"utterance": "u", "session_id": 8}, 1)["session_id"] == "8"
    assert validate_record({"utterance": "u"}, 41)["id"] == "41"
    # Without a line number the id is a stable hash of the content.
    a = validate_record({"utterance": "red shoes", "products": [P]})["id"]
    assert a == validate_record({"utterance": " red shoes", "products": [P]})["id"]
    assert a != validate_record({"utterance": "red shoe", "products": [P]})["id"]


def test_boundaries_are_inclusive() -> None:
    longest = "x" * MAX_UTTERANCE_CHARS
    assert validate_record({"utterance": f"  {longest}\n"})["utterance"] == longest
    assert len(validate_record({"utterance": "u", "products": [P] * MAX_PRODUCTS})["products"]) == MAX_PRODUCTS
    assert validate_record({"utterance": "é" * MAX_UTTERANCE_CHARS})  # characters, not bytes


def test_any_intent_label_is_allowed() -> None:
    assert validate_record({"utterance": "u", "intent": "play_music"})["intent"] == "play_music"


BAD: list[tuple[str, Any, str, str, str]] = [
    # (case, record, field, kind, reason fragment)
    ("array", [1, 2], "record", "not_object", "got array"),
    ("string", "hello", "record", "not_object", "got string"),
    ("null", None, "record", "not_object", "got null"),
    ("no utterance", {"intent": "search"}, "utterance", "missing", "absent"),
    ("null utterance", {"utterance": None}, "utterance", "missing", "null"),
    ("empty utterance", {"utterance": ""}, "utterance", "empty", "empty"),
    ("blank utterance", {"utterance": " \t\n "}, "utterance", "empty", "whitespace-only"),
    ("long utterance", {"utterance": "x" * 2001}, "utterance", "too_long", "2001 characters"),
    ("number utterance", {"utterance": 42}, "utterance", "wrong_type", "must be a string, got number"),
    ("list utterance", {"utterance": ["a"]}, "utterance", "wrong_type", "got array"),
    ("number intent", {"utterance": "u", "intent": 3}, "intent", "wrong_type", "got number"),
    ("empty intent", {"utterance": "u", "intent": " "}, "intent", "empty", "empty"),
    ("string context", {"utterance": "u", "context": "hi"}, "context", "wrong_type", "array of strings"),
    ("number in context", {"utterance": "u", "context": ["a", 1]}, "context[1]", "wrong_type", "got number"),
    ("string products", {"utterance": "u", "products": "[]"}, "products", "wrong_type", "got string"),
    ("object products", {"utterance": "u", "products": P}, "products", "wrong_type", "got object"),
    ("51 products", {"utterance": "u", "products": [P] * 51}, "products", "too_many", "51 (max 50)"),
    ("product not object", {"utterance": "u", "products": [P, "lamp"]}, "products[1]", "wrong_type", "an object"),
    ("product without title", {"utterance": "u", "products": [{"brand": "b"}]}, "products[0].title", "missing", ""),
    ("null title", {"utterance": "u", "products": [{"title": None}]}, "products[0].title", "missing", ""),
    ("number title", {"utterance": "u", "products": [{"title": 5}]}, "products[0].title", "wrong_type", "number"),
    ("blank title", {"utterance": "u", "products": [P, P, {"title": "  "}]}, "products[2].title", "empty", ""),
    ("nested attribute", {"utterance": "u", "products": [{"title": "t", "size": {"w": 1}}]},
     "products[0].size", "wrong_type", "a string or an array of strings, got object"),
    ("number attribute", {"utterance": "u", "products": [{"title": "t", "color": 7}]},
     "products[0].color", "wrong_type", "got number"),
    ("bool attribute", {"utterance": "u", "products": [{"title": "t", "new": True}]},
     "products[0].new", "wrong_type", "got boolean"),
    ("number in attribute list", {"utterance": "u", "products": [{"title": "t", "color": ["red", 1]}]},
     "products[0].color[1]", "wrong_type", "got number"),
    ("nested list attribute", {"utterance": "u", "products": [{"title": "t", "color": [["red"]]}]},
     "products[0].color[0]", "wrong_type", "got array"),
    ("string price", {"utterance": "u", "products": [{"title": "t", "price": "9.99"}]},
     "products[0].price", "wrong_type", "a number, got string"),
    ("bool price", {"utterance": "u", "products": [{"title": "t", "price": True}]},
     "products[0].price", "wrong_type", "got boolean"),
    ("nan price", {"utterance": "u", "products": [{"title": "t", "price": math.nan}]},
     "products[0].price", "invalid_value", "finite"),
    ("infinite price", {"utterance": "u", "products": [{"title": "t", "price": math.inf}]},
     "products[0].price", "invalid_value", "finite"),
    ("negative price", {"utterance": "u", "products": [{"title": "t", "price": -1}]},
     "products[0].price", "invalid_value", ">= 0"),
    ("label 2", {"utterance": "u", "label": 2}, "label", "invalid_value", "0 or 1, got 2"),
    ("label -1", {"utterance": "u", "label": -1}, "label", "invalid_value", "got -1"),
    ("label 0.5", {"utterance": "u", "label": 0.5}, "label", "invalid_value", "got 0.5"),
    ("label nan", {"utterance": "u", "label": math.nan}, "label", "invalid_value", "got nan"),
    ("label true", {"utterance": "u", "label": True}, "label", "wrong_type", "got boolean"),
    ("label false", {"utterance": "u", "label": False}, "label", "wrong_type", "got boolean"),
    ("label string", {"utterance": "u", "label": "1"}, "label", "wrong_type", "got string"),
    ("true_intent 3", {"utterance": "u", "true_intent": 3}, "true_intent", "invalid_value", "got 3"),
    ("true_intent bool", {"utterance": "u", "true_intent": True}, "true_intent", "wrong_type", "boolean"),
    ("screen string", {"utterance": "u", "screen_available": "yes"}, "screen_available", "wrong_type", "string"),
    ("screen int", {"utterance": "u", "screen_available": 1}, "screen_available", "wrong_type", "number"),
    ("session list", {"utterance": "u", "session_id": ["s"]}, "session_id", "wrong_type", "got array"),
    ("session bool", {"utterance": "u", "session_id": True}, "session_id", "wrong_type", "got boolean"),
    ("empty id", {"utterance": "u", "id": ""}, "id", "empty", ""),
    ("float id", {"utterance": "u", "id": 1.5}, "id", "wrong_type", "got number"),
]


@pytest.mark.parametrize(("record", "field", "kind", "reason"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_records_name_field_and_reason(record: Any, field: str, kind: str, reason: str) -> None:
    with pytest.raises(RecordError) as info:
        validate_record(record, line_no=1)
    assert (info.value.field, info.value.kind) == (field, kind)
    assert reason in info.value.reason
    assert str(info.value) == f"{field}: {info.value.reason}"


def test_record_error_pickles() -> None:
    error = pickle.loads(pickle.dumps(RecordError("products[0].title", "missing", "missing")))
    assert (error.field, error.reason, error.kind) == ("products[0].title", "missing", "missing")


# ---- properties over generated valid records ----------------------------------------------------

_text = st.text(max_size=12)
_product = st.builds(
    lambda title, attrs, price: {"title": title, **attrs, **({} if price is None else {"price": price})},
    st.text(min_size=1, max_size=12).filter(lambda s: not s.isspace()),
    st.dictionaries(st.text(max_size=6).filter(lambda k: k not in ("title", "price")),
                    st.one_of(_text, st.lists(_text, max_size=3)), max_size=4),
    st.one_of(st.none(), st.integers(0, 10**6), st.floats(0, 1e6, allow_nan=False)),
)
_record = st.fixed_dictionaries(
    {"utterance": st.text(min_size=1, max_size=40).filter(lambda s: s.strip())},
    optional={
        "id": st.text(min_size=1, max_size=8).filter(lambda s: s.strip()),
        "intent": st.one_of(st.sampled_from(INTENTS), st.text(min_size=1, max_size=8).filter(lambda s: s.strip())),
        "context": st.lists(_text, max_size=3),
        "products": st.lists(_product, max_size=6),
        "label": st.sampled_from([0, 1, 0.0, 1.0]),
        "screen_available": st.booleans(),
        "session_id": _text.filter(lambda s: s.strip()),
        "true_intent": st.sampled_from([0, 1]),
        "extra": st.recursive(st.none() | st.integers() | _text, lambda c: st.lists(c, max_size=3), max_leaves=5),
    },
)


@settings(max_examples=150, deadline=None)
@given(_record, st.integers(1, 10**6))
def test_validation_is_idempotent_and_keeps_valid_records(record: dict[str, Any], line_no: int) -> None:
    once = validate_record(record, line_no)
    assert validate_record(once, line_no + 1) == once  # a normalized record is a fixed point
    assert once["utterance"] == record["utterance"].strip() and len(once["products"]) == len(record.get("products", []))


def test_good_record_helper_is_valid(good_record: Callable[[int], dict[str, Any]]) -> None:
    for i in range(60):
        assert validate_record(good_record(i), i + 1)["utterance"].startswith("alexa")
