"""Load test of a running `irp serve`: mixed single and batch requests, with a share of malformed ones.

    python bench/load.py --url http://127.0.0.1:PORT --n 5000 --concurrency 32 --out OUTDIR [--token T]

Starts nothing itself: point it at a server (`irp serve --model DIR --port PORT`). The request plan is fixed by
`--seed`: 70 % single records, 25 % batches of 2-16 records, 5 % malformed requests of 14 kinds (bad JSON, empty
body, missing or over-long utterance, wrong types, too many products, over-long attribute, 1.1 MB body, 257-item
batch, lone surrogate, ...), each of which must get a 4xx. Records come from `--data` or the simulator.

Writes OUTDIR/load.json: requests_per_s, p50_ms, p99_ms, status_counts (status code -> count),
connection_errors, malformed_sent, malformed_not_4xx, per-kind latency and status counts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Planned:
    kind: str  # single | batch | malformed:<what>
    path: str
    body: bytes


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode("utf-8", "surrogatepass")


def malformed_requests(record: dict) -> list[tuple[str, str, bytes]]:
    """(kind, path, body) of requests that a correct server must answer with a 4xx.

    >>> kinds = [k for k, _, _ in malformed_requests({"utterance": "red dress", "products": []})]
    >>> len(kinds), len(set(kinds))
    (14, 14)
    """
    product = {"title": "Floral Midi Dress", "color": "red"}
    return [
        ("invalid_json", "/v1/predict", b'{"utterance": "red dress", '),
        ("empty_body", "/v1/predict", b""),
        ("not_an_object", "/v1/predict", _dumps([record])),
        ("missing_utterance", "/v1/predict", _dumps({k: v for k, v in record.items() if k != "utterance"})),
        ("utterance_too_long", "/v1/predict", _dumps(record | {"utterance": "show me " * 251})),
        ("utterance_wrong_type", "/v1/predict", _dumps(record | {"utterance": 42})),
        ("too_many_products", "/v1/predict", _dumps(record | {"products": [product] * 51})),
        ("attribute_too_long", "/v1/predict", _dumps(record | {"products": [product | {"brand": "x" * 513}]})),
        ("negative_price", "/v1/predict", _dumps(record | {"products": [product | {"price": -1}]})),
        ("lone_surrogate", "/v1/predict", b'{"utterance": "red \\ud800 dress"}'),
        ("body_too_large", "/v1/predict", _dumps(record | {"padding": "x" * 1_100_000})),
        ("batch_too_large", "/v1/predict/batch", _dumps({"items": [{"utterance": "hi"}] * 257})),
        ("batch_items_not_list", "/v1/predict/batch", _dumps({"items": record})),
        ("batch_bad_item", "/v1/predict/batch", _dumps({"items": [record, {"utterance": ""}]})),
    ]


def plan(records: list[dict], n: int, malformed_share: float, batch_share: float, seed: int) -> list[Planned]:
    rng = random.Random(seed)
    n_malformed = round(n * malformed_share)
    kinds = ["malformed"] * n_malformed + ["batch"] * round(n * batch_share)
    kinds += ["single"] * (n - len(kinds))
    rng.shuffle(kinds)
    out, m = [], 0
    for kind in kinds:
        if kind == "single":
            out.append(Planned("single", "/v1/predict", _dumps(rng.choice(records))))
        elif kind == "batch":
            items = rng.sample(records, rng.randint(2, 16))
            out.append(Planned("batch", "/v1/predict/batch", _dumps({"items": items})))
        else:
            bad = malformed_requests(rng.choice(records))
            what, path, body = bad[m % len(bad)]  # every kind, in turn
            m += 1
            out.append(Planned(f"malformed:{what}", path, body))
    return out


def load_records(data: Path | None) -> list[dict]:
    drop = {"label", "true_intent", "true_category", "user_id"}
    if data is not None:
        from irp.data.io import load_records as load

        records = load(data)
    else:
        from irp.data.simulate import SimConfig, simulate

        records = list(simulate(SimConfig(n=2000, seed=99)))
    return [{k: v for k, v in r.items() if k not in drop and not k.startswith("_")} for r in records]


async def run(url: str, requests: list[Planned], concurrency: int, token: str | None) -> list[tuple[str, int, float]]:
    """Send every planned request with `concurrency` workers; (kind, status or -1 on a connection error, s)."""
    import httpx

    headers = {"content-type": "application/json"} | ({"authorization": f"Bearer {token}"} if token else {})
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    results: list[tuple[str, int, float]] = []
    queue = iter(requests)

    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=60.0) as client:
        ready = await client.get("/readyz")
        if ready.status_code != 200:
            raise SystemExit(f"{url}/readyz answered {ready.status_code}: is the server up and the model loaded?")

        async def worker() -> None:
            for item in queue:  # the shared iterator hands each request to exactly one worker
                started = time.perf_counter()
                try:
                    response = await client.post(item.path, content=item.body)
                    status = response.status_code
                except httpx.TransportError:
                    status = -1
                results.append((item.kind, status, time.perf_counter() - started))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return results


def report(results: list[tuple[str, int, float]], seconds: float, concurrency: int) -> dict[str, Any]:
    latency = np.array([s for _, status, s in results if status != -1]) * 1000
    statuses = Counter(str(status) for _, status, _ in results if status != -1)
    malformed = [(kind, status) for kind, status, _ in results if kind.startswith("malformed:")]
    by_kind: dict[str, Any] = {}
    for group in ("single", "batch", "malformed"):
        rows = [(status, s) for kind, status, s in results if kind.split(":")[0] == group]
        ms = np.array([s for status, s in rows if status != -1]) * 1000
        by_kind[group] = {
            "sent": len(rows),
            "status_counts": dict(Counter(str(status) for status, _ in rows)),
            "p50_ms": round(float(np.percentile(ms, 50)), 2) if len(ms) else None,
            "p99_ms": round(float(np.percentile(ms, 99)), 2) if len(ms) else None,
        }
    per_malformed: dict[str, Counter[str]] = defaultdict(Counter)
    for kind, status in malformed:
        per_malformed[kind.split(":", 1)[1]][str(status)] += 1
    return {
        "n": len(results),
        "concurrency": concurrency,
        "duration_s": round(seconds, 2),
        "requests_per_s": round(len(results) / seconds, 1),
        "p50_ms": round(float(np.percentile(latency, 50)), 2),
        "p99_ms": round(float(np.percentile(latency, 99)), 2),
        "mean_ms": round(float(latency.mean()), 2),
        "status_counts": dict(sorted(statuses.items())),
        "connection_errors": sum(status == -1 for _, status, _ in results),
        "server_errors_5xx": sum(status >= 500 for _, status, _ in results),
        "malformed_sent": len(malformed),
        "malformed_not_4xx": sum(not 400 <= status < 500 for _, status in malformed),
        "by_kind": by_kind,
        "malformed_by_kind": {k: dict(v) for k, v in sorted(per_malformed.items())},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="e.g. http://127.0.0.1:8000")
    parser.add_argument("--n", type=int, default=5000, help="requests in total")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--out", type=Path, required=True, help="output folder for load.json")
    parser.add_argument("--token", default=os.environ.get("IRP_SERVE_TOKEN"), help="bearer token (env IRP_SERVE_TOKEN)")
    parser.add_argument("--malformed", type=float, default=0.05, help="share of malformed requests")
    parser.add_argument("--batch-share", type=float, default=0.25, help="share of batch requests")
    parser.add_argument("--data", type=Path, default=None, help="records for the request bodies (default: simulated)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.n < 1 or args.concurrency < 1 or not 0 <= args.malformed + args.batch_share <= 1:
        parser.error("need --n >= 1, --concurrency >= 1 and 0 <= --malformed + --batch-share <= 1")

    from rich.console import Console
    from rich.table import Table

    console = Console()
    requests = plan(load_records(args.data), args.n, args.malformed, args.batch_share, args.seed)
    with console.status(f"{args.n:,} requests at concurrency {args.concurrency} against {args.url}..."):
        started = time.perf_counter()
        results = asyncio.run(run(args.url.rstrip("/"), requests, args.concurrency, args.token))
        seconds = time.perf_counter() - started
    result = report(results, seconds, args.concurrency) | {"url": args.url, "seed": args.seed}
    args.out.mkdir(parents=True, exist_ok=True)
    tmp = args.out / ".load.json.tmp"
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, args.out / "load.json")

    table = Table("kind", "sent", "p50 ms", "p99 ms", "status codes", title=f"{args.url}: {result['n']:,} requests")
    for kind, row in result["by_kind"].items():
        table.add_row(kind, f"{row['sent']:,}", str(row["p50_ms"]), str(row["p99_ms"]), str(row["status_counts"]))
    console.print(table)
    console.print(
        f"{result['requests_per_s']:,.0f} requests/s, p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms; "
        f"5xx {result['server_errors_5xx']}, connection errors {result['connection_errors']}, malformed not 4xx "
        f"{result['malformed_not_4xx']}/{result['malformed_sent']} -> {args.out / 'load.json'}"
    )
    ok = result["server_errors_5xx"] == 0 and result["connection_errors"] == 0 and result["malformed_not_4xx"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
