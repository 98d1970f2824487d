"""Products as a nested Arrow column: queryable in place by DuckDB, Spark and pandas, lossless with JSONL.

A product is a `title`, an optional numeric `price` and any attributes whose values are strings or lists of
strings (DESIGN section 2). No fixed struct of attribute names fits every catalogue, and one file (or one
decision-log folder of many files, read as one table) must keep ONE type, so attributes go into two maps
keyed by attribute name, one per value shape:

    products: list<struct<
        title: string,
        price: double,                               null when the product has none
        attributes: map<string, string>,              the string attributes, in the product's order
        list_attributes: map<string, list<string>>,   the list attributes, in the product's order
        layout: string>>                             null, except when the canonical order below would not
                                                     give the product back exactly (see `encode_product`)

DuckDB: `SELECT p.title, p.price, p.attributes['color'] AS color FROM read_parquet(F), unnest(products) AS t(p)`
(`WHERE p.attributes['color'] = 'red'` filters; `map_keys(p.attributes)` lists the names).

The canonical product order is title, string attributes, list attributes, price (how the simulator, the
importers and most catalogues write them), with price a float. A product that differs (another key order,
an integer price) carries `layout`, a JSON array of its keys in order where an integer price is written
as the number itself (`["title", "color", 120]`), so JSONL -> Parquet -> JSONL gives back the same bytes.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pyarrow as pa

PRODUCT_TYPE = pa.struct(
    [
        ("title", pa.string()),
        ("price", pa.float64()),
        ("attributes", pa.map_(pa.string(), pa.string())),
        ("list_attributes", pa.map_(pa.string(), pa.list_(pa.string()))),
        ("layout", pa.string()),
    ]
)
PRODUCTS_TYPE = pa.list_(PRODUCT_TYPE)

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def encode_product(product: dict[str, Any]) -> dict[str, Any]:
    """One normalized product as a PRODUCT_TYPE value (a dict pyarrow converts).

    >>> encode_product({"title": "Boot", "color": ["red"], "brand": "x", "price": 9.5})["layout"]
    '["title","color","brand","price"]'
    >>> encode_product({"title": "Boot", "brand": "x", "color": ["red"], "price": 9.5})["layout"] is None
    True
    """
    scalars: list[tuple[str, str]] = []
    lists: list[tuple[str, list[str]]] = []
    canonical = True
    phase = 0  # 0: title, 1: strings, 2: lists, 3: price; a key that goes back a phase breaks the canonical order
    price = product.get("price")
    for key, value in product.items():
        if key == "title":
            step = 0
        elif key == "price":
            step = 3
        elif type(value) is list:
            lists.append((key, value))
            step = 2
        else:
            scalars.append((key, value))
            step = 1
        if step < phase:
            canonical = False
        phase = max(phase, step)
    if type(price) is int:
        canonical = False
    layout = None
    if not canonical:
        layout = _dumps([price if k == "price" and type(price) is int else k for k in product])
    return {"title": product.get("title"), "price": None if price is None else float(price),
            "attributes": scalars, "list_attributes": lists, "layout": layout}


def encode_products(products: list[list[dict[str, Any]] | None]) -> pa.Array:
    """Each record's products (None: absent) as one PRODUCTS_TYPE array."""
    return pa.array([None if ps is None else [encode_product(p) for p in ps] for ps in products], type=PRODUCTS_TYPE)


def decode_product(value: dict[str, Any]) -> dict[str, Any]:
    """A PRODUCT_TYPE value as pyarrow's to_pylist gives it (maps as lists of pairs) -> the product dict."""
    attributes = dict(value["attributes"] or ())
    attributes.update(value["list_attributes"] or ())
    price = value["price"]
    layout = value["layout"]
    if layout is None:
        product = {"title": value["title"], **attributes}
        if price is not None:
            product["price"] = price
        return product
    product = {}
    for key in json.loads(layout):
        if key == "title":
            product["title"] = value["title"]
        elif key == "price":
            product["price"] = price
        elif type(key) is int:  # an integer price, exactly
            product["price"] = key
        else:
            product[key] = attributes[key]
    return product


def is_irp_products(arrow_type: pa.DataType) -> bool:
    """Whether a column has this module's type (other tools write list<struct> of their own fields)."""
    return arrow_type == PRODUCTS_TYPE


def decode_products(cell: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    return None if cell is None else [decode_product(p) for p in cell]


def catalog_array(products: list[dict[str, Any]]) -> pa.StructArray:
    """A catalogue's products encoded once, for `products_from_ids`."""
    return pa.array([encode_product(p) for p in products], type=PRODUCT_TYPE)


def products_from_ids(ids: np.ndarray, catalog: pa.StructArray) -> pa.ListArray:
    """(m, k) catalogue indices, -1 for no product -> m product lists, without a Python object per product
    (the simulator's and the log benchmark's vectorised writers)."""
    present = ids >= 0
    offsets = np.concatenate([[0], np.cumsum(present.sum(axis=1))]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), catalog.take(pa.array(ids[present])), type=PRODUCTS_TYPE)
