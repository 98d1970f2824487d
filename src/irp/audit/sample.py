"""The sampling design of a human audit of the proxy label: strata, allocation, a blind sample.

Strata are the proxy label (tap / no tap) and, when a model scores the log, a score band. The bands
split at the model's threshold and at the median score on each side of it, so the region around the
operating point gets its own strata however rare it is in the log. Within each stratum records are
drawn by simple random sampling without replacement (SRSWOR); the allocation is equal across strata
(water-filled: a stratum smaller than its share is taken whole and the rest goes to the others), which
oversamples the rare strata that matter (taps the model scores low, no-taps it scores high). The
design (population and sample counts per stratum, which stratum each sampled record is in) is what
`irp.audit.estimate` re-weights with.

The sample itself is *blind*: a person sees the utterance, the intent, the earlier turns and the
products, never the label, the score or the stratum, and the queue order is shuffled so that strata
do not come in blocks (and so that a half-finished queue is still a random subsample of every stratum).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from irp.audit.store import AuditFolder

# What a person sees of a record; everything else (label, true_intent, scores, policy fields) stays out.
BLIND_FIELDS = ("id", "utterance", "intent", "context", "products")
MAX_PRODUCTS = 10  # products shown per record (the top of the ranking)
MIN_PER_STRATUM = 2  # a stratum's variance needs two records


class SampleError(ValueError):
    """The sample cannot be drawn as asked (the message names the flag or the data problem)."""


@dataclass(frozen=True)
class Stratum:
    """One stratum: its label, its score band (None without a model), and its population / sample sizes."""

    name: str
    label: int
    band: int | None  # index into the band edges; None when not stratified by score
    score_range: tuple[float, float] | None  # [low, high) of the band's scores
    above_threshold: bool | None  # the band lies at or above the model's threshold
    population: int
    sampled: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "label": self.label,
            "band": self.band,
            # [low, high) with an open top stored as null (strict JSON has no infinity)
            "score_range": [v if math.isfinite(v) else None for v in self.score_range] if self.score_range else None,
            "above_threshold": self.above_threshold,
            "population": self.population,
            "sampled": self.sampled,
            "rate": self.sampled / self.population,
        }


def blind(record: dict[str, Any]) -> dict[str, Any]:
    """The part of a record a reviewer may see (no label, no score).

    >>> blind({"id": "1", "utterance": "red dress", "label": 1, "true_intent": 1, "products": []})
    {'id': '1', 'utterance': 'red dress', 'intent': 'unknown', 'context': [], 'products': []}
    """
    out = {key: record.get(key) for key in BLIND_FIELDS}
    out["intent"] = out["intent"] or "unknown"
    out["context"] = list(out["context"] or [])
    out["products"] = list(out["products"] or [])[:MAX_PRODUCTS]
    return out


def band_edges(scores: npt.NDArray[np.float64], threshold: float) -> list[float]:
    """Band boundaries: the threshold and the median score on each side of it (bands are [e_i, e_i+1)).

    >>> band_edges(np.array([0.1, 0.2, 0.3, 0.6, 0.8, 0.9]), 0.5)
    [0.0, 0.2, 0.5, 0.8, inf]
    """
    below, above = scores[scores < threshold], scores[scores >= threshold]
    inner = [threshold]
    if below.size:
        inner.insert(0, float(np.median(below)))
    if above.size:
        inner.append(float(np.median(above)))
    edges = [0.0, *sorted(set(e for e in inner if e > 0.0)), math.inf]
    return edges


def allocate(sizes: list[int], n: int) -> list[int]:
    """Equal allocation of `n` over strata of `sizes`, water-filled: small strata are taken whole.

    >>> allocate([5, 100, 1000], 60), allocate([5, 100, 1000], 1105), allocate([3, 3], 5)
    ([5, 28, 27], [5, 100, 1000], [3, 2])
    """
    alloc = [0] * len(sizes)
    remaining = n
    order = sorted(range(len(sizes)), key=lambda h: sizes[h])
    for i, h in enumerate(order):
        share = math.ceil(remaining / (len(order) - i))
        alloc[h] = min(sizes[h], share)
        remaining -= alloc[h]
    for h in order:  # ceil shares can leave a remainder where a stratum was capped late
        extra = min(remaining, sizes[h] - alloc[h])
        alloc[h] += extra
        remaining -= extra
    return alloc


def draw_sample(
    records: list[dict[str, Any]],
    n: int,
    seed: int = 0,
    scores: npt.ArrayLike | None = None,
    threshold: float | None = None,
) -> tuple[list[dict[str, Any]], list[Stratum], dict[str, dict[str, Any]], list[float] | None]:
    """Draw a stratified blind sample of `n` of `records` (each with a 0/1 `label`).

    With `scores` (N,) and the model's `threshold`, strata are label x score band (`band_edges`).
    Returns (blind records in queue order, strata, {id: {"stratum", "score"}}, band edges or None).
    Raises SampleError when `n` does not fit the data or a record lacks a label or a unique id.
    """
    if n < 1:
        raise SampleError(f"--n must be at least 1, got {n}")
    if n > len(records):
        raise SampleError(f"--n {n} is larger than the data ({len(records)} records)")
    labels = np.array([r.get("label") if r.get("label") in (0, 1) else -1 for r in records])
    if (labels < 0).any():
        first = int(np.flatnonzero(labels < 0)[0])
        raise SampleError(f"record {records[first]['id']!r} has no 0/1 label: the strata are tap / no tap")
    ids = [str(r["id"]) for r in records]
    if len(set(ids)) != len(ids):
        raise SampleError("record ids are not unique: a verdict must name exactly one record")
    score_arr = None if scores is None else np.asarray(scores, dtype=np.float64).reshape(-1)
    edges = None
    if score_arr is not None:
        if threshold is None or score_arr.shape != labels.shape:
            raise SampleError("scores need one value per record and the model's threshold")
        edges = band_edges(score_arr, threshold)
        bands = np.searchsorted(np.asarray(edges), score_arr, side="right") - 1  # (N,) band of each record
    else:
        bands = np.zeros(len(records), dtype=np.int64)
    keys = sorted({(int(lab), int(b)) for lab, b in zip(labels, bands)})
    members = {key: np.flatnonzero((labels == key[0]) & (bands == key[1])) for key in keys}
    if n < MIN_PER_STRATUM * len(keys):
        raise SampleError(f"--n {n} is too small: {len(keys)} strata need at least {MIN_PER_STRATUM} records each")
    alloc = allocate([members[k].size for k in keys], n)
    rng = np.random.default_rng(seed)
    strata, chosen, key_of = [], [], {}
    for key, take in zip(keys, alloc):
        label, band = key
        name = f"{'tap' if label else 'no_tap'}"
        score_range, above = None, None
        if edges is not None:
            score_range = (edges[band], edges[band + 1])
            above = bool(threshold is not None and edges[band] >= threshold)
            name += f"|{edges[band]:.3g}<=s<{edges[band + 1]:.3g}"
        strata.append(Stratum(name, label, None if edges is None else band, score_range, above,
                              int(members[key].size), int(take)))
        picked = rng.choice(members[key], size=take, replace=False)
        chosen.extend(int(i) for i in picked)
        key_of.update({int(i): name for i in picked})
    order = rng.permutation(len(chosen))  # interleave the strata in the queue
    queue = [chosen[i] for i in order]
    assignment = {
        ids[i]: {"stratum": key_of[i], "score": None if score_arr is None else float(score_arr[i])} for i in queue
    }
    return [blind(records[i]) for i in queue], strata, assignment, edges


def write_sample(
    records: list[dict[str, Any]],
    n: int,
    out: str | Path,
    seed: int = 0,
    data: dict[str, Any] | None = None,
    scores: npt.ArrayLike | None = None,
    model: dict[str, Any] | None = None,
) -> AuditFolder:
    """Draw the sample (`draw_sample`) and write the audit folder with its sealed design.

    `data` describes the source file (path, sha256); `model` (path, version, threshold, promise) goes with `scores`.
    """
    threshold = None if model is None else float(model["threshold"])
    sample, strata, assignment, edges = draw_sample(records, n, seed, scores, threshold)
    design = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "data": data,
        "seed": seed,
        "n": n,
        "population": len(records),
        "stratified_by": ["label", "score_band"] if edges else ["label"],
        "allocation": "equal across strata, water-filled; SRSWOR within each stratum",
        "model": None if model is None else {**model, "band_edges": [e if math.isfinite(e) else None for e in edges or []]},
        "strata": [s.as_dict() for s in strata],
        "records": assignment,
    }
    return AuditFolder.create(out, sample, design)
