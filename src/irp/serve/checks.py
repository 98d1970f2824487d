"""Request checking: pure functions from bytes and JSON values to validated records, or a RequestError (4xx)
whose message names the offending field. Nothing here touches the model.
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
from dataclasses import dataclass
from typing import Any

from irp.schema import MAX_PRODUCTS, MAX_UTTERANCE_CHARS, RecordError, json_type, validate_record

TOKEN_ENV = "IRP_SERVE_TOKEN"
LOOPBACK_HOSTS = ("localhost",)
FEEDBACK_EVENTS = ("offer_accepted", "offer_declined", "carousel_tap", "no_tap")
MAX_PATH_CHARS = 4096
INT_ID_MIN, INT_ID_MAX = -(2**63), 2**63 - 1  # an integer id is what a tool writes as int64


@dataclass(frozen=True)
class Limits:
    """What one request may carry. Utterance and product count come from the data contract (irp.schema)."""

    max_body_bytes: int = 1_000_000
    max_batch: int = 256
    max_utterance_chars: int = MAX_UTTERANCE_CHARS  # checked by validate_record (after strip)
    max_products: int = MAX_PRODUCTS  # checked by validate_record
    max_value_chars: int = 512  # one product attribute value (each item of a list attribute); intent after strip
    max_list_items: int = 16  # items of one list attribute (e.g. "color": ["red", "navy"])
    max_id_chars: int = 256  # id / session_id as strings (sessions are remembered by the switch policy)


class RequestError(Exception):
    """A client mistake: HTTP `status`, the offending `field`, and what is wrong with it."""

    def __init__(self, status: int, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.status, self.field, self.message = status, field, message

    def body(self) -> dict[str, str]:
        return {"detail": f"{self.field}: {self.message}", "field": self.field}


# ---- request checking: pure functions ---------------------------------------------------------------------
def parse_json(body: bytes) -> Any:
    """Bytes -> JSON value, or RequestError(400) saying why not.

    >>> parse_json(b'{"a": 1}')
    {'a': 1}
    >>> parse_json(b'{"a": ').body()["field"]
    Traceback (most recent call last):
    ...
    irp.serve.checks.RequestError: body: invalid JSON: Expecting value at line 1 column 7
    """
    if not body.strip():
        raise RequestError(400, "body", "empty; send one JSON object")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise RequestError(400, "body", f"not UTF-8 (byte {e.start})") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise RequestError(400, "body", f"invalid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except (RecursionError, ValueError) as e:  # nesting too deep; integers beyond Python's digit limit
        raise RequestError(400, "body", f"invalid JSON: {str(e)[:120]}") from None
    if _SURROGATE_ESCAPE.search(body):  # only a "\\udXXX" escape can smuggle a lone surrogate into a str
        where = lone_surrogate_at(value)
        if where is not None:
            raise RequestError(422, where, r"invalid unicode: lone surrogate escape (\ud800-\udfff)")
    return value


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def lone_surrogate_at(value: Any) -> str | None:
    r"""Path of the first string (or key) holding a lone surrogate, which UTF-8 text (and the tokenizer) cannot
    hold; None when there is none. Iterative: JSON nesting may be as deep as the parser allows.

    >>> lone_surrogate_at({"items": [{"utterance": "ok"}, {"utterance": "a\ud800"}]})
    'items[1].utterance'
    >>> lone_surrogate_at({"utterance": "\N{GRINNING FACE}"}) is None
    True
    """
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str):
            if not item.isascii() and _has_surrogate(item):
                return path or "body"
        elif isinstance(item, dict):
            for key, child in reversed(item.items()):
                child_path = f"{path}.{key}" if path else str(key)
                if not key.isascii() and _has_surrogate(key):
                    return path or "body"
                stack.append((child_path, child))
        elif isinstance(item, list):
            stack.extend((f"{path}[{i}]", child) for i, child in reversed(list(enumerate(item))))
    return None


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
        return False
    except UnicodeEncodeError:
        return True


def _check_text(field: str, text: str, max_chars: int) -> None:
    if len(text) > max_chars:
        raise RequestError(422, field, f"too long: {len(text)} characters (max {max_chars})")


def _check_int_id(field: str, value: Any) -> None:
    """An integer id (5 or 5.0) must be a 64-bit integer (a string id may hold anything up to max_id_chars)."""
    integral = type(value) is int or type(value) is float and value.is_integer()
    if integral and not INT_ID_MIN <= value <= INT_ID_MAX:
        raise RequestError(422, field, f"integer ids must fit in 64 bits [{INT_ID_MIN}, {INT_ID_MAX}]; "
                           "send a longer id as a string")


def _known_keys_only(obj: dict, known: tuple[str, ...], where: str, shape: str) -> None:
    """A body that irp defines (not a record, which keeps unknown keys) names its keys exactly: a typo such as
    "timestamp" for "ts" is a 422 naming the key instead of a silently ignored value."""
    for key in obj:
        if key not in known:
            raise RequestError(422, where + key[:80] if key else where.rstrip(".") or "body",
                               f"unknown key; the body is {shape}")


def check_record(obj: Any, limits: Limits = Limits(), where: str = "") -> dict[str, Any]:
    """Validate one request record: the data contract (irp.schema) plus the serving limits.

    Returns the normalized record; raises RequestError(422) naming the field (prefixed by `where`).

    >>> check_record({"utterance": " show me red dresses ", "session_id": "s1"})["utterance"]
    'show me red dresses'
    >>> check_record({"utterance": "x", "products": [{"title": "t", "color": "r" * 600}]}, where="items[3].")
    Traceback (most recent call last):
    ...
    irp.serve.checks.RequestError: items[3].products[0].color: too long: 600 characters (max 512)
    """
    try:
        record = validate_record(obj)
    except RecordError as e:
        field = (where.rstrip(".") or "body") if e.field == "record" else where + e.field  # the whole record
        raise RequestError(422, field, e.reason) from None
    _check_text(f"{where}intent", record["intent"], limits.max_value_chars)
    for name in ("id", "session_id"):
        if record[name] is not None:
            _check_int_id(where + name, obj.get(name))
            _check_text(where + name, record[name], limits.max_id_chars)
    for i, turn in enumerate(record["context"]):
        _check_text(f"{where}context[{i}]", turn, MAX_UTTERANCE_CHARS)
    for i, product in enumerate(record["products"]):
        for key, value in product.items():
            if key == "price":
                continue
            field = f"{where}products[{i}].{key}"
            if isinstance(value, list):
                if len(value) > limits.max_list_items:
                    raise RequestError(422, field, f"too many: {len(value)} items (max {limits.max_list_items})")
                for j, item in enumerate(value):
                    _check_text(f"{field}[{j}]", item, limits.max_value_chars)
            else:
                _check_text(field, value, limits.max_value_chars)
    return record


def check_batch(obj: Any, limits: Limits = Limits()) -> list[dict[str, Any]]:
    """Validate `{"items": [record, ...]}`; errors name the item, e.g. `items[3].utterance`.

    >>> len(check_batch({"items": [{"utterance": "a"}, {"utterance": "b"}]}))
    2
    >>> check_batch({"items": {}})
    Traceback (most recent call last):
    ...
    irp.serve.checks.RequestError: items: must be an array of records, got object
    """
    if type(obj) is not dict:
        raise RequestError(422, "body", f'must be a JSON object {{"items": [...]}}, got {json_type(obj)}')
    items = obj.get("items")
    if type(items) is not list:
        what = "absent" if "items" not in obj else f"got {json_type(items)}"
        raise RequestError(422, "items", f"must be an array of records, {what}")
    _known_keys_only(obj, ("items",), "", '{"items": [record, ...]}')
    if len(items) > limits.max_batch:
        raise RequestError(422, "items", f"too many: {len(items)} (max {limits.max_batch})")
    return [check_record(item, limits, f"items[{i}].") for i, item in enumerate(items)]


def is_loopback(host: str) -> bool:
    """Whether binding `host` keeps the server private to this machine.

    >>> [is_loopback(h) for h in ("127.0.0.1", "::1", "localhost", "0.0.0.0", "10.1.2.3")]
    [True, True, True, False, False]
    """
    if host in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False




# ---- feedback and admin bodies ----------------------------------------------------------------------------
MAX_TS = 1e11  # seconds since the epoch (year 5138); a larger number is almost surely milliseconds
FEEDBACK_KEYS = ("id", "event", "ts")


def check_feedback_item(obj: Any, limits: Limits = Limits(), where: str = "", now: float | None = None) -> dict:
    """One feedback event `{"id", "event", "ts"?}` -> `{"id", "event", "ts"}` (ts defaults to `now`).

    >>> check_feedback_item({"id": "req-1", "event": "offer_accepted", "ts": 1700000000}, now=1.0)
    {'id': 'req-1', 'event': 'offer_accepted', 'ts': 1700000000.0}
    >>> check_feedback_item({"id": 7, "event": "tap"}, where="items[2].")
    Traceback (most recent call last):
    ...
    irp.serve.checks.RequestError: items[2].event: must be one of offer_accepted, offer_declined, carousel_tap, no_tap, got 'tap'
    """
    if type(obj) is not dict:
        raise RequestError(422, where.rstrip(".") or "body", f"must be a JSON object {{\"id\", \"event\"}}, "
                           f"got {json_type(obj)}")
    _known_keys_only(obj, FEEDBACK_KEYS, where, '{"id", "event", "ts"?}')
    record_id = obj.get("id")
    _check_int_id(where + "id", record_id)
    if type(record_id) is int or type(record_id) is float and record_id.is_integer():  # as irp.schema: 5.0 is 5
        record_id = str(int(record_id))
    if type(record_id) is not str or not record_id.strip():
        what = "absent" if "id" not in obj else f"got {json_type(obj['id'])}" if type(obj["id"]) is not str else "empty"
        raise RequestError(422, where + "id", f"must be the non-empty id that /v1/predict answered, {what}")
    _check_text(where + "id", record_id, limits.max_id_chars)
    if lone_surrogate_at(record_id) is not None:
        raise RequestError(422, where + "id", r"invalid unicode: lone surrogate escape (\ud800-\udfff)")
    event = obj.get("event")
    if type(event) is not str or event not in FEEDBACK_EVENTS:
        got = "absent" if "event" not in obj else repr(event)[:80] if type(event) is str else json_type(event)
        raise RequestError(422, where + "event", f"must be one of {', '.join(FEEDBACK_EVENTS)}, got {got}")
    ts = obj.get("ts")
    if ts is None:
        ts = float(now) if now is not None else 0.0
    elif type(ts) not in (int, float) or not math.isfinite(ts) or not 0 <= ts <= MAX_TS:
        hint = " (milliseconds? send seconds)" if type(ts) in (int, float) and math.isfinite(ts) and ts > MAX_TS else ""
        raise RequestError(422, where + "ts", f"must be unix seconds in [0, {MAX_TS:.0e}]{hint}, got "
                           f"{str(ts)[:40] if type(ts) in (int, float) else json_type(ts)}")
    return {"id": record_id, "event": event, "ts": float(ts)}


def check_feedback(obj: Any, limits: Limits = Limits(), now: float | None = None) -> list[dict]:
    """A feedback body: one event, or `{"items": [event, ...]}` (at most `max_batch`); errors name the item.

    >>> len(check_feedback({"items": [{"id": "a", "event": "no_tap"}, {"id": "b", "event": "carousel_tap"}]}))
    2
    >>> check_feedback({"items": [{"id": "a", "event": "no_tap"}, {"event": "no_tap"}]})
    Traceback (most recent call last):
    ...
    irp.serve.checks.RequestError: items[1].id: must be the non-empty id that /v1/predict answered, absent
    """
    if type(obj) is dict and "items" in obj:
        items = obj["items"]
        if type(items) is not list:
            raise RequestError(422, "items", f"must be an array of feedback events, got {json_type(items)}")
        if len(items) > limits.max_batch:
            raise RequestError(422, "items", f"too many: {len(items)} (max {limits.max_batch})")
        _known_keys_only(obj, ("items",), "", '{"items": [event, ...]}')
        return [check_feedback_item(item, limits, f"items[{i}].", now) for i, item in enumerate(items)]
    return [check_feedback_item(obj, limits, "", now)]


def check_reload(obj: Any) -> str | None:
    """`{"model": DIR}` -> DIR; `{}` (no model) -> None: re-read the folder being served.

    >>> check_reload({"model": "models/B"}), check_reload({})
    ('models/B', None)
    >>> check_reload({"model": ""})
    Traceback (most recent call last):
    ...
    irp.serve.checks.RequestError: model: must be a non-empty folder path, got an empty string
    """
    if type(obj) is not dict:
        raise RequestError(422, "body", f'must be a JSON object {{"model": DIR}}, got {json_type(obj)}')
    _known_keys_only(obj, ("model",), "", '{"model": DIR}')
    model = obj.get("model")
    if model is None:
        return None
    if type(model) is not str:
        raise RequestError(422, "model", f"must be a folder path (string), got {json_type(model)}")
    if not model.strip():
        raise RequestError(422, "model", "must be a non-empty folder path, got an empty string")
    if len(model) > MAX_PATH_CHARS:
        raise RequestError(422, "model", f"too long: {len(model)} characters (max {MAX_PATH_CHARS})")
    if "\x00" in model or lone_surrogate_at(model) is not None:
        raise RequestError(422, "model", "not a valid path (NUL byte or lone surrogate)")
    return model
