"""The OpenAPI document of `irp serve`, generated from the rules that irp.serve.checks enforces.

The request bodies are read and checked by hand (irp.serve.checks: fast, and every error names its field), so
their JSON Schema is written here from the same constants and `Limits`, rule by rule, each next to the check it
mirrors. Rules that JSON Schema has no keyword for are spelled as patterns: "1..2000 characters after strip" is
a regular expression over the characters that `str.strip()` removes. `tests/test_openapi_contract.py` runs
Schemathesis against a live server in both directions (what the schema allows is accepted, what it forbids is
a 4xx naming the field), so a rule changed on one side only fails the suite.

The responses are Pydantic models (documentation only: the routes build their JSON themselves).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from irp.schema import MAX_PRODUCTS, MAX_UTTERANCE_CHARS
from irp.serve.checks import FEEDBACK_EVENTS, FEEDBACK_KEYS, INT_ID_MAX, INT_ID_MIN, MAX_PATH_CHARS, MAX_TS, Limits

# The characters for which str.isspace() is true, i.e. those str.strip() removes (the test checks all of Unicode).
# Spelled out rather than `\s`, whose meaning differs between regex dialects (ECMA-262 vs Python).
WHITESPACE = r"\u0009-\u000d\u001c-\u0020\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
NOT_BLANK = f"[^{WHITESPACE}]"  # unanchored: the string holds at least one non-whitespace character


def stripped_text(max_chars: int, description: str) -> dict[str, Any]:
    """A string that holds 1..max_chars characters once stripped (irp.schema strips utterance and intent).

    >>> import re
    >>> pattern = stripped_text(3, "")["pattern"]
    >>> [bool(re.search(pattern, s)) for s in ("abc", "  abc\\n", " a c ", "abcd", "   ", "")]
    [True, True, True, False, False, False]
    """
    ws, ink = f"[{WHITESPACE}]", NOT_BLANK
    # leading whitespace, the first kept character, then at most max_chars - 1 more ending on a kept one
    pattern = f"^{ws}*{ink}(?:[\\s\\S]{{0,{max_chars - 2}}}{ink})?{ws}*$"
    return {"type": "string", "pattern": pattern, "description": description}


def id_schema(limits: Limits, description: str) -> dict[str, Any]:
    """An id: a non-blank string of at most max_id_chars (kept as sent), or a 64-bit integer (sent back as a
    string)."""
    return {"anyOf": [{"type": "string", "minLength": 1, "maxLength": limits.max_id_chars, "pattern": NOT_BLANK},
                      {"type": "integer", "minimum": INT_ID_MIN, "maximum": INT_ID_MAX}],
            "description": description}


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """`null` counts as absent for every optional field (irp.schema)."""
    if "anyOf" in schema:
        return {**schema, "anyOf": [*schema["anyOf"], {"type": "null"}]}
    description = schema.get("description")
    inner = {k: v for k, v in schema.items() if k != "description"}
    return {"anyOf": [inner, {"type": "null"}], **({"description": description} if description else {})}


def request_schemas(limits: Limits) -> dict[str, dict[str, Any]]:
    """The JSON Schema of every request body, by component name (OpenAPI 3.1 = JSON Schema 2020-12)."""
    ref = "#/components/schemas/{}".format
    value = {"type": "string", "maxLength": limits.max_value_chars}
    label = {"type": ["integer", "null"], "minimum": 0, "maximum": 1,
             "description": "0 or 1 (0.0 / 1.0 too); accepted and ignored"}
    product = {
        "type": "object",
        "description": "A retrieved product: `title`, optional `price`, and any attributes (a string, or a list "
                       f"of at most {limits.max_list_items} strings; each string at most {limits.max_value_chars} "
                       "characters; null = absent).",
        "required": ["title"],
        "properties": {"title": {**value, "pattern": NOT_BLANK},
                       "price": {"type": ["number", "null"], "minimum": 0}},
        "additionalProperties": {"anyOf": [value, {"type": "array", "maxItems": limits.max_list_items,
                                                   "items": value}, {"type": "null"}]},
    }
    record = {
        "type": "object",
        "description": "One interaction record (DESIGN section 2). Unknown keys are accepted and ignored.",
        "required": ["utterance"],
        "properties": {
            "utterance": stripped_text(MAX_UTTERANCE_CHARS, f"1..{MAX_UTTERANCE_CHARS} characters after strip"),
            "id": nullable(id_schema(limits, "echoed back; derived from the content if absent")),
            "intent": nullable(stripped_text(limits.max_value_chars, "NLU intent label (\"unknown\" if absent), "
                                             f"1..{limits.max_value_chars} characters after strip")),
            "context": nullable({"type": "array", "items": {"type": "string", "maxLength": MAX_UTTERANCE_CHARS},
                                 "description": "earlier user turns, oldest first"}),
            "products": nullable({"type": "array", "maxItems": MAX_PRODUCTS, "items": {"$ref": ref("ProductIn")},
                                  "description": "top-k, in rank order"}),
            "screen_available": {"type": ["boolean", "null"], "description": "false: never suggest a switch"},
            "session_id": nullable(id_schema(limits, "scopes the switch-offer cooldown")),
            "label": label,
            "true_intent": label,
        },
    }
    event = {
        "type": "object",
        "description": "What the user did after the answer with this id.",
        "required": ["id", "event"],
        "properties": {
            "id": id_schema(limits, "the id that /v1/predict answered"),
            "event": {"enum": list(FEEDBACK_EVENTS)},
            "ts": {"type": ["number", "null"], "minimum": 0, "maximum": MAX_TS,
                   "description": "unix seconds when it happened (default: when received); above 1e11 is "
                                  "refused as milliseconds"},
        },
        "additionalProperties": False,
    }
    assert set(event["properties"]) == set(FEEDBACK_KEYS)

    def batch_of(item: str, description: str) -> dict[str, Any]:
        return {"type": "object", "description": description, "required": ["items"], "additionalProperties": False,
                "properties": {"items": {"type": "array", "maxItems": limits.max_batch, "items": {"$ref": ref(item)}}}}

    return {
        "ProductIn": product,
        "RecordIn": record,
        "BatchIn": batch_of("RecordIn", f"Up to {limits.max_batch} records, answered in item order."),
        "FeedbackIn": event,
        "FeedbackBatchIn": batch_of("FeedbackIn", f"Up to {limits.max_batch} feedback events, all or nothing."),
        "FeedbackBodyIn": {"anyOf": [{"$ref": ref("FeedbackIn")}, {"$ref": ref("FeedbackBatchIn")}],
                           "description": 'One event, or a batch {"items": [event, ...]}.'},
        "ReloadIn": {
            "type": "object",
            "description": '{"model": DIR} loads DIR; {} (or "model": null) re-reads the folder being served.',
            "properties": {"model": nullable({
                "type": "string", "maxLength": MAX_PATH_CHARS, "description": "artifact folder",
                # non-blank, no NUL byte
                "pattern": f"^[^\\u0000]*[^\\u0000{WHITESPACE}][^\\u0000]*$"})},
            "additionalProperties": False,
        },
    }


def request_body(name: str) -> dict[str, Any]:
    """openapi_extra for a route that reads its JSON body itself: the body is required and is component `name`."""
    schema = {"$ref": f"#/components/schemas/{name}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def install_openapi(app: Any, limits: Limits) -> None:
    """Add the request schemas to the document FastAPI generates (the routes refer to them by name)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components.update(request_schemas(limits))
            components["ErrorOut"] = ErrorOut.model_json_schema()
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi


# ---- responses ---------------------------------------------------------------------------------------------
class PredictionOut(BaseModel):
    id: str
    probability: float
    image_seeking: bool
    suggest_switch: bool
    threshold: float
    model_version: str
    replica_id: str = Field(description="the replica that answered (`irp serve --replica-id`)")


class BatchOut(BaseModel):
    results: list[PredictionOut]
    model_version: str
    threshold: float
    replica_id: str


class FeedbackOut(BaseModel):
    accepted: int = Field(description="events validated and counted")
    logged: int = Field(description="events queued for the decision log (0 without --log-dir)")
    model_version: str
    replica_id: str


class ReadyOut(BaseModel):
    ready: bool
    model_version: str
    replica_id: str
    state: dict[str, Any] = Field(description="the shared state (`--state`): backend, whether it answers, and why not")


class ErrorOut(BaseModel):
    detail: str = Field(description="'<field>: <what is wrong>'")
    field: str = Field(description="the offending field, e.g. products[2].color, items[5].utterance, body")


ERRORS = {400: "unreadable body: empty, not UTF-8, not JSON", 401: "missing or wrong bearer token",
          403: "admin call from a non-loopback client to a server without a token",
          409: "the reload did not happen; the old model keeps serving",
          413: "body over the size limit (`limits.max_body_bytes` in GET /v1/model; 1,000,000 by default)",
          422: "a field breaks the contract"}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` of a route: each status it can answer, with the JSON error body (always JSON, also on a route
    whose own answer is text, e.g. /metrics) and, for 401, its WWW-Authenticate header."""
    content = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}}
    header = {"WWW-Authenticate": {"schema": {"type": "string"}, "description": "Bearer"}}
    return {code: {"description": ERRORS[code], "content": content, **({"headers": header} if code == 401 else {})}
            for code in codes}
