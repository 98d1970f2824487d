"""Inference API: `IRPClassifier.load(dir).predict_proba(records)` (scikit-learn style).

`predict_proba` returns *calibrated* probabilities (the artifact's "calibration", applied in Python after the
network or ONNX graph), the scale the saved threshold lives on; `decision_function` returns the raw logits.

>>> # clf = IRPClassifier.load("runs/demo/model"); clf.predict([{"utterance": "show me red dresses"}])
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from irp.artifact import load_model
from irp.artifact import promise as artifact_promise
from irp.calibration import calibrate_logits
from irp.features import Featurizer
from irp.model.irp import IRPModel
from irp.train import score_logits


def model_version(meta: dict[str, Any]) -> str:
    """A short id of what an artifact answers: the training data fingerprint plus the step of the best checkpoint,
    and after `irp threshold` a hash of the refitted operating point and calibration (same weights, new answers).

    >>> model_version({"data": {"train": {"sha256": "0123456789ab"}}, "training": {"best_step": 40}})
    '01234567-40'
    """
    train = meta.get("data", {}).get("train", {})
    base = f"{str(train.get('sha256', 'mem'))[:8]}-{meta['training']['best_step']}"
    if "refit" not in meta:
        return base
    point = json.dumps([meta["threshold"]["value"], meta.get("calibration")], sort_keys=True)
    return f"{base}-op{hashlib.blake2b(point.encode(), digest_size=3).hexdigest()}"


class IRPClassifier:
    """A loaded model with its chosen operating point (`threshold_`)."""

    def __init__(self, model: IRPModel, featurizer: Featurizer, meta: dict[str, Any], device: str = "cpu") -> None:
        self.model_ = model
        self.featurizer_ = featurizer
        self.meta_ = meta
        self.threshold_: float = float(meta["threshold"]["value"])
        self.device_ = torch.device(device)

    @classmethod
    def load(cls, model_dir: str | Path, device: str = "cpu", runtime: str = "torch") -> IRPClassifier:
        """`runtime`: torch, onnx (int8 when exported, else fp32), onnx-fp32, onnx-int8 or auto (onnx when
        exported, else torch); see irp.onnx_runtime. ONNX runs on CPU whatever `device` says, set up for batch
        scoring: one intra-op thread per run and one run per core (OMP_NUM_THREADS if set) at once; `irp serve`
        builds its own sessions."""
        from irp.onnx_runtime import default_threads, load_onnx, resolve_runtime

        if resolve_runtime(model_dir, runtime) != "torch":  # raises ValueError for unknown / missing runtimes
            runs = default_threads() or os.cpu_count() or 1
            onnx_model, featurizer, meta = load_onnx(model_dir, runtime, threads=1, concurrency=runs)
            return cls(onnx_model, featurizer, meta, "cpu")  # type: ignore[arg-type]  # same call convention
        model, featurizer, meta = load_model(model_dir, device=device)
        return cls(model, featurizer, meta, device)

    @property
    def version(self) -> str:
        """A short id of what answers: `model_version(meta_)`."""
        return model_version(self.meta_)

    @property
    def promise(self) -> dict[str, Any]:
        """What the operating point promises: target_precision, confidence, lower_bound, threshold, rule, n_valid,
        valid_positives, predicted_positive, guarantee (one sentence) and the calibration method."""
        return artifact_promise(self.meta_)

    def decision_function(
        self, records: Sequence[dict], batch_size: int = 256, on_progress: Callable[[int], None] | None = None
    ) -> np.ndarray:
        """Raw network logits for each record: [N] float32 (uncalibrated; for ranking). `on_progress` gets the
        number of records scored so far."""
        if not records:
            return np.zeros(0, dtype=np.float32)
        features = self.featurizer_.featurize(records)
        return score_logits(self.model_, self.featurizer_, features, self.device_, batch_size, on_progress)

    def predict_proba(self, records: Sequence[dict], batch_size: int = 256) -> np.ndarray:
        """Calibrated P(image-seeking) for each record: [N] float32, on the scale of `threshold_`."""
        return calibrate_logits(self.meta_, self.decision_function(records, batch_size))

    def predict(self, records: Sequence[dict], threshold: float | None = None) -> np.ndarray:
        """Image-seeking decisions [N] bool at the saved operating point (or `threshold`)."""
        return self.predict_proba(records) >= (self.threshold_ if threshold is None else threshold)
