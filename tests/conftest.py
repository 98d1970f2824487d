"""Shared pytest fixtures.

Torch runs single-threaded in tests: on a busy 2-core machine, intra-op threads spin-wait against each other
and small models slow down by an order of magnitude.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

try:
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover
    pass

# Feature caches of test runs go to a throwaway folder, never the user's ~/.cache.
os.environ["IRP_CACHE_DIR"] = tempfile.mkdtemp(prefix="irp-test-cache-")
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

# ---- data contract (schema / io / validate tests) -----------------------------------------------

_COLORS = ["red", "navy blue", "beige", "black", "vert forêt", "赤"]
_CATEGORIES = ["dress", "sofa", "running shoes", "table lamp", "phone case"]


def make_good_record(i: int) -> dict[str, Any]:
    """A valid interaction record that varies with `i` (optional fields present or absent, unicode,
    list attributes, int and float prices, an unknown extra key) without any simulator."""
    category = _CATEGORIES[i % len(_CATEGORIES)]
    products: list[dict[str, Any]] = [
        {
            "title": f"Product {i}-{k} {category} ✨",
            "brand": f"Brand{k % 3}",
            "color": [_COLORS[(i + k) % len(_COLORS)], _COLORS[(i + 2 * k) % len(_COLORS)]],
            "category": category,
            "price": (k + 1) * 10 if k % 2 else round(9.99 + i * 0.5 + k, 2),
        }
        for k in range(i % 6)
    ]
    record: dict[str, Any] = {
        "utterance": f"alexa show me a {_COLORS[i % len(_COLORS)]} {category} number {i}",
        "products": products,
        "label": i % 2,
    }
    if i % 3:
        record["id"] = f"rec-{i}"
    if i % 4:
        record["intent"] = ("search", "buy", "browse", "custom_intent")[i % 4]
    if i % 5 == 0:
        record["context"] = ["hello", f"earlier turn {i}"]
    if i % 7 == 0:
        record.update(screen_available=bool(i % 2), session_id=f"s{i // 10}", true_intent=(i // 7) % 2)
    if i % 11 == 0:
        record["meta"] = {"source": "test", "rank": [i, None]}
    return record


@pytest.fixture
def good_record() -> Callable[[int], dict[str, Any]]:
    """`good_record(i)`: a valid, varied interaction record."""
    return make_good_record


# ---- model (features / training / serving tests) ------------------------------------------------

_VISUAL = {"dress": ["red", "floral", "boho"], "sofa": ["grey", "velvet", "modern"]}
_PLAIN = {"batteries": ["aa", "lithium"], "detergent": ["liquid", "fresh"]}


def make_records(n: int, seed: int = 0) -> list[dict]:
    """Small labelled records whose label depends on the products' category (so products carry signal)."""
    rng = random.Random(seed)
    categories = list(_VISUAL) + list(_PLAIN)
    records = []
    for i in range(n):
        category = rng.choice(categories)
        words = (_VISUAL | _PLAIN)[category]
        visual = category in _VISUAL
        utterance = rng.choice(["find me something nice", "i need one", f"get me {rng.choice(words)} stuff"])
        products = [
            {"title": f"{rng.choice(words)} {category} {j}", "brand": rng.choice(["acme", "zed"]),
             "color": rng.choice(["red", "blue"]), "style": [rng.choice(words)], "category": category, "price": 9.5}
            for j in range(rng.randint(0, 5) if i % 17 == 0 else 5)
        ]
        label = int(visual) if rng.random() < 0.9 else int(not visual)
        records.append({"id": str(i), "utterance": utterance, "intent": rng.choice(["search", "buy"]),
                        "context": ["hello there"] if i % 3 == 0 else [], "products": products, "label": label})
    return records


@pytest.fixture(scope="session")
def tiny_backbone(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny randomly initialised BERT with the real MiniLM tokenizer, built once per test session.
    IRP_TEST_TOKENIZER names another folder with that tokenizer (a GPU machine without the backbone package)."""
    from irp.model.encoder import build_tiny_encoder

    source = os.environ.get("IRP_TEST_TOKENIZER")
    return str(build_tiny_encoder(tmp_path_factory.mktemp("tiny_backbone"), tokenizer_source=source))


@pytest.fixture(scope="session")
def small_log(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """train/valid/test JSONL files of make_records."""
    from irp.data.io import write_records

    folder = tmp_path_factory.mktemp("small_log")
    paths = {}
    for split, (n, seed) in {"train": (400, 1), "valid": (200, 2), "test": (200, 3)}.items():
        paths[split] = folder / f"{split}.jsonl"
        write_records(paths[split], make_records(n, seed))
    return paths


@pytest.fixture(scope="session")
def tiny_seeds(tiny_backbone: str, small_log: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two seeds (1, 2) of the tiny model trained on the small log's files, so they record data fingerprints: one
    recipe, two runs (distillation's teachers, a soup's ingredients). Read-only: copy before editing."""
    from irp.config import IRPConfig
    from irp.train import train

    root = tmp_path_factory.mktemp("tiny_seeds")
    for seed in (1, 2):
        config = IRPConfig(backbone=tiny_backbone, epochs=1, batch_size=16, lr=3e-3, device="cpu", seed=seed)
        train(config, small_log["train"], small_log["valid"], root / f"seed{seed}", quiet=True)
    return [root / "seed1", root / "seed2"]


@pytest.fixture
def redis_server():
    """A real redis-server on a free loopback port (tests/redis_server.py), stopped after the test."""
    from redis_server import RedisServer

    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def catch_host_reads() -> Iterator[list[str]]:
    """Names of the tensor -> host reads (`.item()`, `bool(t)`, ...) made inside the block: on CUDA each is a
    host-device sync that stalls the kernel queue; on CPU the same calls are caught at the torch-function level."""
    import torch
    from torch.overrides import TorchFunctionMode

    to_host = {torch.Tensor.__bool__, torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.__int__,
               torch.Tensor.__float__, torch.Tensor.__index__, torch.Tensor.numpy, torch.Tensor.nonzero}
    calls: list[str] = []

    class CatchHostReads(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
            if func in to_host:
                calls.append(getattr(func, "__name__", str(func)))
            return func(*args, **(kwargs or {}))

    with CatchHostReads():
        yield calls


def load_bench(name: str) -> Any:
    """The module of bench/NAME.py (the benches are scripts, not a package), registered as `bench_NAME`."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location(f"bench_{name}", Path(__file__).resolve().parents[1] / "bench" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[f"bench_{name}"] = module  # dataclasses in the module look themselves up there
    spec.loader.exec_module(module)
    return module
