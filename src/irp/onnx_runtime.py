"""ONNX Runtime inference for an exported artifact (`irp export-onnx` writes DIR/onnx/).

Featurization stays in Python (the same `Featurizer` as the torch path); only the network runs in ONNX Runtime.
`OnnxModel` has the call convention of `IRPModel` (`model(**batch) -> (logits, None)`), so everything that
scores with a torch model (`irp.train.score`, `IRPClassifier`) scores with it unchanged.

Runtimes: `torch`; `onnx-fp32`, `onnx-int8` (exact files); `onnx` (int8 when exported, else fp32);
`auto` (like `onnx` when DIR/onnx/ exists, else torch).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

ONNX_DIR = "onnx"
FILES = {"onnx-fp32": "model.onnx", "onnx-int8": "model.int8.onnx"}
EXPORT_INFO = "export.json"
RUNTIMES = ("torch", "onnx", "onnx-fp32", "onnx-int8", "auto")
T = TypeVar("T")
R = TypeVar("R")


class RuntimeUnavailable(ValueError):
    """The asked-for runtime cannot run this artifact (not exported, stale export, unknown name)."""


def weights_sha256(model_dir: str | Path) -> str:
    """sha256 of model.safetensors: ties an ONNX export to the exact weights it was exported from."""
    digest = hashlib.sha256()
    with open(Path(model_dir) / "model.safetensors", "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def exported(model_dir: str | Path) -> dict[str, Path]:
    """The ONNX files present in an artifact: runtime name -> path (empty when never exported)."""
    folder = Path(model_dir) / ONNX_DIR
    return {name: folder / file for name, file in FILES.items() if (folder / file).is_file()}


def read_export_info(model_dir: str | Path) -> dict[str, Any]:
    """DIR/onnx/export.json, the export's report (weights hash, parity verdicts); {} when DIR was never exported."""
    path = Path(model_dir) / ONNX_DIR / EXPORT_INFO
    return json.loads(path.read_text()) if path.is_file() else {}


def resolve_runtime(model_dir: str | Path, runtime: str) -> str:
    """Map a requested runtime to a concrete one: torch, onnx-fp32 or onnx-int8.

    >>> import tempfile
    >>> resolve_runtime(tempfile.mkdtemp(), "auto")
    'torch'
    """
    if runtime not in RUNTIMES:
        raise RuntimeUnavailable(f"unknown runtime {runtime!r}; choose from {', '.join(RUNTIMES)}")
    if runtime == "torch":
        return runtime
    files = exported(model_dir)
    if runtime == "auto":
        return next((name for name in ("onnx-int8", "onnx-fp32") if name in files), "torch")
    if runtime == "onnx":
        if not files:
            raise RuntimeUnavailable(
                f"{model_dir} has no ONNX export; run `irp export-onnx --model {model_dir} [--int8]` first"
            )
        return "onnx-int8" if "onnx-int8" in files else "onnx-fp32"
    if runtime not in files:
        flag = " --int8" if runtime == "onnx-int8" else ""
        raise RuntimeUnavailable(
            f"{model_dir} has no {FILES[runtime]}; run `irp export-onnx --model {model_dir}{flag}` first"
        )
    return runtime


def session_options(threads: int = 0) -> Any:
    """ORT options for a shared CPU: `threads` intra-op threads (0 = ORT's default), one inter-op thread, and
    no spin-waiting (on a busy machine spinning threads steal the cores that do the work)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = max(int(threads), 0)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # errors only
    return options


class OnnxModel:
    """An ORT session that quacks like `IRPModel` at inference: `model(**batch) -> (logits [B], None)`.

    One session is created at load time and reused; `InferenceSession.run` is thread-safe, so several
    server threads may call it at once. `concurrency` > 1: `map_batches` runs that many batches at once (batch
    scoring), each with `threads` intra-op threads. At 16-record batches, two single-threaded runs at once score
    about 1.45x the records/s of one run on two intra-op threads, whose small element-wise operators barely
    parallelise.
    """

    def __init__(self, path: str | Path, threads: int = 0, concurrency: int = 1) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        self.threads = threads
        self.concurrency = max(int(concurrency), 1)
        self.session = ort.InferenceSession(str(path), session_options(threads), providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self._pool: ThreadPoolExecutor | None = None

    def eval(self) -> OnnxModel:
        return self  # nothing to switch: an exported graph is always in inference mode

    def logits(self, batch: dict[str, Any]) -> np.ndarray:
        """Batch of tensors or arrays (Featurizer.collate) -> logits [B] float32; unused inputs are skipped."""
        feeds = {name: as_numpy(batch[name]) for name in self.input_names}
        return self.session.run(None, feeds)[0]

    def __call__(self, **batch: Any) -> tuple[torch.Tensor, None]:
        return torch.from_numpy(self.logits(batch)), None

    def map_batches(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
        """`map(fn, items)` with up to `concurrency` calls at once, results in order (ORT releases the GIL)."""
        if self.concurrency == 1:
            return map(fn, items)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="irp-onnx")
        return self._pool.map(fn, items)


def as_numpy(value: Any) -> np.ndarray:
    """A tensor or array-like as a numpy array (no copy for a CPU tensor)."""
    return value.numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


def default_threads() -> int:
    """ORT intra-op threads when the caller does not say: OMP_NUM_THREADS if set, else ORT's default (0)."""
    value = os.environ.get("OMP_NUM_THREADS", "")
    return int(value) if value.isdigit() else 0


def load_onnx(
    model_dir: str | Path, runtime: str = "onnx", threads: int | None = None, concurrency: int = 1
) -> tuple[OnnxModel, Any, dict]:
    """(OnnxModel, Featurizer, meta) for an exported artifact; `meta["runtime"]` says which file runs;
    `threads` and `concurrency` as in `OnnxModel`.

    Refuses an export whose weights no longer match model.safetensors (the model was retrained since).
    """
    from irp.artifact import read_meta
    from irp.config import IRPConfig
    from irp.features import Featurizer
    from irp.model.encoder import load_tokenizer

    model_dir = Path(model_dir)
    meta = read_meta(model_dir)
    runtime = resolve_runtime(model_dir, runtime)
    if runtime == "torch":
        raise RuntimeUnavailable(f"{model_dir} has no ONNX export (runtime resolved to torch)")
    info = read_export_info(model_dir)
    if info.get("weights_sha256") != weights_sha256(model_dir):
        raise RuntimeUnavailable(
            f"{model_dir / ONNX_DIR} was exported from other weights than {model_dir / 'model.safetensors'}; "
            f"re-run `irp export-onnx --model {model_dir}`"
        )
    config = IRPConfig.from_dict(meta["config"])
    featurizer = Featurizer(load_tokenizer(str(model_dir / "tokenizer")), config)
    model = OnnxModel(exported(model_dir)[runtime], default_threads() if threads is None else threads, concurrency)
    meta = dict(meta, runtime=runtime, onnx=info)
    return model, featurizer, meta
