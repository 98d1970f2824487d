"""Import third-party dialog logs (SIMMC 1.0 Fashion and Furniture) as interaction records.

The joined files are described in ../shared/data/README.md. The rule that matters most: a record
may only carry what was known *when the user spoke*. So these fields are never carried over:

- fashion: `new_item_id` / `new_item` (what the assistant showed in reply), `wizard_action` (the
  label is a function of it), `system_response` (the reply), `annotated_user_acts` (dialog acts such
  as DA:REQUEST:GET:CLOTHING leak the label), and `asked_attributes`: it is NLU annotation of the
  user turn, but in the data it is non-empty for every SpecifyInfo turn and for no None / AddToCart
  turn, so it encodes the wizard's action and therefore the label;
- furniture: `annotated_user_acts` and `belief_state_raw` (the label is defined from these acts),
  `system_response`, and `label_annot_rotate_request` (another annotation of the same acts).

The fashion intent is "unknown" by design (the annotated acts would leak the label). Attribute values
such as "peter_pan_collar" are written with spaces ("peter pan collar") so that text models see
words; nothing else in the text is changed.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from irp.data.io import PathLike, write_records
from irp.schema import RecordError, validate_record

Dataset = Literal["fashion", "furniture"]
SOURCES: dict[Dataset, str] = {"fashion": "simmc1-fashion", "furniture": "simmc1-furniture"}

# Raw fields that must never reach a record (see the module docstring); tests check the output.
POST_HOC_FIELDS: dict[Dataset, tuple[str, ...]] = {
    "fashion": (
        "new_item_id",
        "new_item",
        "wizard_action",
        "system_response",
        "annotated_user_acts",
        "asked_attributes",
    ),
    "furniture": ("annotated_user_acts", "belief_state_raw", "system_response", "label_annot_rotate_request"),
}

_MAX_EXAMPLES = 5  # skipped-row examples kept for the report (with line numbers)


class SkipRow(ValueError):
    """A source row that cannot become a record; the message is the reason (counted in the report)."""


class SourceFormatError(ValueError):
    """The source file as a whole is not a SIMMC 1.0 joined export."""


@dataclass
class ImportReport:
    """What an import did: rows read, records written, positives and skipped rows by reason."""

    source: str
    dataset: Dataset
    rows: int = 0
    imported: int = 0
    positives: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)  # "line N: reason" for the first few skips

    @property
    def positive_rate(self) -> float:
        return self.positives / self.imported if self.imported else float("nan")

    def skip(self, line_no: int, reason: str) -> None:
        self.skipped[reason] += 1
        if len(self.examples) < _MAX_EXAMPLES:
            self.examples.append(f"line {line_no}: {reason}")


# ---- small value helpers --------------------------------------------------------------------------


def _words(value: str) -> str:
    """An attribute value as words: underscores to spaces, whitespace collapsed.

    >>> _words(" peter_pan_collar ")
    'peter pan collar'
    """
    return " ".join(value.replace("_", " ").split())


def _str_list(value: Any) -> list[str]:
    """A list of clean strings from a list, a string, or a Python-literal list written as a string.

    >>> _str_list("['L', 'XL']"), _str_list(["v_neck"]), _str_list("red"), _str_list(None)
    (['L', 'XL'], ['v neck'], ['red'], [])
    """
    if value is None:
        return []
    if isinstance(value, str):
        quoted = re.findall(r"'([^']*)'", value) if value.lstrip().startswith("[") else [value]
        items = quoted
    elif isinstance(value, list):
        items = [str(v) for v in value if v is not None]
    else:
        items = [str(value)]
    return [w for w in (_words(v) for v in items) if w]


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _price(value: Any) -> float | None:
    """A price like "$143" or 143 as a number; None when there is none.

    >>> _price("$1,143.50"), _price(12), _price("n/a")
    (1143.5, 12.0, None)
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        m = re.search(r"\d[\d,]*(?:\.\d+)?", value)
        if m:
            return float(m.group().replace(",", ""))
    return None


def _snake(name: str) -> str:
    """camelCase to snake_case: "customerRating" -> "customer_rating"."""
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


def _label(row: dict[str, Any], key: str) -> int:
    value = row.get(key)
    if type(value) is not int or value not in (0, 1):
        raise SkipRow(f"{key} missing or not 0/1")
    return value


def _utterance(row: dict[str, Any]) -> str:
    value = row.get("user_utterance")
    if not isinstance(value, str):
        raise SkipRow("user_utterance missing or not a string")
    return value


# ---- SIMMC Fashion ----------------------------------------------------------------------------------

# Shape/cut attributes of the fashion catalogue that together form the product's `style`.
_FASHION_STYLE_KEYS = (
    "dressStyle",
    "sweaterStyle",
    "jacketStyle",
    "skirtStyle",
    "necklineStyle",
    "sleeveStyle",
    "waistStyle",
    "hemStyle",
    "hemLength",
    "hemlength",
)
_FASHION_RENAMED = {"type": "category", "embellishment": "embellishments", "availableSizes": "available_sizes"}


def fashion_product(item: dict[str, Any], item_id: Any = None) -> dict[str, Any]:
    """One SIMMC fashion catalogue item as a product: title "<brand> <color> <pattern> <type>".

    >>> p = fashion_product({"brand": "Art News Today", "type": "sweater", "pattern": ["striped"],
    ...                      "price": "$143", "necklineStyle": ["crew_neck"], "availableSizes": "['L']"}, 1646)
    >>> p["title"], p["category"], p["style"], p["price"], p["available_sizes"], p["id"]
    ('Art News Today striped sweater', 'sweater', ['crew neck'], 143.0, ['L'], '1646')
    """
    brand = _words(str(item.get("brand") or ""))
    colors = _str_list(item.get("color"))
    patterns = _str_list(item.get("pattern"))
    category = _words(str(item.get("type") or ""))
    title = " ".join(part for part in (brand, *colors, *patterns, category) if part) or "unknown item"
    product: dict[str, Any] = {"title": title}
    if item_id is not None:
        product["id"] = str(item_id)
    if brand:
        product["brand"] = brand
    if colors:
        product["color"] = colors
    if patterns:
        product["pattern"] = patterns
    style = _unique(v for key in _FASHION_STYLE_KEYS for v in _str_list(item.get(key)))
    if style:
        product["style"] = style
    if category:
        product["category"] = category
    price = _price(item.get("price"))
    if price is not None:
        product["price"] = price
    for key, value in item.items():  # everything else (embellishments, sizes, rating) under snake_case
        if key in _FASHION_STYLE_KEYS or key in ("brand", "color", "pattern", "type", "price"):
            continue
        name = _FASHION_RENAMED.get(key, _snake(key))
        values = _str_list(value)
        if not values:
            continue
        if name == "customer_rating" or (isinstance(value, str) and not value.lstrip().startswith("[")):
            product[name] = values[0]
        else:
            product[name] = _unique([*product.get(name, []), *values])
    return product


def fashion_record(row: dict[str, Any]) -> dict[str, Any]:
    """One row of simmc1_fashion/image_intent_*.jsonl as a (not yet validated) interaction record."""
    dialog_id, turn_idx = row.get("dialog_id"), row.get("turn_idx")
    if dialog_id is None or type(turn_idx) is not int:
        raise SkipRow("dialog_id or turn_idx missing")
    context = row.get("prev_user_utterances") or []
    if not isinstance(context, list) or not all(isinstance(c, str) for c in context):
        raise SkipRow("prev_user_utterances is not a list of strings")
    item = row.get("shown_item")
    products = [fashion_product(item, row.get("shown_item_id"))] if isinstance(item, dict) else []
    return {
        "id": f"{dialog_id}_{turn_idx}",
        "utterance": _utterance(row),
        "intent": "unknown",
        "context": list(context),
        "products": products,
        "label": _label(row, "label_image_response"),
        "session_id": str(dialog_id),
        "source": SOURCES["fashion"],
        "turn_idx": turn_idx,
    }


# ---- SIMMC Furniture --------------------------------------------------------------------------------

# Keys of SIMMC's <SOM> scene string: "OBJECT_0 : pos focus color ['Black'] class_name Bookcases ...".
# Values are free text (class names contain spaces and "&"), so only these known keys split a value.
_SOM_KEYS = ("pos", "color", "class_name", "decor_style", "material", "price", "brand")
_SOM_OBJECT = re.compile(r"(OBJECT_\d+)\s*:")
_SOM_KEY = re.compile(r"(?:^|\s)(" + "|".join(_SOM_KEYS) + r")\s")


def parse_scene_objects(scene: str) -> list[dict[str, Any]]:
    """The objects of a SIMMC <SOM> string as products (title "<color> <class_name>"), in order.

    Colors written as "Gray,Black" are split. An object without a class name or color is kept
    with the title "object".

    >>> parse_scene_objects("OBJECT_0 : pos focus color ['Gray,Black'] class_name Coffee & Cocktail Tables"
    ...                     " decor_style ['Modern'] OBJECT_2 : pos left color ['White'] class_name Sofas")
    ... # doctest: +NORMALIZE_WHITESPACE
    [{'title': 'Gray Black Coffee & Cocktail Tables', 'id': 'OBJECT_0', 'color': ['Gray', 'Black'],
      'category': 'Coffee & Cocktail Tables', 'style': ['Modern'], 'position': 'focus'},
     {'title': 'White Sofas', 'id': 'OBJECT_2', 'color': ['White'], 'category': 'Sofas', 'position': 'left'}]
    """
    parts = _SOM_OBJECT.split(scene or "")
    products = []
    for object_id, body in zip(parts[1::2], parts[2::2]):  # split() alternates: text, id, body, id, body
        fields = _SOM_KEY.split(" " + body)
        attrs = {key: value.strip() for key, value in zip(fields[1::2], fields[2::2])}
        colors = [c for v in _str_list(attrs.get("color")) for c in (x.strip() for x in v.split(",")) if c]
        category = _words(attrs.get("class_name", ""))
        product: dict[str, Any] = {"title": " ".join([*colors, category]).strip() or "object", "id": object_id}
        if colors:
            product["color"] = colors
        if category:
            product["category"] = category
        if "decor_style" in attrs:
            product["style"] = _str_list(attrs["decor_style"])
        for key in ("material", "brand"):
            if key in attrs:
                product[key] = _str_list(attrs[key])
        price = _price(attrs.get("price"))
        if price is not None:
            product["price"] = price
        if attrs.get("pos"):
            product["position"] = attrs["pos"]
        products.append(product)
    return products


def furniture_records(rows: Iterable[tuple[int, dict[str, Any]]]) -> Iterator[tuple[int, dict[str, Any] | SkipRow]]:
    """(line_no, row) of furniture_annotated_*.jsonl in file order -> (line_no, record or SkipRow).

    The context of a turn is the earlier user turns of the same `dialog_seq` (oldest first); a
    skipped row still counts as context for later turns, as the user did say it.
    """
    history: dict[str, list[str]] = {}
    for line_no, row in rows:
        seq = row.get("dialog_seq")
        if seq is None:
            yield line_no, SkipRow("dialog_seq missing")
            continue
        session = f"{row.get('split', 'unknown')}-{seq}"
        earlier = history.setdefault(session, [])
        try:
            utterance = _utterance(row)
            record = {
                "id": f"{session}_{len(earlier)}",
                "utterance": utterance,
                "intent": "unknown",
                "context": list(earlier),
                "products": parse_scene_objects(row.get("scene_objects") or ""),
                "label": _label(row, "label_annot_show_request"),
                "session_id": session,
                "source": SOURCES["furniture"],
                "turn_idx": len(earlier),
            }
        except SkipRow as e:
            yield line_no, e
        else:
            yield line_no, record
        if isinstance(row.get("user_utterance"), str):
            earlier.append(row["user_utterance"])


# ---- reading, detecting and importing ------------------------------------------------------------


def detect_dataset(row: dict[str, Any]) -> Dataset:
    """Which SIMMC export a row comes from, by its fields.

    >>> detect_dataset({"user_utterance": "hi", "label_image_response": 0})
    'fashion'
    """
    if "label_image_response" in row and "user_utterance" in row:
        return "fashion"
    if "label_annot_show_request" in row and "user_utterance" in row:
        return "furniture"
    raise SourceFormatError(
        "not a SIMMC 1.0 joined row: expected user_utterance with label_image_response (fashion) "
        "or label_annot_show_request (furniture)"
    )


def _read_rows(path: Path, report: ImportReport) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line_no, row object) of a JSONL file; unparseable lines are counted as skipped."""
    with open(path, encoding="utf-8", errors="strict") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            report.rows += 1
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                report.skip(line_no, f"invalid JSON ({e.msg})")
                continue
            if not isinstance(row, dict):
                report.skip(line_no, "not a JSON object")
                continue
            yield line_no, row


def _first_row(path: Path) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise SourceFormatError(f"{path}: first line is not JSON ({e.msg})") from e
                if isinstance(row, dict):
                    return row
                raise SourceFormatError(f"{path}: first line is not a JSON object")
    raise SourceFormatError(f"{path}: no rows")


def _records(path: Path, dataset: Dataset, report: ImportReport) -> Iterator[dict[str, Any]]:
    """Validated records of a SIMMC file; every dropped row is counted in `report` with its reason."""
    rows = _read_rows(path, report)
    pairs: Iterable[tuple[int, dict[str, Any] | SkipRow]]
    if dataset == "fashion":
        pairs = ((n, _try(fashion_record, row)) for n, row in rows)
    else:
        pairs = furniture_records(rows)
    for line_no, item in pairs:
        if isinstance(item, SkipRow):
            report.skip(line_no, str(item))
            continue
        try:
            record = validate_record(item, line_no)
        except RecordError as e:
            report.skip(line_no, f"{e.field}: {e.reason}")
            continue
        report.imported += 1
        report.positives += record["label"]
        yield record


def _try(fn: Callable[[dict[str, Any]], dict[str, Any]], row: dict[str, Any]) -> dict[str, Any] | SkipRow:
    try:
        return fn(row)
    except SkipRow as e:
        return e


def import_simmc(
    src: PathLike, out: PathLike, dataset: Dataset | Literal["auto"] = "auto", progress: bool = False
) -> ImportReport:
    """Convert a SIMMC 1.0 joined JSONL file to interaction records at `out` (JSONL or Parquet).

    Raises FileNotFoundError for a missing source and SourceFormatError (a ValueError) when the file
    is not a SIMMC export; rows that cannot be imported are counted by reason in the returned report.
    """
    src = Path(src)
    if not src.is_file():
        raise FileNotFoundError(f"{src}: no such file")
    kind: Dataset = detect_dataset(_first_row(src)) if dataset == "auto" else dataset
    report = ImportReport(source=str(src), dataset=kind)
    write_records(out, _records(src, kind, report), progress=progress)
    return report
