"""The model behind the endpoints: `Engine` = one loaded classifier, scored by many request threads.

An Engine never changes its model: a reload builds a new Engine and swaps it in (irp.serve.reload), so a
request that picked up an engine finishes on it, and the `model_version` it answers is the one that scored it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from irp.calibration import calibrate_logits
from irp.schema import validate_record

if TYPE_CHECKING:  # torch and transformers load with the model, not with this module (the CLI checks first)
    from irp.features import Featurizer
    from irp.predict import IRPClassifier

WARM_UP_RECORD = {"utterance": "show me red summer dresses", "intent": "search",
                  "products": [{"title": "Red Summer Dress", "color": "red"}]}


def load_classifier(model_dir: str | Path, runtime: str = "auto", threads: int = 1) -> IRPClassifier:
    """IRPClassifier with `threads` intra-op threads for its runtime (ONNX Runtime session, or torch); `auto`
    times the runtimes that pass parity and takes the fastest (irp.serve.runtime_choice)."""
    from irp.onnx_runtime import load_onnx, resolve_runtime
    from irp.predict import IRPClassifier

    if runtime == "auto":
        from irp.serve.runtime_choice import pick_fastest

        return pick_fastest(model_dir, threads)
    if resolve_runtime(model_dir, runtime) == "torch":
        import torch

        torch.set_num_threads(max(threads, 1))
        return IRPClassifier.load(model_dir, runtime="torch")
    model, featurizer, meta = load_onnx(model_dir, runtime, threads=threads)
    return IRPClassifier(model, featurizer, meta)  # type: ignore[arg-type]  # OnnxModel: same call convention


def promised_precision(promise: dict[str, Any], operating_point: dict[str, Any] | None = None) -> float | None:
    """The precision the operating point promises: its target when the rule reached it; after the F0.5 fallback
    (target not reached) only the validation precision at the threshold, else the certified lower bound;
    None when the artifact says nothing.

    >>> promised_precision({"target_precision": 0.8, "rule": "certified_precision"})
    0.8
    >>> promised_precision({"target_precision": 0.8, "rule": "max_f05_fallback", "lower_bound": 0.6}, {"precision": 0.71})
    0.71
    """
    point = operating_point or {}
    if promise.get("rule") == "max_f05_fallback" or point.get("reached") is False:
        value = point.get("precision", promise.get("precision", promise.get("lower_bound")))
    else:
        value = promise.get("target_precision")
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


class Engine:
    """A classifier shared by request threads: featurize under a lock, run the network concurrently.

    The Featurizer memoizes tokenized texts and attribute values; on the live path those caches would grow
    with every new query, so after `renew_after` featurized records, or once it holds `max_values` distinct
    attribute values, the engine starts a fresh Featurizer (~50 ms, under the lock). The value bound is tight
    because Featurizer.collate currently rebuilds its whole value matrix, O(values seen), on every call.
    """

    def __init__(
        self,
        classifier: IRPClassifier,
        model_dir: str | Path | None = None,
        renew_after: int = 50_000,
        max_values: int = 2_048,
        micro_batch: int = 16,
    ) -> None:
        self.classifier = classifier
        self.model_dir = Path(model_dir) if model_dir is not None else None
        self.renew_after, self.max_values, self.micro_batch = renew_after, max_values, micro_batch
        self.runtime: str = classifier.meta_.get("runtime", "torch")
        self._featurizer: Featurizer = classifier.featurizer_
        self._featurized = 0
        self._lock = threading.Lock()
        self.ready = False
        metrics_file = self.model_dir / "metrics.json" if self.model_dir else None
        try:
            self.validation_metrics = json.loads(metrics_file.read_text()) if metrics_file else None
        except (OSError, ValueError):  # absent or unreadable: the model still serves
            self.validation_metrics = None

    @classmethod
    def load(cls, model_dir: str | Path, runtime: str = "auto", threads: int = 1, **kwargs: Any) -> Engine:
        """Load an artifact and warm it up (raises FileNotFoundError / ValueError / OSError on a bad folder)."""
        engine = cls(load_classifier(model_dir, runtime, threads), model_dir, **kwargs)
        engine.warm_up()
        return engine

    @property
    def threshold(self) -> float:
        return self.classifier.threshold_

    @property
    def version(self) -> str:
        return self.classifier.version

    @property
    def promise(self) -> dict[str, Any]:
        return self.classifier.promise

    @property
    def promised_precision(self) -> float | None:
        return promised_precision(self.promise, self.classifier.meta_.get("threshold"))

    def predict_proba(self, records: Sequence[dict]) -> np.ndarray:
        """P(image-seeking) [N] for validated records. A batch is cut into length-sorted chunks of
        `micro_batch` records: less padding, and activations that stay in the CPU caches."""
        if not records:
            return np.zeros(0, dtype=np.float64)
        with self._lock:
            if self._featurized >= self.renew_after or len(self._featurizer.value_tokens) >= self.max_values:
                from irp.features import Featurizer

                self._featurizer = Featurizer(self._featurizer.tokenizer, self._featurizer.config)
                self._featurized = 0
            self._featurized += len(records)
            features = self._featurizer.featurize(records)
            order = np.argsort(features.lengths, kind="stable")
            chunks = [order[i : i + self.micro_batch] for i in range(0, len(order), self.micro_batch)]
            batches = [self._featurizer.collate(features, index) for index in chunks]
        probs = np.empty(len(records), dtype=np.float64)
        for index, batch in zip(chunks, batches):
            batch.pop("labels")
            logits = self._logits(batch).astype(np.float64)
            probs[index] = calibrate_logits(self.classifier.meta_, logits)
        return probs

    def _logits(self, batch: dict[str, Any]) -> np.ndarray:
        model = self.classifier.model_
        if self.runtime == "torch":
            import torch

            with torch.inference_mode():
                return model(**batch)[0].float().numpy()
        return model.logits(batch)  # type: ignore[attr-defined]  # OnnxModel

    def warm_up(self) -> None:
        """One prediction through every stage, so the first real request does not pay for lazy setup."""
        self.predict_proba([validate_record(WARM_UP_RECORD)])
        self.ready = True
