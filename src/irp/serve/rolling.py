"""Rolling swap across a fleet: reload the replicas one at a time while the balancer keeps sending traffic.

Each replica swaps in place (`POST /v1/admin/reload {"model": DIR}`: load, warm up, ONNX parity, one atomic
assignment; irp.serve.reload), so no request fails and no replica leaves the balancer. One replica at a time:
the others keep their cores for the traffic while one loads, and a folder that fails on the first replica
(HTTP 409, the old model keeps serving) stops the roll before it reaches the rest. Every answer names its
`model_version`, and during the mixed period Prometheus shows offers and answers per version
(`model_version:irp_offers:increase1h`, deploy/prometheus/rules.yml).

The model folder must be readable at the same path on every replica (a shared volume, or the same image).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import httpx


class RollError(Exception):
    """A replica did not swap; the replicas before it serve the new model, the others the old one."""


def rolling_reload(replicas: Sequence[httpx.Client], model_dir: str, pause_s: float = 0.0,
                   timeout_s: float = 300.0) -> list[dict[str, Any]]:
    """Reload each replica (an httpx client whose base_url is the replica, with its auth headers) in turn;
    after each, check that it answers with the new version (`/readyz`) before going on. Returns each reload's
    answer (with `replica_id` and `url`); raises RollError naming the replica that failed."""
    done: list[dict[str, Any]] = []
    for client in replicas:
        name = str(client.base_url)
        try:
            response = client.post("/v1/admin/reload", json={"model": model_dir}, timeout=timeout_s)
        except httpx.HTTPError as e:
            raise RollError(f"{name}: {type(e).__name__}: {e}; swapped so far: {len(done)}") from None
        if response.status_code != 200:
            raise RollError(f"{name}: HTTP {response.status_code}: {response.text[:500]}; swapped so far: {len(done)}")
        result = response.json()
        ready = client.get("/readyz", timeout=10)
        body = ready.json() if ready.status_code == 200 else {}
        if body.get("model_version") != result["model_version"]:
            raise RollError(f"{name}: serves {body.get('model_version')!r} after reloading "
                            f"{result['model_version']!r} (HTTP {ready.status_code})")
        done.append({**result, "replica_id": body.get("replica_id"), "url": name, "finished": time.time()})
        if pause_s > 0 and client is not replicas[-1]:
            time.sleep(pause_s)
    return done
