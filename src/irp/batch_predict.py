"""`irp predict` at volume: score a file, a folder or a glob of record files in bounded memory.

Two engines, same output (probabilities within float32 rounding, same order):

- `local`: one process; records stream in batches of `batch_size` (irp.data.io), are scored and written at
  once, so memory does not grow with the input.
- `ray`: Ray Data (`pip install 'irp[ray]'`): `read_parquet` of the inputs, `map_batches` over `Scorer`, a
  callable class whose classifier is loaded once per actor (`workers` actors, each `batch_size` rows at a
  time), `write_parquet` of the parts; order preserved. Without `ray_address` it starts a local Ray.

Output: a record file when `out` ends in .parquet / .jsonl / .jsonl.gz, else a folder of Parquet parts
(`part-00000.parquet`, ... of at most `part_rows` records each; Ray names its own parts), each record with
`probability` (calibrated, rounded to 6 decimals as `irp predict` always wrote it) and `image_seeking` added.
"""

from __future__ import annotations

import glob
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import pyarrow as pa

from irp.data.io import (
    FORMATS,
    DataFileError,
    RecordWriter,
    _record_batch,
    batched,
    file_format,
    iter_records,
    parse_chunk,
)

PART_ROWS = 1_000_000


class RayUnavailable(RuntimeError):
    """Ray is not installed or the cluster address cannot be reached (the CLI exits 2)."""


def input_files(source: str | Path) -> list[Path]:
    """The record files of `source`: a file, a folder (its record files, recursively, in path order) or a glob.
    Raises FileNotFoundError / DataFileError when nothing usable is named."""
    text = str(source)
    if glob.has_magic(text):
        paths = [Path(p) for p in sorted(glob.glob(text, recursive=True)) if Path(p).is_file()]
        if not paths:
            raise FileNotFoundError(f"{text}: the pattern matches no file")
    elif Path(text).is_dir():
        paths = sorted((p for p in Path(text).rglob("*") if p.is_file() and not p.name.startswith(".")),
                       key=lambda p: p.as_posix())
        paths = [p for p in paths if _is_record_file(p)]
        if not paths:
            raise FileNotFoundError(f"{text}: no {', '.join(FORMATS)} file in the folder")
    elif Path(text).is_file():
        paths = [Path(text)]
    else:
        raise FileNotFoundError(f"{text}: no such file or folder")
    for path in paths:
        file_format(path)  # DataFileError for another suffix
    return paths


def _is_record_file(path: Path) -> bool:
    try:
        file_format(path)
    except DataFileError:
        return False
    return True


def scored(records: list[dict[str, Any]], probabilities: np.ndarray, threshold: float) -> list[dict[str, Any]]:
    """Records with `probability` (6 decimals) and `image_seeking` added, in place."""
    for record, p in zip(records, probabilities):
        record["probability"] = round(float(p), 6)
        record["image_seeking"] = bool(p >= threshold)
    return records


class _Parts:
    """A folder of Parquet parts of at most `part_rows` records, or one record file, written as records come."""

    def __init__(self, out: Path, part_rows: int) -> None:
        self.out, self.part_rows = out, part_rows
        self.single = _is_record_file(out)
        self.writer: RecordWriter | None = None
        self.rows_in_part = 0
        self.parts = 0

    def write(self, records: list[dict[str, Any]]) -> None:
        while records:
            if self.writer is None:
                path = self.out if self.single else self.out / f"part-{self.parts:05d}.parquet"
                self.writer = RecordWriter(path).__enter__()
                self.parts += 1
            room = len(records) if self.single else self.part_rows - self.rows_in_part
            self.writer.write(records[:room])
            self.rows_in_part += min(room, len(records))
            records = records[room:]
            if not self.single and self.rows_in_part >= self.part_rows:
                self.close()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.__exit__(None, None, None)
            self.writer, self.rows_in_part = None, 0


def predict_local(classifier: Any, inputs: list[Path], out: Path, threshold: float, batch_size: int = 1024,
                  part_rows: int = PART_ROWS, update: Callable[[int], None] | None = None) -> dict[str, int]:
    """Score every record of `inputs` in order, `batch_size` at a time. Raises InvalidRecordError on the first
    invalid record (nothing is left at `out`'s final names then: every file is atomic)."""
    parts = _Parts(out, part_rows)
    if not parts.single:
        out.mkdir(parents=True, exist_ok=True)
    counts = {"records": 0, "image_seeking": 0}
    try:
        for batch in batched((r for path in inputs for r in iter_records(path)), batch_size):
            probs = classifier.predict_proba(batch)
            parts.write(scored(batch, probs, threshold))
            counts["records"] += len(batch)
            counts["image_seeking"] += int((probs >= threshold).sum())
            if update is not None:
                update(counts["records"])
    finally:
        parts.close()
    counts["parts"] = parts.parts
    return counts


class Scorer:
    """Ray Data's callable class: the classifier loaded once per actor, then Arrow batches of input rows
    (irp record Parquet) in, scored Arrow batches (the same Parquet layout) out."""

    def __init__(self, model_dir: str, runtime: str, threshold: float | None) -> None:
        from irp.predict import IRPClassifier

        device = "cpu"
        if runtime == "torch":
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.classifier = IRPClassifier.load(model_dir, device=device, runtime=runtime)
        self.threshold = self.classifier.threshold_ if threshold is None else threshold

    def __call__(self, batch: pa.Table) -> pa.Table:
        from irp.data.io import InvalidRecordError

        records = []
        for chunk in batch.to_batches():
            for item in parse_chunk("ray input", (1, chunk)):
                if type(item) is not dict:
                    raise InvalidRecordError(item)  # type: ignore[arg-type]
                records.append(item)
        probs = self.classifier.predict_proba(records)
        return pa.Table.from_batches([_record_batch(scored(records, probs, self.threshold))])


def check_ray_address(address: str, timeout: float = 5.0) -> None:
    """Raise RayUnavailable when `address` (host:port, ray://host:port; "auto" and "local" are Ray's own) has
    nothing listening: a clear error in seconds instead of Ray's long retry loop."""
    if address in ("auto", "local"):
        return
    parsed = urlparse(address if "://" in address else f"ray://{address}")
    if not parsed.hostname or not parsed.port:
        raise RayUnavailable(f"--ray-address {address!r}: expected HOST:PORT or ray://HOST:PORT")
    try:
        with socket.create_connection((parsed.hostname, parsed.port), timeout=timeout):
            pass
    except OSError as e:
        raise RayUnavailable(f"cannot reach a Ray cluster at {address}: {e.strerror or e}") from None


def predict_ray(model_dir: Path, runtime: str, inputs: list[Path], out: Path, threshold: float | None,
                workers: int = 2, batch_size: int = 1024, ray_address: str | None = None) -> dict[str, int]:
    """Score `inputs` (Parquet) on Ray Data into the folder `out` (Parquet parts, input order)."""
    try:
        import ray
    except ImportError:
        raise RayUnavailable("--engine ray needs Ray: pip install 'irp[ray]'") from None
    if ray_address is not None:
        check_ray_address(ray_address)
    if any(file_format(p) != ".parquet" for p in inputs):
        raise DataFileError("--engine ray reads Parquet (convert with `irp validate IN --out IN.parquet`)")
    started = not ray.is_initialized()
    if started:
        env = {"env_vars": {k: v for k, v in os.environ.items() if k in ("PYTHONPATH", "HF_HUB_OFFLINE",
                                                                          "TRANSFORMERS_OFFLINE", "OMP_NUM_THREADS")}}
        ray.init(address=ray_address, runtime_env=env, include_dashboard=False, log_to_driver=False,
                 # one CPU per actor, one more for the read and write tasks (else they wait for an actor forever)
                 **({} if ray_address else {"num_cpus": workers + 1}))
    try:
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True
        context.enable_progress_bars = False
        dataset = ray.data.read_parquet([str(p) for p in inputs])
        dataset = dataset.map_batches(Scorer, fn_constructor_args=(str(model_dir), runtime, threshold),
                                      batch_size=batch_size, batch_format="pyarrow",
                                      compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=1)
        out.mkdir(parents=True, exist_ok=True)
        dataset.write_parquet(str(out))
    finally:
        if started:
            ray.shutdown()
    files = sorted(out.glob("*.parquet"))
    import pyarrow.parquet as pq

    return {"records": sum(pq.ParquetFile(p).metadata.num_rows for p in files), "parts": len(files)}
