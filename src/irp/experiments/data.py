"""The named record sets of an ablation, loaded once per process and identified by content fingerprints.

Names: `train`, `valid`, `test` (the given files, optionally subsampled), `test@corrupt=F` (the test set with a
fraction F of each record's products replaced by random catalogue products), and, when the SIMMC files are
present, `fashion_train` / `fashion_valid` (SIMMC fashion train split by dialog), `fashion_dev` and `furniture_dev`.

A fingerprint names the exact content of a set (source file hash + how it was cut), so cached scores are only
reused for the same data.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

SIMMC_SOURCES = {
    "fashion": "simmc1_fashion/image_intent_train.jsonl",
    "fashion_dev": "simmc1_fashion/image_intent_dev.jsonl",
    "furniture_dev": "simmc1_furniture/furniture_annotated_dev.jsonl",
}
SIMMC_SETS = ("fashion_train", "fashion_valid", "fashion_dev", "furniture_dev")
FASHION_VALID_FRACTION = 0.15  # dialogs of SIMMC fashion train held out to validate the fine-tuned model
CORRUPT_PREFIX = "test@corrupt="


def fingerprint(*parts: Any) -> str:
    """A short stable hash of JSON-able parts.

    >>> fingerprint("a", 1) == fingerprint("a", 1) != fingerprint("a", 2)
    True
    """
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def subsample(records: Sequence[dict], n: int, seed: int = 0) -> list[dict]:
    """A random subset of `n` records in their original order (all of them when n is 0 or not smaller).

    >>> [r["i"] for r in subsample([{"i": i} for i in range(10)], 3, seed=0)]
    [5, 6, 9]
    """
    if not n or n >= len(records):
        return list(records)
    keep = np.sort(np.random.default_rng(seed).choice(len(records), size=n, replace=False))
    return [records[int(i)] for i in keep]


def subsample_file(source: Path, target: Path, n: int, seed: int = 0) -> int:
    """Write a random subset of `n` records of `source` (file order kept) to `target`, without parsing the others:
    Parquet rows are taken by index, JSONL(.gz) lines are copied (as plain JSONL). Returns the records written.
    The same (file, n, seed) always gives the same subset."""
    import gzip

    from irp.data.io import file_format
    from irp.fileio import atomic_path

    kind = file_format(source)
    if kind == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(source)
        keep = np.sort(np.random.default_rng(seed).choice(table.num_rows, size=min(n, table.num_rows), replace=False))
        with atomic_path(target) as tmp:
            pq.write_table(table.take(keep), tmp)
        return len(keep)
    opener = gzip.open if kind == ".jsonl.gz" else open
    with opener(source, "rb") as handle:
        total = sum(1 for line in handle if line.strip())
    keep_set = set(np.random.default_rng(seed).choice(total, size=min(n, total), replace=False).tolist())
    written = 0
    with opener(source, "rb") as handle, atomic_path(target) as tmp, open(tmp, "wb") as out:
        index = 0
        for line in handle:
            if not line.strip():
                continue
            if index in keep_set:
                out.write(line if line.endswith(b"\n") else line + b"\n")
                written += 1
            index += 1
    return written


def default_simmc_dir() -> Path | None:
    """$IRP_SHARED_DATA, else the `shared/data` folder beside or inside the repository, if it exists."""
    if os.environ.get("IRP_SHARED_DATA"):
        return Path(os.environ["IRP_SHARED_DATA"])
    repo = Path(__file__).resolve().parents[3]
    for candidate in (repo.parent / "shared" / "data", repo / "shared" / "data"):
        if (candidate / SIMMC_SOURCES["fashion"]).is_file():
            return candidate
    return None


@dataclass(frozen=True)
class DataSpec:
    """Everything needed to rebuild the record sets (picklable: worker processes rebuild their own)."""

    train: Path
    valid: Path
    test: Path
    cache_dir: Path  # imported SIMMC records are kept here
    max_train: int = 0  # 0 = all
    max_eval: int = 0  # cap on every validation / test set, 0 = all
    simmc_dir: Path | None = None
    corruption_seed: int = 0


class DataContext:
    """Lazily loaded, memoised record sets by name."""

    def __init__(self, spec: DataSpec) -> None:
        self.spec = spec
        self._records: dict[str, list[dict]] = {}
        self._ids: dict[str, str] = {}
        self._file_ids: dict[Path, str] = {}
        self._catalog: list[dict] | None = None

    # ---- availability -------------------------------------------------------------------------------
    @property
    def simmc_available(self) -> bool:
        d = self.spec.simmc_dir
        return d is not None and all((d / rel).is_file() for rel in SIMMC_SOURCES.values())

    def has_field(self, name: str, field: str) -> bool:
        """Whether every record of set `name` has a 0/1 `field` (e.g. true_intent only in simulated logs)."""
        return all(r.get(field) in (0, 1) for r in self.records(name))

    # ---- records and identities ---------------------------------------------------------------------
    def records(self, name: str) -> list[dict]:
        if name not in self._records:
            self._records[name] = self._load(name)
        return self._records[name]

    def path(self, name: str) -> Path:
        """A file holding exactly the records of set `name`: the given file when it is used whole, else a JSONL
        copy written once into the cache folder (so that training can cache its features by file)."""
        s = self.spec
        stem = s.cache_dir / f"{name.replace('@', '_').replace('=', '')}-{self.fingerprint(name)[:12]}"
        if name in ("train", "valid", "test"):
            source, cap = Path(getattr(s, name)), s.max_train if name == "train" else s.max_eval
            if not cap:
                return source
            target = Path(f"{stem}{'.parquet' if source.suffix.lower() == '.parquet' else '.jsonl'}")
            if not target.exists():
                subsample_file(source, target, cap)
            return target
        target = Path(f"{stem}.jsonl")
        if not target.exists():
            from irp.data.io import write_records

            write_records(target, self.records(name))
        return target

    def fingerprint(self, name: str) -> str:
        """Content id of set `name`, computed without loading it when possible."""
        if name not in self._ids:
            self._ids[name] = self._fingerprint(name)
        return self._ids[name]

    def labels(self, name: str, field: str = "label") -> np.ndarray:
        """[n] float64 0/1 labels of set `name` from `field`; a clear error when a record has none."""
        records = self.records(name)
        values = [r.get(field) for r in records]
        missing = sum(v not in (0, 1) for v in values)
        if missing:
            raise ValueError(f"{missing:,} of {len(records):,} records of {name} have no 0/1 `{field}`")
        return np.asarray(values, dtype=np.float64)

    def sizes(self) -> dict[str, int]:
        """Record counts of the sets loaded so far."""
        return {name: len(recs) for name, recs in self._records.items()}

    def source_records(self, name: str) -> int | None:
        """How many records the given file of `train` / `valid` / `test` holds when the set is a random subset
        of it (--max-train / --max-eval), else None."""
        s = self.spec
        if name not in ("train", "valid", "test") or not (s.max_train if name == "train" else s.max_eval):
            return None
        import gzip

        from irp.data.io import file_format, progress_total

        source = Path(getattr(s, name))
        kind = file_format(source)
        if kind == ".parquet":
            return progress_total(source)  # the row count from the Parquet footer
        with (gzip.open if kind == ".jsonl.gz" else open)(source, "rb") as handle:
            return sum(1 for line in handle if line.strip())

    # ---- internals ----------------------------------------------------------------------------------
    def _file_id(self, path: Path) -> str:
        if path not in self._file_ids:
            self._file_ids[path] = file_sha256(path)
        return self._file_ids[path]

    def _fingerprint(self, name: str) -> str:
        s = self.spec
        if name == "train":
            return fingerprint(self._file_id(s.train), s.max_train)
        if name in ("valid", "test"):
            return fingerprint(self._file_id(getattr(s, name)), s.max_eval)
        if name.startswith(CORRUPT_PREFIX):
            return fingerprint(self.fingerprint("test"), _fraction(name), s.corruption_seed, "catalog-0")
        if name in SIMMC_SETS:
            source = "fashion" if name in ("fashion_train", "fashion_valid") else name
            cap = s.max_train if name == "fashion_train" else s.max_eval
            return fingerprint(self._file_id(self._simmc_path(source)), name, FASHION_VALID_FRACTION, cap)
        raise KeyError(f"unknown record set {name!r}")

    def _load(self, name: str) -> list[dict]:
        from irp.data.io import load_records

        s = self.spec
        if name in ("train", "valid", "test"):
            return load_records(self.path(name))
        if name.startswith(CORRUPT_PREFIX):
            from irp.experiments.corrupt import corrupt_products

            return corrupt_products(self.records("test"), _fraction(name), self.catalog(), s.corruption_seed)
        if name in ("fashion_train", "fashion_valid"):
            from irp.data.split import split_by_session

            valid, train = split_by_session(self._simmc("fashion"), FASHION_VALID_FRACTION, seed=0)
            return subsample(train, s.max_train) if name == "fashion_train" else subsample(valid, s.max_eval)
        if name in ("fashion_dev", "furniture_dev"):
            return subsample(self._simmc(name), s.max_eval)
        raise KeyError(f"unknown record set {name!r}")

    def catalog(self) -> list[dict]:
        """The simulator's catalogue (seed 0): the pool of random products for retrieval failure."""
        if self._catalog is None:
            from irp.data.catalog import build_catalog

            self._catalog = build_catalog(0)
        return self._catalog

    def _simmc_path(self, source: str) -> Path:
        if not self.simmc_available:
            raise FileNotFoundError(
                "SIMMC files not found: pass --simmc-dir (the shared data folder) or set IRP_SHARED_DATA"
            )
        assert self.spec.simmc_dir is not None
        return self.spec.simmc_dir / SIMMC_SOURCES[source]

    def _simmc(self, source: str) -> list[dict]:
        """Imported SIMMC records (imported once into the cache folder, named by the source hash)."""
        from irp.data.importers import import_simmc
        from irp.data.io import load_records

        src = self._simmc_path(source)
        target = self.spec.cache_dir / f"simmc-{source}-{self._file_id(src)[:12]}.jsonl"
        if not target.exists():
            import_simmc(src, target)
        return load_records(target)


def corrupt_set(fraction: float) -> str:
    """Name of the test set with `fraction` of the products replaced.

    >>> corrupt_set(0.25), _fraction(corrupt_set(0.25))
    ('test@corrupt=0.25', 0.25)
    """
    return f"{CORRUPT_PREFIX}{fraction:g}"


def _fraction(name: str) -> float:
    return float(name.removeprefix(CORRUPT_PREFIX))
