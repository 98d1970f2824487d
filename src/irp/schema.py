"""The interaction record: field rules, defaults and normalization (DESIGN section 2).

Records stay plain dicts on the hot path (the simulator writes and `irp validate` checks ~900K of
them), so validation is a hand-written sequence of `type(x) is ...` checks rather than a schema
library. The TypedDicts below document the normalized shape for type checkers and readers.

Rules that the spec leaves open, decided here (and documented in docs/data.md):
- `null` counts as absent for every optional field (Parquet stores absent values as nulls);
  a `null` product attribute is dropped.
- `label` / `true_intent` accept the integers 0/1 and the floats 0.0/1.0 (normalized to int);
  booleans are rejected, because `true` is more likely a bug upstream than a label.
- `id` / `session_id` accept a non-empty string or an integer (normalized to str; `5.0` counts as 5), so
  an id column that some tool wrote as int64 (or as a float) still loads.
- `utterance` and `intent` are stripped; `intent` may be any non-empty label (real logs carry intents
  beyond INTENTS). Product titles and attributes are kept as they are.
- Unknown top-level keys are kept unchanged (after the known fields).
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any, TypedDict

MAX_UTTERANCE_CHARS = 2000
MAX_PRODUCTS = 50
INTENTS = ("search", "buy", "reorder", "add_to_cart", "price_check", "product_question", "deals", "browse")
UNKNOWN_INTENT = "unknown"

# Field order of a normalized record; extra keys follow.
FIELDS = (
    "id",
    "utterance",
    "intent",
    "context",
    "products",
    "label",
    "screen_available",
    "session_id",
    "true_intent",
)
KNOWN_FIELDS = frozenset(FIELDS)

# Short stable names for the kind of a rejection (used to count rejections per reason).
MISSING, EMPTY, TOO_LONG, TOO_MANY, WRONG_TYPE, INVALID_VALUE = (
    "missing",
    "empty",
    "too_long",
    "too_many",
    "wrong_type",
    "invalid_value",
)
NOT_OBJECT, INVALID_JSON, INVALID_UTF8 = "not_object", "invalid_json", "invalid_utf8"


class Product(TypedDict, total=False):
    """One retrieved product: `title` plus any attributes (str or list[str]) and `price`."""

    title: str  # required, non-blank
    price: int | float  # optional, finite, >= 0
    # brand, color, style, category, pattern, material, ...: str | list[str]


class Record(TypedDict):
    """A normalized interaction record, as returned by `validate_record` (unknown keys follow these)."""

    id: str
    utterance: str
    intent: str
    context: list[str]
    products: list[Product]
    label: int | None
    screen_available: bool | None
    session_id: str | None
    true_intent: int | None


class RecordError(ValueError):
    """A record breaks the contract: `field` names the place (e.g. `products[3].title`)."""

    def __init__(self, field: str, reason: str, kind: str = INVALID_VALUE) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason
        self.kind = kind

    def __reduce__(self) -> tuple[Any, ...]:  # keep it picklable across processes
        return (type(self), (self.field, self.reason, self.kind))


def json_type(value: Any) -> str:
    """The JSON name of a value's type, for error messages.

    >>> [json_type(v) for v in (None, True, 3, 2.5, "a", [], {})]
    ['null', 'boolean', 'number', 'number', 'string', 'array', 'object']
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _wrong_type(field: str, expected: str, value: Any) -> RecordError:
    return RecordError(field, f"must be {expected}, got {json_type(value)}", WRONG_TYPE)


def _utterance(obj: dict[str, Any]) -> str:
    value = obj.get("utterance")
    if type(value) is not str:
        if value is None:
            what = "null" if "utterance" in obj else "absent"
            raise RecordError("utterance", f"missing (required, {what})", MISSING)
        raise _wrong_type("utterance", "a string", value)
    value = value.strip()
    if not value:
        raise RecordError("utterance", "empty or whitespace-only", EMPTY)
    if len(value) > MAX_UTTERANCE_CHARS:
        raise RecordError(
            "utterance", f"too long: {len(value)} characters after strip (max {MAX_UTTERANCE_CHARS})", TOO_LONG
        )
    return value


def _id_like(field: str, value: Any) -> str | None:
    """A string id, or an integer id (5 or 5.0) converted to str ("5"); None when absent."""
    if value is None:
        return None
    if type(value) is str:
        if not value.strip():
            raise RecordError(field, "empty or whitespace-only", EMPTY)
        return value
    if type(value) is int:
        return str(value)
    if type(value) is float and value.is_integer():  # JSON does not tell 5 from 5.0 (nor does JSON Schema)
        return str(int(value))
    raise _wrong_type(field, "a string", value)


def _derived_id(line_no: int | None, utterance: str, products: list[dict[str, Any]]) -> str:
    """The id of a record that has none: its line number, else a content hash (e.g. one HTTP request)."""
    if line_no is not None:
        return str(line_no)
    blob = json.dumps([utterance, products], ensure_ascii=True, sort_keys=True, default=str)
    return "h" + hashlib.blake2b(blob.encode(), digest_size=8).hexdigest()


def _intent(value: Any) -> str:
    if value is None:
        return UNKNOWN_INTENT
    if type(value) is not str:
        raise _wrong_type("intent", "a string", value)
    value = value.strip()
    if not value:
        raise RecordError("intent", "empty or whitespace-only", EMPTY)
    return value


def _string_list(field: str, value: Any) -> list[str]:
    if type(value) is not list:
        raise _wrong_type(field, "an array of strings", value)
    for i, item in enumerate(value):
        if type(item) is not str:
            raise _wrong_type(f"{field}[{i}]", "a string", item)
    return list(value)


def _binary(field: str, value: Any) -> int | None:
    """0/1 label: int 0/1 or float 0.0/1.0 (booleans rejected on purpose)."""
    if value is None:
        return None
    t = type(value)
    if (t is int or t is float) and (value == 0 or value == 1):
        return int(value)
    if t is int or t is float:
        raise RecordError(field, f"must be 0 or 1, got {value!r}", INVALID_VALUE)
    raise _wrong_type(field, "0 or 1", value)


def _bool(field: str, value: Any) -> bool | None:
    if value is None or type(value) is bool:
        return value
    raise _wrong_type(field, "true or false", value)


def _product(i: int, product: Any) -> dict[str, Any]:
    where = f"products[{i}]"
    if type(product) is not dict:
        raise _wrong_type(where, "an object", product)
    title = product.get("title")
    if type(title) is not str:
        if title is None:
            raise RecordError(f"{where}.title", "missing (every product needs a title)", MISSING)
        raise _wrong_type(f"{where}.title", "a string", title)
    if not title or title.isspace():
        raise RecordError(f"{where}.title", "empty or whitespace-only", EMPTY)
    clean: dict[str, Any] = {}
    for key, value in product.items():
        t = type(value)
        if t is str and key != "price":
            clean[key] = value
        elif key == "price":
            if value is None:
                continue
            if t is not int and t is not float:
                raise _wrong_type(f"{where}.price", "a number", value)
            if not math.isfinite(value) or value < 0:
                raise RecordError(f"{where}.price", f"must be a finite number >= 0, got {value!r}", INVALID_VALUE)
            clean[key] = value
        elif t is list:
            clean[key] = _string_list(f"{where}.{key}", value)
        elif value is None:
            continue  # a null attribute is an absent attribute
        else:
            raise _wrong_type(f"{where}.{key}", "a string or an array of strings", value)
    return clean


def _products(value: Any) -> list[dict[str, Any]]:
    if value is None:
        return []
    if type(value) is not list:
        raise _wrong_type("products", "an array of objects", value)
    if len(value) > MAX_PRODUCTS:
        raise RecordError("products", f"too many: {len(value)} (max {MAX_PRODUCTS})", TOO_MANY)
    clean = []
    for i, product in enumerate(value):
        # Fast path (the hot loop of `irp validate`): a product that is valid as it stands is copied
        # as is. Anything else goes to `_product`, which drops null attributes or raises the exact error.
        if type(product) is dict:
            title = product.get("title")
            if type(title) is str and title and not title.isspace():
                for key, attr in product.items():
                    t = type(attr)
                    if t is str and key != "price":
                        continue
                    if t is list:
                        for item in attr:
                            if type(item) is not str:
                                break
                        else:
                            continue
                        break
                    if key == "price" and (t is float or t is int) and 0 <= attr < math.inf:
                        continue
                    break  # null or invalid attribute: slow path
                else:
                    clean.append(product.copy())
                    continue
        clean.append(_product(i, product))
    return clean


def validate_record(obj: Any, line_no: int | None = None) -> dict[str, Any]:
    """Check one record against the contract and return a normalized copy (the input is not mutated;
    the copy may share attribute lists with it).

    Raises `RecordError(field, reason)` on the first problem found. `line_no` (1-based) supplies the id
    of a record without one.

    >>> r = validate_record({"utterance": "  red dress ", "products": [{"title": "Dress", "color": ["red"]}]}, 7)
    >>> r["id"], r["utterance"], r["intent"], r["context"], r["label"]
    ('7', 'red dress', 'unknown', [], None)
    >>> validate_record({"utterance": "x", "label": True})
    Traceback (most recent call last):
    ...
    irp.schema.RecordError: label: must be 0 or 1, got boolean
    """
    if type(obj) is not dict:
        raise RecordError("record", f"must be a JSON object, got {json_type(obj)}", NOT_OBJECT)
    utterance = _utterance(obj)
    get = obj.get
    context = get("context")
    products = _products(get("products"))
    record_id = _id_like("id", get("id"))
    record = {
        "id": record_id if record_id is not None else _derived_id(line_no, utterance, products),
        "utterance": utterance,
        "intent": _intent(get("intent")),
        "context": [] if context is None else _string_list("context", context),
        "products": products,
        "label": _binary("label", get("label")),
        "screen_available": _bool("screen_available", get("screen_available")),
        "session_id": _id_like("session_id", get("session_id")),
        "true_intent": _binary("true_intent", get("true_intent")),
    }
    if not KNOWN_FIELDS.issuperset(obj):
        for key, value in obj.items():
            if key not in KNOWN_FIELDS:
                record[key] = value
    return record
